"""The README's chapter times are written by `python -m h2arn.course summary --write-readme`, not typed."""
from __future__ import annotations

from h2arn.course.chapter_times import BEGIN, END, write_readme_times
from h2arn.course.runner import NotebookResult, main
from h2arn.paths import repo_root


def test_readme_has_the_generated_chapter_times_block():
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    assert BEGIN.format(profile="ci") in text and END.format(profile="ci") in text


def test_block_is_rewritten_and_prose_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{BEGIN.format(profile='ci')}\nold 99 s\n{END.format(profile='ci')}\n\noutro\n")
    results = [NotebookResult("00_overview.ipynb", "ok", 7.2), NotebookResult("01_lorentz_geometry.ipynb", "ok", 12.6)]
    write_readme_times(results, "ci", readme)
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\noutro\n")
    assert "old 99 s" not in text and "00 7 s · 01 13 s; total 20 s." in text


def test_write_readme_refuses_an_incomplete_run(tmp_path, capsys):
    (tmp_path / "00_overview.ipynb").write_text('{"metadata": {"papermill": {"duration": 3.0, "end_time": '
                                               '"2026-12-01T00:00:00"}}, "cells": []}')
    assert main(["summary", "--output-dir", str(tmp_path), "--write-readme"]) == 2
    assert "needs every chapter" in capsys.readouterr().err
