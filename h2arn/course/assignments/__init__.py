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
from h2arn.course.assignments.checks import CHECKS, CheckFailure, NotImplementedYet, available_checks, check, run_check

__all__ = ["CHECKS", "CheckFailure", "NotImplementedYet", "available_checks", "check", "run_check"]
