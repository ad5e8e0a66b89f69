"""Section 3 training options: hierarchy-aware positives, own lr for the scalars, relative cone and temperature."""
from __future__ import annotations

import math

import pytest
import torch

import h2arn.train as T
from h2arn import lorentz as L
from h2arn.aggregation import contribution_weights, effective_tokens
from h2arn.losses import _multi_positive_ce, relative_K
from tests._fake_features import make_fake_features

TINY = dict(d_model=16, nhead=2, num_layers=1, batch_size=16, device="cpu", num_threads=1, num_epochs=2, seed=0)


def test_mean_reduction_averages_minus_log_p_over_positives():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    pos = torch.tensor([[True, True, False]])
    logp = logits.log_softmax(dim=1)[0]
    assert float(_multi_positive_ce(logits, pos, "mean")) == pytest.approx(float(-(logp[0] + logp[1]) / 2))
    assert float(_multi_positive_ce(logits, pos)) == pytest.approx(float(-torch.logsumexp(logp[:2], 0)), rel=1e-5)


def test_relative_K_gives_the_requested_aperture_at_the_mean_radius():
    t = L.expmap0(torch.tensor([[0.5, 0.0], [0.0, 0.5]]), 1.0)
    K = relative_K(t, 1.0, 0.8)
    assert float(L.half_aperture(t, 1.0, float(K))[0]) == pytest.approx(0.8, abs=1e-5)


def test_relative_temperature_is_scale_free_and_effective_tokens_counts():
    z = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    w1 = contribution_weights(z, mask, None, 1.0, geometry="euclidean", relative=True)
    w2 = contribution_weights(10 * z, mask, None, 1.0, geometry="euclidean", relative=True)
    assert torch.allclose(w1, w2, atol=1e-6)
    assert effective_tokens(torch.full((1, 4), 0.25)).item() == pytest.approx(4.0)
    assert effective_tokens(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(1.0)


def _add_caption_targets(feats) -> None:
    """Give the fake features benchmark-v4 caption meta: level-0 captions name the category, the others the instance."""
    import json

    for path in feats.glob("*_meta_*.json"):
        meta = json.loads(path.read_text())
        for m in meta:
            m["taxonomy_path"] = [m["category"]]
            m["target"] = ({"level": 0, "node": [m["category"]], "named": {}} if m["level"] == 0 else
                           {"level": m["level"], "node": [m["category"]], "named": {}, "shape": m["shape"]})
        path.write_text(json.dumps(meta))


def test_options_train_and_scalars_get_their_own_lr(tmp_path):
    feats = make_fake_features(tmp_path / "feats")
    _add_caption_targets(feats)
    links = dict(train_link=[str(feats / "Elephant_link_train.json")], val_link=[str(feats / "Elephant_link_val.json")])
    cfg = T.TrainConfig(**TINY, **links, run_dir=str(tmp_path / "run"), positives="hierarchy", scalar_lr=0.05,
                        cone_aperture=0.8, agg_temp_relative=True, agg_temp_init=1.0)
    out = T.train(cfg, quiet=True)
    rec = out["history"][-1]
    assert math.isfinite(rec["loss"]["loss"])
    base = T.train(T.TrainConfig(**TINY, **links, run_dir=str(tmp_path / "base")), quiet=True)["history"][-1]
    # 2 epochs x 3 steps: with lr 0.05 log c moves far more than with the shared 2e-3
    assert abs(math.log(rec["scalars"]["curvature"])) > 5 * abs(math.log(base["scalars"]["curvature"]))


def test_hierarchy_positives_need_caption_targets(tmp_path):
    feats = make_fake_features(tmp_path / "feats")     # no targets in this meta
    links = dict(train_link=[str(feats / "Elephant_link_train.json")], val_link=[str(feats / "Elephant_link_val.json")])
    with pytest.raises(T.FeatureError, match="positives hierarchy"):
        T.train(T.TrainConfig(**TINY, **links, run_dir=str(tmp_path / "run"), positives="hierarchy"), quiet=True)
