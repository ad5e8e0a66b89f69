"""Losses against hand-computed small cases: contrastive (multi-positive) and entailment cone."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from h2arn import lorentz as L
from h2arn.losses import (H2ARNLoss, entailment_cone_loss, multi_positive_contrastive, positive_mask)
from h2arn.model import H2ARN, LossConfig, ModelConfig


def softplus_log(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------- contrastive

def test_contrastive_2x2_by_hand():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    pos = torch.eye(2, dtype=torch.bool)
    # rows (text->3D): -log(e^2/(e^2+e^0)) = log(1+e^-2); -log(e^3/(e^1+e^3)) = log(1+e^-2)
    t2p = 0.5 * (softplus_log(-2.0) + softplus_log(-2.0))
    # columns (3D->text): col0 = (2, 1) target 2 -> log(1+e^-1); col1 = (0, 3) target 3 -> log(1+e^-3)
    p2t = 0.5 * (softplus_log(-1.0) + softplus_log(-3.0))
    loss, a, b = multi_positive_contrastive(logits, pos, return_terms=True)
    assert a.item() == pytest.approx(t2p, abs=1e-6)
    assert b.item() == pytest.approx(p2t, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * (t2p + p2t), abs=1e-6)
    assert multi_positive_contrastive(logits, pos).item() == pytest.approx(0.5 * (t2p + p2t), abs=1e-6)


def test_contrastive_with_identity_mask_is_clip_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(7, 7)
    target = torch.arange(7)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    got = multi_positive_contrastive(logits, torch.eye(7, dtype=torch.bool))
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)


def test_contrastive_multi_positive_by_hand():
    # captions 0 and 1 describe the same cloud: both cloud columns 0 and 1 are positives for both rows
    pc_idx = torch.tensor([5, 5, 9])
    pos = positive_mask(pc_idx)
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.5, 2.0, 1.0], [0.0, 0.0, 0.0]])
    e = math.exp
    rows = [-math.log((e(1) + e(1)) / (e(1) + e(1) + e(0))),
            -math.log((e(0.5) + e(2)) / (e(0.5) + e(2) + e(1))),
            -math.log(e(0) / (3 * e(0)))]
    cols = [-math.log((e(1) + e(0.5)) / (e(1) + e(0.5) + e(0))),
            -math.log((e(1) + e(2)) / (e(1) + e(2) + e(0))),
            -math.log(e(0) / (e(0) + e(1) + e(0)))]
    _, t2p, p2t = multi_positive_contrastive(logits, pos, return_terms=True)
    assert t2p.item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    assert p2t.item() == pytest.approx(sum(cols) / 3, abs=1e-6)


def test_duplicate_cloud_is_not_a_false_negative():
    # two captions of one shape, identical logits for both copies of the cloud: multi-positive CE
    # is lower than diagonal-only CE (which would push the duplicate away)
    logits = torch.tensor([[3.0, 3.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    multi = multi_positive_contrastive(logits, positive_mask(torch.tensor([0, 0, 1])))
    diag = multi_positive_contrastive(logits, torch.eye(3, dtype=torch.bool))
    assert multi.item() < diag.item() - 0.3


def test_contrastive_rejects_rows_without_positive():
    pos = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_contrastive(torch.zeros(2, 2), pos)


# --------------------------------------------------------------------------- entailment cone

def _on_ray(radius: float, direction=(1.0, 0.0), c: float = 1.0) -> torch.Tensor:
    """Point at hyperbolic distance ``radius`` from the origin along ``direction`` (2-D toy), float64."""
    v = torch.tensor(direction, dtype=torch.float64)
    return L.expmap0(radius * v / v.norm(), c)


def test_cone_loss_zero_when_cloud_beyond_text_on_its_ray():
    text = _on_ray(1.0).unsqueeze(0)
    cloud = _on_ray(2.0).unsqueeze(0)
    loss, active = entailment_cone_loss(text, cloud, torch.ones(1, 1, dtype=torch.bool), 1.0, 0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert active == 0.0


def test_cone_loss_by_hand_when_cloud_behind_text():
    # cloud between origin and text on the same ray: exterior angle = pi, so
    # loss = pi - half_aperture = pi - asin(2K / (sqrt(c) * sinh(1)))  (||x_s|| = sinh(r)/sqrt(c))
    c, K = 1.0, 0.1
    text = _on_ray(1.0).unsqueeze(0)
    cloud = _on_ray(0.5).unsqueeze(0)
    loss, active = entailment_cone_loss(text, cloud, torch.ones(1, 1, dtype=torch.bool), c, K)
    expected = math.pi - math.asin(2 * K / math.sinh(1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert active == 1.0


def test_text_is_the_apex_not_the_cloud():
    inner, outer = _on_ray(0.5).unsqueeze(0), _on_ray(1.5).unsqueeze(0)
    one = torch.ones(1, 1, dtype=torch.bool)
    generic_text, _ = entailment_cone_loss(inner, outer, one, 1.0, 0.1)      # text near origin: fine
    specific_text, _ = entailment_cone_loss(outer, inner, one, 1.0, 0.1)     # text beyond the cloud: penalised
    assert generic_text.item() == pytest.approx(0.0, abs=1e-6)
    assert specific_text.item() > 1.0


def test_cone_loss_outside_cone_positive_and_only_positive_pairs_count():
    c, K = 1.0, 0.1
    texts = torch.stack([_on_ray(2.0, (1.0, 0.0)), _on_ray(2.0, (0.0, 1.0))])
    # cloud 0 inside text 0's cone (same ray, further out); cloud 1 far from text 1's axis (outside)
    clouds = torch.stack([_on_ray(3.0, (1.0, 0.0)), _on_ray(3.0, (1.0, -1.0))])
    hinge = torch.relu(L.pairwise_exterior_angle(texts, clouds, c) - L.half_aperture(texts, c, K).unsqueeze(1))
    assert hinge[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert hinge[1, 1].item() > 0.5 and hinge[0, 1].item() > 0.1 and hinge[1, 0].item() > 0.5
    loss, active = entailment_cone_loss(texts, clouds, torch.eye(2, dtype=torch.bool), c, K)
    assert loss.item() == pytest.approx(0.5 * hinge[1, 1].item(), abs=1e-9)
    assert active == 0.5
    # with every pair positive the negatives' hinges enter: the mean over 4 pairs
    loss_all, active_all = entailment_cone_loss(texts, clouds, torch.ones(2, 2, dtype=torch.bool), c, K)
    assert loss_all.item() == pytest.approx(hinge.mean().item(), abs=1e-9)
    assert active_all == 0.75


def test_cone_loss_gradient_finite_for_identical_and_on_axis_points():
    x = _on_ray(1.0).float().unsqueeze(0).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    loss, _ = entailment_cone_loss(x, y, torch.ones(1, 1, dtype=torch.bool), 1.0, 0.1)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


# --------------------------------------------------------------------------- H2ARNLoss

def _tiny_model(**kw) -> H2ARN:
    torch.manual_seed(0)
    cfg = ModelConfig(d_txt=8, d_pcd=6, d_model=8, nhead=2, num_layers=1, dropout=0.0, **kw)
    return H2ARN(cfg)


def _batch(model: H2ARN, b: int = 5):
    g = torch.Generator().manual_seed(1)
    txt = torch.randn(b, 4, 8, generator=g)
    pc = torch.randn(b, 3, 6, generator=g)
    ones = lambda t: torch.ones(t.shape[:2], dtype=torch.bool)  # noqa: E731
    return model(txt, ones(txt), pc, ones(pc))


def test_h2arn_loss_total_is_contrastive_plus_weighted_cone():
    model = _tiny_model()
    t, p = _batch(model)
    pc_idx = torch.tensor([0, 0, 1, 2, 2])
    total, logs = H2ARNLoss(LossConfig(tau=0.1, cone_weight=0.2))(model, t, p, pc_idx)
    pos = positive_mask(pc_idx)
    cont = multi_positive_contrastive(-L.pairwise_dist(t, p, model.curvature()) / 0.1, pos)
    ent, active = entailment_cone_loss(t, p, pos, model.curvature(), 0.1)
    assert total.item() == pytest.approx((cont + 0.2 * ent).item(), rel=1e-5)
    assert logs["contrastive"] == pytest.approx(cont.item(), rel=1e-5)
    assert logs["entailment"] == pytest.approx(ent.item(), rel=1e-5)
    assert logs["entail_active_frac"] == active
    for key in ("loss", "contrastive", "contrastive_t2p", "contrastive_p2t", "entailment",
                "entail_active_frac", "curvature", "alpha_txt", "alpha_pcd", "temp_txt", "temp_pcd"):
        assert key in logs and math.isfinite(logs[key])
    total.backward()
    assert model.log_c.grad is not None and torch.isfinite(model.log_c.grad)
    assert model.log_c.grad.abs().item() > 0


def test_inner_logits_follow_the_official_code():
    model = _tiny_model()
    t, p = _batch(model)
    pc_idx = torch.arange(5)
    _, logs = H2ARNLoss(LossConfig(logits="inner", cone_weight=0.0))(model, t, p, pc_idx)
    expected = multi_positive_contrastive(L.pairwise_inner(t, p) / 0.07, torch.eye(5, dtype=torch.bool))
    assert logs["contrastive"] == pytest.approx(expected.item(), rel=1e-5)
    _, logs_dist = H2ARNLoss(LossConfig(logits="distance", cone_weight=0.0))(model, t, p, pc_idx)
    assert logs_dist["contrastive"] != pytest.approx(logs["contrastive"], rel=1e-3)


def test_cone_weight_zero_still_logs_cone_but_total_is_contrastive():
    model = _tiny_model()
    t, p = _batch(model)
    total, logs = H2ARNLoss(LossConfig(cone_weight=0.0))(model, t, p, torch.arange(5))
    assert total.item() == pytest.approx(logs["contrastive"], rel=1e-6)
    assert logs["entailment"] > 0 and logs["entailment_weighted"] == 0.0


def test_euclidean_baseline_has_no_cone_and_says_so():
    model = _tiny_model(geometry="euclidean")
    t, p = _batch(model)
    total, logs = H2ARNLoss(LossConfig(cone_weight=0.2))(model, t, p, torch.arange(5))
    assert logs["entailment"] == 0.0 and logs["entailment_defined"] == 0.0
    cos = F.normalize(t, dim=-1) @ F.normalize(p, dim=-1).t()
    expected = multi_positive_contrastive(cos / 0.07, torch.eye(5, dtype=torch.bool))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_config_validation_and_roundtrip():
    cfg = LossConfig(tau=0.05, cone_weight=0.1, K=0.2, logits="inner")
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        LossConfig(tau=0.0)
    with pytest.raises(ValueError):
        LossConfig(logits="cosine")
    with pytest.raises(ValueError, match="unknown"):
        LossConfig.from_dict({"tau": 0.1, "lambda": 0.2})
