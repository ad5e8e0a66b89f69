"""Token-feature files and link files: the one reader/writer of the on-disk feature format.

The format is the official H2ARN pipeline's (see CONTRIBUTING.md, "Feature layout"), extended with
attention masks so that padding tokens can be ignored downstream (the official code has none):

* ``<subset>/<split>/txt_features_<TXT>.pt`` ``(N_txt, L_t, D_t)`` float, ``txt_masks_<TXT>.pt`` ``(N_txt, L_t)`` bool
* ``<subset>/<split>/pc_features_<PC>.pt``  ``(N_pc, L_p, D_p)`` float,  ``pc_masks_<PC>.pt``  ``(N_pc, L_p)`` bool
* ``<subset>_link_<split>.json``: one entry per caption, ``[[txt_path, i], [pc_path, j]]``, paths relative
  to the link file (the official files use ``./feature/...`` relative to the working directory; both resolve).
* ``<subset>_meta_<split>.json`` (optional): one dict per caption, same order.

Every file is written atomically (temp file + rename) so an interrupted run never leaves a half file
that a later stage would read, and every load validates shapes, dtypes, NaNs and index ranges and
names the offending file in its error.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["FeatureError", "FeatureSplit", "atomic_save", "atomic_write_json", "mask_path_for",
           "write_split", "load_links", "load_feature_splits", "data_fingerprint", "trim_padding"]


class FeatureError(ValueError):
    """A feature or link file is missing, corrupt or inconsistent. The message names the file and the fix."""


_FIX = "Fix: re-run feature extraction (python -m h2arn.extract --base_data_dir ...) to rebuild it."


@dataclass
class FeatureSplit:
    """Everything training/evaluation needs for one split, with texts in link order.

    txt ``(N_links, L_t, D_t)``, txt_mask ``(N_links, L_t)``, pc ``(N_pc, L_p, D_p)``,
    pc_mask ``(N_pc, L_p)``, txt_to_pc ``(N_links,)`` long: the cloud each caption describes.
    meta: one dict per caption (may be empty dicts when no meta file exists).
    """

    txt: Tensor
    txt_mask: Tensor
    pc: Tensor
    pc_mask: Tensor
    txt_to_pc: Tensor
    meta: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def num_texts(self) -> int:
        return self.txt.shape[0]

    @property
    def num_clouds(self) -> int:
        return self.pc.shape[0]

    @property
    def d_txt(self) -> int:
        return self.txt.shape[-1]

    @property
    def d_pcd(self) -> int:
        return self.pc.shape[-1]

    def pc_to_txt(self) -> list[list[int]]:
        """For each cloud, the indices of its captions (many-to-one links inverted)."""
        out: list[list[int]] = [[] for _ in range(self.num_clouds)]
        for t, p in enumerate(self.txt_to_pc.tolist()):
            out[p].append(t)
        return out


# --------------------------------------------------------------------------- writing

def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)          # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_json(obj, path: str | os.PathLike, indent: int | None = None) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def mask_path_for(feature_path: str | os.PathLike) -> Path:
    """``.../txt_features_CLIP.pt`` -> ``.../txt_masks_CLIP.pt`` (same for ``pc_``)."""
    p = Path(feature_path)
    return p.with_name(p.name.replace("_features_", "_masks_", 1))


def write_split(out_dir: str | os.PathLike, subset: str, split: str, *, txt: Tensor, txt_mask: Tensor,
                pc: Tensor, pc_mask: Tensor, links: Sequence[tuple[int, int]], txt_model: str,
                pc_model: str, meta: Sequence[dict] | None = None) -> Path:
    """Write one split's feature files, masks, link file and meta file; return the link file path.

    ``links[k] = (caption index, cloud index)``, one per caption. Tensors are validated before
    anything is written, so a bad extraction cannot produce files that look valid.
    """
    out_dir = Path(out_dir)
    split_dir = out_dir / subset / split
    txt_path = split_dir / f"txt_features_{txt_model}.pt"
    pc_path = split_dir / f"pc_features_{pc_model}.pt"
    _check_tokens(txt, txt_mask, txt_path)
    _check_tokens(pc, pc_mask, pc_path)
    for k, (i, j) in enumerate(links):
        if not (0 <= i < txt.shape[0] and 0 <= j < pc.shape[0]):
            raise FeatureError(f"link {k} = ({i}, {j}) is out of range for {txt.shape[0]} texts / "
                               f"{pc.shape[0]} clouds while writing {out_dir}")
    if meta is not None and len(meta) != len(links):
        raise FeatureError(f"{len(meta)} meta entries for {len(links)} links while writing {out_dir}")
    atomic_save(txt.contiguous(), txt_path)
    atomic_save(txt_mask.bool().contiguous(), mask_path_for(txt_path))
    atomic_save(pc.contiguous(), pc_path)
    atomic_save(pc_mask.bool().contiguous(), mask_path_for(pc_path))
    rel_txt = "./" + txt_path.relative_to(out_dir).as_posix()
    rel_pc = "./" + pc_path.relative_to(out_dir).as_posix()
    link_path = out_dir / f"{subset}_link_{split}.json"
    if meta is not None:
        atomic_write_json(list(meta), out_dir / f"{subset}_meta_{split}.json")
    atomic_write_json([[[rel_txt, int(i)], [rel_pc, int(j)]] for i, j in links], link_path)
    return link_path


# --------------------------------------------------------------------------- reading

def _check_tokens(feats: Tensor, mask: Tensor | None, path: Path) -> None:
    if not torch.is_tensor(feats) or feats.dim() != 3 or not feats.is_floating_point():
        raise FeatureError(f"{path}: expected a float tensor (N, L, D), got "
                           f"{type(feats).__name__} {getattr(feats, 'shape', '')}. {_FIX}")
    bad = (~torch.isfinite(feats)).sum().item()
    if bad:
        raise FeatureError(f"{path}: {bad} NaN/inf values in the features. {_FIX}")
    if mask is not None:
        if mask.shape != feats.shape[:2]:
            raise FeatureError(f"{mask_path_for(path)}: mask shape {tuple(mask.shape)} does not match "
                               f"features {tuple(feats.shape[:2])}. {_FIX}")
        empty = (~mask.bool()).all(dim=1).nonzero().flatten()
        if len(empty):
            raise FeatureError(f"{mask_path_for(path)}: rows {empty[:5].tolist()} have no valid token. {_FIX}")


def _load_tensor(path: Path) -> Tensor:
    if not path.is_file():
        raise FeatureError(f"{path}: file not found. {_FIX}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated pickle, zip error, foreign object...
        raise FeatureError(f"{path}: cannot be read as a torch tensor file ({type(exc).__name__}: {exc}). "
                           f"{_FIX}") from exc
    if not torch.is_tensor(obj):
        raise FeatureError(f"{path}: holds a {type(obj).__name__}, expected a tensor. {_FIX}")
    return obj


def _load_tokens_with_mask(path: Path) -> tuple[Tensor, Tensor]:
    feats = _load_tensor(path)
    mpath = mask_path_for(path)
    if mpath.is_file():
        mask = _load_tensor(mpath)
        if mask.dtype != torch.bool:   # .bool() would turn 0.3 or -1 into True without a word
            raise FeatureError(f"{mpath}: mask has dtype {mask.dtype}, expected torch.bool. {_FIX}")
    else:
        warnings.warn(f"{mpath} not found: treating every token of {path.name} as valid (official "
                      "features carry no mask, so padding tokens will take part as in the original code).",
                      stacklevel=3)
        mask = torch.ones(feats.shape[:2], dtype=torch.bool)
    _check_tokens(feats, mask, path)
    return feats.float(), mask


def _link_index(value) -> int:
    """Link indices are JSON integers; ``int(1.7)`` would silently pair a caption with the wrong row."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"index {value!r} is not an integer")
    return value


def _resolve(entry_path: str, link_path: Path) -> Path:
    p = Path(entry_path)
    if p.is_absolute():
        return p
    beside = (link_path.parent / p).resolve()
    if beside.exists():
        return beside
    cwd = p.resolve()
    return cwd if cwd.exists() else beside


def load_links(link_path: str | os.PathLike) -> FeatureSplit:
    """Read one link file and the feature files it names, validated. See :func:`load_feature_splits`."""
    return load_feature_splits([link_path])


def load_feature_splits(link_paths: Iterable[str | os.PathLike]) -> FeatureSplit:
    """Read and merge link files (e.g. ``Elephant`` and ``S3DIS`` of one split) into one :class:`FeatureSplit`.

    Texts come out in link order; cloud indices are offset so clouds from different files never
    collide. Raises :class:`FeatureError` naming the file for anything missing or inconsistent.
    """
    txt_parts: list[tuple[Path, int]] = []
    txt_to_pc: list[int] = []
    meta: list[dict] = []
    txt_cache: dict[Path, tuple[Tensor, Tensor]] = {}
    pc_offsets: dict[Path, tuple[int, int]] = {}  # file -> (offset in merged tensor, rows)
    pc_parts, pc_mask_parts = [], []
    n_pc = 0
    sources = []
    for link_path in link_paths:
        link_path = Path(link_path)
        sources.append(str(link_path))
        if not link_path.is_file():
            raise FeatureError(f"{link_path}: link file not found. {_FIX}")
        try:
            entries = json.loads(link_path.read_text(encoding="utf-8"))
            pairs = [((str(t[0]), _link_index(t[1])), (str(p[0]), _link_index(p[1]))) for t, p in entries]
        except Exception as exc:
            raise FeatureError(f"{link_path}: not a valid link file (expected a JSON list of "
                               f"[[txt_path, i], [pc_path, j]]): {exc}. {_FIX}") from exc
        if not pairs:
            raise FeatureError(f"{link_path}: link file has no entries. {_FIX}")
        for (tpath, ti), (ppath, pj) in pairs:
            tfile, pfile = _resolve(tpath, link_path), _resolve(ppath, link_path)
            if tfile not in txt_cache:
                txt_cache[tfile] = _load_tokens_with_mask(tfile)
            if pfile not in pc_offsets:
                feats, mask = _load_tokens_with_mask(pfile)
                pc_offsets[pfile] = (n_pc, feats.shape[0])
                pc_parts.append(feats)
                pc_mask_parts.append(mask)
                n_pc += feats.shape[0]
            n_txt_rows = txt_cache[tfile][0].shape[0]
            if not 0 <= ti < n_txt_rows:
                raise FeatureError(f"{link_path}: caption index {ti} is out of range for {tfile} "
                                   f"({n_txt_rows} rows): the link file does not match the features. {_FIX}")
            offset, rows = pc_offsets[pfile]
            if not 0 <= pj < rows:
                raise FeatureError(f"{link_path}: cloud index {pj} is out of range for {pfile} "
                                   f"({rows} rows): the link file does not match the features. {_FIX}")
            txt_parts.append((tfile, ti))
            txt_to_pc.append(offset + pj)
        meta_path = link_path.with_name(link_path.name.replace("_link_", "_meta_", 1))
        if meta_path.is_file():
            try:
                m = json.loads(meta_path.read_text(encoding="utf-8"))
            except Exception as exc:
                raise FeatureError(f"{meta_path}: invalid JSON ({exc}). {_FIX}") from exc
            if len(m) != len(pairs):
                raise FeatureError(f"{meta_path}: {len(m)} entries but {link_path} has {len(pairs)}. {_FIX}")
            meta.extend(m)
        else:
            meta.extend({} for _ in pairs)
    dims = {txt_cache[f][0].shape[1:] for f in txt_cache}
    if len(dims) > 1:
        raise FeatureError(f"text feature files disagree on (L, D): {sorted(map(tuple, dims))} in "
                           f"{[str(f) for f in txt_cache]}. Extract all subsets with the same --txt_model.")
    pdims = {p.shape[1:] for p in pc_parts}
    if len(pdims) > 1:
        raise FeatureError(f"point feature files disagree on (L, D): {sorted(map(tuple, pdims))}. "
                           "Extract all subsets with the same --pc_model.")
    txt = torch.stack([txt_cache[f][0][i] for f, i in txt_parts])
    txt_mask = torch.stack([txt_cache[f][1][i] for f, i in txt_parts])
    return FeatureSplit(txt=txt, txt_mask=txt_mask, pc=torch.cat(pc_parts), pc_mask=torch.cat(pc_mask_parts),
                        txt_to_pc=torch.tensor(txt_to_pc, dtype=torch.long), meta=meta, sources=sources)


# --------------------------------------------------------------------------- fingerprints and padding

_HASH_MEMO: dict[tuple, str] = {}


def _file_digest(path: Path) -> str | None:
    """blake2b of a file's content (a tensor's values for ``.pt``), memoised per (path, size, mtime)."""
    if not path.is_file():
        return None
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.blake2b(digest_size=16)
        obj = None
        if path.suffix == ".pt":   # hash the tensor, not the zip: torch.save writes a random id per save
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                obj = None
        if torch.is_tensor(obj):
            h.update(f"{tuple(obj.shape)}{obj.dtype}".encode())
            h.update(obj.contiguous().view(torch.uint8).numpy().tobytes() if obj.numel() else b"")
        else:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def data_fingerprint(links: Sequence[str | os.PathLike]) -> dict:
    """``{file: content hash}`` for the link files and every feature/mask file they name.

    Stored in ``metrics.json`` so cached runs (``h2arn.course.experiments.ensure_trained``) notice when
    the features changed and retrain instead of pairing a model with data it never saw. Content
    hashes (not modification times), so re-writing identical features does not force a retrain.
    """
    files: set[Path] = set()
    for link in map(Path, links):
        files.add(link)
        try:
            entries = json.loads(link.read_text(encoding="utf-8"))
            named = {e[0][0] for e in entries} | {e[1][0] for e in entries}
        except Exception:
            continue
        for name in named:
            p = Path(name)
            p = (p if p.is_absolute() else (link.parent / p)).resolve()
            files.update({p, mask_path_for(p)})
    return {str(f): _file_digest(f) for f in sorted(files)}


def trim_padding(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing token columns that are padding in every row of the batch: same result, less work.

    Captions are padded to 77 positions but most use ~20; the model masks padding everywhere, so
    the outputs of valid tokens do not depend on the trailing padding columns (``(B, L, D)`` ->
    ``(B, L', D)`` with ``L'`` = last valid column + 1).
    """
    cols = mask.any(dim=0)
    if bool(cols[-1]):
        return tokens, mask
    last = int(cols.nonzero().max()) + 1 if bool(cols.any()) else 1
    return tokens[:, :last], mask[:, :last]


# --------------------------------------------------------------------------- model / loss
