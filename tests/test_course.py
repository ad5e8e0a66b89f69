"""The notebook runner: selection, static checks and its error paths (one clear line each)."""
from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from h2arn.course import runner as course


def _write(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(course.COURSE_KERNELSPEC)
    nbformat.write(nb, path)
    return path


def _params(src="profile = 'ci'\ndevice = 'auto'"):
    cell = new_code_cell(src)
    cell.metadata["tags"] = ["parameters"]
    return cell


@pytest.fixture()
def fake_root(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("H2ARN_ROOT", str(tmp_path))
    return tmp_path


def test_lists_only_numbered_notebooks_in_order(fake_root):
    for name in ["02_b.ipynb", "00_a.ipynb", "scratch.ipynb", "10_c.ipynb"]:
        _write(fake_root / "notebooks" / name, [_params()])
    assert [p.name for p in course.list_notebooks()] == ["00_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in course.select_notebooks(["02"])] == ["02_b.ipynb"]


def test_missing_notebook_exits_nonzero_with_one_clear_line(fake_root, capsys):
    _write(fake_root / "notebooks" / "00_a.ipynb", [_params()])
    assert course.main(["run", "07"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notebook '07' not found" in err[0] and "00_a.ipynb" in err[0]


def test_static_check_requires_exactly_one_parameters_cell_and_no_outputs(fake_root):
    nb_dir = fake_root / "notebooks"
    none = _write(nb_dir / "00_none.ipynb", [new_code_cell("x = 1")])
    two = _write(nb_dir / "01_two.ipynb", [_params(), _params()])
    dirty_cell = new_code_cell("print(1)")
    dirty_cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    dirty = _write(nb_dir / "02_dirty.ipynb", [_params(), dirty_cell])
    ok = _write(nb_dir / "03_ok.ipynb", [new_markdown_cell("# hi"), _params()])
    assert "exactly one cell tagged 'parameters' (found 0)" in course.check_notebook(none)[0]
    assert "(found 2)" in course.check_notebook(two)[0]
    assert "committed outputs" in course.check_notebook(dirty)[0]
    assert course.check_notebook(ok) == []


def test_static_check_requires_the_course_kernelspec(fake_root):
    path = _write(fake_root / "notebooks" / "00_py3.ipynb", [_params()])
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    problems = course.check_notebook(path)
    assert len(problems) == 1 and "kernelspec is 'python3', not 'h2arn-course'" in problems[0]


def test_notebook_without_parameters_cell_is_refused_before_running(fake_root, tmp_path, capsys):
    _write(fake_root / "notebooks" / "00_noparams.ipynb", [new_code_cell("x = 1")])
    assert course.main(["run", "--output-dir", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "00_noparams.ipynb: needs exactly one cell tagged 'parameters'" in captured.err
    assert "invalid" in captured.out


@pytest.mark.notebooks
def test_failing_cell_is_reported_with_notebook_and_cell(fake_root, tmp_path, capsys):
    _write(fake_root / "notebooks" / "00_fails.ipynb",
           [_params(), new_code_cell("a = 1"), new_code_cell("raise ValueError('boom from the course')")])
    _write(fake_root / "notebooks" / "01_ok.ipynb", [_params(), new_code_cell("assert profile == 'ci'")])
    code = course.main(["run", "--output-dir", str(tmp_path / "out"), "--cell-timeout", "60"])
    captured = capsys.readouterr()
    assert code == 1
    line = [l for l in captured.err.splitlines() if "FAILED" in l]
    assert len(line) == 1
    assert "00_fails.ipynb" in line[0] and "code cell 3" in line[0] and "ValueError: boom from the course" in line[0]
    assert "01_ok.ipynb" in captured.out and "ok" in captured.out     # later notebooks still run and are tabled
    assert (tmp_path / "out" / "00_fails.ipynb").is_file()            # the executed copy is kept for inspection
    summary = {r.notebook: r.status for r in course.executed_summary(tmp_path / "out")}
    assert summary == {"00_fails.ipynb": "failed", "01_ok.ipynb": "ok"}
    index = (tmp_path / "out" / "site" / "index.html").read_text(encoding="utf-8")   # the site lists both
    assert "00_fails.html" in index and "failed (1 error cell)" in index and "01_ok.html" in index


def test_executed_output_problems_names_echoes_frozen_bars_and_missing_figures(tmp_path):
    echo = new_code_cell("save_figure(fig, 'x')")
    echo.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "PosixPath('/x/figures/x.png')"},
                                           execution_count=1)]
    bar = new_code_cell("train()")
    bar.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2, "version_minor": 0},
        "text/plain": "epochs:   0%|          | 0/8 [00:00<?, ?it/s]"})]
    dirty = _write(tmp_path / "00_dirty.ipynb", [_params(), echo, bar])
    problems = course.executed_output_problems(dirty)
    assert any("echoes \"PosixPath(" in p and "end the line with ';'" in p for p in problems)
    assert any("progress-bar widget" in p for p in problems)
    assert any("calls save_figure but shows no figure inline" in p for p in problems)
    shown = new_code_cell("save_figure(fig, 'x');")
    shown.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]
    assert course.executed_output_problems(_write(tmp_path / "01_clean.ipynb", [_params(), shown])) == []


def test_batch_kernels_draw_inline_and_keep_progress_bars_out_of_saved_outputs(tmp_path):
    env = course.batch_kernel_env(tmp_path / "k")
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    startup = tmp_path / "k" / "ipython" / "profile_default" / "startup" / "00_h2arn_batch.py"
    assert env["IPYTHONDIR"] == str(tmp_path / "k" / "ipython") and "tqdm.std" in startup.read_text()


def test_cell_timeout_and_kernel_death_are_named_as_such(fake_root, tmp_path, capsys):
    """A cell past --cell-timeout and a kernel that dies are reported with their cause, not as an interrupt."""
    _write(fake_root / "notebooks" / "00_slow.ipynb", [_params(), new_code_cell("import time\ntime.sleep(30)")])
    _write(fake_root / "notebooks" / "01_dies.ipynb", [_params(), new_code_cell("import os\nos._exit(1)")])
    code = course.main(["run", "--output-dir", str(tmp_path / "out"), "--cell-timeout", "3", "--no-site"])
    failed = [l for l in capsys.readouterr().err.splitlines() if "FAILED" in l]
    assert code == 1 and len(failed) == 2, failed
    slow = next(l for l in failed if "00_slow" in l)
    dies = next(l for l in failed if "01_dies" in l)
    assert "3s cell timeout" in slow and "--cell-timeout" in slow and "KeyboardInterrupt" not in slow
    assert "kernel died" in dies and "KeyboardInterrupt" not in dies
