"""A trained run folder (``best_model.pth``, ``metrics.json``, ``checkpoint.pth``): read it back.

What :func:`h2arn.train.train` writes, read by evaluation, search and the course alike: the run's
metrics and configuration, its val-selected model, and the feature splits that match its training links.
"""
from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import load_model_file
from .device import resolve_device
from .features import FeatureSplit, load_feature_splits

__all__ = ["read_metrics", "load_trained", "test_links_of", "load_run_split"]


def read_metrics(run_dir: str | Path) -> dict:
    """The run's ``metrics.json`` (per-epoch losses, val recalls, scalars, best epoch)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json. Fix: train the run first (python -m h2arn.train ..., or ensure_trained(...) in the course).")
    return json.loads(path.read_text(encoding="utf-8"))


def load_trained(run_dir: str | Path, device: str = "auto"):
    """``(model in eval mode, payload)`` from a run folder's ``best_model.pth`` (selected on val)."""
    return load_model_file(Path(run_dir) / "best_model.pth", resolve_device(device))


def test_links_of(run_dir: str | Path, split: str = "test") -> list[Path]:
    """The ``split`` link files matching a run's training links (``*_link_train.json`` -> ``*_link_<split>.json``)."""
    cfg = read_metrics(run_dir)["config"]
    out = []
    for p in cfg["train_link"]:
        p = Path(p)
        q = p.with_name(p.name.replace("_link_train", f"_link_{split}", 1))
        if q == p or not q.is_file():
            raise FileNotFoundError(f"{q}: no {split} link file beside the run's training links {p}. Fix: "
                                    f"extract the {split} split, or evaluate with python -m h2arn.inference.")
        out.append(q)
    return out


def load_run_split(run_dir: str | Path, split: str = "test") -> FeatureSplit:
    """The run's ``split`` features (see :func:`test_links_of`)."""
    return load_feature_splits(test_links_of(run_dir, split))
