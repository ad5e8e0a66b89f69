r"""Student notebooks from the instructors' master notebooks, and the drift check between them.

Convention (documented for instructors and students in ``assignments/README.md``)
---------------------------------------------------------------------------------
* In a course notebook (``notebooks/NN_*.ipynb``, the master CI executes), an exercise is a code cell
  tagged ``solution`` that defines one or more functions, each with a docstring (the docstring is what the
  student sees), and nothing else but imports and comments.
* A later code cell calls ``check("<name>", <function>)`` (``from h2arn.course.assignments import check``), with
  ``<name>`` one of :data:`h2arn.course.assignments.checks.CHECKS`. Executing the master runs the check on the
  solution, so CI proves every solution passes.
* ``python -m h2arn.course.assignments generate`` writes ``assignments/NN_*.ipynb`` for every master with at
  least one ``solution`` cell: the same notebook, outputs cleared, with a short header and every solution
  function reduced to its signature + docstring + ``raise NotImplementedError("Exercise: ...")``; the cell
  is re-tagged ``exercise``. ``python -m h2arn.course.assignments check`` regenerates in memory and lists the
  committed student notebooks that differ (or are missing, or have no master any more).

Why generated, not hand-kept: a student copy edited by hand drifts from the master (Neuromatch keeps a
fuzzy matcher just to detect that); generating it makes drift a one-command fix and a CI failure.
"""
from __future__ import annotations

import ast
import copy
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator



def _nbformat():
    """nbformat, imported on first use: its jsonschema import costs seconds the grader should not pay."""
    import nbformat
    return nbformat


def _check_names() -> dict:
    from h2arn.course.assignments.checks import CHECKS
    return CHECKS

__all__ = ["SOLUTION_TAG", "EXERCISE_TAG", "AssignmentError", "ExerciseCall", "stub_source",
           "student_notebook", "masters", "generate", "stale_notebooks", "exercise_calls",
           "load_functions", "cell_tags"]

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
HEADER_ID = "student-header"
_ALLOWED = (ast.FunctionDef, ast.Import, ast.ImportFrom)


class AssignmentError(ValueError):
    """A master notebook breaks the exercise convention; the message names the notebook, the cell and the fix."""


@dataclass(frozen=True)
class ExerciseCall:
    """One ``check("name", fn)`` call found in a notebook: which check runs on which function."""

    check: str
    function: str
    cell: int


def cell_tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _where(nb_name: str, index: int) -> str:
    return f"{nb_name}, cell {index}"


def stub_source(source: str, where: str = "<cell>") -> str:
    """Turn a solution cell's source into the student's stub.

    Imports and leading comments are kept; each top-level function keeps its decorators, signature and
    docstring, and its body becomes ``raise NotImplementedError("Exercise: ...")``. Anything else at top
    level (assignments, calls, classes) is refused, because it would silently vanish from the student copy.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise AssignmentError(f"{where}: the solution cell does not parse ({exc}). Fix the cell.") from exc
    lines = source.splitlines()
    out: list[str] = []
    n_functions = 0
    first_stmt = tree.body[0].lineno if tree.body else len(lines) + 1
    if tree.body and isinstance(tree.body[0], ast.FunctionDef) and tree.body[0].decorator_list:
        first_stmt = min(d.lineno for d in tree.body[0].decorator_list)
    out.extend(lines[:first_stmt - 1])                                 # leading comments / blank lines
    for node in tree.body:
        if not isinstance(node, _ALLOWED):
            raise AssignmentError(
                f"{where}: a `solution` cell may hold only imports and function definitions, found "
                f"{type(node).__name__} at line {node.lineno}. Fix: move it to a cell without the tag.")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend(lines[node.lineno - 1:node.end_lineno])
            continue
        n_functions += 1
        doc = ast.get_docstring(node, clean=False)
        if doc is None:
            raise AssignmentError(
                f"{where}: solution function {node.name!r} has no docstring; the docstring is all the student "
                "sees of it. Fix: add one (what it computes, shapes, the formula's name).")
        first_body = node.body[0]
        if first_body.lineno == node.lineno:
            raise AssignmentError(f"{where}: put the body of {node.name!r} on its own lines (not `def f(): ...`).")
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        keep_until = first_body.end_lineno                             # signature + docstring
        if out and out[-1].strip():
            out.extend(["", ""])
        out.extend(lines[start - 1:keep_until])
        indent = " " * first_body.col_offset
        out.append(f'{indent}raise NotImplementedError("Exercise: implement {node.name}, then run the check '
                   'cell below")')
    if n_functions == 0:
        raise AssignmentError(f"{where}: a `solution` cell must define at least one function. "
                              "Fix: remove the tag or define the exercise function.")
    return "\n".join(out).rstrip() + "\n"


def _parsed_code_cells(nb: Any) -> Iterator[tuple[int, ast.Module]]:
    """(cell index, syntax tree) of every code cell that parses as Python (magics etc. are skipped)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            yield i, ast.parse(_source(cell))
        except SyntaxError:
            continue


def exercise_calls(nb: Any, nb_name: str = "<notebook>") -> list[ExerciseCall]:
    """All ``check("name", fn)`` calls in the notebook's code cells (statically, without running anything)."""
    calls = []
    for i, tree in _parsed_code_cells(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and \
                    (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "check" and \
                    len(node.args) >= 2 and isinstance(node.args[0], ast.Constant) and \
                    isinstance(node.args[0].value, str) and isinstance(node.args[1], ast.Name):
                calls.append(ExerciseCall(node.args[0].value, node.args[1].id, i))
    return calls


def _solution_functions(nb: Any, nb_name: str, tag: str) -> dict[str, int]:
    """Function name -> index of the cell (tagged ``tag``) defining it."""
    found: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and tag in cell_tags(cell):
            for node in ast.parse(_source(cell)).body:
                if isinstance(node, ast.FunctionDef):
                    found[node.name] = i
    return found


def _validate(nb: Any, nb_name: str) -> None:
    """Every solution function is checked by a later cell with a known check name."""
    functions = _solution_functions(nb, nb_name, SOLUTION_TAG)
    calls = exercise_calls(nb, nb_name)
    CHECKS = _check_names()
    for call in calls:
        if call.function in functions and call.check not in CHECKS:
            raise AssignmentError(f"{_where(nb_name, call.cell)}: check({call.check!r}, {call.function}) names an "
                                  f"unknown check. Available: {', '.join(CHECKS)}.")
    for name, cell in functions.items():
        if not any(c.function == name and c.cell > cell for c in calls):
            raise AssignmentError(
                f"{_where(nb_name, cell)}: solution function {name!r} is never checked. Fix: add a later code "
                f"cell `check(\"<name>\", {name})` (names: {', '.join(CHECKS)}).")


def _header(source_name: str) -> Any:
    text = textwrap.dedent(f"""\
        > **Student version** of `notebooks/{source_name}`, generated by `python -m h2arn.course.assignments generate`.
        > Cells tagged `exercise` hold a function with its docstring and a `raise NotImplementedError`: replace
        > that line with your code, run the cell, then run the `check(...)` cell after it. A check prints
        > `PASSED ...` or raises an `AssertionError` that names the input, the expected and the obtained value,
        > and a hint. `python -m h2arn.course.assignments grade assignments/{source_name}` grades all exercises at once.""")
    cell = _nbformat().v4.new_markdown_cell(text)
    cell["id"] = HEADER_ID
    return cell


def student_notebook(nb: Any, source_name: str) -> Any:
    """The student copy of master notebook ``nb`` (not modified): stubs, cleared outputs, a header cell."""
    _validate(nb, source_name)
    out = copy.deepcopy(nb)
    out.metadata.pop("papermill", None)
    for i, cell in enumerate(out.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            tags = cell_tags(cell)
            if SOLUTION_TAG in tags:
                cell.source = stub_source(_source(cell), _where(source_name, i))
                cell.metadata["tags"] = [EXERCISE_TAG if t == SOLUTION_TAG else t for t in tags]
    out.cells.insert(0, _header(source_name))
    return out


def _has_solutions(nb: Any) -> bool:
    return any(c.cell_type == "code" and SOLUTION_TAG in cell_tags(c) for c in nb.cells)


def _read(path: Path) -> Any:
    try:
        return _nbformat().read(str(path), as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several types for bad JSON
        raise AssignmentError(f"{path}: cannot read the notebook ({exc}). Fix: restore it from git.") from exc


def masters(source_dir: Path) -> list[Path]:
    """Master notebooks (``NN_*.ipynb`` in ``source_dir``) that contain at least one ``solution`` cell."""
    return [p for p in sorted(Path(source_dir).glob("[0-9][0-9]_*.ipynb")) if _has_solutions(_read(p))]


def generate(source_dir: Path, dest_dir: Path) -> list[Path]:
    """Write the student copy of every master into ``dest_dir``; returns the written paths."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in masters(source_dir):
        student = student_notebook(_read(path), path.name)
        target = dest_dir / path.name
        _nbformat().validate(student)
        _nbformat().write(student, str(target))
        written.append(target)
    return written


def _signature(nb: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, _source(c), tuple(cell_tags(c))) for c in nb.cells]


def stale_notebooks(source_dir: Path, dest_dir: Path) -> list[str]:
    """Problems between masters and committed student copies, one line each (empty list = up to date)."""
    problems = []
    expected = {p.name: p for p in masters(source_dir)}
    present = {p.name: p for p in sorted(Path(dest_dir).glob("[0-9][0-9]_*.ipynb"))}
    for name, src in expected.items():
        if name not in present:
            problems.append(f"{name}: missing from {dest_dir} (run `python -m h2arn.course.assignments generate`)")
            continue
        want = _signature(student_notebook(_read(src), name))
        have = _signature(_read(present[name]))
        if want != have:
            diff = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
            problems.append(f"{name}: out of date with notebooks/{name} (first difference at cell {diff}; run "
                            "`python -m h2arn.course.assignments generate`)")
    for name in present:
        if name not in expected:
            problems.append(f"{name}: no master notebook with `solution` cells in {source_dir} "
                            "(delete it, or restore the master)")
    return problems


def load_functions(nb: Any, tag: str, nb_name: str = "<notebook>") -> dict[str, Callable]:
    """Execute the notebook's imports, then its cells tagged ``tag``, and return the functions they define.

    Only import statements (from any code cell) and the tagged cells run, so grading does not execute the
    notebook's heavy cells. Returns ``{function name: function}``.
    """
    namespace: dict[str, Any] = {"__name__": "__exercise__"}
    for i, tree in _parsed_code_cells(nb):
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if imports:
            code = compile(ast.Module(body=imports, type_ignores=[]), f"<{nb_name} cell {i} imports>", "exec")
            exec(code, namespace)  # noqa: S102 - executing the course's own notebook imports
    names: dict[str, Callable] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and tag in cell_tags(cell):
            exec(compile(_source(cell), f"<{nb_name} cell {i}>", "exec"), namespace)  # noqa: S102
            for node in ast.parse(_source(cell)).body:
                if isinstance(node, ast.FunctionDef):
                    names[node.name] = namespace[node.name]
    return names
