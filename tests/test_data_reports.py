"""The data reports: realism skips cleanly without ../shared; the token report and info run on a tiny benchmark;
the committed block of data/README.md shows the numbers of data/report.json, from the current generator.

Cheap on purpose: nothing heavy is regenerated; the committed JSON is compared with the README and with the
current generator version (and, where ../shared is present, with the shared files it read). Times are never
compared: they are the measuring machine's.
"""
from __future__ import annotations

import pytest

from h2arn.data import generate
from h2arn.data import report as R
from h2arn.data.__main__ import main
from h2arn.data.synthetic import GENERATOR_VERSION
from h2arn.docs_blocks import marked_block, replace_marked_block


def test_realism_skips_cleanly_without_shared_assets(monkeypatch, capsys):
    import h2arn.encoders.weights as W

    monkeypatch.setattr(W, "shared_pointnet_path", lambda: None)
    assert main(["realism"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("realism report skipped:") and "H2ARN_SHARED" in out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate("ci", 0, tmp_path_factory.mktemp("tiny") / "d", progress=False, leaves=1, train_per_leaf=1)


def test_token_report_and_info(tiny, capsys):
    from h2arn.data.redundancy import token_share_report

    rep = token_share_report(tiny, "val", num_points=256, num_tokens=16)
    assert set(rep) == {"Elephant", "S3DIS"}
    for row in rep.values():
        assert 0 < row["points"] < 0.5
        assert 0 <= row["spatial"]["mostly_redundant_tokens"] <= 1 and row["index"]["mixed_tokens"] > 0
    assert main(["info", str(tiny)]) == 0
    assert "Elephant/test: 3 shapes" in capsys.readouterr().out


# --------------------------------------------------------------------------- the committed data report

COMMIT = "and commit data/README.md and data/report.json"


@pytest.fixture(scope="module")
def committed() -> dict:
    path = R.report_json_path()
    assert path.is_file(), f"{path} is missing. Fix: rerun `{R.rerun_command(R.PARTS)}` {COMMIT}"
    return R.load_report(path)


def test_readme_block_shows_the_numbers_of_the_committed_json(committed):
    text = R.readme_path().read_text(encoding="utf-8")
    block = marked_block(text, R.REPORT_BEGIN, R.REPORT_END)
    assert block is not None, f"data/README.md lost its data-report block. Fix: restore the markers, rerun " \
                              f"`{R.rerun_command(R.PARTS)}` {COMMIT}"
    assert block == R.render_block(committed), \
        f"data/README.md's data-report block differs from data/report.json (edited by hand?). Fix: rerun " \
        f"`{R.rerun_command(R.DEFAULT_PARTS)}` {COMMIT}"


def test_committed_report_has_every_part_from_the_current_generator(committed):
    missing = [p for p in R.PARTS if p not in committed["parts"]]
    assert not missing, f"data/report.json lacks {missing}. Fix: rerun `{R.rerun_command(missing)}` {COMMIT}"
    stale = R.stale_parts(committed)
    versions = sorted({committed["parts"][p].get("generator_version") for p in stale}, key=str)
    assert not stale, f"data/report.json parts {stale} were measured with generator version {versions}, not the " \
                      f"current v{GENERATOR_VERSION} (stale). Fix: rerun `{R.rerun_command(stale)}` {COMMIT}"
    for part, entry in committed["parts"].items():
        assert entry["command"] and entry["machine"]["cores"] and entry["measured"], part


def test_committed_realism_read_the_current_shared_files(committed):
    from h2arn.data.realism import input_records, real_shapes_dir
    from h2arn.encoders.weights import shared_pointnet_path

    real, ckpt = real_shapes_dir(), shared_pointnet_path()
    if real is None or ckpt is None:
        pytest.skip("../shared (real_shapes_dev, the ModelNet40 PointNet) not available")
    stored = committed["parts"]["realism"]["result"]["inputs"]
    assert stored == input_records(real, ckpt), \
        f"the shared real clouds or PointNet changed since data/report.json was measured. Fix: rerun " \
        f"`{R.rerun_command(['realism'])}` {COMMIT}"


def test_replace_marked_block_touches_only_the_block():
    text = "prose 1\n<!-- x:begin -->\nold 0.5\n<!-- x:end -->\nprose 2\n"
    new = replace_marked_block(text, "<!-- x:begin -->", "<!-- x:end -->", "<!-- x:begin -->\nnew\n<!-- x:end -->")
    assert new == "prose 1\n<!-- x:begin -->\nnew\n<!-- x:end -->\nprose 2\n"
    assert marked_block(new, "<!-- x:begin -->", "<!-- x:end -->") == "<!-- x:begin -->\nnew\n<!-- x:end -->"
    assert marked_block("no markers", "<!-- x:begin -->", "<!-- x:end -->") is None
    assert replace_marked_block("a", "<b>", "<e>", "<b>x<e>") == "a\n\n<b>x<e>\n"


def test_write_merges_parts_and_rewrites_only_the_block(committed, tiny, tmp_path, monkeypatch):
    import json

    readme = tmp_path / "README.md"
    readme.write_text(f"# prose\n\n{R.REPORT_BEGIN}\nstale row\n{R.REPORT_END}\n\nmore prose\n", encoding="utf-8")
    monkeypatch.setattr(R, "readme_path", lambda: readme)
    monkeypatch.setattr(R, "report_json_path", lambda: tmp_path / "report.json")
    monkeypatch.setitem(R.MEASURES, "tokens", ("python -m h2arn.data tokens", lambda: {
        "profile": "ci", "split": "val", "num_points": 256, "num_tokens": 16, "subsets": _tiny_tokens(tiny)}))
    old = {p: committed["parts"][p] for p in ("realism", "generation-ci")}
    R.write_report(old)
    R.write_report(R.measure(["tokens"], progress=False))
    stored = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert list(stored["parts"]) == ["realism", "tokens", "generation-ci"]  # merged, in README order
    assert stored["parts"]["realism"] == old["realism"]
    assert stored["parts"]["tokens"]["generator_version"] == GENERATOR_VERSION
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# prose\n\n") and text.endswith(f"{R.REPORT_END}\n\nmore prose\n") and "stale row" not in text
    points = stored["parts"]["tokens"]["result"]["subsets"]["Elephant"]["points"]
    assert f"{100 * points:.1f} % redundant points" in text


def _tiny_tokens(root):
    from h2arn.data.redundancy import token_share_report

    return token_share_report(root, "val", num_points=256, num_tokens=16)


def test_report_write_refuses_before_measuring(monkeypatch, capsys):
    import h2arn.encoders.weights as W

    monkeypatch.setattr(W, "shared_pointnet_path", lambda: None)
    monkeypatch.setattr(R, "measure", lambda *a, **k: pytest.fail("measured before refusing"))
    assert main(["report", "--write"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the realism part is not measurable here") and "\n" not in err
    assert main(["report", "--parts", "colour"]) == 2
    assert "--parts: unknown part(s) ['colour']" in capsys.readouterr().err
