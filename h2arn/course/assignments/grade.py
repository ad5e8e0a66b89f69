"""Grade a notebook's exercises: student code runs isolated (:mod:`.sandbox`), verdicts are computed here.

``python -m h2arn.course.assignments grade NOTEBOOK`` reads the saved notebook, finds every
``check("name", my_function)`` call whose function is defined in a cell tagged ``exercise`` (a student
copy) or ``solution`` (a master), runs each such function in its own limited process on the check's seeded
inputs, and compares what came back with the references in this process. One line per exercise:
``PASSED`` / ``FAILED`` (with the case, expected vs got and the hint) / ``NOT DONE``. An exercise that does
not parse, raises, loops, exhausts memory or exits is reported as FAILED for that exercise only.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2arn.course.assignments.generate import EXERCISE_TAG, SOLUTION_TAG, AssignmentError, cell_tags, exercise_calls
from h2arn.course.assignments.sandbox import Job, Limits, Outcome, Zygote

__all__ = ["read_student_notebook", "grade_notebook", "ExerciseCell"]

_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.M)


@dataclass(frozen=True)
class ExerciseCell:
    """A tagged cell: its index, source, the functions it defines, and its syntax error if it has one."""

    index: int
    source: str
    functions: tuple[str, ...]
    syntax_error: str | None


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def read_student_notebook(path: Path) -> Any:
    """The notebook at ``path``, or :class:`AssignmentError` with one line saying what is wrong and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"{path}: cannot be read ({exc.__class__.__name__}). Fix: pass a saved .ipynb file.") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise AssignmentError(f"{path}: not a notebook: invalid JSON at line {exc.lineno}, column {exc.colno} "
                              f"({exc.msg}). Fix: re-save it from JupyterLab, or restore it with git.") from None
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or \
                not all(isinstance(c, dict) and isinstance(c.get("cell_type"), str) for c in raw["cells"]):
            raise ValueError("no list of cells")
    except ValueError as exc:
        raise AssignmentError(f"{path}: JSON but not a Jupyter notebook ({exc}). "
                              "Fix: re-save it from JupyterLab, or restore it with git.") from None
    return _Node.wrap(raw)


class _Node(dict):
    """A JSON object with attribute access (``nb.cells``, ``cell.cell_type``), like nbformat's NotebookNode.

    The grader reads notebooks with :mod:`json`: nbformat's import (jsonschema) costs seconds and its
    validation adds nothing to grading.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


def _exercise_cells(nb: Any, tag: str) -> list[ExerciseCell]:
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or tag not in cell_tags(cell):
            continue
        source = _source(cell)
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            where = f" (line {exc.lineno})" if exc.lineno else ""
            cells.append(ExerciseCell(i, source, tuple(_DEF.findall(source)), f"SyntaxError: {exc.msg}{where}"))
            continue
        names = tuple(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        cells.append(ExerciseCell(i, source, names, None))
    return cells


def _import_statements(nb: Any, used: set[str]) -> list[str]:
    """The notebook's top-level import statements that bind a name in ``used``, once each, in order.

    Only the names the exercise cells mention are imported: a chapter's plotting and widget imports would
    cost the grader seconds and give the exercise nothing.
    """
    seen: dict[str, None] = {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_source(cell))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound = {(alias.asname or alias.name).split(".")[0] for alias in node.names}
                if bound & used or "*" in bound:
                    seen.setdefault(ast.unparse(node), None)
    return list(seen)


def _verdict(check_name: str, function: str, cases: list, outcome: Outcome) -> tuple[str, str]:
    """(PASSED | NOT DONE | FAILED, message)."""
    from h2arn.course.assignments.checks import CHECKS, CheckFailure, crash_failure, judge, not_implemented

    try:
        if outcome.status == "ok":
            n = judge(check_name, function, cases, outcome.outputs, outcome.args_after)
            return "PASSED", f"({n} cases)"
        if outcome.status == "not_implemented":
            raise not_implemented(CHECKS[check_name], function, outcome.message)
        case = cases[outcome.case] if outcome.status == "error" and outcome.case is not None \
            and 0 <= outcome.case < len(cases) else None
        problem = f"it raised {outcome.message}" if case is not None else outcome.message
        if outcome.status == "cell_error":
            problem = f"its cell failed when run: {outcome.message}"
        raise crash_failure(check_name, function, case, problem)
    except CheckFailure as exc:
        status = "NOT DONE" if outcome.status == "not_implemented" else "FAILED"
        text = str(exc)
        if outcome.output_tail and status == "FAILED":
            text += "\n  last lines your code printed:\n" + "\n".join("    | " + line for line in outcome.output_tail.splitlines())
        return status, text


def grade_notebook(path: Path, limits: Limits = Limits(), out=sys.stdout) -> int:
    """Print one verdict per exercise of the notebook at ``path``; 0 when all pass, 1 otherwise, 2 for bad input."""
    path = Path(path)
    if not path.is_file():
        raise AssignmentError(f"{path} does not exist. Fix: pass a notebook path, e.g. "
                              "assignments/01_lorentz_geometry.ipynb")
    nb = read_student_notebook(path)
    tags = {t for c in nb.cells for t in cell_tags(c)}
    tag = EXERCISE_TAG if EXERCISE_TAG in tags else SOLUTION_TAG
    cells = _exercise_cells(nb, tag)
    defined = {name: cell for cell in cells for name in cell.functions}
    calls = [c for c in exercise_calls(nb, path.name) if c.function in defined]
    if not calls:
        raise AssignmentError(f"{path}: no exercise found (no cell tagged '{EXERCISE_TAG}' or '{SOLUTION_TAG}' "
                              "followed by check(...)). Fix: grade a notebook from assignments/.")
    with Zygote() as zygote:            # starts importing torch now, while this process does the same
        from h2arn.course.assignments.checks import CHECKS, crash_failure

        verdicts: dict[int, tuple[str, str]] = {}
        jobs, job_calls = [], []
        for k, call in enumerate(calls):
            cell = defined[call.function]
            if call.check not in CHECKS:
                verdicts[k] = ("FAILED", f"check({call.check!r}, {call.function}) names an unknown check; "
                                         f"available: {', '.join(CHECKS)}")
            elif cell.syntax_error:
                verdicts[k] = ("FAILED", str(crash_failure(call.check, call.function, None,
                                                           f"cell {cell.index} does not parse: {cell.syntax_error}. "
                                                           "Fix the cell, save the notebook, grade again.")))
            else:
                cases = list(CHECKS[call.check].cases())
                jobs.append(Job(call.check, cell.source, f"<{path.name} cell {cell.index}>", call.function,
                                [tuple(case.args) for case in cases]))
                job_calls.append((k, cases))
        used = {word for cell in cells for word in re.findall(r"[A-Za-z_]\w*", cell.source)}
        outcomes = zygote.run(jobs, _import_statements(nb, used), limits) if jobs else []
    import_errors = sorted({e for o in outcomes for e in o.import_errors})
    for (k, cases), outcome in zip(job_calls, outcomes):
        verdicts[k] = _verdict(calls[k].check, calls[k].function, cases, outcome)
    for error in import_errors:
        print(f"note: an import of the notebook failed in the grader: {error}", file=out)
    failed = 0
    for k, call in enumerate(calls):
        status, message = verdicts[k]
        if status == "PASSED":
            print(f"PASSED       {call.check:22s} {call.function} {message}", file=out)
            continue
        failed += 1
        if status == "NOT DONE":
            print(f"NOT DONE     {call.check:22s} {call.function} still raises NotImplementedError", file=out)
        else:
            print(f"FAILED       {call.check:22s} {call.function}\n"
                  + "\n".join("    " + line for line in message.splitlines()), file=out)
    print(f"{len(calls) - failed}/{len(calls)} exercises pass.", file=out)
    return 0 if failed == 0 else 1
