"""Classroom exercises: autograder checks and the student-notebook generator.

In a notebook::

    from h2arn.course.assignments import check
    check("dist", my_dist)          # prints PASSED ... or raises an AssertionError with a hint

On the command line (see ``assignments/README.md``)::

    python -m h2arn.course.assignments generate     # notebooks/*.ipynb -> assignments/*.ipynb (student copies)
    python -m h2arn.course.assignments check        # are the committed student copies up to date? (exit 1 if not)
    python -m h2arn.course.assignments grade assignments/01_lorentz_geometry.ipynb   # each exercise isolated (sandbox.py)
    python -m h2arn.course.assignments list         # the available checks and their signatures
"""
__all__ = ["CHECKS", "CheckFailure", "NotImplementedYet", "available_checks", "check", "run_check"]


def __getattr__(name: str):
    """Import :mod:`.checks` (and torch) on first use, so ``grade`` can start its sandbox before paying for torch."""
    if name in __all__:
        from h2arn.course.assignments import checks
        return getattr(checks, name)
    raise AttributeError(f"module 'h2arn.course.assignments' has no attribute {name!r}")
