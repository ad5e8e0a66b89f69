"""DGCNN (EdgeConv) with the semantic-segmentation trunk the paper uses (antao97/dgcnn.pytorch layout).

Input: 9 channels ``[x y z r g b x' y' z']`` with ``x' = (x - min) / (max - min)`` per axis.

* EdgeConv1: k-NN on the normalised xyz (channels 6:9); edge feature ``[x_j - x_i, x_i]`` (18 ch)
  -> conv1 (18 -> w) -> conv2 (w -> w) -> max over the k neighbours = x1
* EdgeConv2: k-NN on x1 (a *dynamic* graph in feature space) -> conv3 (2w -> w) -> conv4 (w -> w) -> max = x2
* EdgeConv3: k-NN on x2 -> conv5 (2w -> w) -> max = x3
* conv6 ([x1 x2 x3] 3w -> emb_dims), global max, repeated over points and concatenated with
  [x1 x2 x3] -> conv7 (emb_dims + 3w -> out_dim): the per-point feature (512 in the paper).

Width ``w`` (64 in the paper), ``emb_dims`` (1024) and ``out_dim`` (512) are configurable so a small
variant trains in CI. Convolutions have no bias and use BatchNorm + LeakyReLU(0.2); parameter names
are ``conv1.0`` (conv) / ``conv1.1`` (BN) as in antao97, so their checkpoints map by stripping ``module.``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .tokens import PointTokenEncoder, build_input, knn_indices

__all__ = ["DGCNN", "edge_features"]


def edge_features(x: Tensor, k: int, graph: Tensor | None = None) -> Tensor:
    """EdgeConv input ``(B, 2C, N, k)`` from features ``x (B, N, C)``.

    Neighbours come from k-NN on ``graph (B, N, G)`` (defaults to ``x``). Edge ``(i, j)`` carries
    ``[x_j - x_i, x_i]``: local shape (relative) plus where the centre is (absolute).
    """
    idx = knn_indices(x if graph is None else graph, k=k)  # (B, N, k)
    b, n, kk = idx.shape
    c = x.shape[-1]
    neighbours = torch.gather(x, 1, idx.reshape(b, n * kk, 1).expand(-1, -1, c)).reshape(b, n, kk, c)
    centre = x.unsqueeze(2).expand(-1, -1, kk, -1)
    return torch.cat([neighbours - centre, centre], dim=-1).permute(0, 3, 1, 2).contiguous()


def _conv2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _conv1d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.LeakyReLU(0.2))


class DGCNN(PointTokenEncoder):
    """DGCNN token encoder: ``(B, N, C>=6)`` -> tokens ``(B, num_tokens, out_dim)`` + mask ``(B, T)``."""

    model_name = "DGCNN"

    def __init__(self, channels: str = "xyzrgbn", num_classes: int = 0, k: int = 20, width: int = 64,
                 emb_dims: int = 1024, out_dim: int = 512, num_tokens: int = 100, pooling: str = "spatial",
                 dropout: float = 0.5):
        super().__init__(channels=channels, num_tokens=num_tokens, pooling=pooling, num_classes=num_classes)
        self._config = dict(channels=channels, num_classes=num_classes, k=k, width=width, emb_dims=emb_dims,
                            out_dim=out_dim, num_tokens=num_tokens, pooling=pooling, dropout=dropout)
        self.k, self.token_dim = k, out_dim
        w = width
        self.conv1 = _conv2d(2 * self.in_channels, w)
        self.conv2 = _conv2d(w, w)
        self.conv3 = _conv2d(2 * w, w)
        self.conv4 = _conv2d(w, w)
        self.conv5 = _conv2d(2 * w, w)
        self.conv6 = _conv1d(3 * w, emb_dims)
        self.conv7 = _conv1d(emb_dims + 3 * w, out_dim)
        if num_classes > 0:
            self.head = nn.Sequential(nn.Linear(out_dim, 256, bias=False), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
                                      nn.Dropout(dropout), nn.Linear(256, num_classes))

    def point_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        x = build_input(points, self.channels)  # (B, N, C)
        graph = x[..., 6:9] if self.channels == "xyzrgbn" else x[..., :3]
        x1 = self.conv2(self.conv1(edge_features(x, self.k, graph))).amax(-1)  # (B, w, N)
        x1t = x1.transpose(1, 2)
        x2 = self.conv4(self.conv3(edge_features(x1t, self.k))).amax(-1)
        x3 = self.conv5(edge_features(x2.transpose(1, 2), self.k)).amax(-1)
        local = torch.cat([x1, x2, x3], dim=1)  # (B, 3w, N)
        glob = self.conv6(local).amax(-1, keepdim=True).expand(-1, -1, local.shape[-1])
        feats = self.conv7(torch.cat([glob, local], dim=1))  # (B, out_dim, N)
        return feats.transpose(1, 2), points[..., :3]

    def classifier(self, global_feat: Tensor) -> Tensor:
        return self.head(global_feat)
