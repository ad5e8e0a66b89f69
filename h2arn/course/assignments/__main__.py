"""``python -m h2arn.course.assignments {generate,check,grade,list}``: see :mod:`h2arn.course.assignments`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from h2arn.course.assignments.generate import AssignmentError, generate, stale_notebooks
from h2arn.course.assignments.grade import grade_notebook
from h2arn.course.assignments.sandbox import Limits
from h2arn.paths import repo_root


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds/MiB") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    parser = argparse.ArgumentParser(prog="python -m h2arn.course.assignments", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, helptext in [("generate", "write student notebooks from the masters"),
                           ("check", "exit 1 if the committed student notebooks are out of date")]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--source", type=Path, default=root / "notebooks", help="master notebooks folder")
        p.add_argument("--dest", type=Path, default=root / "assignments", help="student notebooks folder")
    p = sub.add_parser("grade", help="run the checks of one notebook's exercises, each in its own limited process")
    p.add_argument("notebook", type=Path)
    defaults = Limits()
    p.add_argument("--timeout", type=_positive, default=defaults.wall_seconds,
                   help=f"wall-clock seconds per exercise (default {defaults.wall_seconds})")
    p.add_argument("--cpu-seconds", type=_positive, default=defaults.cpu_seconds,
                   help=f"CPU seconds per exercise (default {defaults.cpu_seconds})")
    p.add_argument("--memory-mib", type=_positive, default=defaults.memory_mib,
                   help=f"memory per exercise in MiB (default {defaults.memory_mib})")
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
            return grade_notebook(args.notebook, Limits(cpu_seconds=args.cpu_seconds, wall_seconds=args.timeout,
                                                        memory_mib=args.memory_mib))
        from h2arn.course.assignments.checks import CHECKS
        for name, spec in CHECKS.items():
            print(f"{name:22s} {spec.signature:55s} reference: {spec.reference}")
        return 0
    except AssignmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
