"""``python -m h2arn.course.assignments {generate,check,grade,list}``: see :mod:`h2arn.course.assignments`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from h2arn.course.assignments.checks import CHECKS, CheckFailure, NotImplementedYet, run_check
from h2arn.course.assignments.generate import (EXERCISE_TAG, SOLUTION_TAG, AssignmentError, exercise_calls, generate,
                                        load_functions, stale_notebooks)
from h2arn.paths import repo_root


def _grade(path: Path) -> int:
    """Run every check of a notebook on its exercise (or solution) functions; 0 if all pass."""
    if not path.is_file():
        print(f"error: {path} does not exist. Fix: pass a notebook path, e.g. assignments/08_interactive_retrieval.ipynb",
              file=sys.stderr)
        return 2
    nb = nbformat.read(str(path), as_version=4)
    tags = {t for c in nb.cells for t in c.get("metadata", {}).get("tags", [])}
    tag = EXERCISE_TAG if EXERCISE_TAG in tags else SOLUTION_TAG
    functions = load_functions(nb, tag, path.name)
    calls = [c for c in exercise_calls(nb, path.name) if c.function in functions]
    if not calls:
        print(f"{path}: no exercise found (no cell tagged '{EXERCISE_TAG}' or '{SOLUTION_TAG}' followed by check(...)).")
        return 2
    failed = 0
    for call in calls:
        try:
            n = run_check(call.check, functions[call.function])
            print(f"PASSED       {call.check:22s} {call.function} ({n} cases)")
        except NotImplementedYet:
            failed += 1
            print(f"NOT DONE     {call.check:22s} {call.function} still raises NotImplementedError")
        except CheckFailure as exc:
            failed += 1
            print(f"FAILED       {call.check:22s} {call.function}\n" + "\n".join("    " + l for l in str(exc).splitlines()))
    print(f"{len(calls) - failed}/{len(calls)} exercises pass.")
    return 0 if failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    parser = argparse.ArgumentParser(prog="python -m h2arn.course.assignments", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, helptext in [("generate", "write student notebooks from the masters"),
                           ("check", "exit 1 if the committed student notebooks are out of date")]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--source", type=Path, default=root / "notebooks", help="master notebooks folder")
        p.add_argument("--dest", type=Path, default=root / "assignments", help="student notebooks folder")
    p = sub.add_parser("grade", help="run the checks of one notebook's exercises")
    p.add_argument("notebook", type=Path)
    sub.add_parser("list", help="list the available checks")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "generate":
            for path in generate(args.source, args.dest):
                print(f"wrote {path.relative_to(root) if path.is_relative_to(root) else path}")
            return 0
        if args.cmd == "check":
            problems = stale_notebooks(args.source, args.dest)
            for line in problems:
                print(f"STALE {line}")
            if not problems:
                print("student notebooks are up to date")
            return 1 if problems else 0
        if args.cmd == "grade":
            return _grade(args.notebook)
        for name, spec in CHECKS.items():
            print(f"{name:22s} {spec.signature:55s} reference: {spec.reference}")
        return 0
    except AssignmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
