"""PointNet (vanilla, no T-Net, BatchNorm): the architecture of the public ModelNet40 checkpoint.

Per point: five shared 1x1 convolutions ``C -> 64 -> 64 -> 64 -> 128 -> emb_dims`` each with
BatchNorm and ReLU (a point never sees its neighbours). The global feature is the max over points;
the classifier head is ``emb -> 512 -> 256 -> classes``.

Local tokens: per-point ``emb_dims`` features are max-pooled per region (see
:func:`h2arn.encoders.tokens.pool_tokens`), then sent through the head's first layer
(``Linear(emb, 512) + BN + ReLU``). That layer was trained on max-pooled features, and a token is a
max-pool over a region, so it is the natural trained map to the paper's 512-d tokens.

Parameter names mirror learning3d's ``Classifier(PointNet(use_bn=True))`` under ``backbone.`` and
``head.`` so :mod:`h2arn.encoders.weights` can map that checkpoint with a fixed key map.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import PointTokenEncoder, build_input

__all__ = ["PointNet"]


class _Backbone(nn.Module):
    def __init__(self, in_channels: int, emb_dims: int):
        super().__init__()
        widths = [in_channels, 64, 64, 64, 128, emb_dims]
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv1d(widths[i], widths[i + 1], 1))
            setattr(self, f"bn{i + 1}", nn.BatchNorm1d(widths[i + 1]))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, N) -> (B, emb, N)
        for i in range(1, 6):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return x


class _Head(nn.Module):
    def __init__(self, emb_dims: int, token_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(emb_dims, token_dim)
        self.bn1 = nn.BatchNorm1d(token_dim)
        if num_classes > 0:
            self.linear2 = nn.Linear(token_dim, 256)
            self.bn2 = nn.BatchNorm1d(256)
            self.linear3 = nn.Linear(256, num_classes)
        self.dropout = nn.Dropout(dropout)

    def first(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.linear1(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn2(self.linear2(self.first(x))))
        return self.linear3(self.dropout(x))


class PointNet(PointTokenEncoder):
    """PointNet token encoder. ``(B, N, C)`` -> tokens ``(B, num_tokens, token_dim)`` + mask ``(B, T)``.

    ``channels="xyz"`` matches the public ModelNet40 checkpoint (shape only, y-up, unit sphere).
    """

    model_name = "PointNet"

    def __init__(self, channels: str = "xyz", num_classes: int = 0, emb_dims: int = 1024,
                 token_dim: int = 512, num_tokens: int = 100, pooling: str = "spatial", dropout: float = 0.3):
        super().__init__(channels=channels, num_tokens=num_tokens, pooling=pooling, num_classes=num_classes)
        self._config = dict(channels=channels, num_classes=num_classes, emb_dims=emb_dims, token_dim=token_dim,
                            num_tokens=num_tokens, pooling=pooling, dropout=dropout)
        self.token_dim = token_dim
        self.backbone = _Backbone(self.in_channels, emb_dims)
        self.head = _Head(emb_dims, token_dim, num_classes, dropout)

    def point_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        x = build_input(points, self.channels)
        return self.backbone(x.transpose(1, 2)).transpose(1, 2), points[..., :3]

    def token_transform(self, tokens: Tensor) -> Tensor:
        b, t, d = tokens.shape
        return self.head.first(tokens.reshape(b * t, d)).reshape(b, t, -1)

    def classifier(self, global_feat: Tensor) -> Tensor:
        return self.head(global_feat)
