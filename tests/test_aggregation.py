"""Contribution-aware aggregation: hand-computed weights, masking, gradients, positive temperature."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from h2arn import lorentz as L
from h2arn.aggregation import (ContributionAggregator, aggregate, bounded_exp, contribution_weights,
                               lift_tokens, masked_mean)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_masked_mean_ignores_padding():
    z = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(z, torch.tensor([[True, True, False]])).item() == pytest.approx(2.0)


@pytest.mark.parametrize("lift", ["expmap", "official"])
def test_weights_by_hand_on_the_hyperbolic_line(lift):
    # 1-D tokens: with expmap0 a token z sits at signed distance z from the origin; with the
    # official lift its space coordinate is z = sinh(r), so r = asinh(z). Distances along the line
    # are differences of these radii. Anchor = mean(0, 1, 5) = 2; the padded 1000 must not count.
    z = torch.tensor([[[0.0], [1.0], [5.0], [1000.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    T = 0.5
    radius = (lambda v: v) if lift == "expmap" else math.asinh
    d = [abs(radius(v) - radius(2.0)) for v in (0.0, 1.0, 5.0)]
    expected = _softmax([-x / T for x in d]) + [0.0]
    w = contribution_weights(z, mask, 1.0, T, lift=lift)
    assert w[0].tolist() == pytest.approx(expected, abs=1e-9)
    emb, w2 = aggregate(z, mask, 1.0, T, lift=lift)
    pooled = sum(wi * v for wi, v in zip(expected, (0.0, 1.0, 5.0)))
    assert torch.allclose(w, w2)
    assert torch.allclose(emb, lift_tokens(torch.tensor([[pooled]], dtype=torch.float64), 1.0, lift))


def _official_weights(z, c, T):
    """The official code's formulas, time coordinate LAST, float64 (oracle for lift='official')."""
    def lift(x):
        return torch.cat([x, torch.sqrt(1.0 / c + (x * x).sum(-1, keepdim=True))], dim=-1)

    def dist(u, v):
        lor = (u[..., :-1] * v[..., :-1]).sum(-1) - u[..., -1] * v[..., -1]
        return torch.acosh(torch.clamp(-c * lor, min=1 + 1e-7)) / math.sqrt(c)

    anchor = z.mean(dim=1, keepdim=True)
    return torch.softmax(-dist(lift(z), lift(anchor)) / T, dim=-1)


@pytest.mark.parametrize("c", [0.3, 1.0, 4.0])
def test_official_lift_matches_the_official_formulas(c):
    torch.manual_seed(0)
    z = torch.randn(3, 7, 5, dtype=torch.float64) * 0.4
    w = contribution_weights(z, torch.ones(3, 7, dtype=torch.bool), c, 0.2, lift="official")
    assert torch.allclose(w, _official_weights(z, c, 0.2), atol=1e-9)


def test_euclidean_weights_by_hand_and_unit_output():
    z = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]])     # anchor (3, 4); distances 5, 0, 5
    w = contribution_weights(z, torch.ones(1, 3, dtype=torch.bool), None, 1.0, geometry="euclidean")
    assert w[0].tolist() == pytest.approx(_softmax([-5.0, 0.0, -5.0]), abs=1e-6)
    emb, _ = aggregate(z, torch.ones(1, 3, dtype=torch.bool), None, 1.0, geometry="euclidean")
    assert emb.shape == (1, 2)
    assert emb.norm(dim=-1).item() == pytest.approx(1.0, abs=1e-6)
    assert emb[0].tolist() == pytest.approx([0.6, 0.8], abs=1e-6)


def test_mean_mode_is_lifted_masked_mean():
    z = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    emb, w = aggregate(z, mask, 2.0, 0.07, mode="mean")
    assert torch.allclose(emb, L.expmap0(masked_mean(z, mask), 2.0), atol=1e-6)
    assert w[0].tolist() == pytest.approx([0.5, 0.5, 0, 0, 0])


@pytest.mark.parametrize("mode", ["contribution", "mean"])
@pytest.mark.parametrize("geometry", ["hyperbolic", "euclidean"])
def test_padding_garbage_changes_nothing(mode, geometry):
    torch.manual_seed(0)
    z = torch.randn(3, 4, 6) * 0.3
    mask = torch.ones(3, 4, dtype=torch.bool)
    garbage = torch.full((3, 5, 6), float("nan"))
    garbage[:, 1:] = 1e4
    z_pad = torch.cat([z, garbage], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    e1, w1 = aggregate(z, mask, 1.3, 0.07, geometry=geometry, mode=mode)
    e2, w2 = aggregate(z_pad, mask_pad, 1.3, 0.07, geometry=geometry, mode=mode)
    assert torch.allclose(e1, e2, atol=1e-6)
    assert torch.allclose(w1, w2[:, :4], atol=1e-6)
    assert (w2[:, 4:] == 0).all()


@pytest.mark.parametrize("lift", ["expmap", "official"])
def test_one_valid_token_gradient_finite_and_weight_one(lift):
    agg = ContributionAggregator(lift=lift)
    z = (torch.randn(2, 3, 5) * 0.2).requires_grad_(True)
    log_c = torch.zeros((), requires_grad=True)
    mask = torch.tensor([[True, False, False], [False, True, False]])
    emb, w = agg(z, mask, log_c.exp())
    assert w[0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert torch.allclose(emb[0], lift_tokens(z[0, 0].detach(), 1.0, lift), atol=1e-6)
    (emb[:, 1:].sum() + emb[:, 0].sum()).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(log_c.grad)
    assert torch.isfinite(agg.log_temp.grad)


def test_token_equal_to_anchor_gradient_finite():
    # the middle token equals the mean of a symmetric triple: d(token, anchor) = 0 exactly
    z = torch.tensor([[[0.1, -0.2], [0.3, 0.1], [0.5, 0.4]]]).requires_grad_(True)
    agg = ContributionAggregator()
    emb, w = agg(z, torch.ones(1, 3, dtype=torch.bool), torch.tensor(1.0))
    assert torch.allclose(z[0, 1], z[0].mean(0))
    assert w[0, 1] > w[0, 0] and w[0, 1] > w[0, 2]
    (emb ** 2).sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(agg.log_temp.grad)
    assert not torch.isnan(emb).any()


def test_all_padding_row_is_rejected():
    with pytest.raises(ValueError, match="no valid token"):
        aggregate(torch.randn(2, 3, 4), torch.tensor([[True, False, False], [False, False, False]]), 1.0, 0.1)


def test_bad_options_rejected():
    with pytest.raises(ValueError):
        ContributionAggregator(lift="logmap")
    with pytest.raises(ValueError):
        aggregate(torch.randn(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), 1.0, 0.1, mode="max")


def test_temperature_stays_positive_after_a_step_that_pushes_it_negative():
    agg = ContributionAggregator(temp_init=0.07)
    opt = torch.optim.SGD(agg.parameters(), lr=10.0)
    # d(loss)/dT = 1: a raw parameter would become 0.07 - 10 = -9.93 (the official code's T)
    agg.temperature().backward()
    opt.step()
    t = agg.temperature().item()
    assert t > 0 and t >= agg.temp_min
    agg.project_parameters_()
    assert math.log(agg.temp_min) <= agg.log_temp.item() <= math.log(agg.temp_max)


def test_bounded_exp_clamps_value_but_keeps_gradient():
    x = torch.tensor(5.0, requires_grad=True)       # exp(5) = 148 > hi = 10
    y = bounded_exp(x, 0.1, 10.0)
    assert y.item() == pytest.approx(10.0)
    y.backward()
    assert x.grad.item() == pytest.approx(10.0)     # d/dx exp(x) at the clamped value, not 0
    x2 = torch.tensor(-20.0, requires_grad=True)
    y2 = bounded_exp(x2, None, 1.0)
    assert y2.item() == pytest.approx(math.exp(-20.0))


@pytest.mark.parametrize("lift", ["expmap", "official"])
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_both_lifts_land_on_the_manifold(lift, c):
    torch.manual_seed(0)
    # float32, radii up to ~1 (the alpha-scaled regime): <h,h>_L = -1/c to float32 rounding
    v = torch.randn(64, 16) * torch.logspace(-4, -0.5, 64).unsqueeze(1)
    h = lift_tokens(v, c, lift)
    assert h.shape == (64, 17) and h.dtype == torch.float32
    assert torch.allclose(c * L.inner(h, h), torch.full((64,), -1.0), atol=1e-4)
    assert (h[:, 0] > 0).all()
    # float64, radii up to the exp map's saturation: relative to x_0^2 (the cancellation scale)
    v64 = torch.randn(64, 16, dtype=torch.float64) * torch.logspace(-4, 1, 64, dtype=torch.float64).unsqueeze(1)
    h64 = lift_tokens(v64, c, lift)
    err = (c * L.inner(h64, h64) + 1.0).abs()
    assert (err <= 1e-12 * (1.0 + c * h64[:, 0] ** 2)).all()
    assert torch.isfinite(h64).all()


def test_expmap_and_official_lift_differ_as_documented():
    # exp map: distance to origin = ||v||; direct lift: asinh(||v||) (grows only logarithmically)
    v = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    assert L.dist0(lift_tokens(v, 1.0, "expmap"), 1.0).item() == pytest.approx(2.0)
    assert L.dist0(lift_tokens(v, 1.0, "official"), 1.0).item() == pytest.approx(math.asinh(2.0))


@pytest.mark.parametrize("lift", ["expmap", "official"])
def test_gradcheck_float64(lift):
    torch.manual_seed(0)
    z = (torch.randn(2, 4, 3, dtype=torch.float64) * 0.5).requires_grad_(True)
    c = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    assert torch.autograd.gradcheck(lambda z_, c_, t_: aggregate(z_, mask, c_, t_, lift=lift)[0], (z, c, T))



@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(1, 6), scale=st.sampled_from([1e-4, 0.1, 1.0, 5.0]),
       temp=st.sampled_from([1e-3, 0.07, 1.0]), lift=st.sampled_from(["expmap", "official"]),
       geometry=st.sampled_from(["hyperbolic", "euclidean"]))
def test_weights_are_a_distribution_and_finite(seed, length, scale, temp, lift, geometry):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, length, 4, generator=g) * scale
    mask = torch.rand(3, length, generator=g) > 0.4
    mask[:, 0] = True
    emb, w = aggregate(z, mask, 1.0, temp, lift=lift, geometry=geometry)
    assert torch.isfinite(emb).all() and torch.isfinite(w).all()
    assert torch.allclose(w.sum(-1), torch.ones(3), atol=1e-5)
    assert (w[~mask] == 0).all() and (w >= 0).all()
    if geometry == "hyperbolic":
        err = (L.inner(emb, emb) + 1.0).abs()                  # c = 1; tolerance relative to x_0^2 (cancellation)
        assert (err <= 1e-5 * (1.0 + emb[:, 0] ** 2)).all()
