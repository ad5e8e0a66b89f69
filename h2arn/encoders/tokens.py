"""Point-cloud geometry helpers shared by the encoders: FPS, k-NN, ball query, and token pooling.

Everything here is batched torch (``(B, N, ...)``) with no per-point Python loop; farthest-point
sampling loops once per *sample* (``S`` iterations of a vectorised distance update), as every
FPS implementation does.

Why token pooling matters: H2ARN aggregates a *set of local tokens* per shape (100 x 512 in the
paper), weighting each token by its contribution. A token should therefore describe one part of
the shape. Two poolings are offered by :func:`pool_tokens`:

* ``"spatial"`` (our default): pick ``T`` centroids by FPS, assign every point to its nearest
  centroid, and max-pool the per-point features of each group. Each token is a spatially coherent
  region (a leg, a lamp shade, a corner of a room), so "which token matters" has a meaning.
* ``"index"`` (the official code): ``AdaptiveMaxPool1d(T)`` along the point-index axis. The official
  clouds are FPS-ordered, and consecutive FPS points are spread *across* the whole shape, so each of
  those tokens is the max over points scattered everywhere: a noisy copy of the global feature.
  Kept for faithfulness to the reference pipeline and for ablations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["farthest_point_sample", "fps_downsample", "gather_points", "knn_indices", "ball_query",
           "pool_tokens", "masked_max", "downsample_clouds", "minmax_normalise", "POOLINGS"]

POOLINGS = ("spatial", "index")


def gather_points(values: Tensor, idx: Tensor) -> Tensor:
    """``values (B, N, C)``, ``idx (B, *S)`` long -> ``(B, *S, C)`` (batched fancy indexing)."""
    b = values.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return out.reshape(*idx.shape, values.shape[-1])


def farthest_point_sample(xyz: Tensor, num_samples: int, start: str = "farthest_from_centroid",
                          valid: Tensor | None = None) -> Tensor:
    """Deterministic farthest-point sampling. ``xyz (B, N, 3)`` -> indices ``(B, S)`` long.

    ``start="farthest_from_centroid"`` reproduces the official ``fps_1`` (first point = the one
    farthest from the centroid), so the result does not depend on the file's point order except for
    exact ties. ``start="first"`` starts at index 0 (PointNet++ convention). ``valid (B, N)`` bool
    excludes padding points. ``S`` may exceed ``N``: the sequence then cycles (only duplicates left).
    """
    b, n, _ = xyz.shape
    pts = xyz.detach()
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=xyz.device)
    big = torch.finfo(pts.dtype).max
    if start == "farthest_from_centroid":
        cnt = valid.sum(1, keepdim=True).clamp_min(1).to(pts.dtype)
        centroid = (pts * valid.unsqueeze(-1)).sum(1, keepdim=True) / cnt.unsqueeze(-1)
        d0 = ((pts - centroid) ** 2).sum(-1).masked_fill(~valid, -1.0)
        farthest = d0.argmax(1)
    elif start == "first":
        farthest = valid.to(torch.int8).argmax(1)
    else:
        raise ValueError(f"unknown FPS start {start!r}; use 'farthest_from_centroid' or 'first'")
    dist = torch.full((b, n), big, dtype=pts.dtype, device=xyz.device).masked_fill(~valid, -1.0)
    out = torch.empty(b, num_samples, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(num_samples):
        out[:, i] = farthest
        d = ((pts - pts[rows, farthest].unsqueeze(1)) ** 2).sum(-1)
        dist = torch.minimum(dist, d.masked_fill(~valid, -1.0))
        farthest = dist.argmax(1)
    return out


def fps_downsample(points: Tensor, num_points: int) -> Tensor:
    """One cloud ``(N, C)`` -> ``(min(N, num_points), C)`` by deterministic FPS on xyz (columns 0:3).

    Clouds that already have at most ``num_points`` points are returned unchanged (as the official
    script does). The kept points come out in FPS order.
    """
    if points.shape[0] <= num_points:
        return points
    idx = farthest_point_sample(points[None, :, :3], num_points)[0]
    return points[idx]


def downsample_clouds(clouds, num_points: int, chunk: int = 64) -> list[Tensor]:
    """Many clouds ``[(N_i, C)]`` -> FPS-downsampled ``[(min(N_i, num_points), C)]``, batched by size.

    Same result as :func:`fps_downsample` per cloud, but clouds of equal size share one batched FPS
    (one loop of ``num_points`` vectorised steps per chunk instead of per cloud).
    """
    clouds = [torch.as_tensor(c) for c in clouds]
    out: list = list(clouds)
    by_size: dict[int, list[int]] = {}
    for i, c in enumerate(clouds):
        if c.shape[0] > num_points:
            by_size.setdefault(c.shape[0], []).append(i)
    for ids in by_size.values():
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            batch = torch.stack([clouds[i] for i in part])
            idx = farthest_point_sample(batch[..., :3], num_points)
            picked = gather_points(batch, idx)
            for j, i in enumerate(part):
                out[i] = picked[j]
    return out


def knn_indices(query: Tensor, support: Tensor | None = None, k: int = 20) -> Tensor:
    """Indices of the ``k`` nearest ``support`` points of each ``query`` point: ``(B, M, k)``.

    ``query (B, M, C)``, ``support (B, N, C)`` (defaults to ``query``; the point itself is then its
    own first neighbour, as in DGCNN). ``k`` is clipped to ``N``.
    """
    support = query if support is None else support
    k = min(k, support.shape[1])
    d = torch.cdist(query, support)  # (B, M, N): one batched GEMM
    return d.topk(k, dim=-1, largest=False).indices


def ball_query(centres: Tensor, xyz: Tensor, radius: float, num_samples: int) -> Tensor:
    """PointNet++ grouping: up to ``num_samples`` points within ``radius`` of each centre, ``(B, S, K)``.

    Like the reference CUDA kernel, the first ``K`` in-ball points in index order are taken and
    empty slots repeat the first hit (each centre is a cloud point, so it always hits itself).
    """
    n = xyz.shape[1]
    k = min(num_samples, n)
    d2 = torch.cdist(centres, xyz) ** 2  # (B, S, N)
    ar = torch.arange(n, device=xyz.device).expand_as(d2)
    keyed = torch.where(d2 <= radius * radius, ar, torch.full_like(ar, n))
    idx = keyed.topk(k, dim=-1, largest=False, sorted=True).values  # smallest indices first
    first = idx[..., :1]
    first = torch.where(first == n, d2.argmin(-1, keepdim=True), first)  # no hit: nearest point
    return torch.where(idx == n, first.expand_as(idx), idx)


def masked_max(feats: Tensor, mask: Tensor | None, dim: int = 1) -> Tensor:
    """Max over ``dim`` ignoring masked-out entries. ``feats (B, N, D)``, ``mask (B, N)`` bool."""
    if mask is None:
        return feats.amax(dim)
    neg = torch.finfo(feats.dtype).min
    return feats.masked_fill(~mask.unsqueeze(-1), neg).amax(dim)


def minmax_normalise(xyz: Tensor) -> Tensor:
    """Per-cloud, per-axis ``(x - min) / (max - min)`` (the DGCNN 9-channel input's last 3 channels)."""
    lo = xyz.amin(1, keepdim=True)
    hi = xyz.amax(1, keepdim=True)
    return (xyz - lo) / (hi - lo).clamp_min(torch.finfo(xyz.dtype).eps)


def pool_tokens(feats: Tensor, xyz: Tensor, num_tokens: int = 100, method: str = "spatial") -> tuple[Tensor, Tensor]:
    """Per-point features -> a fixed number of local tokens.

    ``feats (B, N, D)``, ``xyz (B, N, 3)`` -> ``tokens (B, T, D)``, ``mask (B, T)`` bool.

    ``"spatial"``: FPS picks ``T`` centroids, each point joins its nearest centroid, each token is the
    max over its group. With fewer than ``T`` distinct points the surplus tokens are zero and masked
    out (so a small cloud never invents duplicate tokens). ``"index"``: the official
    ``AdaptiveMaxPool1d(T)`` over the point axis; every token is valid.
    """
    b, n, d = feats.shape
    if method == "index":
        tokens = F.adaptive_max_pool1d(feats.transpose(1, 2), num_tokens).transpose(1, 2)
        return tokens.contiguous(), torch.ones(b, num_tokens, dtype=torch.bool, device=feats.device)
    if method != "spatial":
        raise ValueError(f"unknown token pooling {method!r}; choose one of {POOLINGS}")
    t_real = min(num_tokens, n)
    centre_idx = farthest_point_sample(xyz, t_real)  # (B, T')
    centres = gather_points(xyz, centre_idx)
    assign = torch.cdist(xyz, centres).argmin(-1)  # (B, N) in 0..T'-1
    # make sure every centroid owns itself (ties between duplicate points could steal it)
    assign = assign.scatter(1, centre_idx, torch.arange(t_real, device=feats.device).expand(b, -1))
    neg = torch.finfo(feats.dtype).min
    tokens = torch.full((b, num_tokens, d), neg, dtype=feats.dtype, device=feats.device)
    tokens = tokens.scatter_reduce(1, assign.unsqueeze(-1).expand(-1, -1, d), feats, reduce="amax",
                                   include_self=True)
    counts = torch.zeros(b, num_tokens, dtype=torch.long, device=feats.device)
    counts = counts.scatter_add(1, assign, torch.ones_like(assign))
    mask = counts > 0
    tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
    return tokens, mask


# --------------------------------------------------------------------------- encoder base class

CHANNEL_SETS = {"xyz": 3, "xyzrgb": 6, "xyzrgbn": 9}


def build_input(points: Tensor, channels: str) -> Tensor:
    """Raw cloud ``(B, N, C>=3)`` (xyz, rgb in 0..1, extra columns ignored) -> encoder input.

    ``"xyz"`` (3), ``"xyzrgb"`` (6) or ``"xyzrgbn"`` (9 = xyz, rgb, min-max-normalised xyz, the
    paper's DGCNN input). A cloud without rgb for an encoder that needs it is an error, not a guess.
    """
    if channels not in CHANNEL_SETS:
        raise ValueError(f"unknown channel set {channels!r}; choose one of {sorted(CHANNEL_SETS)}")
    if points.dim() != 3 or points.shape[-1] < 3:
        raise ValueError(f"expected a point batch (B, N, C>=3), got shape {tuple(points.shape)}")
    need = 3 if channels == "xyz" else 6
    if points.shape[-1] < need:
        raise ValueError(f"channels={channels!r} needs {need} input columns (x y z r g b), got "
                         f"{points.shape[-1]}. Fix: provide rgb columns or use an encoder with channels='xyz'.")
    xyz = points[..., :3]
    if channels == "xyz":
        return xyz
    if channels == "xyzrgb":
        return points[..., :6]
    return torch.cat([points[..., :6], minmax_normalise(xyz)], dim=-1)


class PointTokenEncoder(torch.nn.Module):
    """Base class: a per-point network + token pooling + a classification head for pretraining.

    Subclasses implement :meth:`point_features` (``(B, N, C)`` -> per-point features ``(B, M, D)`` at
    positions ``(B, M, 3)``; ``M = N`` except for PointNet++, whose features live on its centroids)
    and may override :meth:`token_transform` (applied to pooled tokens) and :meth:`head`.

    ``forward(points (B, N, C)) -> (tokens (B, T, token_dim), mask (B, T))``.
    """

    model_name = "base"

    def __init__(self, *, channels: str, num_tokens: int = 100, pooling: str = "spatial",
                 num_classes: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown token pooling {pooling!r}; choose one of {POOLINGS}")
        build_input(torch.zeros(1, 1, 9), channels)  # validates the name
        self.channels = channels
        self.in_channels = CHANNEL_SETS[channels]
        self.num_tokens = int(num_tokens)
        self.pooling = pooling
        self.num_classes = int(num_classes)
        self._config: dict = {}

    # -- to implement
    def point_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def token_transform(self, tokens: Tensor) -> Tensor:
        return tokens

    def classifier(self, global_feat: Tensor) -> Tensor:
        raise NotImplementedError

    # -- shared behaviour
    def config(self) -> dict:
        """Constructor arguments, stored in checkpoints so a file rebuilds the same network."""
        return dict(self._config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        feats, xyz = self.point_features(points)
        tokens, mask = pool_tokens(feats, xyz, self.num_tokens, self.pooling)
        tokens = self.token_transform(tokens) * mask.unsqueeze(-1)
        return tokens, mask

    def global_feature(self, points: Tensor) -> Tensor:
        """Max over all per-point features ``(B, D)``: permutation invariant, used for classification."""
        feats, _ = self.point_features(points)
        return feats.amax(1)

    def classify(self, points: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` (pretraining and the ModelNet40 sanity check)."""
        if self.num_classes <= 0:
            raise RuntimeError(f"{self.model_name} was built with num_classes=0: it has no classifier head")
        return self.classifier(self.global_feature(points))
