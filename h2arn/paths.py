"""Where things live: every notebook and CLI resolves paths here, never with ``../``.

The course root is, in order: ``$H2ARN_ROOT``; the nearest parent of the working directory
that holds this project's ``pyproject.toml``; the checkout the package was imported from.
Shared read-only assets (``../shared`` beside the checkout) are optional: ``$H2ARN_SHARED``
overrides the location, and :func:`shared_dir` returns ``None`` when they are absent. ``$H2ARN_BUILD`` moves the
build folder alone.
"""
from __future__ import annotations

import os
from pathlib import Path

_PROJECT_MARKER = 'name = "h2arn-course"'


def _is_root(path: Path) -> bool:
    toml = path / "pyproject.toml"
    return toml.is_file() and _PROJECT_MARKER in toml.read_text(encoding="utf-8", errors="ignore")


def repo_root() -> Path:
    """The course checkout (see module docstring for the search order)."""
    env = os.environ.get("H2ARN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if _is_root(candidate):
            return candidate
    pkg_parent = Path(__file__).resolve().parent.parent
    if _is_root(pkg_parent):
        return pkg_parent
    return here


def data_dir() -> Path:
    """``<root>/data``: generated benchmark and user datasets (T3DR-HIT ``Elephant/``, ``S3DIS/``)."""
    return repo_root() / "data"


def build_dir() -> Path:
    """``<root>/build`` (or ``$H2ARN_BUILD`` when ``$H2ARN_ROOT`` is not set): caches, features, checkpoints, executed notebooks. Safe to delete.

    ``./course test`` runs the package tests with their own ``$H2ARN_BUILD`` beside the chapters, so the two halves
    of the suite can run at the same time without building the same cache twice at once.
    """
    env = os.environ.get("H2ARN_BUILD")
    if env and not os.environ.get("H2ARN_ROOT"):   # an explicit root brings its own build folder
        return Path(env).resolve()
    return repo_root() / "build"


def figures_dir() -> Path:
    """``<root>/figures``: every figure the notebooks draw (created on demand)."""
    path = repo_root() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path | None:
    """``../shared`` beside the checkout (or ``$H2ARN_SHARED``), or ``None`` if absent."""
    env = os.environ.get("H2ARN_SHARED")
    path = Path(env) if env else repo_root().parent / "shared"
    return path if path.is_dir() else None


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` (150 dpi) and return the path."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
