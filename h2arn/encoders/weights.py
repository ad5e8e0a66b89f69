"""Strict checkpoint loading for the point encoders, with key maps for known public checkpoints.

Why strict: the official H2ARN extraction loads every encoder with ``strict=False``, so a file for
the wrong network (or a corrupt one) silently yields *random* features and a retrieval model that
trains on noise. Here every key must match by name and shape after a documented key map, and any
difference raises :class:`CheckpointError` listing missing keys, unexpected keys and shape mismatches.

Formats understood by :func:`load_point_encoder`:

* ``h2arn``: our own files (:func:`save_encoder_checkpoint`), ``{"format", "pc_model", "config",
  "state_dict", "classes", ...}``; the config rebuilds the exact network.
* ``learning3d_pointnet``: vinits5/learning3d ``Classifier(PointNet(use_bn=True))``, e.g. the public
  ModelNet40 checkpoint ``pointnet_modelnet40.t7`` (keys ``feature_model.conv1..5``, ``feature_model.bn1..5``,
  ``linear1..3``, ``bn1..2``). Mapped to ``backbone.*`` and ``head.*``. Its sha256 is verified.
* ``antao97_dgcnn``: antao97/dgcnn.pytorch semantic segmentation (``module.conv1.0.weight`` ...).
  ``module.`` is stripped; ``conv8``/``conv9`` (the 13-class segmentation head) are dropped on purpose
  because the paper uses the trunk's ``conv7`` output as features.

Every file is read with ``torch.load(..., weights_only=True, map_location="cpu")``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..features import atomic_save
from ..paths import shared_dir

__all__ = ["CheckpointError", "KNOWN_CHECKPOINTS", "MODELNET40_CLASSES", "sha256_file", "read_checkpoint",
           "detect_format", "map_keys", "load_strict", "load_point_encoder", "save_encoder_checkpoint",
           "shared_pointnet_path", "H2ARN_FORMAT"]

H2ARN_FORMAT = "h2arn-point-encoder/1"

# ModelNet40 class order (alphabetical, as shape_names.txt) used by the public checkpoint's 40 logits
MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
    "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
    "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
    "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox"]

KNOWN_CHECKPOINTS = {
    "pointnet_modelnet40.t7": dict(
        sha256="4ab8d57bbea77e06bfebd64bc11343ed01621977fb0c5353e3bcd55e943710db",
        format="learning3d_pointnet", classes=MODELNET40_CLASSES,
        source="vinits5/learning3d pretrained/exp_classifier/models/best_model.t7 (MIT)",
        inputs="1024 points, xyz only, unit-sphere normalised, y-up"),
}


class CheckpointError(RuntimeError):
    """A weight file is missing, corrupt, or does not match the network. The message names the file."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shared_pointnet_path() -> Path | None:
    """``<shared>/data/pretrained/pointnet_modelnet40.t7`` if the shared assets are present, else None."""
    root = shared_dir()
    if root is None:
        return None
    path = root / "data" / "pretrained" / "pointnet_modelnet40.t7"
    return path if path.is_file() else None


def read_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Load a checkpoint file safely (``weights_only=True``) and verify its sha256 when known.

    Returns the raw object (a dict). Known public files (by file name, see ``KNOWN_CHECKPOINTS``)
    have their hash checked even if ``expected_sha256`` is not given.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found. Fix: pass an existing file to --pc_weights "
                              "(or omit it to pretrain an encoder on the dataset).")
    known = KNOWN_CHECKPOINTS.get(path.name)
    expected = expected_sha256 or (known["sha256"] if known else None)
    if expected is not None:
        got = sha256_file(path)
        if got != expected:
            raise CheckpointError(f"{path}: sha256 {got} does not match the expected {expected}. The file is "
                                  "corrupt or not the documented checkpoint. Fix: copy it again from its source "
                                  f"({known['source'] if known else 'where you got it'}).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                              "Fix: the file is truncated/corrupt or not a state dict; re-create or re-copy it.") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a state dict (a mapping of "
                              "parameter names to tensors). Fix: save model.state_dict(), not the model.")
    return dict(obj)


def _unwrap(obj: dict) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            return dict(obj[key])
    return obj


def detect_format(obj: dict) -> str:
    """``"h2arn"``, ``"learning3d_pointnet"``, ``"antao97_dgcnn"`` or ``"unknown"`` from the key names."""
    if obj.get("format") == H2ARN_FORMAT:
        return "h2arn"
    keys = list(_unwrap(obj))
    if any(k.startswith("feature_model.conv") for k in keys):
        return "learning3d_pointnet"
    stripped = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if "conv1.0.weight" in stripped and "conv7.0.weight" in stripped:
        return "antao97_dgcnn"
    return "unknown"


def _map_learning3d(key: str) -> str | None:
    if key.startswith("feature_model."):
        return "backbone." + key[len("feature_model."):]
    if key.split(".")[0] in ("linear1", "linear2", "linear3", "bn1", "bn2"):
        return "head." + key
    return key


def _map_antao97(key: str) -> str | None:
    key = key[len("module."):] if key.startswith("module.") else key
    if key.split(".")[0] in ("conv8", "conv9"):  # 13-class segmentation head: not part of the feature trunk
        return None
    return key


KEY_MAPS: dict[str, Callable[[str], str | None]] = {
    "learning3d_pointnet": _map_learning3d,
    "antao97_dgcnn": _map_antao97,
    "h2arn": lambda k: k,
}


def map_keys(state_dict: Mapping[str, Tensor], fmt: str) -> dict[str, Tensor]:
    """Rename keys with the format's key map; keys mapped to ``None`` are dropped deliberately."""
    fn = KEY_MAPS[fmt]
    out = {}
    for k, v in state_dict.items():
        new = fn(k)
        if new is not None:
            out[new] = v
    return out


def _listing(items: list, limit: int = 12) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with one readable error for every mismatch."""
    expected = module.state_dict()
    bad_values = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and torch.is_tensor(state_dict[k])
                  and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched or bad_values:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_listing(mismatched)}")
        if bad_values:
            parts.append(f"non-tensor values {_listing(bad_values)}")
        name = getattr(module, "model_name", type(module).__name__)
        raise CheckpointError(f"{source}: the weights do not match {name} ({'; '.join(parts)}). Loading is strict "
                              "because a partial match would silently give random features. Fix: pass the "
                              "checkpoint trained for this encoder and these options (--pc_model, width), or omit "
                              "--pc_weights to pretrain one on the dataset.")
    module.load_state_dict(dict(state_dict), strict=True)


def _config_from_shapes(fmt: str, sd: Mapping[str, Tensor]) -> tuple[str, dict]:
    try:
        if fmt == "learning3d_pointnet":
            w1 = sd["backbone.conv1.weight"]
            channels = {3: "xyz", 6: "xyzrgb", 9: "xyzrgbn"}.get(w1.shape[1], "xyz")
            return "PointNet", dict(channels=channels, emb_dims=sd["backbone.conv5.weight"].shape[0],
                                    token_dim=sd["head.linear1.weight"].shape[0],
                                    num_classes=sd["head.linear3.weight"].shape[0] if "head.linear3.weight" in sd else 0)
        if fmt == "antao97_dgcnn":
            w1 = sd["conv1.0.weight"]
            channels = {6: "xyz", 12: "xyzrgb", 18: "xyzrgbn"}.get(w1.shape[1], "xyzrgbn")
            return "DGCNN", dict(channels=channels, width=w1.shape[0], emb_dims=sd["conv6.0.weight"].shape[0],
                                 out_dim=sd["conv7.0.weight"].shape[0], num_classes=0)
    except KeyError:
        pass  # fall through: the strict load below reports exactly what is missing
    return ("PointNet", dict(channels="xyz", num_classes=40)) if fmt == "learning3d_pointnet" else ("DGCNN", {})


def load_point_encoder(path: str | os.PathLike, *, pc_model: str | None = None, num_tokens: int | None = None,
                       pooling: str | None = None, expected_sha256: str | None = None):
    """Build the right encoder for a checkpoint file and load it strictly. Returns ``(encoder, info)``.

    ``pc_model`` (optional) must agree with the file; ``num_tokens``/``pooling`` override the
    (weight-free) token settings. ``info`` holds ``format``, ``sha256``, ``classes`` and ``metrics``.
    The encoder is returned in ``eval()`` mode.
    """
    from . import build_point_encoder, canonical_pc_name

    path = Path(path)
    obj = read_checkpoint(path, expected_sha256)
    fmt = detect_format(obj)
    if fmt == "unknown":
        sample = list(_unwrap(obj))[:8]
        raise CheckpointError(f"{path}: unrecognised checkpoint layout (first keys {sample}). Known layouts: "
                              "h2arn encoder files, learning3d PointNet classifier, antao97 DGCNN semseg. "
                              "Fix: pass one of those, or omit --pc_weights to pretrain an encoder.")
    classes = list(obj.get("classes") or [])
    if fmt == "h2arn":
        name, config = canonical_pc_name(obj["pc_model"]), dict(obj["config"])
        sd = dict(obj["state_dict"])
    else:
        sd = map_keys(_unwrap(obj), fmt)
        name, config = _config_from_shapes(fmt, sd)
        known = KNOWN_CHECKPOINTS.get(path.name)
        if known:
            classes = list(known["classes"])
    if pc_model is not None and canonical_pc_name(pc_model) != name:
        raise CheckpointError(f"{path}: holds {name} weights ({fmt} format) but --pc_model {pc_model} was asked. "
                              f"Fix: use --pc_model {name} with this file, or pass a {pc_model} checkpoint.")
    if num_tokens is not None:
        config["num_tokens"] = int(num_tokens)
    if pooling is not None:
        config["pooling"] = pooling
    try:
        encoder = build_point_encoder(name, **config)
    except TypeError as exc:
        raise CheckpointError(f"{path}: its config {config} cannot build {name} ({exc}). Fix: re-create the "
                              "checkpoint with this version of h2arn.") from exc
    load_strict(encoder, sd, source=f"{path} ({fmt} format)")
    info = dict(format=fmt, path=str(path), sha256=sha256_file(path), classes=classes, pc_model=name,
                config=encoder.config(), metrics=dict(obj.get("metrics") or {}))
    return encoder.eval(), info


def save_encoder_checkpoint(encoder, path: str | os.PathLike, *, classes: list[str] | None = None,
                            metrics: dict | None = None, fingerprint: str | None = None) -> Path:
    """Save an encoder in the ``h2arn`` format (atomic write); :func:`load_point_encoder` reads it back."""
    obj = {"format": H2ARN_FORMAT, "pc_model": encoder.model_name, "config": encoder.config(),
           "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
           "classes": list(classes or []), "metrics": dict(metrics or {}), "fingerprint": fingerprint or ""}
    return atomic_save(obj, path)
