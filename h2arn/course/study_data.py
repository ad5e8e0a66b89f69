"""Features of generated benchmark variants for the studies (generator knobs) and the RISD oracle.

:func:`study_links` builds (once, cached) the benchmark with the study's knobs (:func:`h2arn.data.synthetic.generate`:
``depth``, ``leaves``, ``train_per_leaf``, ``redundancy``), extracts its features with **the same point encoder
as the default benchmark of the profile** (so a study varies the data, not the encoder), and returns the link
files. ``oracle=True`` returns a copy whose cloud masks drop every token with more than half of its points
flagged redundant (``pc_redundancy_<PC>.pt``, written by extraction): the model then never sees the redundant
tokens, which measures what RISD costs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from h2arn.extract import PROFILE_SETTINGS, ensure_features, extract, link_paths
from h2arn.features import atomic_save, mask_path_for, pack_tokens, read_tokens
from h2arn.paths import build_dir

__all__ = ["default_encoder", "study_features", "oracle_features", "study_links", "is_default_data", "ORACLE_THRESHOLD"]

ORACLE_THRESHOLD = 0.5     # a token with more than this share of flagged points is dropped by the oracle
FEATURE_PROFILE = {"ci": "ci", "medium": "ci"}


def default_encoder(data_profile: str) -> Path:
    """The point-encoder checkpoint the profile's default features were extracted with."""
    feats = ensure_features(data_profile, device="cpu", progress=False)
    manifest = json.loads((feats / "manifest.json").read_text(encoding="utf-8"))
    paths = {e.get("pc_weights") for e in manifest.get("entries", {}).values()}
    paths.discard(None)
    if len(paths) != 1 or not Path(next(iter(paths))).is_file():
        raise FileNotFoundError(f"{feats / 'manifest.json'}: expected one point-encoder checkpoint, found {paths}. "
                                "Fix: rebuild the default features (delete the folder and rerun ensure_features)")
    return Path(next(iter(paths)))


def is_default_data(knobs: dict | None, profile: str = "ci") -> bool:
    """True when ``knobs`` generate the profile's standard benchmark (``{"depth": 4}``, or ``train_per_leaf`` equal
    to the profile's own): its runs are the report's cached runs, so a study value equal to the default is never
    trained twice on a renamed copy of the same data."""
    from h2arn.data.synthetic import PROFILES, _make_knobs

    knobs = dict(knobs or {})
    if knobs.get("train_per_leaf") == PROFILES[FEATURE_PROFILE.get(profile, profile)].train_per_leaf:
        del knobs["train_per_leaf"]
    return not knobs or not _make_knobs(**knobs).non_default()


def study_features(profile: str, knobs: dict, build: bool = True) -> Path | None:
    """Feature folder of the benchmark generated with ``knobs`` (cached; the default features when knobs are empty).

    ``build=False``: return it only if it was built already (``None`` otherwise), generating nothing.
    """
    from h2arn.data.synthetic import default_root, ensure_synthetic

    from h2arn.data.synthetic import _make_knobs

    data_profile = FEATURE_PROFILE.get(profile, profile)
    if is_default_data(knobs, profile):   # the standard benchmark: its default features
        return ensure_features(data_profile, device="cpu", progress=False)
    if not build:
        out = build_dir() / "features" / default_root(data_profile, 0, _make_knobs(**knobs)).name
        return out if (out / "manifest.json").is_file() else None
    root = ensure_synthetic(data_profile, **knobs)
    out = build_dir() / "features" / root.name
    extract(root, "PointNet", "MiniLM", PROFILE_SETTINGS[data_profile]["num_points"], output_dir=out, device="cpu",
            pc_weights=str(default_encoder(data_profile)), progress=False)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    os.symlink(os.path.relpath(src, dst.parent), dst)


def oracle_features(feats: Path, pc_model: str = "PointNet") -> Path:
    """``<feats>-oracle``: the same features with redundant cloud tokens masked out (cached by source mtime)."""
    from h2arn.data.redundancy import token_redundancy_path

    out = feats.with_name(feats.name + "-oracle")
    stamp = out / "source.json"
    source = {"source": str(feats), "mtime_ns": (feats / "manifest.json").stat().st_mtime_ns,
              "threshold": ORACLE_THRESHOLD, "layout": 3}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == source:
        return out
    for link in sorted(feats.glob("*_link_*.json")):
        subset, split = link.stem.split("_link_")
        _link_or_copy(link, out / link.name)
        meta = feats / f"{subset}_meta_{split}.json"
        if meta.is_file():
            _link_or_copy(meta, out / meta.name)
        split_dir = feats / subset / split
        pc_path = split_dir / f"pc_features_{pc_model}.pt"
        for f in split_dir.glob("*.pt"):
            if f.name.startswith("pc_masks_") or f == pc_path:
                continue
            _link_or_copy(f, out / subset / split / f.name)
        shares_path = token_redundancy_path(feats, subset, split, pc_model)
        if not shares_path.is_file():
            raise FileNotFoundError(f"{shares_path}: no per-token redundancy shares, so the oracle cannot drop "
                                    "redundant tokens. Fix: re-extract with benchmark v4 (it writes them)")
        # the cloud features are written anew (packed files carry their own mask, so a mask file beside a linked
        # copy would be refused as coming from another extraction): the same tokens, the flagged ones masked out
        tokens, mask = read_tokens(pc_path)
        shares = torch.load(shares_path, map_location="cpu", weights_only=True)[:, :mask.shape[1]]
        keep = mask & ~(torch.nan_to_num(shares, nan=1.0) > ORACLE_THRESHOLD)
        empty = ~keep.any(dim=1)
        keep[empty] = mask[empty]         # a cloud made only of redundant tokens keeps them (never empty)
        dst = out / subset / split / pc_path.name
        for stale in (dst, mask_path_for(dst)):
            if stale.is_symlink() or stale.exists():
                stale.unlink()
        atomic_save(pack_tokens(tokens * keep[..., None], keep), dst)
        atomic_save(keep, mask_path_for(dst))
    stamp.write_text(json.dumps(source), encoding="utf-8")
    return out


def study_links(profile: str, knobs: dict, oracle: bool = False, build: bool = True) -> dict[str, list[str]] | None:
    """``{"train": [...], "val": [...], "test": [...]}`` link files of the study's features (None: not built, build=False)."""
    feats = study_features(profile, knobs, build)
    if feats is None:
        return None
    if oracle and not build and not (feats.with_name(feats.name + "-oracle") / "source.json").is_file():
        return None
    if oracle:
        feats = oracle_features(feats)
    return {split: [str(p) for p in link_paths(feats, split)] for split in ("train", "val", "test")}
