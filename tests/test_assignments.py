"""Exercises: solutions pass their checks, stubs and wrong answers fail with useful messages, student copies are current."""
from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest
import torch

from h2arn import lorentz as L
from h2arn.course.assignments import CHECKS, CheckFailure, NotImplementedYet, check, run_check
from h2arn.course.assignments.__main__ import main as cli
from h2arn.course.assignments.generate import (EXERCISE_TAG, SOLUTION_TAG, AssignmentError, exercise_calls, generate,
                                        load_functions, masters, stale_notebooks, stub_source, student_notebook)
from h2arn.paths import repo_root

ROOT = repo_root()
NOTEBOOKS = ROOT / "notebooks"
ASSIGNMENTS = ROOT / "assignments"


def _solution_exercises():
    """(notebook, check name, function) for every checked solution function in the master notebooks."""
    out = []
    for path in masters(NOTEBOOKS):
        nb = nbformat.read(str(path), as_version=4)
        functions = load_functions(nb, SOLUTION_TAG, path.name)
        for call in exercise_calls(nb, path.name):
            if call.function in functions:
                out.append(pytest.param(call.check, functions[call.function], id=f"{path.stem}:{call.check}"))
    return out


SOLUTIONS = _solution_exercises()


# --------------------------------------------------------------------------- solutions and student copies

@pytest.mark.parametrize("name,fn", SOLUTIONS)
def test_solution_passes_its_check(name, fn):
    assert run_check(name, fn) > 0


def test_every_check_has_a_solution_in_some_notebook():
    covered = {p.values[0] for p in SOLUTIONS}
    assert covered == set(CHECKS), f"checks without a solution cell: {sorted(set(CHECKS) - covered)}"


def test_committed_student_notebooks_are_up_to_date():
    problems = stale_notebooks(NOTEBOOKS, ASSIGNMENTS)
    assert problems == [], "\n".join(problems) + "\nFix: python -m h2arn.course.assignments generate"


@pytest.mark.parametrize("path", sorted(ASSIGNMENTS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_student_stubs_fail_as_not_implemented(path):
    nb = nbformat.read(str(path), as_version=4)
    assert not any(SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    stubs = load_functions(nb, EXERCISE_TAG, path.name)
    calls = [c for c in exercise_calls(nb, path.name) if c.function in stubs]
    assert calls, f"{path.name} has no exercise"
    for call in calls:
        with pytest.raises(NotImplementedYet, match="not implemented yet") as info:
            run_check(call.check, stubs[call.function])
        assert "replace the `raise NotImplementedError" in str(info.value)
        assert isinstance(info.value, AssertionError)


# --------------------------------------------------------------------------- wrong answers are caught, with hints

def _inner(x, y):
    return -x[..., 0] * y[..., 0] + (x[..., 1:] * y[..., 1:]).sum(-1)


def test_textbook_acosh_distance_fails_on_near_pairs_and_missing_inverse_sqrt_c_is_too_small():
    def textbook(x, y, c):
        """acosh form, clamped: right for far pairs, the chapter's catastrophic cancellation for near ones."""
        return torch.acosh((-c * _inner(x, y)).clamp_min(1.0)) / math.sqrt(c)

    def no_sqrt_c(x, y, c):
        return torch.acosh((-c * _inner(x, y)).clamp_min(1.0))

    with pytest.raises(CheckFailure) as info:
        check("dist", textbook)
    msg = str(info.value)
    assert "NEAR pairs" in msg and "float32" in msg and "chord form" in msg
    with pytest.raises(CheckFailure) as info:
        check("dist", no_sqrt_c)
    msg = str(info.value)
    assert "1/sqrt(c) is missing" in msg and "too small at c=0.25" in msg and "too large" not in msg
    assert "expected" in msg and "got" in msg and "c=0.25" in msg and "x[" in msg


def test_logmap0_with_arccosh_fails_near_the_origin_in_float32():
    def via_arccosh(x, c):
        sqrt_c = math.sqrt(c)
        xs = x[..., 1:]
        norm = xs.norm(dim=-1, keepdim=True).clamp_min(1e-15)
        return torch.acosh((sqrt_c * x[..., :1]).clamp_min(1.0)) / (sqrt_c * norm) * xs

    with pytest.raises(CheckFailure) as info:
        check("logmap0", via_arccosh)
    msg = str(info.value)
    assert "very near the origin" in msg and "float32" in msg and "asinh" in msg


def test_exterior_angle_hints_do_not_hand_over_the_formula():
    def wrong(x, y, c):
        return L.exterior_angle(x, y, c) * 1.1

    with pytest.raises(CheckFailure) as info:
        check("exterior_angle", wrong)
    assert "section 6" in str(info.value) and "acos(" not in str(info.value)


def test_unclamped_acosh_reports_nan_at_identical_points():
    def unclamped(x, y, c):
        return torch.acosh(-c * _inner(x, y)) / math.sqrt(c)

    with pytest.raises(CheckFailure, match="clamp"):
        check("dist", unclamped)


def test_expmap0_mistakes_get_specific_hints():
    def time_last(v, c):
        x = L.expmap0(v, c)
        return torch.cat([x[..., 1:], x[..., :1]], -1)

    def direct_lift(v, c):
        return L.lift(v, c)

    def naive(v, c):
        r = math.sqrt(c) * v.norm(dim=-1, keepdim=True)
        xs = torch.sinh(r) / r * v
        return torch.cat([torch.sqrt(1 / c + (xs * xs).sum(-1, keepdim=True)), xs], -1)

    with pytest.raises(CheckFailure, match="time coordinate is LAST"):
        check("expmap0", time_last)
    with pytest.raises(CheckFailure, match="direct lift"):
        check("expmap0", direct_lift)
    with pytest.raises(CheckFailure, match="zero vector") as info:
        check("expmap0", naive)
    assert "0/0" in str(info.value)


def test_wrong_shape_and_dtype_and_inplace_are_reported():
    with pytest.raises(CheckFailure, match="wrong output shape"):
        check("logmap0", lambda x, c: x)
    with pytest.raises(CheckFailure, match="float32"):
        check("dist", lambda x, y, c: L.dist(x, y, c).float())

    def inplace(x, c):
        x.mul_(1.0 + 1e-3)
        return L.logmap0(x, c)

    with pytest.raises(CheckFailure, match="in place"):
        check("logmap0", inplace)

    def crashes(x, y, c):
        return x @ y

    with pytest.raises(CheckFailure, match="raised RuntimeError"):
        check("exterior_angle", crashes)


def test_cone_mistakes():
    def no_clamp(x, c, K=0.1):
        return torch.asin(2 * K / (math.sqrt(c) * x[..., 1:].norm(dim=-1)))

    def swapped(x, y, c):
        return L.exterior_angle(y, x, c)

    with pytest.raises(CheckFailure, match="clamp"):
        check("half_aperture", no_clamp)
    with pytest.raises(CheckFailure, match="arguments swapped"):
        check("exterior_angle", swapped)


def test_model_exercise_mistakes():
    def padded_anchor(z, mask, c, temperature):
        d = L.dist(L.expmap0(z, c), L.expmap0(z.mean(-2), c).unsqueeze(-2), c)
        return torch.softmax((-d / temperature).masked_fill(~mask, float("-inf")), -1)

    def one_direction(logits, pos_mask):
        return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), 1)).mean()

    def ties_against(sim, txt_to_pc, k):
        target = sim.gather(1, txt_to_pc.unsqueeze(1))
        return 100.0 * float((((sim >= target).sum(1)) <= k).double().mean())

    def fraction(sim, txt_to_pc, k):
        target = sim.gather(1, txt_to_pc.unsqueeze(1))
        return float(((1 + (sim > target).sum(1)) <= k).double().mean())

    with pytest.raises(CheckFailure, match="anchor includes the padding"):
        check("contribution_weights", padded_anchor)
    with pytest.raises(CheckFailure, match="only one direction"):
        check("contrastive_loss", one_direction)
    with pytest.raises(CheckFailure, match="favour of the target"):
        check("recall_at_k", ties_against)
    with pytest.raises(CheckFailure, match="percentage"):
        check("recall_at_k", fraction)


def test_checks_are_deterministic_and_cover_dtypes_and_curvatures():
    for name, spec in CHECKS.items():
        a, b = list(spec.cases()), list(spec.cases())
        assert len(a) == len(b) > 0
        for ca, cb in zip(a, b):
            for x, y in zip(ca.args, cb.args):
                assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        labels = " ".join(cs.label for cs in a)
        if name not in ("recall_at_k", "lr_schedule"):
            assert "float32" in labels and "float64" in labels, name
        if name in ("expmap0", "logmap0", "dist", "half_aperture", "exterior_angle", "contribution_weights"):
            assert all(f"c={c}" in labels for c in (0.25, 1.0, 4.0)), name


def test_new_chapter_exercise_mistakes():
    from h2arn.encoders.tokens import pool_tokens
    from h2arn.losses import entailment_cone_loss

    def map_with_self(dist, related):
        aps = []
        for u in range(len(dist)):
            if not bool(related[u].any()):
                continue
            ranks = torch.nonzero(related[u][torch.argsort(dist[u].double())]).flatten().double() + 1
            aps.append(float((torch.arange(1, len(ranks) + 1) / ranks).mean()))
        return sum(aps) / len(aps)

    def index_pooling(feats, xyz, num_tokens):
        return pool_tokens(feats, xyz, num_tokens, "index")[0]

    def cone_over_all_pairs(text_emb, cloud_emb, pos_mask, c, K):
        ext = L.pairwise_exterior_angle(text_emb, cloud_emb, c)
        return torch.relu(ext - L.half_aperture(text_emb, c, K).unsqueeze(1)).mean()

    def cloud_apex(text_emb, cloud_emb, pos_mask, c, K):
        return entailment_cone_loss(cloud_emb, text_emb, pos_mask.T, c, K)[0]

    def warmup_off_by_one(step, total_steps, warmup_steps):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    def no_clamp(step, total_steps, warmup_steps):
        if step < warmup_steps:
            return step / warmup_steps
        return (total_steps - step) / max(1, total_steps - warmup_steps)

    def divided_by_all_shapes(sim, txt_level, txt_label, pc_labels):
        relevant = pc_labels[:, txt_level].T == txt_label.unsqueeze(1)
        hits = relevant.gather(1, torch.argsort(sim, dim=1, descending=True)).double()
        precision = hits.cumsum(1) / torch.arange(1, sim.shape[1] + 1, dtype=torch.float64)
        return 100.0 * float(((precision * hits).sum(1) / sim.shape[1]).mean())

    def inverted_cone(text, cloud, c, K):
        return L.exterior_angle(text, cloud, c) > L.half_aperture(text, c, K)

    def time_not_negated(q):
        return torch.cat([q, torch.zeros_like(q[..., :1])], dim=-1)

    def no_sqrt(x, phi_sq):
        return torch.cat([x, phi_sq - (x * x).sum(-1, keepdim=True)], dim=-1)

    for name, fn, hint in [("ranking_map", map_with_self, "query node itself"),
                           ("spatial_pooling", index_pooling, "consecutive runs of the point ORDER"),
                           ("cone_loss", cone_over_all_pairs, "POSITIVE pairs only"),
                           ("cone_loss", cloud_apex, "TEXT is the apex"),
                           ("lr_schedule", warmup_off_by_one, "starts at 0 at step 0"),
                           ("lr_schedule", no_clamp, "clamp it with max(0.0"),
                           ("hierarchical_map", divided_by_all_shapes, "RELEVANT shapes: divide by their number"),
                           ("in_cone", inverted_cone, "inverted"),
                           ("mips_queries", time_not_negated, "negate the query's time coordinate"),
                           ("mips_points", no_sqrt, "SQUARE ROOT")]:
        with pytest.raises(CheckFailure) as info:
            check(name, fn)
        assert hint in str(info.value), f"{name}/{fn.__name__}: {info.value}"


def test_unknown_check_and_non_callable():
    with pytest.raises(KeyError, match="unknown check"):
        check("distance", lambda x: x)
    with pytest.raises(TypeError, match="your function itself"):
        check("dist", 3.0)


# --------------------------------------------------------------------------- the generator

SOLUTION_CELL = '''# helper comment kept
import torch


@torch.no_grad()
def my_dist(x, y, c):
    """Distance (the docstring stays)."""
    # this comment is part of the solution and must go
    return secret(x, y, c)


def helper(a,
           b=2):
    """Multi-line signature."""
    return a + b
'''


def test_stub_source_keeps_signature_docstring_and_imports():
    stub = stub_source(SOLUTION_CELL)
    assert "# helper comment kept" in stub and "import torch" in stub
    assert "@torch.no_grad()\ndef my_dist(x, y, c):\n    \"\"\"Distance (the docstring stays).\"\"\"\n" in stub
    assert "def helper(a,\n           b=2):" in stub
    assert "secret" not in stub and "this comment is part of the solution" not in stub
    assert stub.count('raise NotImplementedError("Exercise: implement') == 2
    ns: dict = {}
    exec(stub, ns)
    with pytest.raises(NotImplementedError):
        ns["my_dist"](1, 2, 3)


@pytest.mark.parametrize("source,match", [
    ("x = 1\ndef f():\n    \"\"\"d\"\"\"\n    return x\n", "only imports and function definitions"),
    ("def f():\n    return 1\n", "no docstring"),
    ("import torch\n", "at least one function"),
    ("def f(:\n", "does not parse"),
])
def test_stub_source_refuses_cells_that_would_lose_code(source, match):
    with pytest.raises(AssignmentError, match=match):
        stub_source(source, "nb.ipynb, cell 3")


def _master(tmp_path: Path, check_line: str = 'check("dist", my_dist)', name: str = "01_demo.ipynb") -> Path:
    nb = nbformat.v4.new_notebook()
    sol = nbformat.v4.new_code_cell('import torch\n\n\ndef my_dist(x, y, c):\n    """Distance."""\n'
                                    '    return L.dist(x, y, c)\n')
    sol.metadata["tags"] = [SOLUTION_TAG]
    nb.cells = [nbformat.v4.new_markdown_cell("# demo"),
                nbformat.v4.new_code_cell("from h2arn import lorentz as L\nfrom h2arn.course.assignments import check"),
                sol, nbformat.v4.new_code_cell(check_line)]
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def test_generate_check_cli_round_trip(tmp_path):
    src, dest = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    _master(src)
    assert cli(["check", "--source", str(src), "--dest", str(dest)]) == 1          # missing
    assert cli(["generate", "--source", str(src), "--dest", str(dest)]) == 0
    assert cli(["check", "--source", str(src), "--dest", str(dest)]) == 0
    student = nbformat.read(str(dest / "01_demo.ipynb"), as_version=4)
    assert student.cells[0].cell_type == "markdown" and "Student version" in student.cells[0].source
    ex = [c for c in student.cells if EXERCISE_TAG in c.metadata.get("tags", [])]
    assert len(ex) == 1 and "NotImplementedError" in ex[0].source and "L.dist" not in ex[0].source
    # grading: the master passes, the student copy is "not done"
    assert cli(["grade", str(src / "01_demo.ipynb")]) == 0
    assert cli(["grade", str(dest / "01_demo.ipynb")]) == 1
    # an edit to the master makes the copy stale; an orphan copy is reported too
    nb = nbformat.read(str(src / "01_demo.ipynb"), as_version=4)
    nb.cells[0].source = "# demo, edited"
    nbformat.write(nb, str(src / "01_demo.ipynb"))
    nbformat.write(student, str(dest / "02_orphan.ipynb"))
    problems = stale_notebooks(src, dest)
    assert any(p.startswith("01_demo.ipynb: out of date") for p in problems)
    assert any(p.startswith("02_orphan.ipynb: no master") for p in problems)
    assert cli(["check", "--source", str(src), "--dest", str(dest)]) == 1


def test_generator_validates_check_calls(tmp_path):
    nb = nbformat.read(str(_master(tmp_path, 'check("distance", my_dist)')), as_version=4)
    with pytest.raises(AssignmentError, match="unknown check"):
        student_notebook(nb, "01_demo.ipynb")
    nb = nbformat.read(str(_master(tmp_path, "print('no check')", "02_demo.ipynb")), as_version=4)
    with pytest.raises(AssignmentError, match="never checked"):
        student_notebook(nb, "02_demo.ipynb")
    # generate writes nothing for a folder without solution cells
    empty = tmp_path / "empty"
    empty.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), str(empty / "03_plain.ipynb"))
    assert generate(empty, tmp_path / "none") == []


def test_riemannian_step_mistakes_get_specific_hints():
    """Chapter 02's exercise: forgetting the time-sign flip, k for c, or the exp map is named in the hint."""
    def step(flip=True, scale=lambda c: c, retract="exp"):
        def fn(x, egrad, lr, c):
            h = torch.cat([-egrad[..., :1], egrad[..., 1:]], dim=-1) if flip else egrad
            u = -lr * (h + scale(c) * L.inner(x, h, keepdim=True) * x)
            if retract == "project":
                return L.project(x + u, c)
            r = math.sqrt(c) * L.inner(u, u, keepdim=True).clamp_min(1e-30).sqrt()
            return L.project(torch.cosh(r) * x + torch.sinh(r) / r * u, c)
        return fn

    assert run_check("riemannian_sgd_step", step()) > 0
    with pytest.raises(CheckFailure, match="flip the sign of its TIME"):
        check("riemannian_sgd_step", step(flip=False))
    with pytest.raises(CheckFailure, match="curvature convention"):
        check("riemannian_sgd_step", step(scale=lambda c: 1.0 / c))
    with pytest.raises(CheckFailure, match="retracted by projection"):
        check("riemannian_sgd_step", step(retract="project"))


def test_readme_table_lists_every_student_notebook_and_check():
    readme = (ASSIGNMENTS / "README.md").read_text()
    for path in sorted(ASSIGNMENTS.glob("[0-9][0-9]_*.ipynb")):
        assert f"| `{path.name}` |" in readme, path.name
    for name in CHECKS:
        assert f"`{name}`:" in readme, name


def test_every_chapter_from_01_to_09_has_a_checked_exercise():
    chapters = {param.id[:2] for param in SOLUTIONS}
    assert chapters >= {f"{n:02d}" for n in range(1, 10)}, sorted(chapters)
