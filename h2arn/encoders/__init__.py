"""Step 1 of H2ARN: frozen encoders that turn captions and point clouds into token-level features.

Point clouds: :class:`PointNet`, :class:`PointNet2` (PointNet++) and :class:`DGCNN`, each mapping a
batch ``(B, N, C)`` (xyz + rgb) to local tokens ``(B, T, D)`` plus a mask ``(B, T)`` (default
100 x 512 as in the paper), and to a global feature for classification pretraining.
Text: :mod:`h2arn.encoders.text` (CLIP, BERT, MiniLM through ``transformers``).
Weights: :mod:`h2arn.encoders.weights` (strict loading with key maps; the official code loads with
``strict=False`` and silently runs random encoders when a file does not match).
"""
from __future__ import annotations

from .dgcnn import DGCNN
from .pointnet import PointNet
from .pointnet2 import PointNet2
from .tokens import POOLINGS, PointTokenEncoder, pool_tokens

__all__ = ["PointNet", "PointNet2", "DGCNN", "PointTokenEncoder", "POOLINGS", "pool_tokens", "POINT_ENCODERS",
           "build_point_encoder", "canonical_pc_name"]

POINT_ENCODERS = {"PointNet": PointNet, "PointNet2": PointNet2, "DGCNN": DGCNN}
_ALIASES = {"pointnet": "PointNet", "pointnet2": "PointNet2", "pointnet++": "PointNet2", "pointnetpp": "PointNet2",
            "dgcnn": "DGCNN"}


def canonical_pc_name(name: str) -> str:
    """``"pointnet++"`` -> ``"PointNet2"`` etc. (official flag spellings accepted)."""
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown point encoder {name!r}; choose one of {sorted(POINT_ENCODERS)}")
    return key


def build_point_encoder(name: str, **config) -> PointTokenEncoder:
    """A fresh (randomly initialised) encoder by name with constructor keyword arguments."""
    return POINT_ENCODERS[canonical_pc_name(name)](**config)
