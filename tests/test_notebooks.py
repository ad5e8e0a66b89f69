"""Every course notebook: committed clean, and executed top to bottom with the `ci` profile.

This is the same runner `./course run` uses (papermill, fresh kernel per notebook, cwd = notebooks/);
the executed copies land in build/notebooks/ci/ for inspection.
"""
from __future__ import annotations

import json
import re

import pytest

from h2arn.course import runner as course
from h2arn.paths import build_dir

NOTEBOOKS = course.list_notebooks()
_MACHINE_PATH = re.compile(r"(/home/|/Users/|/work/|/root/|/tmp/|[A-Z]:\\\\)")


def test_course_has_the_numbered_chapters():
    numbers = {p.name[:2] for p in NOTEBOOKS}
    assert {"00", "01"} <= numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    assert course.check_notebook(path) == []
    text = path.read_text(encoding="utf-8")
    assert not _MACHINE_PATH.search(text), f"{path.name} contains a machine path"
    nb = json.loads(text)
    assert "papermill" not in nb.get("metadata", {}), f"{path.name} is a papermill output, not a source"
    assert nb["metadata"]["kernelspec"] == course.COURSE_KERNELSPEC, (
        f"{path.name}: kernelspec must be {course.COURSE_KERNELSPEC} so JupyterLab starts the course kernel")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_ci_profile(path):
    result = course.run_notebook(path, "ci", build_dir() / "notebooks" / "ci", cell_timeout=600,
                                 notebook_timeout=900)
    assert result.status == "ok", result.message
    assert course.executed_output_problems(result.output) == []
