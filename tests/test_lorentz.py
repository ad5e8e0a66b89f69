"""Property tests for h2arn.lorentz over dtypes (float32, float64), curvatures c in [0.1, 10] and
tangent norms up to 20, plus oracle cross-checks against Ganea's Poincaré-ball cone formulas and geoopt.

Tolerances are relative to the magnitude of the coordinates involved: in float32 the constraint
``-c<x,x>_L = 1`` can only hold to ~eps * c * x_0^2, and tests that pretend otherwise either fail
spuriously or use tolerances so loose they cannot fail.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2arn import lorentz as L

DTYPES = [torch.float32, torch.float64]
REL = {torch.float32: 2e-5, torch.float64: 1e-11}
settings.register_profile("h2arn", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("h2arn")

dtypes = st.sampled_from(DTYPES)
curvatures = st.floats(min_value=0.1, max_value=10.0)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def tangent(seed: int, n: int, dim: int, max_norm: float, dtype, min_norm: float = 0.0) -> torch.Tensor:
    """Random tangent vectors at the origin with norms uniform in [min_norm, max_norm]."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, dim, generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    norms = min_norm + (max_norm - min_norm) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return (direction * norms).to(dtype)


def points(seed, n, dim, c, max_radius, dtype):
    """Points whose hyperbolic radius sqrt(c)*d(o, x) is at most max_radius."""
    return L.expmap0(tangent(seed, n, dim, max_radius / math.sqrt(c), dtype), c)


# --------------------------------------------------------------------------- manifold & maps

@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_expmap0_points_stay_on_hyperboloid(dtype, c, seed):
    x = L.expmap0(tangent(seed, 64, 8, 20.0, dtype), c)
    assert torch.isfinite(x).all()
    assert (x[..., 0] > 0).all()
    residual = (c * L.inner(x, x) + 1.0).abs()
    scale = c * x[..., 0].double() ** 2   # rounding error of <x,x>_L grows with x_0^2
    assert (residual <= 8 * torch.finfo(dtype).eps * scale + REL[dtype]).all(), residual.max()


@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_exp_log_at_origin_invert_and_saturate(dtype, c, seed):
    v = tangent(seed, 64, 8, 20.0, dtype)
    back = L.logmap0(L.expmap0(v, c), c)
    r = math.sqrt(c) * v.norm(dim=-1, keepdim=True)
    r_max = L.max_radius(dtype)
    # below the documented saturation radius: exact inverse; above it: clamped to that radius
    expected = torch.where(r <= r_max, v, v * (r_max / r))
    assert torch.allclose(back, expected, rtol=50 * REL[dtype], atol=REL[dtype])


@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_distance_to_origin_is_tangent_norm(dtype, c, seed):
    v = tangent(seed, 32, 5, 20.0, dtype)
    x = L.expmap0(v, c)
    expected = torch.clamp(v.norm(dim=-1), max=L.max_radius(dtype) / math.sqrt(c))
    assert torch.allclose(L.dist0(x, c), expected, rtol=50 * REL[dtype], atol=REL[dtype])
    o = L.origin(5, c, dtype=dtype).expand_as(x)
    assert torch.allclose(L.dist(o, x, c), expected, rtol=1e-3 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_map_at_origin_is_accurate_at_tiny_radii(dtype):
    v = torch.tensor([[1e-6, 0.0, 0.0], [0.0, 1e-3, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    back = L.logmap0(L.expmap0(v, 1.0), 1.0)
    assert torch.allclose(back, v, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)


@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_general_exp_log_invert_within_band(dtype, c, seed):
    band = 2.0 if dtype == torch.float32 else 5.0   # general maps cancel far from the origin (worse in float32)
    x = points(seed, 32, 6, c, band, dtype)
    y = points(seed + 1, 32, 6, c, band, dtype)
    u = L.logmap(x, y, c)
    scale = x[..., :1].abs() + y[..., :1].abs()
    tol = (1e-3 if dtype == torch.float32 else 1e-7) * scale
    assert (L.inner(x, u).abs().unsqueeze(-1) <= tol * scale).all()          # u is tangent at x
    d = L.dist(x, y, c)
    assert torch.allclose(L.tangent_norm(u), d, rtol=1e-3 if dtype == torch.float32 else 1e-8, atol=1e-4)
    assert ((L.expmap(x, u, c) - y).abs() <= tol).all()


# --------------------------------------------------------------------------- distances

@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_distance_symmetric_and_triangle_inequality(dtype, c, seed):
    x, y, z = (points(seed + k, 32, 4, c, 5.0, dtype) for k in range(3))
    dxy, dyx = L.dist(x, y, c), L.dist(y, x, c)
    assert torch.equal(dxy, dyx)
    slack = (1e-3 if dtype == torch.float32 else 1e-9) * (1 + dxy)
    assert (dxy <= L.dist(x, z, c) + L.dist(z, y, c) + slack).all()
    assert (dxy >= 0).all()


@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_self_distance_is_zero_with_finite_gradients(dtype, c, seed):
    x = points(seed, 32, 6, c, 8.0, dtype).requires_grad_(True)
    d = L.dist(x, x.detach().clone(), c)
    assert (d.abs() < 1e-6).all()
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    # the same through the GEMM form (its diagonal is a self-distance too)
    x2 = x.detach().clone().requires_grad_(True)
    pd = L.pairwise_dist(x2, x2, c)
    pd.sum().backward()
    assert torch.isfinite(pd).all() and torch.isfinite(x2.grad).all()


@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_pairwise_equals_elementwise(dtype, c, seed):
    x = points(seed, 17, 6, c, 4.0, dtype)
    y = points(seed + 7, 9, 6, c, 4.0, dtype)
    pw = L.pairwise_dist(x, y, c)
    ew = L.dist(x[:, None, :], y[None, :, :], c)
    assert pw.shape == (17, 9)
    assert torch.allclose(pw, ew, rtol=1e-3 if dtype == torch.float32 else 1e-9, atol=2e-3 if dtype == torch.float32 else 1e-9)
    with torch.no_grad():   # the in-place fast path must agree with the autograd path
        assert torch.allclose(L.pairwise_dist(x, y, c), pw)
    assert torch.allclose(L.pairwise_inner(x, y), L.inner(x[:, None], y[None]), rtol=1e-5, atol=1e-4)


def test_chord_distance_beats_acosh_for_close_points_in_float32():
    """For the same float32 coordinates, the chord form computed in float32 matches its float64
    evaluation, while acosh(-c<x,y>_L) in float32 loses the answer to cancellation. (How well float32
    coordinates at radius 5 can *represent* a 1e-2 displacement is a separate, input-side limit.)"""
    c = 1.0
    x32 = L.expmap0(tangent(0, 64, 8, 5.0, torch.float32, min_norm=5.0), c)
    y32 = L.expmap(x32, 1e-2 * _unit_tangent(x32, c), c)             # ~1e-2 away
    truth = L.dist(x32.double(), y32.double(), c)                      # same coordinates, float64
    chord_err = ((L.dist(x32, y32, c).double() - truth).abs() / truth).max()
    acosh = torch.acosh((-c * L.inner(x32, y32)).clamp_min(1.0)).double()
    acosh_err = ((acosh - truth).abs() / truth).max()
    assert chord_err < 1e-3 and acosh_err > 0.1, (chord_err, acosh_err)


def _unit_tangent(x: torch.Tensor, c: float) -> torch.Tensor:
    """A unit-length tangent vector at each x (project a random vector onto the tangent space)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(x.shape, generator=g, dtype=x.dtype)
    u = w + c * L.inner(x, w, keepdim=True) * x
    return u / L.tangent_norm(u, keepdim=True)


# --------------------------------------------------------------------------- Poincaré & cones

@given(dtype=dtypes, c=curvatures, seed=seeds)
def test_poincare_round_trip(dtype, c, seed):
    x = points(seed, 32, 3, c, 4.0, dtype)
    p = L.to_poincare(x, c)
    assert (p.norm(dim=-1) < 1.0 / math.sqrt(c)).all()
    back = L.from_poincare(p, c)
    assert torch.allclose(back, x, rtol=1e-3 if dtype == torch.float32 else 1e-9, atol=1e-4)


def ganea_half_aperture(p: torch.Tensor, K: float) -> torch.Tensor:
    """Ganea et al. 2018 psi(x) in the unit Poincaré ball."""
    n = p.norm(dim=-1)
    return torch.asin((K * (1 - n * n) / n).clamp(-1, 1))


def ganea_exterior_angle(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Ganea et al. 2018 Xi(x, y) in the unit Poincaré ball (float64, as their reference code)."""
    dot = (p * q).sum(-1)
    np2, nq2 = (p * p).sum(-1), (q * q).sum(-1)
    num = dot * (1 + np2) - np2 * (1 + nq2)
    den = p.norm(dim=-1) * (p - q).norm(dim=-1) * torch.sqrt(1 + np2 * nq2 - 2 * dot)
    return torch.acos((num / den).clamp(-1 + 1e-7, 1 - 1e-7))


@given(c=curvatures, seed=seeds)
def test_cones_agree_with_ganea_poincare_formulas(c, seed):
    x = points(seed, 64, 3, c, 3.0, torch.float64)
    y = points(seed + 3, 64, 3, c, 3.0, torch.float64)
    # Ganea's formulas live in the unit ball: rescale the radius-1/sqrt(c) ball (angles are invariant)
    px, py = math.sqrt(c) * L.to_poincare(x, c), math.sqrt(c) * L.to_poincare(y, c)
    K = 0.1
    outside = x[:, 1:].norm(dim=-1) * math.sqrt(c) > 2 * K * 1.01   # psi is defined outside the K-ball
    assert torch.allclose(L.half_aperture(x, c, K)[outside], ganea_half_aperture(px, K)[outside], atol=1e-9)
    ours, theirs = L.exterior_angle(x, y, c), ganea_exterior_angle(px, py)
    unclamped = theirs.cos().abs() < 1 - 1e-6          # Ganea's reference clamps its cosine at 1 - 1e-7
    assert torch.allclose(ours[unclamped], theirs[unclamped], atol=1e-6)
    pw = L.pairwise_exterior_angle(x[:8], y[:5], c)
    assert torch.allclose(pw, L.exterior_angle(x[:8, None], y[None, :5], c), atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_cone_geometry_facts(dtype, c):
    v = tangent(3, 16, 4, 3.0 / math.sqrt(c), dtype, min_norm=0.5 / math.sqrt(c))
    x = L.expmap0(v, c)
    further = L.expmap0(v * 1.5, c)           # same ray, further out: inside the cone, angle ~ 0
    angle = L.exterior_angle(x, further, c)
    assert (angle < L.half_aperture(x, c)).all()
    assert (angle < (2e-2 if dtype == torch.float32 else 1e-6)).all()
    behind = L.expmap0(-v, c)                  # opposite side of the origin: far outside
    assert (L.exterior_angle(x, behind, c) > L.half_aperture(x, c)).all()
    # aperture shrinks away from the origin and saturates at ~pi/2 near it
    ha = L.half_aperture(L.expmap0(v[:1] * torch.linspace(0.01, 3, 20, dtype=dtype)[:, None], c), c)
    assert (ha[1:] <= ha[:-1] + 1e-7).all()
    assert ha[0] > math.pi / 2 - 0.01
    assert (L.half_aperture(L.origin(4, c, dtype=dtype)[None], c) < math.pi / 2).all()


# --------------------------------------------------------------------------- no NaN anywhere

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_no_nan_values_or_gradients_at_edge_inputs(dtype, c):
    scales = torch.tensor([0.0, 1e-15, 1e-8, 1e-4, 1.0, 10.0, 20.0], dtype=dtype)
    v = (scales[:, None] * torch.ones(1, 3, dtype=dtype)).requires_grad_(True)
    x = L.expmap0(v, c)
    y = L.expmap0(v.flip(0), c)
    outs = [x, L.logmap0(x, c), L.dist(x, x, c), L.dist(x, y, c), L.dist0(x, c), L.half_aperture(x, c),
            L.exterior_angle(x, y, c), L.exterior_angle(x, x, c), L.pairwise_dist(x, y, c),
            L.centroid(x[None], None, c), L.to_poincare(x, c)]
    for out in outs:
        assert torch.isfinite(out).all()
    total = sum(o.sum() for o in outs)
    total.backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_learnable_curvature_gets_finite_gradient(dtype):
    log_c = torch.zeros((), dtype=dtype, requires_grad=True)
    v = tangent(5, 8, 4, 2.0, dtype)
    x = L.expmap0(v, log_c.exp())
    loss = L.dist(x[:4], x[4:], log_c.exp()).sum() + L.half_aperture(x, log_c.exp()).sum()
    loss.backward()
    assert torch.isfinite(log_c.grad) and log_c.grad != 0


def test_centroid_properties():
    c = 0.7
    x = points(11, 5, 3, c, 3.0, torch.float64)
    assert torch.allclose(L.centroid(x[:1], None, c), x[0])
    mu = L.centroid(x, torch.softmax(torch.randn(5, dtype=torch.float64), 0), c)
    assert torch.allclose(c * L.inner(mu, mu), torch.tensor(-1.0, dtype=torch.float64))
    # for two points the centroid is the geodesic midpoint: equidistant
    m = L.centroid(x[:2], None, c)
    assert torch.allclose(L.dist(m, x[0], c), L.dist(m, x[1], c), rtol=1e-9)


def test_float32_epsilons_are_not_no_ops():
    for dtype in (torch.float16, torch.float32, torch.float64):
        one = torch.tensor(1.0, dtype=dtype)
        assert one - L.eps(dtype) < one and one + L.eps(dtype) > one


# --------------------------------------------------------------------------- geoopt oracle

@pytest.fixture(scope="module")
def geoopt_lorentz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        geoopt = pytest.importorskip("geoopt")
    return geoopt.Lorentz


@pytest.mark.parametrize("c", [0.1, 0.5, 1.0, 3.0, 10.0])
def test_matches_geoopt_after_converting_curvature(geoopt_lorentz, c):
    manifold = geoopt_lorentz(k=L.to_geoopt_k(c))
    v = tangent(c.__hash__() % 1000, 32, 6, 3.0 / math.sqrt(c), torch.float64)
    ours = L.expmap0(v, c)
    u = torch.cat([torch.zeros(32, 1, dtype=torch.float64), v], dim=-1)
    theirs = manifold.expmap0(u)
    # geoopt clamps its tangent norms (1e-8 under the sqrt), so agreement is ~1e-8, not 1e-15;
    # a curvature-convention slip would show up as O(1) differences.
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    theirs_log = manifold.logmap0(ours)
    assert theirs_log[:, 0].abs().max() < 1e-5                      # geoopt: tangent at its origin
    assert torch.allclose(theirs_log[:, 1:], L.logmap0(ours, c), rtol=1e-5, atol=1e-7)
    y = L.expmap0(tangent(7, 32, 6, 3.0 / math.sqrt(c), torch.float64), c)
    assert torch.allclose(manifold.dist(ours, y), L.dist(ours, y, c), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------- the saturation radius in every dtype

ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _at_radius(r: float, c: float, dtype, dim: int = 8) -> torch.Tensor:
    """Two tangent vectors of radius sqrt(c)*|v| = r pointing in opposite directions (the farthest pair)."""
    d = torch.zeros(2, dim, dtype=torch.float64)
    d[0, 0], d[1, 0] = 1.0, -1.0
    return (d * (r / math.sqrt(c))).to(dtype)


def _geometry_outputs(x: torch.Tensor, c: float) -> dict:
    return {"points": x, "logmap0": L.logmap0(x, c), "dist": L.dist(x[:1], x[1:], c), "dist0": L.dist0(x, c),
            "self_dist": L.dist(x, x, c), "pairwise_dist": L.pairwise_dist(x, x, c), "inner": L.pairwise_inner(x, x),
            "half_aperture": L.half_aperture(x, c), "exterior_angle": L.exterior_angle(x[:1], x[1:], c),
            "pairwise_exterior_angle": L.pairwise_exterior_angle(x, x, c), "centroid": L.centroid(x[None], None, c)}


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_everything_is_finite_at_and_beyond_the_saturation_radius(dtype, c):
    """At max_radius(dtype, c) (and far beyond it, where expmap0 clamps) no coordinate, distance or angle overflows.
    Before the fix float16 claimed 11 while x_0 overflowed from r ~ 6.2 and distances from r ~ 5.5."""
    r_max = L.max_radius(dtype, c)
    for r in (r_max, 2 * r_max, 1e4):
        x = L.expmap0(_at_radius(r, c, dtype), c)
        for name, out in _geometry_outputs(x, c).items():
            assert torch.isfinite(out).all(), (name, r, dtype, c)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_the_bound_is_where_saturation_starts(dtype, c):
    """Below the bound log inverts exp (to the dtype's precision); at twice it the radius is clamped to the bound."""
    r_max = L.max_radius(dtype, c)
    rel = {torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4, torch.float64: 1e-9}[dtype]
    v = _at_radius(0.99 * r_max, c, dtype)
    back = L.logmap0(L.expmap0(v, c), c)
    assert torch.allclose(back.double(), v.double(), rtol=rel, atol=rel)
    over = L.logmap0(L.expmap0(_at_radius(2 * r_max, c, dtype), c), c)
    radius = math.sqrt(c) * over.double().norm(dim=-1)
    assert torch.allclose(radius, torch.full_like(radius, r_max), rtol=rel)


def test_float16_bound_is_the_time_coordinate_overflow():
    """The bound is where 4 x_0^2 reaches float16's largest value: a little beyond it the time coordinate
    of the unclamped point no longer fits, so the clamp is needed exactly there."""
    big = torch.finfo(torch.float16).max
    for c in (0.1, 1.0, 10.0):
        r_max = L.max_radius(torch.float16, c)
        x0_sq = math.cosh(r_max) ** 2 / c
        assert 4 * max(x0_sq, c * x0_sq) == pytest.approx(big, rel=1e-6)
        assert r_max < 6.0                       # the old fixed bound (11) let x_0 overflow from r ~ 6.2
    assert L.max_radius(torch.float32, 1.0) == 15.0 and L.max_radius(torch.float64, 1.0) == 300.0


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tensor_curvature_uses_the_same_bound(dtype):
    c = 0.1
    v = _at_radius(1e3, c, dtype)
    as_float = L.expmap0(v, c)
    as_tensor = L.expmap0(v, torch.tensor(c, dtype=dtype))
    assert torch.isfinite(as_tensor).all()
    assert torch.allclose(as_float.double(), as_tensor.double(), rtol=1e-2)
