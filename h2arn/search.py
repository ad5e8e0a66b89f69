r"""Text-to-shape search over a trained model: embed a query, rank a gallery, explain the ranking.

The search API of the package (the course's widgets are a thin UI over it, :mod:`h2arn.course.widgets`):

* :class:`RetrievalSession`: a trained model, a gallery (cloud tokens and their embeddings, names,
  points), the text encoder that made the caption features;
* :func:`encode_query` / :func:`search`: a free-text query -> the top-k clouds by Lorentz distance;
* :func:`text_contributions`, :func:`contribution_map`, :func:`token_assignment`,
  :func:`redundancy_share`: the model's explanation, which word pieces and which point tokens carried
  an embedding (the contribution weights of the aggregation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from h2arn import lorentz as L

__all__ = ["SearchResult", "RetrievalSession", "encode_query", "search", "token_assignment", "contribution_map",
           "redundancy_share", "effective_number", "text_contributions"]


@dataclass
class SearchResult:
    """One retrieved cloud: ``rank`` (1-based), gallery ``index``, shape ``name``, Lorentz ``distance``."""

    rank: int
    index: int
    name: str
    distance: float
    category: str | None = None


@dataclass
class RetrievalSession:
    """What the interactive chapter needs, in memory.

    model: a trained :class:`h2arn.model.H2ARN` (eval mode). encode_captions: ``list[str] -> (tokens
    (N, L_t, D_t), mask (N, L_t))``, the text encoder that produced the caption features.
    cloud_tokens ``(N_pc, L_p, D_p)`` / cloud_mask ``(N_pc, L_p)``: the gallery's point features;
    cloud_emb ``(N_pc, E)``: their embeddings; cloud_names / cloud_points (each ``(N_i, >=6)`` xyz rgb)
    / cloud_categories: one per cloud. text_emb ``(N_txt, E)``, captions, caption_levels (or None),
    txt_to_pc ``(N_txt,)``: the test captions, for the disk. num_tokens_per_cloud / points_per_cloud:
    how extraction tokenised each cloud (for :func:`token_assignment`). cloud_redundant: per cloud, a
    bool ``(N_i,)`` marking the generator's redundant points (duplicates, supports, clutter) or None.
    tokenize: optional
    ``str -> list[str]`` naming the word pieces of a query (for :func:`draw_text_contributions`).
    """

    model: Any
    encode_captions: Callable[[Sequence[str]], tuple[Tensor, Tensor]]
    cloud_tokens: Tensor
    cloud_mask: Tensor
    cloud_emb: Tensor
    cloud_names: list[str]
    cloud_points: list[np.ndarray]
    text_emb: Tensor
    captions: list[str]
    txt_to_pc: Tensor
    cloud_categories: list[str | None] = field(default_factory=list)
    caption_levels: list[int | None] | None = None
    points_per_cloud: int | None = None
    cloud_redundant: list[np.ndarray | None] | None = None
    tokenize: Callable[[str], list[str]] | None = None
    device: torch.device = torch.device("cpu")
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.cloud_emb.shape[0]
        for what, seq in (("cloud_names", self.cloud_names), ("cloud_points", self.cloud_points),
                          ("cloud_tokens", self.cloud_tokens)):
            if len(seq) != n:
                raise ValueError(f"session: {what} has {len(seq)} entries but there are {n} cloud embeddings")
        if not self.cloud_categories:
            self.cloud_categories = [None] * n
        if self.text_emb.shape[0] != len(self.captions) or self.txt_to_pc.shape[0] != len(self.captions):
            raise ValueError("session: text_emb, captions and txt_to_pc must have one entry per caption")

    @property
    def curvature(self) -> float:
        """The model's curvature ``c`` (hyperbolic models only)."""
        return float(self.model.curvature().detach())

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        return search(self, query, k)


# --------------------------------------------------------------------------- search

@torch.no_grad()
def encode_query(session: RetrievalSession, query: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(embedding (E,), tokens (1, L_t, D_t), mask (1, L_t))`` of one query string."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: type a description, e.g. 'a tall blue vase with two handles'")
    tokens, mask = session.encode_captions([query])
    emb = session.model.encode_text(tokens.to(session.device), mask.to(session.device))[0].float().cpu()
    return emb, tokens, mask


@torch.no_grad()
def search(session: RetrievalSession, query: str, k: int = 5) -> list[SearchResult]:
    """Top-``k`` gallery clouds for a free-text query, nearest first (Lorentz distance at the model's c)."""
    emb, _, _ = encode_query(session, query)
    session._cache["last_query"] = (query, emb)
    d = L.pairwise_dist(emb[None].double(), session.cloud_emb.double(), session.curvature)[0]
    k = max(1, min(int(k), d.numel()))
    top = torch.topk(-d, k).indices.tolist()
    return [SearchResult(rank=i + 1, index=j, name=session.cloud_names[j], distance=float(d[j]),
                         category=session.cloud_categories[j]) for i, j in enumerate(top)]


# --------------------------------------------------------------------------- explanation

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
