"""Step 1 of H2ARN: extract token-level text and point features for a dataset (CLI + Python API).

    python -m h2arn.extract --base_data_dir data/h2synth-ci --pc_model PointNet --txt_model MiniLM --num_points 1024

Flag names follow the official ``get_feature_link_*.py`` scripts (``--base_data_dir``, ``--pc_model``,
``--txt_model``, ``--num_points``); ``--base_data_dir`` is a dataset root holding ``Elephant/`` and/or
``S3DIS/`` (the official form, a single ``.../Elephant`` folder, is accepted too). For every subset
and split it writes, through :func:`h2arn.features.write_split` (the CONTRIBUTING.md layout):
text features + masks, point features + masks, the official link file and a meta file.

Differences from the official scripts, on purpose:

* every encoder works (PointNet / PointNet++ are broken there) and weights load strictly;
* clouds are batched, on CPU or GPU, with progress bars; both subsets are FPS-downsampled to
  ``--num_points`` (the official S3DIS path feeds whole scenes to a quadratic k-NN);
* attention masks are stored for text and point tokens;
* results are cached: ``manifest.json`` in the output folder holds a fingerprint of the inputs and
  options per subset/split, and a re-run with the same fingerprint does no work;
* every file is written atomically (temp file + rename).

Python API: :func:`extract` (what the CLI runs), :func:`ensure_features` (notebooks: builds the
synthetic data, the pretrained encoder and the features when missing) and :func:`link_paths`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .device import resolve_device
from .encoders import canonical_pc_name
from .encoders.pretrain import (DEFAULT_TRAINING, category_of, cpu_threads_for_small_batches, data_api,
                                ensure_pretrained, fingerprint_files)
from .encoders.text import TEXT_ENCODERS, TextEncoderError, canonical_txt_name, load_text_encoder
from .encoders.tokens import downsample_clouds
from .encoders.weights import CheckpointError, load_point_encoder, sha256_file, shared_pointnet_path
from .features import FeatureError, atomic_write_json, write_split
from .paths import build_dir

__all__ = ["extract", "ensure_features", "link_paths", "ExtractError", "main", "MANIFEST", "PROFILE_SETTINGS"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SUBSET_NAMES = ("Elephant", "S3DIS")

# what ensure_features uses per course profile: the default point encoder is a PointNet pretrained on
# the embedded train split (meaningful without ../shared, and ~30 s of CPU for ci); full uses paper sizes
PROFILE_SETTINGS = {
    "ci": dict(num_points=1024, pretrain_config=dict(emb_dims=256), pretrain_training=dict(epochs=30)),
    "full": dict(num_points=2048, pretrain_config={}, pretrain_training=dict(epochs=60)),
}


class ExtractError(ValueError):
    """The extraction inputs are wrong (missing folder, unknown split...). The message says the fix."""


# --------------------------------------------------------------------------- inputs

def resolve_dataset(base_data_dir: str | Path) -> tuple[Path, list[str]]:
    """``(dataset root, subsets)``. Accepts a root with ``Elephant/``/``S3DIS/`` or one subset folder."""
    (available_subsets,) = data_api("available_subsets")
    base = Path(base_data_dir)
    if not base.is_dir():
        raise ExtractError(f"{base}: dataset folder not found. Fix: pass --base_data_dir pointing at a folder that "
                           "holds Elephant/ and/or S3DIS/ (e.g. data/h2synth-ci, built by "
                           "h2arn.data.ensure_synthetic('ci')), or at T3DR-HIT v2 unpacked there.")
    subsets = available_subsets(base)
    if subsets:
        return base, subsets
    if base.name in SUBSET_NAMES and base.name in available_subsets(base.parent):
        return base.parent, [base.name]
    raise ExtractError(f"{base}: no caption files found (expected e.g. {base / 'Elephant' / 'Elephant_caption_train.json'}"
                       f" or {base / 'S3DIS' / 'S3DIS_train_captions.json'}). Fix: point --base_data_dir at the "
                       "dataset root.")


def _split_inputs(root: Path, subset: str, split: str) -> list[Path]:
    from .data.t3drhit import caption_path, cloud_path, read_captions

    cap = caption_path(root, subset, split)
    files = [cap] + [cloud_path(root, subset, split, n) for n in read_captions(cap)]
    meta = root / "metadata.json"
    return files + ([meta] if meta.is_file() else [])


def _caption_meta(record, k: int, caption: str) -> dict:
    """What the training/analysis notebooks need per caption (level = caption specificity, 0 = abstract)."""
    meta = record.meta or {}
    levels = meta.get("caption_levels")
    out = {"caption": caption, "shape": record.name, "subset": record.subset, "caption_index": k,
           "category": meta.get("category") or category_of(record), "super_category": meta.get("super_category"),
           "level": int(levels[k]) if levels is not None and k < len(levels) else None}
    for key in ("attributes", "redundant_fraction", "leaf", "mid_category", "taxonomy_path"):
        if key in meta:
            out[key] = meta[key]
    for key, per_caption in (("caption_group", "caption_groups"), ("target", "caption_targets")):
        if k < len(meta.get(per_caption) or ()):  # benchmark v4: identical-caption group, what the caption names
            out[key] = meta[per_caption][k]
    return out


# --------------------------------------------------------------------------- encoders

def _resolve_pc_weights(pc_weights, pc_model: str, root: Path, device, pretrain_config, pretrain_training,
                        progress: bool) -> tuple[str, Path | None]:
    """``(kind, path)``: kind is ``file`` or ``random``; ``pretrain`` trains/caches a checkpoint first."""
    spec = "pretrain" if pc_weights in (None, "", "pretrain") else str(pc_weights)
    if spec == "random":
        return "random", None
    if spec == "shared":
        path = shared_pointnet_path()
        if path is None:
            raise ExtractError("--pc_weights shared: the shared PointNet checkpoint "
                               "(<shared>/data/pretrained/pointnet_modelnet40.t7) was not found. Fix: set "
                               "H2ARN_SHARED to the shared folder, pass a file path, or use --pc_weights pretrain.")
        return "file", path
    if spec == "pretrain":
        return "file", ensure_pretrained(pc_model, root, config=pretrain_config, training=pretrain_training,
                                         device=device, progress=progress)
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"{path}: --pc_weights file not found. Fix: pass an existing checkpoint, 'shared', "
                              "'pretrain' (default) or 'random'.")
    return "file", path


def _build_pc_encoder(kind: str, path: Path | None, pc_model: str, num_tokens: int, pooling: str, device):
    if kind == "random":
        from .encoders import build_point_encoder
        from .encoders.pretrain import DEFAULT_CONFIGS

        torch.manual_seed(0)
        enc = build_point_encoder(pc_model, **{**DEFAULT_CONFIGS.get(pc_model, {}), "num_tokens": num_tokens,
                                               "pooling": pooling})
        return enc.eval().to(device)
    enc, _ = load_point_encoder(path, pc_model=pc_model, num_tokens=num_tokens, pooling=pooling)
    return enc.to(device)


@torch.no_grad()
def encode_clouds(encoder, clouds: Sequence[np.ndarray], num_points: int, batch_size: int = 32,
                  device="cpu", progress: bool = True, desc: str = "points") -> tuple[torch.Tensor, torch.Tensor]:
    """Clouds ``[(N_i, C>=6)]`` -> tokens ``(n, T, D)`` float32 and masks ``(n, T)`` on the CPU.

    Each cloud is FPS-downsampled to ``num_points`` when larger (deterministic, official start point);
    clouds are then batched by point count, so no padding point ever enters the encoder.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    prepared = downsample_clouds([torch.as_tensor(np.asarray(c), dtype=torch.float32).to(device) for c in clouds],
                                 num_points)
    by_size: dict[int, list[int]] = {}
    for i, p in enumerate(prepared):
        by_size.setdefault(p.shape[0], []).append(i)
    tokens: list = [None] * len(prepared)
    masks: list = [None] * len(prepared)
    batches = [ids[s:s + batch_size] for ids in by_size.values() for s in range(0, len(ids), batch_size)]
    for ids in tqdm(batches, desc=desc, unit="batch", disable=None if progress else True, leave=False):
        x = torch.stack([prepared[i] for i in ids]).to(encoder.dtype)
        tok, mask = encoder(x)
        for j, i in enumerate(ids):
            tokens[i], masks[i] = tok[j].float().cpu(), mask[j].cpu()
    return torch.stack(tokens), torch.stack(masks)


def _text_identity(name: str, path) -> dict:
    """What decides the text features: model name, source and (for a folder) its files' fingerprint."""
    from .encoders.text import minilm_path

    src = Path(path) if path is not None else (minilm_path() if name == "MiniLM" else None)
    ident = {"name": name, "source": str(path) if path is not None else "default"}
    if src is not None and src.is_dir():
        ident["files"] = fingerprint_files([p for p in src.iterdir() if p.is_file()])
    return ident


# --------------------------------------------------------------------------- main entry

def extract(base_data_dir, pc_model: str = "PointNet", txt_model: str = "MiniLM", num_points: int = 1024, *,
            output_dir=None, device="auto", batch_size: int = 32, pc_weights=None, txt_model_path=None,
            num_tokens: int = 100, pooling: str = "spatial", max_length: int = 77,
            splits: Sequence[str] = ("train", "val", "test"), allow_download: bool = False,
            pretrain_config: dict | None = None, pretrain_training: dict | None = None,
            progress: bool = True, force: bool = False) -> dict:
    """Extract features for every subset and requested split; returns a summary dict.

    ``summary = {"output_dir", "written": ["Elephant/train", ...], "skipped": [...], "pc_weights"}``.
    A split whose fingerprint matches ``manifest.json`` (and whose files exist) is skipped without
    loading any model.
    """
    (load_split,) = data_api("load_split")
    from .data.t3drhit import caption_path

    pc_model = canonical_pc_name(pc_model)
    txt_model = canonical_txt_name(txt_model)
    if num_points < 1 or num_tokens < 1 or batch_size < 1:
        raise ExtractError(f"--num_points ({num_points}), --num_tokens ({num_tokens}) and --batch_size ({batch_size}) "
                           "must be positive.")
    device = resolve_device(device)
    root, subsets = resolve_dataset(base_data_dir)
    out = Path(output_dir) if output_dir is not None else build_dir() / "features" / root.name
    todo = [(s, sp) for s in subsets for sp in splits if caption_path(root, s, sp).is_file()]
    if not todo:
        raise ExtractError(f"{root}: none of the splits {list(splits)} exist for {subsets}. Fix: pass --splits "
                           "with existing splits (real T3DR-HIT v2 has train and test only).")

    kind, weights = _resolve_pc_weights(pc_weights, pc_model, root, device, pretrain_config, pretrain_training,
                                        progress)
    options = dict(format=FORMAT_VERSION, pc_model=pc_model, txt_model=_text_identity(txt_model, txt_model_path),
                   num_points=num_points, num_tokens=num_tokens, pooling=pooling, max_length=max_length,
                   pc_weights=sha256_file(weights) if weights is not None else "random")
    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path)
    summary = {"output_dir": out, "written": [], "skipped": [], "pc_weights": str(weights) if weights else "random"}
    txt_enc = pc_enc = None
    for subset, split in todo:
        key = f"{subset}/{split}"
        fp = fingerprint_files(_split_inputs(root, subset, split), extra=options)
        entry = manifest["entries"].get(key, {})
        if not force and entry.get("fingerprint") == fp and all((out / f).is_file() for f in entry.get("files", [])):
            summary["skipped"].append(key)
            continue
        records = load_split(root, subset, split)
        if not records:
            raise ExtractError(f"{caption_path(root, subset, split)} lists no shapes. Fix: regenerate the dataset.")
        if txt_enc is None:
            txt_enc = load_text_encoder(txt_model, txt_model_path, device=device, max_length=max_length,
                                        allow_download=allow_download)
            pc_enc = _build_pc_encoder(kind, weights, pc_model, num_tokens, pooling, device)
        captions, links, meta = [], [], []
        for j, rec in enumerate(records):
            for k, cap in enumerate(rec.captions):
                links.append((len(captions), j))
                meta.append(_caption_meta(rec, k, cap))
                captions.append(cap)
        with cpu_threads_for_small_batches(device):  # see its docstring: shared 2-core machines
            txt, txt_mask = txt_enc.encode(captions, batch_size=max(batch_size, 32), progress=progress)
            pc, pc_mask = encode_clouds(pc_enc, [r.points for r in records], num_points, batch_size, device,
                                        progress, desc=f"{pc_model} {key}")
        link = write_split(out, subset, split, txt=txt, txt_mask=txt_mask, pc=pc, pc_mask=pc_mask, links=links,
                           txt_model=txt_model, pc_model=pc_model, meta=meta)
        files = [link.name, f"{subset}_meta_{split}.json"] + [
            f"{subset}/{split}/{kind_}_{what}_{name}.pt" for kind_, name in (("txt", txt_model), ("pc", pc_model))
            for what in ("features", "masks")]
        files += _write_token_redundancy(out, subset, split, records, pc_model, num_points, num_tokens, pooling)
        manifest["entries"][key] = {"fingerprint": fp, "files": files, "options": options,
                                    "n_texts": len(captions), "n_clouds": len(records),
                                    "pc_weights": summary["pc_weights"]}
        atomic_write_json(manifest, manifest_path, indent=1)
        summary["written"].append(key)
    return summary


def _write_token_redundancy(out: Path, subset: str, split: str, records, pc_model: str, num_points: int,
                            num_tokens: int, pooling: str) -> list[str]:
    """Per-token share of flagged points (RISD oracle), when the clouds carry ``redundant_flag`` and the
    encoder pools tokens from its input points. Returns the written file names (relative to ``out``)."""
    from .data.redundancy import TOKENS_ON_INPUT_POINTS, token_redundancy, token_redundancy_path
    from .features import atomic_save

    if pc_model not in TOKENS_ON_INPUT_POINTS or not all(
            r.extra is not None and r.extra.shape[1] >= 2 and "redundant_fraction" in (r.meta or {}) for r in records):
        return []
    shares = torch.stack([torch.as_tensor(token_redundancy(r.points, r.extra[:, 1], num_points, num_tokens, pooling))
                          for r in records])
    path = token_redundancy_path(out, subset, split, pc_model)
    atomic_save(shares, path)
    return [path.relative_to(out).as_posix()]


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        return {"version": FORMAT_VERSION, "entries": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("entries"), dict):
            raise ValueError("no 'entries' object")
        return data
    except (ValueError, AttributeError):
        return {"version": FORMAT_VERSION, "entries": {}}  # unreadable cache: rebuild everything


def link_paths(feature_dir, split: str) -> list[Path]:
    """The link files of one split for every subset present (``Elephant`` first), for ``h2arn.features``."""
    feature_dir = Path(feature_dir)
    paths = [feature_dir / f"{s}_link_{split}.json" for s in SUBSET_NAMES]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise FeatureError(f"{feature_dir}: no link file for split {split!r} (expected e.g. "
                           f"{feature_dir / f'Elephant_link_{split}.json'}). Fix: run feature extraction "
                           "(h2arn.extract.ensure_features or python -m h2arn.extract).")
    return paths


def ensure_features(profile: str = "ci", txt_model: str = "MiniLM", pc_model: str = "PointNet", device="auto",
                    seed: int = 0, pc_weights=None, progress: bool = True) -> Path:
    """Feature folder for the embedded benchmark of ``profile``, built (data, encoder, features) if missing.

    The default point encoder is a PointNet pretrained on the benchmark's train split (cached under
    ``build/encoders/``), so it is meaningful without any download. Returns
    ``build/features/h2synth-<profile>[-<model tags>]``; pass its link files (:func:`link_paths`) to
    ``h2arn.features.load_feature_splits``.
    """
    (ensure_synthetic,) = data_api("ensure_synthetic")
    if profile not in PROFILE_SETTINGS:
        raise ExtractError(f"unknown profile {profile!r}; choose one of {sorted(PROFILE_SETTINGS)}")
    settings = PROFILE_SETTINGS[profile]
    root = ensure_synthetic(profile, seed=seed)
    pc_model, txt_model = canonical_pc_name(pc_model), canonical_txt_name(txt_model)
    tag = "" if (pc_model, txt_model, pc_weights) == ("PointNet", "MiniLM", None) else \
        f"-{pc_model}-{txt_model}" + (f"-{Path(str(pc_weights)).stem}" if pc_weights else "")
    out = build_dir() / "features" / f"{root.name}{tag}"
    extract(root, pc_model, txt_model, settings["num_points"], output_dir=out, device=device, pc_weights=pc_weights,
            pretrain_config=settings["pretrain_config"] if pc_model == "PointNet" else None,
            pretrain_training={**DEFAULT_TRAINING, **settings["pretrain_training"]}, progress=progress)
    return out


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m h2arn.extract", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base_data_dir", required=True, help="dataset root holding Elephant/ and/or S3DIS/")
    p.add_argument("--pc_model", default="PointNet", help="PointNet, PointNet2 (PointNet++) or DGCNN")
    p.add_argument("--txt_model", default="MiniLM", choices=TEXT_ENCODERS)
    p.add_argument("--num_points", type=int, default=1024, help="FPS-downsample larger clouds to this many points")
    p.add_argument("--output_dir", default=None, help="default: build/features/<basename of base_data_dir>")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--pc_weights", default="pretrain",
                   help="checkpoint file, 'shared' (ModelNet40 PointNet from ../shared), 'pretrain' (train on this "
                        "dataset's train split, cached in build/encoders) or 'random'")
    p.add_argument("--pretrain_epochs", type=int, default=DEFAULT_TRAINING["epochs"])
    p.add_argument("--txt_model_path", default=None, help="local folder (e.g. ./save/CLIP) or hub id")
    p.add_argument("--allow_download", action="store_true", help="let transformers download a hub id")
    p.add_argument("--num_tokens", type=int, default=100)
    p.add_argument("--pooling", default="spatial", choices=["spatial", "index"],
                   help="spatial = FPS centroids + nearest-centroid max-pool; index = official AdaptiveMaxPool1d")
    p.add_argument("--max_length", type=int, default=77)
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--force", action="store_true", help="ignore the cache and re-extract")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = extract(args.base_data_dir, args.pc_model, args.txt_model, args.num_points,
                          output_dir=args.output_dir, device=args.device, batch_size=args.batch_size,
                          pc_weights=args.pc_weights, txt_model_path=args.txt_model_path, num_tokens=args.num_tokens,
                          pooling=args.pooling, max_length=args.max_length, splits=args.splits,
                          allow_download=args.allow_download,
                          pretrain_training={**DEFAULT_TRAINING, "epochs": args.pretrain_epochs}, force=args.force)
    except (ExtractError, CheckpointError, TextEncoderError, FeatureError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"features in {summary['output_dir']}: written {summary['written'] or 'nothing'}; "
          f"up to date {summary['skipped'] or 'none'}; point weights {summary['pc_weights']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
