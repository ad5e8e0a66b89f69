r"""Contribution-aware hyperbolic aggregation: many tokens -> one embedding per sample.

H2ARN's pooling (paper §"Contribution-aware Hyperbolic Aggregation", official code
``LorentzContributionAggregator``), for one sample with scaled tokens ``z_1..z_L``:

1. anchor ``z̄`` = mean of the tokens;
2. lift tokens and anchor onto the hyperboloid: ``h_i = lift(z_i)``, ``h̄ = lift(z̄)``;
3. weights ``w_i = softmax_i(-d_L(h_i, h̄) / T)`` with a learnable temperature ``T``;
4. weighted *Euclidean* sum ``z* = sum_i w_i z_i``;
5. embedding ``h = lift(z*)`` of shape ``(D+1)``.

Tokens close to the sample's "centre of mass" count more; outlier tokens (noise, padding-like
tokens, fragments) count less.

What this module does differently from the official code, and why:

* **Padding is masked everywhere** (anchor mean, softmax, weighted sum). The official code averages
  all 77 CLIP positions, padding included, so a short caption's anchor is mostly padding.
* **The temperature is kept positive**: ``T = exp(log_T)``, bounded to ``[temp_min, temp_max]``
  through an accessor. The official ``T`` is a raw parameter; if an optimiser step makes it
  negative the softmax silently *inverts* (far tokens get the largest weights).
* **The distance is the chord form** :func:`h2arn.lorentz.dist`, whose gradient stays finite when
  a token equals the anchor (always the case for a sequence with one valid token). The official
  ``acosh(max(-c<x,y>, 1+1e-7))`` is flat (zero gradient) there, and MERU's ``1+1e-8`` is exactly
  1 in float32, where ``acosh'`` is infinite.
* **Lift choice**: ``"expmap"`` = :func:`h2arn.lorentz.expmap0` (the paper's Eq. 5) or
  ``"official"`` = :func:`h2arn.lorentz.lift` (the code's direct lift, time coordinate from the
  constraint). Both land on the manifold; the direct lift grows linearly instead of exponentially.

Note: the paper says ``z*`` "has a smaller norm than any individual z_i"; a convex combination only
guarantees ``||z*|| <= max_i ||z_i||``.

Geometry: ``"hyperbolic"`` as above. ``"euclidean"`` (the Eu baseline) uses the Euclidean distance
``||z_i - z̄||`` in step 3 and returns the L2-normalised ``z*`` (unit vectors for cosine similarity).
Mode ``"mean"`` (the paper's "w/o aggregation" ablation, and the Eu+MP baseline) returns the
lifted (or L2-normalised) masked mean anchor and uniform weights over valid tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from h2arn import lorentz as L

__all__ = ["LIFTS", "GEOMETRIES", "MODES", "lift_tokens", "masked_mean", "bounded_exp",
           "contribution_weights", "effective_tokens", "aggregate", "ContributionAggregator"]

LIFTS = ("expmap", "official")
GEOMETRIES = ("hyperbolic", "euclidean")
MODES = ("contribution", "mean")


def bounded_exp(log_value: Tensor, lo: float | None, hi: float | None) -> Tensor:
    """``exp(clamp(log_value, log lo, log hi))`` whose VALUE is clamped but whose GRADIENT is not.

    A hard clamp has zero gradient outside its range, so a parameter that overshoots a bound can
    only come back through weight decay (the official curvature clamp). Here the clamp is a
    straight-through estimator: forward uses the clamped value, backward passes the gradient of
    the unclamped one, so the loss can still pull the parameter back inside. Parameters that drift
    far out of range are pulled back by ``H2ARN.project_parameters_()`` after the optimiser step.
    """
    lo_log = None if lo is None else math.log(lo)
    hi_log = None if hi is None else math.log(hi)
    clamped = log_value.detach().clamp(min=lo_log, max=hi_log)
    # value: exactly the clamped one (x - x.detach() == 0 exactly); gradient: d/dx of exp(x)
    return torch.exp(clamped + (log_value - log_value.detach()))


def lift_tokens(z: Tensor, c: Tensor | float, lift: str) -> Tensor:
    """Map Euclidean vectors onto the hyperboloid: ``(..., D)`` -> ``(..., D+1)`` (time first).

    ``lift="expmap"``: the paper's Eq. 5, exp map at the origin. ``lift="official"``: the official
    code's map (``z`` kept as the space part).
    """
    if lift == "expmap":
        return L.expmap0(z, c)
    if lift == "official":
        return L.lift(z, c)
    raise ValueError(f"unknown lift {lift!r}; choose one of {LIFTS}")


def _check_mask(z: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != z.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match tokens {tuple(z.shape)}: "
                         "expected (B, L) for tokens (B, L, D)")
    mask = mask.to(device=z.device, dtype=torch.bool)
    return mask


def masked_mean(z: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid tokens only: z ``(B, L, D)``, mask ``(B, L)`` bool (True = valid) -> ``(B, D)``.

    A row with no valid token gives zeros (callers reject such rows before; this stays finite).
    """
    w = mask.to(z.dtype)
    return (z * w.unsqueeze(-1)).sum(dim=-2) / w.sum(dim=-1, keepdim=True).clamp_min(1.0)


def contribution_weights(z: Tensor, mask: Tensor, c: Tensor | float | None, temperature: Tensor | float,
                         *, lift: str = "expmap", geometry: str = "hyperbolic", relative: bool = False) -> Tensor:
    """Softmax over valid tokens of ``-distance(token, anchor) / temperature``: ``(B, L)``, rows sum to 1.

    z: scaled tokens ``(B, L, D)``; mask ``(B, L)`` bool; padding gets weight exactly 0.
    ``relative=True`` divides each sample's distances by their mean over its valid tokens (detached), so the
    temperature is in units of the sample's own token spread: T = 1 weighs a token at the mean distance
    e^-1 times the anchor's weight whatever the radii are. With absolute distances, T = 0.07 against token
    spreads of ~1 makes the pooling nearly one-hot (replication audit: ~9 % of the tokens used).
    """
    mask = _check_mask(z, mask)
    anchor = masked_mean(z, mask)                                        # (B, D)
    if geometry == "hyperbolic":
        h_tok = lift_tokens(z, c, lift)                                  # (B, L, D+1)
        h_anchor = lift_tokens(anchor, c, lift).unsqueeze(-2)            # (B, 1, D+1)
        d = L.dist(h_tok, h_anchor, c)                                   # (B, L)
    elif geometry == "euclidean":
        diff = z - anchor.unsqueeze(-2)
        # floor inside the sqrt: finite gradient when a token equals the anchor
        d = (diff * diff).sum(dim=-1).clamp_min(torch.finfo(z.dtype).tiny).sqrt()
    else:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of {GEOMETRIES}")
    if relative:
        spread = (d * mask).sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).clamp_min(1)
        d = d / spread.detach().clamp_min(torch.finfo(d.dtype).eps)
    logits = (-d / temperature).masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1)


def effective_tokens(weights: Tensor) -> Tensor:
    """Effective number of pooled tokens per sample, ``exp(entropy of the weights)``: ``(B, L)`` -> ``(B,)``.

    Equals the number of valid tokens for uniform weights and 1 for one-hot weights.
    """
    w = weights.clamp_min(0)
    ent = -(w * torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))).sum(dim=-1)
    return torch.exp(ent)


def aggregate(z: Tensor, mask: Tensor, c: Tensor | float | None, temperature: Tensor | float, *,
              lift: str = "expmap", geometry: str = "hyperbolic", mode: str = "contribution",
              validate: bool = True, relative: bool = False) -> tuple[Tensor, Tensor]:
    """Pool scaled tokens into one embedding per sample.

    z ``(B, L, D)`` (already multiplied by alpha), mask ``(B, L)`` bool (True = valid token).
    Returns ``(embedding, weights)``: embedding ``(B, D+1)`` on the hyperboloid (hyperbolic) or
    ``(B, D)`` unit vectors (euclidean); weights ``(B, L)`` (0 on padding, rows sum to 1).
    Every row must have at least one valid token (checked unless ``validate=False``, for callers
    that checked already: the check costs a device sync).
    """
    if mode not in MODES:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {MODES}")
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of {GEOMETRIES}")
    mask = _check_mask(z, mask)
    if validate and not bool(mask.any(dim=-1).all()):
        bad = (~mask.any(dim=-1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"rows {bad} have no valid token (mask all False); every sample needs >= 1 token. "
                         "Fix: check the mask files written by feature extraction.")
    # padded positions may hold garbage (even NaN): zero them so 0-weight * garbage stays 0
    z = torch.where(mask.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))
    if mode == "mean":
        w = mask.to(z.dtype)
        weights = w / w.sum(dim=-1, keepdim=True)
    else:
        weights = contribution_weights(z, mask, c, temperature, lift=lift, geometry=geometry, relative=relative)
    pooled = (weights.unsqueeze(-1) * z).sum(dim=-2)                   # (B, D) weighted Euclidean sum
    if geometry == "hyperbolic":
        return lift_tokens(pooled, c, lift), weights
    return F.normalize(pooled, dim=-1, eps=1e-12), weights


class ContributionAggregator(nn.Module):
    """One modality's aggregator: holds the learnable temperature ``T`` (stored as ``log T``).

    ``T`` initialises at ``temp_init`` (0.07, as the official code) and is read through
    :meth:`temperature`, bounded to ``[temp_min, temp_max]`` with a straight-through clamp, so it
    is positive whatever the optimiser does. With ``mode="mean"`` the temperature is unused and
    stored as a buffer, not a parameter.
    """

    def __init__(self, *, lift: str = "expmap", geometry: str = "hyperbolic", mode: str = "contribution",
                 temp_init: float = 0.07, temp_min: float = 1e-3, temp_max: float = 10.0, relative: bool = False):
        super().__init__()
        if lift not in LIFTS:
            raise ValueError(f"unknown lift {lift!r}; choose one of {LIFTS}")
        if geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {geometry!r}; choose one of {GEOMETRIES}")
        if mode not in MODES:
            raise ValueError(f"unknown aggregation {mode!r}; choose one of {MODES}")
        if not temp_min < temp_init < temp_max:
            raise ValueError(f"temp_init={temp_init} must lie in ({temp_min}, {temp_max})")
        self.lift, self.geometry, self.mode = lift, geometry, mode
        self.temp_min, self.temp_max = temp_min, temp_max
        self.relative = relative   # temperature relative to each sample's token spread (contribution_weights)
        log_temp = torch.tensor(math.log(temp_init))
        if mode == "contribution":
            self.log_temp = nn.Parameter(log_temp)
        else:  # unused by mean pooling: a buffer, so no parameter is left without a gradient (DDP-safe)
            self.register_buffer("log_temp", log_temp)

    def temperature(self) -> Tensor:
        """The positive temperature (scalar tensor, float32, with a gradient path to ``log_temp``)."""
        return bounded_exp(self.log_temp.float(), self.temp_min, self.temp_max)

    @torch.no_grad()
    def project_parameters_(self) -> None:
        """Clamp ``log_temp`` into its bounds in place (call after ``optimizer.step()``)."""
        self.log_temp.clamp_(math.log(self.temp_min), math.log(self.temp_max))

    def forward(self, z: Tensor, mask: Tensor, c: Tensor | float | None, validate: bool = True
                ) -> tuple[Tensor, Tensor]:
        """z ``(B, L, D)`` scaled tokens, mask ``(B, L)`` -> (embedding, weights), see :func:`aggregate`."""
        return aggregate(z, mask, c, self.temperature(), lift=self.lift, geometry=self.geometry,
                         mode=self.mode, validate=validate, relative=self.relative)

    def extra_repr(self) -> str:
        return f"lift={self.lift}, geometry={self.geometry}, mode={self.mode}"
