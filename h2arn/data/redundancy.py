"""Redundant and noisy fragments, flagged per point: the raw material of the RISD chapter.

Real scans of artefacts and rooms carry points that say nothing about *which* object it is:
a second, mis-registered copy of a region (a "ghost"), the floor or plinth it stands on, walls,
and clutter. H2ARN's contribution-aware aggregation is motivated by exactly this redundancy-
induced saliency dilution (RISD): a mean over tokens lets those points drown the few that
discriminate. Every generated point therefore carries a flag:

====  ===========  =====================================================
flag  name         what it is
====  ===========  =====================================================
0     salient      the object itself (or, in a room, one of its objects)
1     duplicate    ghost copy of one part, slightly displaced
2     support      floor patch / plinth / wall / floor of a room
3     clutter      small unrelated blobs nearby
====  ===========  =====================================================

``redundant = flag > 0``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .shapes import allocate

FLAG_NAMES = {0: "salient", 1: "duplicate", 2: "support", 3: "clutter"}
SUPPORT_COLORS = np.array([[0.55, 0.55, 0.55], [0.45, 0.35, 0.25], [0.80, 0.75, 0.65], [0.30, 0.30, 0.32]])


def duplicate_points(xyz, rgb, pid, m: int, rng: np.random.Generator):
    """A ghost of one randomly chosen part: ``m`` of its points shifted by 3-8% of the object size."""
    part = rng.choice(np.unique(pid))
    src = np.flatnonzero(pid == part)
    take = rng.choice(src, size=m, replace=m > len(src))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    shift = direction * rng.uniform(0.03, 0.08)
    pts = xyz[take] + shift + rng.normal(scale=0.004, size=(m, 3))
    col = np.clip(rgb[take] + rng.normal(scale=0.04, size=(m, 3)), 0, 1)
    return pts, col, pid[take]


def support_points(xyz, m: int, rng: np.random.Generator):
    """A floor/plinth patch under the object: a flat square at its lowest point, dull colour.

    Its size is drawn independently of the object (half-width 0.35-0.6 in unit-sphere units), so it says
    nothing about the class; it sits under the object's centre.
    """
    lo = xyz.min(0)
    hi = xyz.max(0)
    half = rng.uniform(0.35, 0.6)
    cx, cz = (lo[0] + hi[0]) / 2, (lo[2] + hi[2]) / 2
    u = rng.uniform(-half, half, size=(m, 2))
    pts = np.stack([cx + u[:, 0], np.full(m, lo[1] - 0.01), cz + u[:, 1]], axis=1)
    pts[:, 1] += rng.normal(scale=0.003, size=m)
    base = SUPPORT_COLORS[rng.integers(len(SUPPORT_COLORS))]
    col = np.clip(base + rng.normal(scale=0.04, size=(m, 3)), 0, 1)
    return pts, col


def clutter_points(xyz, m: int, rng: np.random.Generator, radius: float | None = None):
    """One to three small Gaussian blobs with random colours, placed around the object on its floor level.

    ``radius`` (default 0.8, the unit sphere of a normalised object; rooms pass their own extent) sets how
    far out they sit, independently of the object's shape.
    """
    lo, hi = xyz.min(0), xyz.max(0)
    centre = (lo + hi) / 2
    radius = float(radius) if radius is not None else 0.8
    k = int(rng.integers(1, 4))
    counts = allocate(np.ones(k), m)
    pts, col = [], []
    for c in counts:
        ang = rng.uniform(0, 2 * np.pi)
        at = centre + np.array([np.cos(ang) * radius * rng.uniform(0.6, 1.1), 0, np.sin(ang) * radius * rng.uniform(0.6, 1.1)])
        at[1] = lo[1] + rng.uniform(0.02, 0.15) * radius
        pts.append(at + rng.normal(scale=rng.uniform(0.02, 0.05) * max(radius, 0.1), size=(c, 3)))
        col.append(np.clip(rng.random(3) + rng.normal(scale=0.05, size=(c, 3)), 0, 1))
    return np.concatenate(pts), np.concatenate(col)


def add_redundancy(xyz, rgb, pid, n_redundant: int, rng: np.random.Generator,
                   mix: Tuple[float, float, float] | None = None):
    """Append ``n_redundant`` flagged points to an object cloud (already normalised: nothing is rescaled).

    xyz, rgb ``(n,3)``, pid ``(n,)`` -> xyz, rgb ``(n+m,3)``, pid ``(n+m,)`` (-1 for support/clutter),
    flag ``(n+m,)``. ``mix`` = share of (duplicate, support, clutter); random when ``None``.
    """
    n = len(xyz)
    flag = np.zeros(n, dtype=np.int64)
    if n_redundant <= 0:
        return xyz, rgb, pid, flag
    weights = np.asarray(mix, float) if mix is not None else rng.dirichlet([2.0, 2.0, 1.0])
    m_dup, m_sup, m_clu = allocate(weights + 1e-9, n_redundant)
    out_xyz, out_rgb, out_pid, out_flag = [xyz], [rgb], [pid], [flag]
    if m_dup:
        p, c, i = duplicate_points(xyz, rgb, pid, int(m_dup), rng)
        out_xyz.append(p); out_rgb.append(c); out_pid.append(i); out_flag.append(np.full(m_dup, 1))
    if m_sup:
        p, c = support_points(xyz, int(m_sup), rng)
        out_xyz.append(p); out_rgb.append(c); out_pid.append(np.full(m_sup, -1)); out_flag.append(np.full(m_sup, 2))
    if m_clu:
        p, c = clutter_points(xyz, int(m_clu), rng)
        out_xyz.append(p); out_rgb.append(c); out_pid.append(np.full(m_clu, -1)); out_flag.append(np.full(m_clu, 3))
    return (np.concatenate(out_xyz), np.concatenate(out_rgb), np.concatenate(out_pid),
            np.concatenate(out_flag).astype(np.int64))


# --------------------------------------------------------------------------- per-token redundancy

# encoders whose tokens are pooled from the *input* points (PointNet++ pools its own level-2 centres)
TOKENS_ON_INPUT_POINTS = ("PointNet", "DGCNN")


def token_redundancy(points, flags, num_points: int, num_tokens: int = 100, pooling: str = "spatial"):
    """Share of flagged points behind each cloud token, exactly as extraction tokenises the cloud.

    ``points (N, C>=3)``, ``flags (N,)`` (``redundant_flag``: > 0 = redundant) -> ``(num_tokens,)`` float32 in
    0..1, NaN for a token that no point feeds (masked out by the encoder). It repeats the encoder's steps: FPS
    downsampling to ``num_points`` (deterministic, so the same points), then ``"spatial"`` pooling (FPS
    centroids, nearest-centroid groups: a token's share is its group's) or ``"index"`` pooling
    (``AdaptiveMaxPool1d`` windows over the point axis). Used for the RISD oracle (drop tokens with share > 0.5)
    and to check the premise: with spatial tokens the share of redundant *tokens* should be close to the share
    of redundant *points*; with index tokens every token mixes points from the whole cloud.
    """
    import torch

    from ..encoders.tokens import farthest_point_sample, fps_downsample, gather_points

    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    flag = torch.as_tensor(np.asarray(flags) > 0, dtype=torch.float32)
    table = fps_downsample(torch.cat([pts[:, :3], flag[:, None]], 1), num_points)
    xyz, red = table[:, :3], table[:, 3]
    n = len(xyz)
    out = torch.full((num_tokens,), float("nan"))
    if pooling == "index":
        for k in range(num_tokens):  # AdaptiveMaxPool1d window k: [floor(k n / T), ceil((k + 1) n / T))
            lo, hi = (k * n) // num_tokens, -(-((k + 1) * n) // num_tokens)
            out[k] = red[lo:hi].mean()
        return out.numpy()
    if pooling != "spatial":
        raise ValueError(f"unknown token pooling {pooling!r}; choose 'spatial' or 'index'")
    t_real = min(num_tokens, n)
    centre_idx = farthest_point_sample(xyz[None], t_real)
    centres = gather_points(xyz[None], centre_idx)[0]
    assign = torch.cdist(xyz, centres).argmin(-1)
    assign[centre_idx[0]] = torch.arange(t_real)
    counts = torch.bincount(assign, minlength=num_tokens).float()
    sums = torch.zeros(num_tokens).index_add_(0, assign, red)
    share = sums / counts.clamp_min(1)
    return torch.where(counts > 0, share, out).numpy()


def token_redundancy_path(feature_dir, subset: str, split: str, pc_model: str):
    """Where extraction writes the ``(N_pc, T)`` per-token redundancy shares of one split (same cloud order as
    ``pc_features_<PC>.pt``); absent for data without ``redundant_flag`` (real T3DR-HIT v2)."""
    from pathlib import Path

    return Path(feature_dir) / subset / split / f"pc_redundancy_{pc_model}.pt"


def token_share_report(root, split: str = "val", num_points: int = 1024, num_tokens: int = 100) -> dict:
    """Is the redundancy a minority of the *tokens* too? Per subset and pooling: mean share of redundant points,
    of mostly-redundant tokens (share > 0.5, what the oracle drops) and of mixed tokens (0 < share < 1)."""
    from .t3drhit import available_subsets, load_split

    out = {}
    for subset in available_subsets(root):
        recs = [r for r in load_split(root, subset, split) if r.extra is not None]
        if not recs:
            continue
        row = {"n_clouds": len(recs), "points": float(np.mean([(r.extra[:, 1] > 0).mean() for r in recs]))}
        for pooling in ("spatial", "index"):
            shares = [token_redundancy(r.points, r.extra[:, 1], num_points, num_tokens, pooling) for r in recs]
            shares = [s[np.isfinite(s)] for s in shares]
            row[pooling] = {"mostly_redundant_tokens": float(np.mean([(s > 0.5).mean() for s in shares])),
                            "mixed_tokens": float(np.mean([((s > 0) & (s < 1)).mean() for s in shares]))}
        out[subset] = row
    return out
