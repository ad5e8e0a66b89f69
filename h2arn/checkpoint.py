"""Model files and resumable training checkpoints: atomic writes, strict loads, clear errors.

Why this module exists: the official code loads weights with ``strict=False`` and, when the best
model file is missing, *prints a message and evaluates an untrained model*. Here every load is
strict and every problem (missing file, truncated file, foreign object, shapes that do not match
the flags or the features) is one :class:`CheckpointError` naming the file and the fix.

Two kinds of file, both plain ``torch.save`` dictionaries that load with ``weights_only=True``
(configs are stored as plain dicts of ints/floats/strings, RNG states as tensors and tuples):

* **model file** (``best_model.pth``): ``{"format": "h2arn-model", "version", "model_config",
  "loss_config", "state_dict", "epoch", "val_metrics", "train_config", "features"}``. Enough to rebuild the
  model for inference with no other input; ``features`` (:func:`h2arn.extract.feature_settings`: point
  encoder, its weights' sha256, point count, token count, pooling, text model) says how to embed NEW
  shapes and queries compatibly (:class:`h2arn.search.Retriever`).
* **training checkpoint** (``checkpoint.pth``): the model file's keys plus ``optimizer``,
  ``scheduler``, ``rng`` (python/numpy/torch/cuda), ``history`` (the metrics so far) and
  ``best`` (best validation metric and epoch). Written after every epoch, so ``--resume``
  continues exactly where an interrupted run stopped.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .features import atomic_save

__all__ = ["CheckpointError", "MODEL_FORMAT", "CHECKPOINT_FORMAT", "capture_rng_state", "restore_rng_state",
           "save_model_file", "load_payload", "build_model_from_payload", "load_model_file",
           "check_config_matches"]

MODEL_FORMAT = "h2arn-model"
CHECKPOINT_FORMAT = "h2arn-train-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model/checkpoint file is missing, corrupt, or does not match the flags or features."""


# --------------------------------------------------------------------------- RNG state

def capture_rng_state() -> dict:
    """Every random stream a training epoch consumes, as weights_only-loadable objects.

    Dropout draws from torch's CPU/CUDA generators, shuffling from its own seeded generator
    (rebuilt per epoch, so it needs no state), python/numpy are saved for user code.
    """
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA streams only when this machine has them)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda][: torch.cuda.device_count()])


# --------------------------------------------------------------------------- writing

def save_model_file(path: str | os.PathLike, model, *, loss_config: Mapping | None = None, epoch: int | None = None,
                    val_metrics: Mapping | None = None, train_config: Mapping | None = None,
                    extra: Mapping | None = None) -> Path:
    """Write a self-describing model file atomically (a crash never leaves half a file)."""
    payload = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "model_config": dict(model.config.to_dict()),
        "loss_config": dict(loss_config or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "val_metrics": dict(val_metrics or {}),
        "train_config": dict(train_config or {}),
    }
    if extra:
        payload.update(extra)
    return atomic_save(payload, path)


# --------------------------------------------------------------------------- reading

def load_payload(path: str | os.PathLike, *, expect: str = MODEL_FORMAT, what: str = "model file") -> dict:
    """``torch.load(weights_only=True)`` with the errors the official code swallows made explicit.

    ``expect`` may be :data:`MODEL_FORMAT` (a training checkpoint also carries a full model and is
    accepted) or :data:`CHECKPOINT_FORMAT`.
    """
    path = Path(path)
    fix = ("Fix: train a model first (python -m h2arn.train --save_model_path ...) or pass the path "
           "that training printed.")
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found (the official inference would silently evaluate an "
                              f"untrained model here; this one refuses). {fix}")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a {what} (.pth). {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of a foreign class, ...
        raise CheckpointError(f"{path}: cannot be read as a {what} ({type(exc).__name__}: {exc}). The file is "
                              f"corrupt or not an h2arn file. {fix}") from exc
    if not isinstance(payload, dict) or payload.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not an h2arn {what} (found {keys}; a bare state dict or an official "
                              f"H2ARN .pth has no stored config, so its shapes cannot be checked). {fix}")
    if expect == CHECKPOINT_FORMAT and payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: is a model file, not a resumable training checkpoint (it has no "
                              f"optimiser state). Fix: pass --checkpoint_path of the run you want to resume.")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer h2arn (format version {payload['version']}). "
                              "Fix: update the h2arn package.")
    return payload


def check_config_matches(stored: Mapping, requested: Mapping, path: str | os.PathLike,
                         source: str = "the command-line flags") -> None:
    """Raise if any explicitly requested model setting differs from the stored one.

    ``requested`` holds only what the user set (None values are ignored), e.g. ``{"d_model": 512}``.
    """
    diffs = [(k, stored.get(k), v) for k, v in requested.items() if v is not None and stored.get(k) != v]
    if diffs:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, a, b in diffs)
        raise CheckpointError(f"{path}: the checkpoint's model does not match {source} ({lines}). Fix: pass the "
                              f"flags the model was trained with (or drop them: they are read from the file), "
                              f"or point to the right checkpoint.")


def build_model_from_payload(payload: Mapping, path: str | os.PathLike, device: torch.device | str = "cpu"):
    """Rebuild :class:`h2arn.model.H2ARN` from a payload and load its weights strictly."""
    from .model import H2ARN, ModelConfig

    try:
        config = ModelConfig.from_dict(dict(payload["model_config"]))
    except Exception as exc:
        raise CheckpointError(f"{path}: stored model_config cannot build a model ({exc}). Fix: retrain with "
                              "this version of h2arn.") from exc
    model = H2ARN(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{path}: weights do not fit the stored config ({' '.join(first[:3])[:600]}). "
                              "Fix: the file was produced by different code; retrain it.") from exc
    return model.to(device)


def load_model_file(path: str | os.PathLike, device: torch.device | str = "cpu",
                    expect_config: Mapping | None = None) -> tuple[Any, dict]:
    """Load a model (or training checkpoint) file for evaluation: ``(model in eval mode, payload)``."""
    payload = load_payload(path)
    if expect_config:
        check_config_matches(payload["model_config"], expect_config, path)
    model = build_model_from_payload(payload, path, device)
    model.eval()
    return model, payload
