"""The package layout keeps its promise: the method (``h2arn.*``) never imports the course (``h2arn.course.*``)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "h2arn"


def _imports(path: Path) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved against its package)."""
    package = ["h2arn", *path.relative_to(PKG).parts[:-1]]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def test_method_modules_never_import_the_course():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "course":
            continue
        bad = sorted(n for n in _imports(path) if n == "h2arn.course" or n.startswith("h2arn.course."))
        if bad:
            offenders.append(f"{rel}: {bad}")
    assert not offenders, "method modules import the course:\n" + "\n".join(offenders)


def test_course_only_modules_live_in_the_course_subpackage():
    for name in ("widgets.py", "experiments.py", "plots.py", "course.py", "metrics.py"):
        assert not (PKG / name).exists(), f"h2arn/{name} belongs in h2arn/course/ (or h2arn/evaluate.py)"
    assert (PKG / "course" / "runner.py").is_file() and (PKG / "course" / "assignments").is_dir()
