"""Marked blocks in a markdown file, rewritten by the command that measures their numbers.

Why: the project's rule is that a number in a README or a doc comes from a command anyone can rerun, best the
command that writes it. Such a command owns one block between two marker lines (``<!-- name:begin ... -->`` and
``<!-- name:end -->``) and rewrites only that block, leaving the hand-written prose around it alone. Every
writer (the course's results report, the data report) uses these two functions, so the rule is implemented once.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["marked_block", "replace_marked_block", "write_text_atomic"]


def _span(text: str, begin: str, end: str) -> tuple[int, int] | None:
    """``(start, stop)`` of the first ``begin`` ... following ``end`` (markers included), or ``None``."""
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    return (i, j + len(end)) if j >= 0 else None


def marked_block(text: str, begin: str, end: str) -> str | None:
    """The block from ``begin`` to ``end``, markers included, or ``None`` when either marker is missing."""
    span = _span(text, begin, end)
    return text[span[0]:span[1]] if span else None


def replace_marked_block(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with the block from ``begin`` to ``end`` (markers included) replaced by ``body``.

    ``body`` is the whole new block, markers included. Without the markers, ``body`` is appended after a blank
    line (a first write).
    """
    span = _span(text, begin, end)
    if span:
        return text[:span[0]] + body + text[span[1]:]
    return text.rstrip() + "\n\n" + body + "\n"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename, so an interrupted writer never leaves a
    half-written README behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
