"""The data reports: realism skips cleanly without ../shared; the token report and info run on a tiny benchmark."""
from __future__ import annotations

import pytest

from h2arn.data import generate
from h2arn.data.__main__ import main


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
