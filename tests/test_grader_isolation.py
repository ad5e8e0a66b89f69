"""The grader survives students: every hostile or broken exercise is FAILED on its own, the others are graded.

One student notebook holds a correct `dist` and a dozen broken or hostile ones (each checked with
`check("dist", ...)`); a single `grade` run (one sandboxed zygote, one forked child per exercise) must
pass the correct one and fail every other one with its reason, leave the files outside the sandbox
alone, and never print PASSED for code that did not compute the answer.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import nbformat
import pytest

from h2arn.course.assignments.__main__ import main as cli
from h2arn.course.assignments.generate import EXERCISE_TAG
from h2arn.course.assignments.grade import grade_notebook
from h2arn.course.assignments.sandbox import Limits
from h2arn.paths import repo_root

SECRET = "H2ARN_GRADER_TEST_SECRET"

CORRECT = '''
def my_ok(x, y, c):
    """Stable distance: chord form for near pairs."""
    inner = -x[..., 0] * y[..., 0] + (x[..., 1:] * y[..., 1:]).sum(-1)
    d = x - y
    w = (0.5 * c * (-d[..., 0] ** 2 + (d[..., 1:] ** 2).sum(-1))).clamp_min(0)
    near = 2 / math.sqrt(c) * torch.asinh(torch.sqrt(0.5 * w))
    far = torch.acosh((-c * inner).clamp_min(2.0)) / math.sqrt(c)
    return torch.where(-c * inner > 2.0, far, near)
'''


def _attacks(precious: str) -> dict[str, str]:
    """function name -> source of its exercise cell."""
    return {
        "my_syntax": 'def my_syntax(x, y, c):\n    """d"""\n    return (x +\n',
        "my_raises": 'def my_raises(x, y, c):\n    """d"""\n    raise ValueError("boom")\n',
        "my_cell_raises": '1 / 0\n\ndef my_cell_raises(x, y, c):\n    """d"""\n    return x\n',
        "my_loop": 'def my_loop(x, y, c):\n    """d"""\n    while True:\n        pass\n',
        "my_sleep": 'import time\n\ndef my_sleep(x, y, c):\n    """d"""\n    time.sleep(1000)\n',
        "my_memory": 'def my_memory(x, y, c):\n    """d"""\n    hog = bytearray(8 * 2**30)\n    return hog\n',
        "my_exit": 'import sys\n\ndef my_exit(x, y, c):\n    """d"""\n    sys.exit(0)\n',
        "my_os_exit": 'import os\n\ndef my_os_exit(x, y, c):\n    """d"""\n    os._exit(0)\n',
        "my_env": ('import os\n\ndef my_env(x, y, c):\n    """d"""\n'
                   f'    if os.environ.get("{SECRET}") != "visible":\n        raise KeyError("no secret")\n'
                   '    return L.dist(x, y, c)\n'),
        "my_delete": ('import os, shutil\n\ndef my_delete(x, y, c):\n    """d"""\n'
                      f'    os.remove({precious!r})\n    return L.dist(x, y, c)\n'),
        "my_rmtree": ('import os, shutil\n\ndef my_rmtree(x, y, c):\n    """d"""\n'
                      f'    shutil.rmtree(os.path.dirname({precious!r}))\n    return L.dist(x, y, c)\n'),
        "my_overwrite": ('def my_overwrite(x, y, c):\n    """d"""\n'
                         f'    open({precious!r}, "w").write("gone")\n    return L.dist(x, y, c)\n'),
        "my_patch": ('import torch\nimport h2arn.course.assignments.checks as C\n\n'
                     'def my_patch(x, y, c):\n    """d"""\n'
                     '    C._compare = lambda *a, **k: None\n    C.run_check = lambda *a, **k: 99\n'
                     '    C.judge = lambda *a, **k: 99\n    torch.allclose = lambda *a, **k: True\n'
                     '    torch.equal = lambda *a, **k: True\n'
                     '    print("PASSED       dist                   my_patch (8 cases)")\n'
                     '    return torch.zeros(x.shape[:-1], dtype=x.dtype)\n'),
        "my_fake_result": ('import torch, atexit\n\ndef my_fake_result(x, y, c):\n    """d"""\n'
                           '    atexit.register(lambda: torch.save({"status": "ok", "outputs": [], "args_after": []},'
                           ' "result.pt"))\n    return torch.zeros(x.shape[:-1], dtype=x.dtype)\n'),
        "my_subprocess": ('import subprocess\n\ndef my_subprocess(x, y, c):\n    """d"""\n'
                          '    subprocess.run(["true"])\n    return L.dist(x, y, c)\n'),
    }


def _student_notebook(path, precious: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import math\nimport torch\nfrom h2arn import lorentz as L\n"
                                          "from h2arn.course.assignments import check")]
    functions = {"my_ok": CORRECT, **_attacks(precious)}
    for name, source in functions.items():
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [EXERCISE_TAG]
        nb.cells += [cell, nbformat.v4.new_code_cell(f'check("dist", {name})')]
    nbformat.write(nb, str(path))
    return list(functions)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the hostile notebook once (module scope: one zygote for all the tests below)."""
    tmp = tmp_path_factory.mktemp("grader")
    precious_dir = tmp / "checkout"
    precious_dir.mkdir()
    precious = precious_dir / "precious.txt"
    precious.write_text("keep me")
    os.chmod(tmp, 0o755)
    path = tmp / "01_student.ipynb"
    names = _student_notebook(path, str(precious))
    os.environ[SECRET] = "visible"
    out = io.StringIO()
    try:
        code = grade_notebook(path, Limits(cpu_seconds=3, wall_seconds=6, memory_mib=1024), out=out)
    finally:
        del os.environ[SECRET]
    text = out.getvalue()
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("PASSED", "FAILED", "NOT") and len(parts) >= 3:
            current = parts[3] if parts[0] == "NOT" else parts[2]
            blocks[current] = line + "\n"
        elif current:
            blocks[current] += line + "\n"
    return {"code": code, "text": text, "blocks": blocks, "names": names, "precious": precious}


def test_correct_exercise_passes_despite_broken_neighbours(graded):
    assert graded["blocks"]["my_ok"].startswith("PASSED"), graded["text"]
    assert graded["code"] == 1
    assert f"1/{len(graded['names'])} exercises pass." in graded["text"]


def test_every_broken_or_hostile_exercise_fails_on_its_own(graded):
    for name in graded["names"]:
        if name != "my_ok":
            assert graded["blocks"][name].startswith("FAILED"), f"{name}:\n{graded['text']}"
    assert graded["text"].count("PASSED       ") == 1 + graded["text"].count("    | PASSED")


@pytest.mark.parametrize("name,reason", [
    ("my_syntax", "does not parse: SyntaxError"),
    ("my_raises", "raised ValueError: boom"),
    ("my_cell_raises", "its cell failed when run: ZeroDivisionError"),
    ("my_loop", "and was stopped: an infinite loop"),
    ("my_sleep", "wall clock"),
    ("my_memory", "MemoryError"),
    ("my_exit", "SystemExit"),
    ("my_os_exit", "before returning its results"),
    ("my_env", "KeyError"),
    ("my_delete", "does not allow os.remove"),
    ("my_rmtree", "does not allow shutil.rmtree"),
    ("my_overwrite", "does not allow writing"),
    ("my_patch", "wrong values"),
    ("my_fake_result", "wrong values"),
    ("my_subprocess", "does not allow subprocess.Popen"),
])
def test_failure_names_the_reason(graded, name, reason):
    assert reason in graded["blocks"][name], graded["blocks"][name]


def test_files_outside_the_sandbox_survive(graded):
    assert graded["precious"].read_text() == "keep me"


def test_student_output_is_shown_quoted_never_as_a_verdict(graded):
    assert "    | PASSED       dist                   my_patch" in graded["blocks"]["my_patch"]


def test_not_json_notebook_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "01_broken.ipynb"
    bad.write_text('{"cells": [ this is not json')
    proc = subprocess.run([sys.executable, "-m", "h2arn.course.assignments", "grade", str(bad)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo_root())})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a notebook: invalid JSON at line 1" in lines[0] and "Fix:" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_json_that_is_not_a_notebook_and_missing_file_exit_2(tmp_path, capsys):
    odd = tmp_path / "01_list.ipynb"
    odd.write_text("[1, 2, 3]")
    assert cli(["grade", str(odd)]) == 2
    assert cli(["grade", str(tmp_path / "nope.ipynb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a Jupyter notebook" in err[0] and "does not exist" in err[1]


def test_course_check_of_a_nonexistent_chapter_is_one_line_and_exit_2(capsys):
    from h2arn.course import runner

    assert runner.main(["check", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notebook '99' not found" in err[0] and "01_lorentz_geometry.ipynb" in err[0]
