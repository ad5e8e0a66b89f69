r"""Lorentz (hyperboloid) model geometry: one module of pure functions.

Conventions (used by every module of this package, stated once here)
-------------------------------------------------------------------
* **Curvature.** ``c > 0`` is the curvature *magnitude*; the sectional curvature is ``-c``.
  Points satisfy ``<x, x>_L = -1/c`` with ``x_0 > 0``. Larger ``c`` means a more curved space
  and a Poincaré ball of smaller radius ``1/sqrt(c)``. ``c`` may be a Python float or a tensor
  that broadcasts against the batch dimensions (e.g. a learnable scalar).
  Rosetta: MERU ``curv = c``; geoopt ``Lorentz(k=1/c)`` (see :func:`to_geoopt_k`);
  HGCN ``K = 1/c``; the official H2ARN code ``c`` (same as here).
* **Coordinates.** Points are *ambient* tensors of shape ``(..., D+1)`` with the **time
  coordinate first**: ``x = (x_0, x_1..x_D)``. (The official H2ARN code keeps time *last*;
  MERU stores only the space part.) Tangent vectors at the origin are given as *space-only*
  tensors of shape ``(..., D)`` (their time entry is zero by definition).
* **Lorentz inner product** ``<x, y>_L = -x_0 y_0 + sum_i x_i y_i``.

Numerics (why the formulas look the way they do)
------------------------------------------------
* Epsilons are **dtype-aware** (:func:`eps`): MERU's ``1 + 1e-8`` is exactly ``1`` in float32,
  so its clamps are no-ops there and ``acos``/``acosh`` at 1 back-propagate ``inf``/``NaN``.
* Distances use the *chord* form ``d = 2/sqrt(c) * asinh(sqrt(c)/2 * ||x - y||_L)`` built from
  differences for nearby points (positives, token-to-anchor), where ``acosh(-c <x,y>_L)`` cancels
  catastrophically, and whose gradient at ``x == y`` is finite; far pairs use ``acosh``, where the
  chord form cancels instead (:func:`dist`).
* The log map at the origin uses ``asinh(sqrt(c)||x_s||)`` instead of ``acosh(sqrt(c) x_0)``.
* The exp map saturates at ``sqrt(c)||v|| = max_radius(dtype, c)`` (:func:`max_radius`): 15 in
  float32, 11 in bfloat16, 300 in float64 (precision limits), and in float16 where the time
  coordinate stops fitting: ``4 x_0^2 = 4 cosh(r)^2 / min(c, 1)`` must stay below 65504 so that
  ``x_0^2``, ``||x - y||^2 <= 4 x_0^2`` and ``c <x, y>_L`` of two such points are finite
  (r = 5.55 at c = 1, 4.39 at c = 0.1; the old fixed 11 let x_0 overflow from r ~ 6.2 and
  distances from r ~ 5.5). Beyond it the map is clamped, not wrong: points stay on the
  manifold, but exp/log no longer invert. This is documented and tested on both sides.
* The time coordinate is always recomputed from the space part (``sqrt(1/c + ||x_s||^2)``),
  so every point this module returns lies on the hyperboloid to rounding.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

Curvature = Union[float, Tensor]

__all__ = [
    "eps", "max_radius", "to_geoopt_k", "inner", "pairwise_inner", "tangent_norm",
    "time_from_space", "lift", "project", "origin", "expmap0", "logmap0", "expmap", "logmap",
    "dist", "dist0", "pairwise_dist", "to_poincare", "from_poincare", "half_aperture",
    "exterior_angle", "pairwise_exterior_angle", "centroid",
]

# precision limits of the radius sqrt(c)||v|| (see max_radius for the overflow limit that float16 adds)
_MAX_RADIUS = {torch.float16: 11.0, torch.bfloat16: 11.0, torch.float32: 15.0, torch.float64: 300.0}


def eps(dtype: torch.dtype) -> float:
    """Safety margin for clamps in ``dtype``: a few ulps of 1, so ``1 - eps(dtype) < 1`` holds.

    float32 -> 4.8e-7, float64 -> 8.9e-16, float16 -> 3.9e-3.
    """
    return 4.0 * torch.finfo(dtype).eps


def _tiny(dtype: torch.dtype) -> float:
    """Smallest positive normal number: the floor under ``sqrt`` so its gradient stays finite."""
    return torch.finfo(dtype).tiny


def max_radius(dtype: torch.dtype, c: float = 1.0) -> float:
    """Largest ``sqrt(c) * ||v||`` the exp map accepts in ``dtype`` (at curvature ``c``) before it saturates.

    The smaller of the precision limit (table above) and the overflow limit
    ``acosh(sqrt(finfo.max * min(c, 1)) / 2)``: at that radius ``4 x_0^2`` (and ``4 c x_0^2``) reach the
    largest finite number, so the time coordinate, chord lengths and inner products of two points stay
    finite. Only float16 is bound by overflow for curvatures in ``[1e-6, 1e6]``.
    """
    return min(_MAX_RADIUS.get(dtype, 15.0), _overflow_radius(torch.finfo(dtype).max * min(float(c), 1.0)))


def _overflow_radius(scaled_max: float) -> float:
    return math.acosh(max(1.0, math.sqrt(max(scaled_max, 0.0)) / 2.0))


def _radius_cap(dtype: torch.dtype, c: Curvature, ref: Tensor) -> Union[float, Tensor]:
    """:func:`max_radius` for a float or tensor curvature (a tensor cap broadcasts like ``_as_c``)."""
    if not torch.is_tensor(c):
        return max_radius(dtype, float(c))
    if dtype != torch.float16:   # the overflow limit is above the precision limit for any plausible c
        return _MAX_RADIUS.get(dtype, 15.0)
    c_t = _as_c(c.detach(), ref).float()
    cap = torch.acosh((c_t.clamp(max=1.0) * torch.finfo(dtype).max).sqrt().mul(0.5).clamp_min(1.0))
    return cap.clamp(max=_MAX_RADIUS[dtype]).to(dtype)


def _as_c(c: Curvature, ref: Tensor) -> Tensor:
    """Curvature as a tensor of ``ref``'s dtype/device, with a trailing axis for broadcasting."""
    c = torch.as_tensor(c, dtype=ref.dtype, device=ref.device)
    return c.unsqueeze(-1) if c.dim() > 0 else c


def to_geoopt_k(c: Curvature) -> Curvature:
    """geoopt's ``Lorentz(k)`` stores ``k = 1/c`` (its points satisfy ``<x,x>_L = -k``)."""
    return 1.0 / c


# --------------------------------------------------------------------------- inner products

def inner(x: Tensor, y: Tensor, keepdim: bool = False) -> Tensor:
    """Lorentz inner product ``-x_0 y_0 + <x_s, y_s>``.

    x, y: ``(..., D+1)`` (broadcastable). Returns ``(...)`` (or ``(..., 1)`` with keepdim).
    """
    prod = x * y
    out = prod[..., 1:].sum(dim=-1, keepdim=True) - prod[..., :1]
    return out if keepdim else out.squeeze(-1)


def pairwise_inner(x: Tensor, y: Tensor) -> Tensor:
    """All-pairs Lorentz inner products as ONE matrix product.

    x: ``(N, D+1)``, y: ``(M, D+1)`` -> ``(N, M)``. Flipping the sign of x's time coordinate
    turns the Lorentz product into an ordinary dot product (this is also why exact
    hyperbolic retrieval is maximum-inner-product search, see :mod:`h2arn.index`).
    """
    x_signed = torch.cat([-x[..., :1], x[..., 1:]], dim=-1)
    return x_signed @ y.transpose(-1, -2)


def tangent_norm(u: Tensor, keepdim: bool = False) -> Tensor:
    """Lorentz norm ``sqrt(max(<u,u>_L, 0))`` of tangent vectors ``u``: ``(..., D+1)`` -> ``(...)``."""
    sq = inner(u, u, keepdim=keepdim).clamp_min(_tiny(u.dtype))
    return sq.sqrt()


# --------------------------------------------------------------------------- points

def time_from_space(x_space: Tensor, c: Curvature) -> Tensor:
    """Time coordinate ``sqrt(1/c + ||x_s||^2)`` of the point with space part ``x_space``: ``(..., D)`` -> ``(..., 1)``."""
    c_t = _as_c(c, x_space)
    return torch.sqrt(1.0 / c_t + (x_space * x_space).sum(dim=-1, keepdim=True))


def lift(x_space: Tensor, c: Curvature) -> Tensor:
    """Put a Euclidean vector on the hyperboloid by using it as the space part: ``(..., D)`` -> ``(..., D+1)``.

    This is the official H2ARN code's map (``project_to_hyperboloid``). Unlike :func:`expmap0` it
    grows linearly, not exponentially, with ``||x||``; it is *not* the exp map the paper's Eq. 5
    writes. Both land on the manifold.
    """
    return torch.cat([time_from_space(x_space, c), x_space], dim=-1)


def project(x: Tensor, c: Curvature) -> Tensor:
    """Project an ambient vector onto the hyperboloid by recomputing its time coordinate: ``(..., D+1)``."""
    return lift(x[..., 1:], c)


def origin(dim: int, c: Curvature = 1.0, *, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None) -> Tensor:
    """The hyperboloid's origin ``(1/sqrt(c), 0, ..., 0)`` of shape ``(dim+1,)`` (``dim`` = space dimension)."""
    o = torch.zeros(dim + 1, dtype=dtype, device=device)
    o[0] = 1.0 / math.sqrt(float(c))
    return o


def _sinhc(s: Tensor) -> Tensor:
    """``sinh(s)/s`` with its Taylor series near 0 (no 0/0)."""
    small = s.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(s), s)
    return torch.where(small, 1.0 + s * s / 6.0, torch.sinh(safe) / safe)


def _asinhc(s: Tensor) -> Tensor:
    """``asinh(s)/s`` with its Taylor series near 0 (no 0/0)."""
    small = s.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(s), s)
    return torch.where(small, 1.0 - s * s / 6.0, torch.asinh(safe) / safe)


def expmap0(v: Tensor, c: Curvature) -> Tensor:
    """Exp map at the origin: space-only tangent ``(..., D)`` -> point ``(..., D+1)``.

    ``x_s = sinh(sqrt(c)||v||) / (sqrt(c)||v||) * v``; ``x_0`` from the constraint. The radius
    ``sqrt(c)||v||`` is clamped at :func:`max_radius` (15 in float32). This is the lift that
    the H2ARN paper's Eq. 5 writes.
    """
    sqrt_c = _as_c(c, v).sqrt()
    norm = v.norm(dim=-1, keepdim=True)
    r = sqrt_c * norm
    cap = _radius_cap(v.dtype, c, v)
    r_clamped = torch.minimum(r, cap) if torch.is_tensor(cap) else r.clamp_max(cap)
    # rescale v so that its radius is the clamped one (identity when not saturated)
    scale = torch.where(r > r_clamped, r_clamped / r.clamp_min(_tiny(v.dtype)), torch.ones_like(r))
    x_space = v * (scale * _sinhc(r_clamped))   # scale first: sinhc * v alone can overflow float16
    return lift(x_space, c)


def logmap0(x: Tensor, c: Curvature) -> Tensor:
    """Log map at the origin: point ``(..., D+1)`` -> space-only tangent ``(..., D)``.

    ``v = asinh(sqrt(c)||x_s||) / (sqrt(c)||x_s||) * x_s``: accurate at every radius, unlike
    ``acosh(sqrt(c) x_0)`` which loses everything below radius ~1e-4 in float32.
    """
    x_space = x[..., 1:]
    sqrt_c = _as_c(c, x).sqrt()
    r = sqrt_c * x_space.norm(dim=-1, keepdim=True)
    return _asinhc(r) * x_space


def expmap(x: Tensor, u: Tensor, c: Curvature) -> Tensor:
    """Exp map at a general base point: ``x`` ``(..., D+1)`` on the manifold, ``u`` ``(..., D+1)`` tangent at ``x``.

    ``exp_x(u) = cosh(sqrt(c)|u|) x + sinh(sqrt(c)|u|)/(sqrt(c)|u|) u`` with ``|u|`` the Lorentz norm,
    then projected back onto the manifold.
    """
    sqrt_c = _as_c(c, x).sqrt()
    n = tangent_norm(u, keepdim=True)
    r = sqrt_c * n
    cap = _radius_cap(x.dtype, c, x)
    r = torch.minimum(r, cap) if torch.is_tensor(cap) else r.clamp_max(cap)
    return project(torch.cosh(r) * x + _sinhc(r) * u, c)


def logmap(x: Tensor, y: Tensor, c: Curvature) -> Tensor:
    """Log map at a general base point: the tangent vector at ``x`` pointing to ``y`` with length ``d(x, y)``.

    x, y: ``(..., D+1)`` -> ``(..., D+1)``. ``u = y + c<x,y>_L x`` is the component of ``y``
    tangent at ``x``; it is rescaled to length :func:`dist`. Zero (with finite gradients) for ``x == y``.
    """
    c_t = _as_c(c, x)
    u = y + c_t * inner(x, y, keepdim=True) * x
    u_norm = tangent_norm(u, keepdim=True)
    d = dist(x, y, c, keepdim=True)
    return d / u_norm.clamp_min(eps(x.dtype) ** 2) * u


# --------------------------------------------------------------------------- distances

def dist(x: Tensor, y: Tensor, c: Curvature, keepdim: bool = False) -> Tensor:
    """Geodesic distance, accurate for near AND far points, finite gradient at ``x == y``.

    x, y: ``(..., D+1)`` (broadcastable) -> ``(...)``, values in ``[0, inf)``.
    Two estimates of ``cosh(sqrt(c) d)`` are formed: ``z = -c<x,y>_L`` from products (accurate when
    the points are far apart, ``z > 2``) and ``1 + w`` with ``w = c/2 <x-y, x-y>_L`` from the chord
    ``x - y`` (accurate when they are close, where ``z - 1`` cancels catastrophically). Near pairs use
    ``d = 2/sqrt(c) * asinh(sqrt(w/2))``, far pairs ``acosh(z)/sqrt(c)``; both branches have finite
    gradients everywhere, so ``torch.where`` is safe.
    """
    c_t = _as_c(c, x)
    sqrt_c = c_t.sqrt()
    diff = x - y
    w = (0.5 * c_t * inner(diff, diff, keepdim=True)).clamp_min(_tiny(diff.dtype))
    z = -c_t * inner(x, y, keepdim=True)
    near = 2.0 / sqrt_c * torch.asinh(torch.sqrt(0.5 * w))
    far = torch.acosh(z.clamp_min(2.0)) / sqrt_c
    d = torch.where(z > 2.0, far, near)
    return d if keepdim else d.squeeze(-1)


def dist0(x: Tensor, c: Curvature, keepdim: bool = False) -> Tensor:
    """Distance to the origin ``asinh(sqrt(c)||x_s||)/sqrt(c)``: ``(..., D+1)`` -> ``(...)``."""
    sqrt_c = _as_c(c, x).sqrt()
    d = torch.asinh(sqrt_c * x[..., 1:].norm(dim=-1, keepdim=True)) / sqrt_c
    return d if keepdim else d.squeeze(-1)


def pairwise_dist(x: Tensor, y: Tensor, c: Curvature) -> Tensor:
    """All-pairs distances from ONE matrix product: x ``(N, D+1)``, y ``(M, D+1)`` -> ``(N, M)``.

    ``z = -c<x,y>_L`` comes straight out of the GEMM (the sign flip and ``-c`` are folded into x).
    With autograd, ``d = 2/sqrt(c) * asinh(sqrt((z-1)/2))`` (the identity ``cosh t = 1 + 2 sinh^2(t/2)``)
    keeps the gradient finite where ``z = 1``. Without autograd (retrieval, evaluation) the result is
    ``log(z + sqrt(z^2 - 1)) / sqrt(c)``, computed in place on row blocks of the GEMM output while they
    are still in cache (``log`` and ``sqrt`` are vectorised on CPU, ``asinh`` is not): the cost is close
    to the GEMM alone (``benchmarks/bench_lorentz.py``). ``c`` must be a scalar. Accuracy for *very* close pairs is
    limited by cancellation inside the inner product (error ~ eps * c * x_0 * y_0); use :func:`dist` there.
    """
    c_t = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad or c_t.requires_grad)
    if c_t.dim() == 0 and not needs_grad and x.dim() == 2 and y.dim() == 2:
        return _pairwise_dist_inference(x, y, float(c_t))
    x_signed = torch.cat([-x[..., :1], x[..., 1:]], dim=-1)
    z = -c_t * (x_signed @ y.transpose(-1, -2)) - 1.0
    z = z.clamp_min(_tiny(x.dtype))
    return 2.0 / c_t.sqrt() * torch.asinh(torch.sqrt(0.5 * z))


# dtypes where z = cosh(d) of two points within max_radius can exceed sqrt(finfo.max) (float16 from d ~ 6.2,
# float64 near r = 300); float32 (z <= cosh(30) ~ 5e12) keeps the faster z^2 - 1
_SQUARE_OVERFLOWS = (torch.float16, torch.float64)
_BLOCK_ELEMENTS = 1 << 22   # ~16 MB of float32 per row block: the elementwise passes stay in cache


def _pairwise_dist_inference(x: Tensor, y: Tensor, c: float) -> Tensor:
    """No-autograd :func:`pairwise_dist`: row blocks of ``z = -c<x,y>_L`` from the GEMM, then
    ``log(z + sqrt(z^2 - 1)) / sqrt(c)`` in place while the block is still in cache."""
    n, m = x.shape[0], y.shape[0]
    x_scaled = torch.cat([x[:, :1] * c, x[:, 1:] * -c], dim=-1)   # x_scaled @ y^T = -c<x,y>_L
    y_t = y.transpose(0, 1)
    out = torch.empty(n, m, dtype=x.dtype, device=x.device)
    rows = max(1, min(n, _BLOCK_ELEMENTS // max(m, 1)))
    scratch = torch.empty(rows, m, dtype=x.dtype, device=x.device)
    minus_one = torch.full((1,), -1.0, dtype=x.dtype, device=x.device)
    inv_sqrt_c = 1.0 / math.sqrt(c)
    for start in range(0, n, rows):
        z = out[start:start + rows]
        torch.mm(x_scaled[start:start + rows], y_t, out=z)
        z.clamp_min_(1.0)
        root = scratch[: z.shape[0]]
        if z.dtype in _SQUARE_OVERFLOWS:   # z^2 overflows at max_radius there: sqrt(z - 1) * sqrt(z + 1)
            torch.sub(z, 1.0, out=root).sqrt_().mul_((z + 1.0).sqrt_())
        else:
            torch.addcmul(minus_one, z, z, out=root)
            root.sqrt_()
        z.add_(root).log_()
        if c != 1.0:
            z.mul_(inv_sqrt_c)
    return out


# --------------------------------------------------------------------------- Poincaré ball

def to_poincare(x: Tensor, c: Curvature) -> Tensor:
    """Hyperboloid ``(..., D+1)`` -> Poincaré ball of radius ``1/sqrt(c)``: ``p = x_s / (1 + sqrt(c) x_0)``."""
    sqrt_c = _as_c(c, x).sqrt()
    return x[..., 1:] / (1.0 + sqrt_c * x[..., :1])


def from_poincare(p: Tensor, c: Curvature) -> Tensor:
    """Poincaré ball ``(..., D)`` (``||p|| < 1/sqrt(c)``) -> hyperboloid ``(..., D+1)``.

    ``x_s = 2p / (1 - c||p||^2)``; the time coordinate follows from the constraint.
    """
    c_t = _as_c(c, p)
    denom = (1.0 - c_t * (p * p).sum(dim=-1, keepdim=True)).clamp_min(eps(p.dtype))
    return lift(2.0 * p / denom, c)


# --------------------------------------------------------------------------- entailment cones

def half_aperture(x: Tensor, c: Curvature, K: float = 0.1) -> Tensor:
    """Half-aperture of the entailment cone at ``x``: ``(..., D+1)`` -> ``(...)`` in ``(0, pi/2)``.

    ``asin(2K / (sqrt(c) ||x_s||))`` (MERU; Ganea et al.'s ``asin(K(1-|p|^2)/|p|)`` rewritten
    for the hyperboloid). The cone narrows as ``x`` moves away from the origin and saturates at
    ~pi/2 inside the ball ``||x_s|| <= 2K/sqrt(c)``.
    """
    e = eps(x.dtype)
    sqrt_c = _as_c(c, x).sqrt()
    norm = x[..., 1:].norm(dim=-1, keepdim=True).clamp_min(_tiny(x.dtype) ** 0.5)
    return torch.asin((2.0 * K / (sqrt_c * norm)).clamp(-1.0 + e, 1.0 - e)).squeeze(-1)


def _exterior_angle_from(x_time: Tensor, x_space_norm: Tensor, y_time: Tensor, c_inner: Tensor,
                         dtype: torch.dtype) -> Tensor:
    # (y_0 + c<x,y> x_0) / (||x_s|| sqrt((c<x,y>)^2 - 1)) with numerator and denominator divided by
    # a = |c<x,y>| >= 1: the same value (and the same clamps, rescaled), but no product a * x_0 or a^2,
    # which overflow float16 for far-apart points well inside max_radius.
    e = eps(dtype)
    a = c_inner.abs().clamp_min(1.0)
    inv_a = 1.0 / a
    numer = y_time * inv_a + (c_inner * inv_a) * x_time
    denom = x_space_norm * torch.sqrt((1.0 - inv_a * inv_a).clamp_min(e * inv_a * inv_a))
    return torch.acos((numer / denom.clamp_min(e * inv_a)).clamp(-1.0 + e, 1.0 - e))


def exterior_angle(x: Tensor, y: Tensor, c: Curvature) -> Tensor:
    """Exterior angle at ``x`` of the triangle (origin, x, y): ``(..., D+1)`` x2 -> ``(...)`` in ``[0, pi]``.

    0 when ``y`` lies on the ray from the origin through ``x`` beyond ``x``; ``y`` is inside
    ``x``'s cone when this is at most :func:`half_aperture` of ``x``.
    ``acos((y_0 + c<x,y>_L x_0) / (||x_s|| sqrt((c<x,y>_L)^2 - 1)))`` (hyperbolic law of cosines).
    """
    c_t = _as_c(c, x)
    c_inner = (c_t * inner(x, y, keepdim=True)).squeeze(-1)
    return _exterior_angle_from(x[..., 0], x[..., 1:].norm(dim=-1), y[..., 0], c_inner, x.dtype)


def pairwise_exterior_angle(x: Tensor, y: Tensor, c: Curvature) -> Tensor:
    """Exterior angles for all pairs: apexes x ``(N, D+1)``, points y ``(M, D+1)`` -> ``(N, M)``; scalar ``c``."""
    c_inner = torch.as_tensor(c, dtype=x.dtype, device=x.device) * pairwise_inner(x, y)
    return _exterior_angle_from(x[:, :1], x[:, 1:].norm(dim=-1, keepdim=True), y[:, 0].unsqueeze(0),
                                c_inner, x.dtype)


# --------------------------------------------------------------------------- aggregation

def centroid(x: Tensor, weights: Tensor | None, c: Curvature) -> Tensor:
    """Lorentz centroid (Law et al. 2019): the weighted sum rescaled back onto the hyperboloid.

    x: ``(..., N, D+1)``, weights ``(..., N)`` non-negative (``None`` = uniform) -> ``(..., D+1)``.
    ``mu = s / (sqrt(c) sqrt(|<s,s>_L|))`` with ``s = sum_i w_i x_i``; it minimises the weighted sum of
    squared Lorentzian distances and is the identity for a single point.
    """
    if weights is None:
        weights = torch.full(x.shape[:-1], 1.0 / x.shape[-2], dtype=x.dtype, device=x.device)
    s = (weights.unsqueeze(-1) * x).sum(dim=-2)
    c_t = _as_c(c, x)
    # A non-negative combination of future-timelike points is timelike with -<s,s>_L >= (sum w)^2 / c
    # (reverse Cauchy-Schwarz). Rounding can break that far from the origin, where <s,s>_L cancels,
    # so the exact bound is used as the floor instead of an arbitrary epsilon.
    floor = weights.sum(dim=-1, keepdim=True) ** 2 / c_t
    norm = torch.sqrt((-inner(s, s, keepdim=True)).clamp_min(floor).clamp_min(_tiny(x.dtype)))
    return project(s / (c_t.sqrt() * norm), c)
