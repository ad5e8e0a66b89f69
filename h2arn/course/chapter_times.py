"""The README's chapter times, written from what papermill recorded (never typed by hand).

Why: the chapter table in the README used to carry CPU seconds copied from one run, which went stale as the
chapters grew. ``python -m h2arn.course summary --profile ci --write-readme`` (after ``./course run`` or
``./course test``) reads the executed copies in ``build/notebooks/<profile>/`` and rewrites one marked block of
README.md with each chapter's status and seconds, the total, the date of the run and the machine.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from pathlib import Path

from h2arn.docs_blocks import replace_marked_block, write_text_atomic
from h2arn.timing import cpu_model

__all__ = ["BEGIN", "END", "chapter_times_block", "write_readme_times"]

BEGIN = "<!-- chapter-times-{profile}:begin (written by python -m h2arn.course summary --profile {profile} --write-readme) -->"
END = "<!-- chapter-times-{profile}:end -->"


def _end_date(paths: list[Path]) -> str:
    """The date papermill finished the newest chapter (UTC, YYYY-MM-DD), or 'unknown'."""
    ends = []
    for p in paths:
        try:
            end = json.loads(p.read_text(encoding="utf-8"))["metadata"]["papermill"].get("end_time")
        except (OSError, KeyError, json.JSONDecodeError):
            continue
        if end:
            ends.append(datetime.fromisoformat(end.replace("Z", "+00:00")))
    return max(ends).strftime("%Y-%m-%d") if ends else "unknown"


def chapter_times_block(results, profile: str) -> str:
    """The marked block for ``results`` (:class:`h2arn.course.runner.NotebookResult` list of one profile)."""
    cells = [f"{r.notebook.split('_')[0]} {r.seconds:.0f} s" + ("" if r.status == "ok" else f" ({r.status})")
             for r in results]
    total = sum(r.seconds for r in results)
    date = _end_date([r.output for r in results if r.output is not None])
    body = (f"*Seconds per chapter under `{profile}`, as papermill recorded them in one run on {date} "
            f"({cpu_model() or platform.processor() or platform.machine()}, {os.cpu_count()} cores; each chapter reuses the data, features and runs that earlier "
            f"chapters cached, and builds them when run alone):* " + " · ".join(cells) + f"; total {total:.0f} s.")
    return f"{BEGIN.format(profile=profile)}\n{body}\n{END.format(profile=profile)}"


def write_readme_times(results, profile: str, readme: Path) -> Path:
    """Rewrite the chapter-times block of ``readme`` (appended when missing) and return the path."""
    text = replace_marked_block(readme.read_text(encoding="utf-8"), BEGIN.format(profile=profile),
                                END.format(profile=profile), chapter_times_block(results, profile))
    return write_text_atomic(readme, text)
