"""Redundancy-induced saliency dilution (RISD) experiments on generated clouds.

Why: a cloud becomes a set of fragment tokens (the official pipeline max-pools DGCNN point
features into 100 region tokens). If a growing share of fragments is redundant (floor, ghosts,
clutter), a plain mean over tokens is increasingly made of them, so two views of the same object
look less alike. This module produces the measured curves for the RISD chapter:

* :func:`make_views` samples each shape twice, each time with a controlled redundant fraction
  (independent sampling and independent floor/ghost/clutter), keeping per-point flags;
* :func:`fragment_tokens` splits a cloud into ``M`` fragments (farthest-point seeds, nearest-seed
  assignment) and describes each by simple statistics (centroid, spread, mean and spread of colour);
  a fragment is *redundant* when most of its points are flagged;
* :func:`pooled_embeddings` pools tokens by mean or by H2ARN's contribution weighting (via
  :mod:`h2arn.aggregation`), and :func:`recall_at_1` scores view-to-view retrieval.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from .redundancy import add_redundancy
from .shapes import ARTEFACT_BUILDERS, normalize_unit_sphere, sample_spec
from .taxonomy import all_categories


@dataclass
class View:
    """One sampled cloud: xyz ``(N,3)``, rgb ``(N,3)``, flag ``(N,)`` (0 = salient), its shape index."""
    xyz: np.ndarray
    rgb: np.ndarray
    flag: np.ndarray
    shape: int


def make_views(n_shapes: int, fraction: float, n_points: int = 1024, seed: int = 0,
               categories: Sequence[str] | None = None) -> tuple[List[View], List[View]]:
    """Two independent views per shape, each with ``fraction`` of its points redundant.

    The shapes themselves (attributes, geometry) depend only on ``seed`` and the shape index, so
    the same shapes are used at every redundancy level: only the redundancy changes.
    """
    cats = list(categories) if categories else all_categories("Elephant")
    views = ([], [])
    n_red = int(round(fraction * n_points))
    for i in range(n_shapes):
        spec = ARTEFACT_BUILDERS[cats[i % len(cats)]](np.random.default_rng([seed, 7, i]))
        for v in range(2):
            rng = np.random.default_rng([seed, 8, i, v, int(round(fraction * 1000))])
            xyz, rgb, pid = sample_spec(spec, n_points - n_red, rng)
            xyz, _, _ = normalize_unit_sphere(xyz)
            xyz, rgb, pid, flag = add_redundancy(xyz, rgb, pid, n_red, rng)  # after normalising: never rescales
            views[v].append(View(xyz, rgb, flag, i))
    return views


def farthest_point_seeds(xyz: np.ndarray, m: int) -> np.ndarray:
    """Indices of ``m`` farthest-point-sampling seeds (deterministic: starts at point 0).

    ``xyz`` ``(N, 3)`` -> ``(m,)``, or a batch of clouds of equal size ``(B, N, 3)`` -> ``(B, m)`` (one loop for
    the whole batch: the per-step Python overhead is paid once, not once per cloud).
    """
    x = np.asarray(xyz)
    batch = x if x.ndim == 3 else x[None]
    rows = np.arange(len(batch))
    sq = (batch ** 2).sum(-1)                                                # |x|^2, (B, N)
    idx = np.zeros((len(batch), m), dtype=np.int64)
    d = np.full(batch.shape[:2], np.inf)
    for k in range(1, m):   # |x - p|^2 = |x|^2 + |p|^2 - 2 x.p: no (B, N, 3) temporary per step
        p = batch[rows, idx[:, k - 1]]                                       # (B, 3)
        d = np.minimum(d, sq + sq[rows, idx[:, k - 1]][:, None] - 2.0 * np.einsum("bnc,bc->bn", batch, p))
        idx[:, k] = d.argmax(1)
    return idx if x.ndim == 3 else idx[0]


def fragment_tokens(view: View, m: int = 32, seeds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a view into ``m`` fragments: tokens ``(m, 12)``, redundant ``(m,)`` bool, assignment ``(N,)``.

    Token = [centroid xyz, std xyz, mean rgb, std rgb]. A fragment is redundant when more than half
    of its points are flagged redundant. ``seeds``: the view's :func:`farthest_point_seeds` if already known.
    """
    seeds = farthest_point_seeds(view.xyz, m) if seeds is None else seeds
    centres = view.xyz[seeds]
    assign = ((centres ** 2).sum(-1)[None] - 2.0 * view.xyz @ centres.T).argmin(1)   # nearest seed (|x|^2 is common)
    # per-fragment statistics with bincount, not a Python loop over fragments (the loop was most of the
    # chapter's run time); two passes (mean, then squared deviations) like np.std
    feats = np.concatenate([view.xyz, view.rgb], axis=1)                     # (N, 6)
    count = np.bincount(assign, minlength=m).astype(float)

    def per_fragment(x):  # (N, k) -> (m, k) mean over each fragment's points
        return np.stack([np.bincount(assign, x[:, j], m) for j in range(x.shape[1])], 1) / count[:, None]

    mean = per_fragment(feats)
    std = np.sqrt(per_fragment((feats - mean[assign]) ** 2))
    tokens = np.concatenate([mean[:, :3], std[:, :3], mean[:, 3:], std[:, 3:]], axis=1)
    redundant = np.bincount(assign, (view.flag > 0).astype(float), m) / count > 0.5
    return tokens, redundant, assign


def tokenize_views(views: Sequence[View], m: int = 32):
    """Stack fragment tokens of many views: tokens ``(B, m, 12)``, redundant ``(B, m)``, assignments."""
    if len({len(v.xyz) for v in views}) == 1:   # equal sizes: one batched farthest-point sampling
        seeds = farthest_point_seeds(np.stack([v.xyz for v in views]), m)
    else:
        seeds = [None] * len(views)
    out = [fragment_tokens(v, m, s) for v, s in zip(views, seeds)]
    return (np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out])


def standardize(tokens: np.ndarray, stats: tuple | None = None):
    """z-score every token feature with dataset statistics ``(mean, std)`` (computed if not given)."""
    if stats is None:
        flat = tokens.reshape(-1, tokens.shape[-1])
        stats = (flat.mean(0), flat.std(0) + 1e-8)
    return (tokens - stats[0]) / stats[1], stats


def pooled_embeddings(tokens: np.ndarray, mode: str, temperature: float = 1.0, c: float = 1.0,
                      scale: float = 0.5, keep: np.ndarray | None = None) -> torch.Tensor:
    """Pool tokens ``(B, M, D)`` into hyperboloid points ``(B, D+1)`` with :func:`h2arn.aggregation.aggregate`.

    ``mode``: ``"mean"`` (anchor only) or ``"contribution"`` (softmax of ``-d_L(token, anchor)/T``).
    ``keep`` ``(B, M)`` bool masks tokens (e.g. salient-only oracle; a row with nothing kept keeps all its
    tokens). ``scale`` plays the role of alpha.
    """
    from ..aggregation import aggregate

    z = torch.as_tensor(tokens * scale, dtype=torch.float64)
    if keep is None:
        mask = torch.ones(z.shape[:2], dtype=torch.bool)
    else:  # a view whose fragments are all redundant keeps them all (an oracle cannot pool nothing)
        mask = torch.as_tensor(np.asarray(keep, dtype=bool)).clone()
        mask[~mask.any(dim=1)] = True
    emb, _ = aggregate(z, mask, c, temperature, mode=mode)
    return emb


def contribution_weights_np(tokens: np.ndarray, temperature: float, c: float = 1.0, scale: float = 0.5) -> np.ndarray:
    """Weights ``(B, M)`` of the contribution-aware aggregation (for plots and weight-mass curves)."""
    from ..aggregation import contribution_weights

    z = torch.as_tensor(tokens * scale, dtype=torch.float64)
    return contribution_weights(z, torch.ones(z.shape[:2], dtype=torch.bool), c, temperature).numpy()


def recall_at_1(query: torch.Tensor, gallery: torch.Tensor, c: float = 1.0) -> float:
    """Share of queries whose nearest gallery item (Lorentz distance) is the same shape (index i <-> i)."""
    from .. import lorentz as L

    d = L.pairwise_dist(query, gallery, c)
    return float((d.argmin(1) == torch.arange(len(query))).double().mean())
