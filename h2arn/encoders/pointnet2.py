"""PointNet++ (single- or multi-scale grouping) producing local tokens.

Two set-abstraction (SA) levels as in the classification network of Qi et al. 2017:
FPS picks centres, ball query (or k-NN) groups neighbours, a shared MLP runs on
``[relative xyz, point features]`` of each neighbour and a max over the group gives the centre's
feature. A last shared MLP lifts the level-2 centre features to ``token_dim`` (512) and those
centre features are pooled into tokens. So PointNet++ features live on its ``npoint2`` centres
(128 by default), not on every input point.

All grouping is batched torch: FPS loops once per sample, ball query is a masked ``topk``.
``variant="msg"`` uses three radii per level and concatenates them (the official H2ARN option);
``"ssg"`` one radius (cheaper, our default). ``width`` scales every MLP (1.0 = the paper's sizes).
"""
from __future__ import annotations

from torch import Tensor, nn
import torch

from .tokens import PointTokenEncoder, ball_query, build_input, farthest_point_sample, gather_points, knn_indices

__all__ = ["PointNet2", "SetAbstraction"]

_SSG = [dict(npoint=512, radii=[0.2], nsamples=[32], mlps=[[64, 64, 128]]),
        dict(npoint=128, radii=[0.4], nsamples=[64], mlps=[[128, 128, 256]])]
_MSG = [dict(npoint=512, radii=[0.1, 0.2, 0.4], nsamples=[16, 32, 128],
             mlps=[[32, 32, 64], [64, 64, 128], [64, 96, 128]]),
        dict(npoint=128, radii=[0.2, 0.4, 0.8], nsamples=[32, 64, 128],
             mlps=[[64, 64, 128], [128, 128, 256], [128, 128, 256]])]


def _mlp2d(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    """One SA level: ``xyz (B, N, 3)``, ``feats (B, N, C) | None`` -> ``(B, S, 3)``, ``(B, S, sum(mlp[-1]))``."""

    def __init__(self, npoint: int, radii: list[float], nsamples: list[int], in_channels: int,
                 mlps: list[list[int]], grouping: str = "ball"):
        super().__init__()
        if grouping not in ("ball", "knn"):
            raise ValueError(f"unknown grouping {grouping!r}; use 'ball' or 'knn'")
        self.npoint, self.radii, self.nsamples, self.grouping = npoint, radii, nsamples, grouping
        self.mlps = nn.ModuleList(_mlp2d([in_channels + 3, *m]) for m in mlps)
        self.out_channels = sum(m[-1] for m in mlps)

    def forward(self, xyz: Tensor, feats: Tensor | None) -> tuple[Tensor, Tensor]:
        s = min(self.npoint, xyz.shape[1])
        centres = gather_points(xyz, farthest_point_sample(xyz, s, start="first"))
        outs = []
        for radius, ns, mlp in zip(self.radii, self.nsamples, self.mlps):
            if self.grouping == "ball":
                idx = ball_query(centres, xyz, radius, ns)
            else:
                idx = knn_indices(centres, xyz, ns)
            grouped = gather_points(xyz, idx) - centres.unsqueeze(2)  # (B, S, K, 3)
            if feats is not None:
                grouped = torch.cat([grouped, gather_points(feats, idx)], dim=-1)
            outs.append(mlp(grouped.permute(0, 3, 1, 2)).amax(-1))  # (B, C', S)
        return centres, torch.cat(outs, dim=1).transpose(1, 2)


class PointNet2(PointTokenEncoder):
    """PointNet++ token encoder: ``(B, N, C)`` -> tokens ``(B, num_tokens, token_dim)`` + mask ``(B, T)``.

    xyz drive the grouping; the remaining input channels (rgb, normalised xyz) are point features.
    """

    model_name = "PointNet2"

    def __init__(self, channels: str = "xyzrgb", num_classes: int = 0, variant: str = "ssg", width: float = 1.0,
                 grouping: str = "ball", npoint1: int = 512, npoint2: int = 128, token_dim: int = 512,
                 num_tokens: int = 100, pooling: str = "spatial", dropout: float = 0.5):
        super().__init__(channels=channels, num_tokens=num_tokens, pooling=pooling, num_classes=num_classes)
        if variant not in ("ssg", "msg"):
            raise ValueError(f"unknown PointNet++ variant {variant!r}; use 'ssg' or 'msg'")
        self._config = dict(channels=channels, num_classes=num_classes, variant=variant, width=width,
                            grouping=grouping, npoint1=npoint1, npoint2=npoint2, token_dim=token_dim,
                            num_tokens=num_tokens, pooling=pooling, dropout=dropout)
        self.token_dim = token_dim
        spec = _SSG if variant == "ssg" else _MSG
        scale = lambda ms: [[max(8, int(round(c * width))) for c in m] for m in ms]  # noqa: E731
        feat_in = self.in_channels - 3
        self.sa1 = SetAbstraction(npoint1, spec[0]["radii"], spec[0]["nsamples"], feat_in,
                                  scale(spec[0]["mlps"]), grouping)
        self.sa2 = SetAbstraction(npoint2, spec[1]["radii"], spec[1]["nsamples"], self.sa1.out_channels,
                                  scale(spec[1]["mlps"]), grouping)
        self.lift = nn.Sequential(nn.Conv1d(self.sa2.out_channels + 3, token_dim, 1, bias=False),
                                  nn.BatchNorm1d(token_dim), nn.ReLU())
        if num_classes > 0:
            self.head = nn.Sequential(nn.Linear(token_dim, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
                                      nn.Dropout(dropout), nn.Linear(256, num_classes))

    def point_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        x = build_input(points, self.channels)
        xyz = x[..., :3].contiguous()
        feats = x[..., 3:] if x.shape[-1] > 3 else None
        c1, f1 = self.sa1(xyz, feats)
        c2, f2 = self.sa2(c1, f1)
        out = self.lift(torch.cat([c2, f2], dim=-1).transpose(1, 2)).transpose(1, 2)  # (B, S2, token_dim)
        return out, c2

    def classifier(self, global_feat: Tensor) -> Tensor:
        return self.head(global_feat)
