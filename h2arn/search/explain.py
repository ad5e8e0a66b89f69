r"""Why a shape or a query ranks where it does: the model's per-token contribution weights.

A module of its own because both ways of searching explain with it: the chapter's
:class:`~h2arn.search.session.RetrievalSession` (per-point colours, redundancy shares, query word weights)
and the :class:`~h2arn.search.retriever.Retriever`'s hits (:func:`effective_number` of their token weights).
"""
from __future__ import annotations

import numpy as np
import torch

from .session import RetrievalSession, encode_query


def token_assignment(points: np.ndarray, num_tokens: int, num_points: int | None = None) -> np.ndarray:
    """Which token each point of a cloud belongs to, as spatial token pooling builds them: ``(N,)`` int.

    Extraction downsamples the cloud by farthest-point sampling (``fps_downsample``), picks ``T``
    centroids by FPS on what is left, and max-pools the features of the points nearest each centroid
    (:func:`h2arn.encoders.tokens.pool_tokens`). The same deterministic steps are replayed here; every
    ORIGINAL point is then given the token of its nearest centroid, so the whole cloud can be coloured.
    """
    from h2arn.encoders.tokens import farthest_point_sample, fps_downsample

    pts = torch.as_tensor(np.asarray(points)[:, :3], dtype=torch.float32)
    kept = fps_downsample(pts, num_points) if num_points else pts
    t_real = min(num_tokens, kept.shape[0])
    centre_idx = farthest_point_sample(kept[None], t_real)[0]
    centres = kept[centre_idx]
    return torch.cdist(pts, centres).argmin(-1).numpy()


@torch.no_grad()
def contribution_map(session: RetrievalSession, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (N, >=6), per-point weight (N,), token weights (L_p,))`` of gallery cloud ``index``.

    Token weights come from ``model.contributions`` (0 on padding, sum 1); a point gets its token's weight
    divided by the token's point count, so the colours of all points sum to 1 too (a big region does not
    look important just because it has many points).
    """
    w = session.model.contributions(session.cloud_tokens[index:index + 1].to(session.device),
                                    session.cloud_mask[index:index + 1].to(session.device), "cloud")[0].cpu()
    points = session.cloud_points[index]
    assign = token_assignment(points, session.cloud_mask.shape[1], session.points_per_cloud)
    counts = np.bincount(assign, minlength=w.numel()).astype(float)
    per_point = w.numpy()[assign] / np.maximum(counts[assign], 1.0)
    return points, per_point, w.numpy()


def redundancy_share(session: RetrievalSession) -> dict[str, np.ndarray]:
    """Per gallery cloud with redundancy flags: share of its POINTS that are redundant vs share of its
    contribution WEIGHT that lands on them (mean pooling would give both the same on average).

    Returns arrays ``point_share``, ``weight_share`` and ``index`` (the gallery rows measured).
    """
    rows, ps, ws = [], [], []
    for j, flags in enumerate(session.cloud_redundant or []):
        if flags is None or not flags.any():
            continue
        _, per_point, _ = contribution_map(session, j)
        rows.append(j)
        ps.append(float(flags.mean()))
        ws.append(float(per_point[flags].sum() / per_point.sum()))
    return {"index": np.array(rows, dtype=int), "point_share": np.array(ps), "weight_share": np.array(ws)}


def effective_number(w: np.ndarray) -> float:
    """``exp(entropy)``: how many tokens the weight is effectively spread over."""
    p = w[w > 0]
    return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


@torch.no_grad()
def text_contributions(session: RetrievalSession, query: str) -> tuple[list[str], np.ndarray]:
    """The query's valid word pieces and their contribution weights (sum 1)."""
    _, tokens, mask = encode_query(session, query)
    w = session.model.contributions(tokens.to(session.device), mask.to(session.device), "text")[0].cpu().numpy()
    valid = mask[0].numpy().astype(bool)
    n = int(valid.sum())
    names = session.tokenize(query)[:n] if session.tokenize else [f"t{i}" for i in range(n)]
    names += [f"t{i}" for i in range(len(names), n)]
    return names, w[valid]

