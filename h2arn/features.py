"""Token-feature files and link files: the one reader/writer of the on-disk feature format.

The format is the official H2ARN pipeline's (see CONTRIBUTING.md, "Feature layout"), extended with
attention masks so that padding tokens can be ignored downstream (the official code has none):

* ``<subset>/<split>/txt_features_<TXT>.pt`` ``(N_txt, L_t, D_t)`` float, ``txt_masks_<TXT>.pt`` ``(N_txt, L_t)`` bool
* ``<subset>/<split>/pc_features_<PC>.pt``  ``(N_pc, L_p, D_p)`` float,  ``pc_masks_<PC>.pt``  ``(N_pc, L_p)`` bool
* ``<subset>_link_<split>.json``: one entry per caption, ``[[txt_path, i], [pc_path, j]]``, paths relative
  to the link file (the official files use ``./feature/...`` relative to the working directory; both resolve).
  Several captions may name the same text row (extraction stores each distinct caption once).
* ``<subset>_meta_<split>.json`` (optional): one dict per caption, same order.

Two encodings of a feature file, both read by :func:`read_tokens`:

* **dense** (the official one): the padded float tensor itself. Official features and hand-made
  test fixtures look like this.
* **packed** (what ``h2arn.extract`` writes, ``write_split(..., packed=True)``): a dict of tensors holding
  only the valid tokens (captions use ~10 of 77 positions), in float16 when every value fits (the
  rounding, 2^-11 relative, leaves retrieval metrics unchanged: tests/test_features_storage.py), and,
  where at least 1/16 of the values are exactly 0 (ReLU features of the point encoders), a bit map of
  the non-zeros plus the non-zero values only. Read memory-mapped (``torch.load(mmap=True)``) and
  unpacked to float32, padded only to the longest valid row.

Every file is written atomically (temp file + rename) so an interrupted run never leaves a half file
that a later stage would read, and every load validates shapes, dtypes, NaNs and index ranges and
names the offending file in its error. When the folder of a link file holds the ``manifest.json``
that extraction writes last, the link file is only loaded if every file of its extraction still has
the size and content hash recorded there (:func:`check_manifest`): an interrupted re-extraction can
never pair new text features with old links.
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

import numpy as np
import torch
from torch import Tensor

__all__ = ["FeatureError", "FeatureSplit", "atomic_save", "atomic_write_json", "mask_path_for",
           "write_split", "load_links", "load_feature_splits", "data_fingerprint", "trim_padding",
           "pack_tokens", "unpack_tokens", "read_tokens", "MANIFEST", "file_record", "manifest_mismatches",
           "check_manifest"]

MANIFEST = "manifest.json"        # written last by h2arn.extract; see check_manifest
PACKED_FORMAT = "h2arn-packed-tokens"


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
                pc_model: str, meta: Sequence[dict] | None = None, packed: bool = False) -> Path:
    """Write one split's feature files, masks, link file and meta file; return the link file path.

    ``links[k] = (caption index, cloud index)``, one per caption (several may share a caption row).
    Tensors are validated before anything is written, so a bad extraction cannot produce files that
    look valid. ``packed=True`` stores the valid tokens only (:func:`pack_tokens`); the default is the
    official dense tensors. The link file is written last.
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
    encode = pack_tokens if packed else (lambda feats, mask: feats.contiguous())
    atomic_save(encode(txt, txt_mask), txt_path)
    atomic_save(txt_mask.bool().contiguous(), mask_path_for(txt_path))
    atomic_save(encode(pc, pc_mask), pc_path)
    atomic_save(pc_mask.bool().contiguous(), mask_path_for(pc_path))
    rel_txt = "./" + txt_path.relative_to(out_dir).as_posix()
    rel_pc = "./" + pc_path.relative_to(out_dir).as_posix()
    link_path = out_dir / f"{subset}_link_{split}.json"
    if meta is not None:
        atomic_write_json(list(meta), out_dir / f"{subset}_meta_{split}.json")
    atomic_write_json([[[rel_txt, int(i)], [rel_pc, int(j)]] for i, j in links], link_path)
    return link_path


# --------------------------------------------------------------------------- packed encoding

_FLOAT16_MAX = 65504.0


def pack_tokens(feats: Tensor, mask: Tensor) -> dict:
    """Dense ``(N, L, D)`` features + ``(N, L)`` mask -> the packed dict (valid rows only; see the module docstring).

    Lossless except for the float16 rounding, which is skipped (float32 kept) when a value does not fit.
    """
    mask = mask.bool()
    rows = feats[mask].float()                                   # (n_valid, D), row-major over (N, L)
    dtype = torch.float16 if rows.numel() == 0 or float(rows.abs().max()) <= _FLOAT16_MAX else torch.float32
    out = {"format": PACKED_FORMAT, "version": 1, "shape": [int(x) for x in feats.shape], "mask": mask.contiguous()}
    nonzero = rows != 0
    if rows.numel() and float(nonzero.float().mean()) <= 15 / 16:   # the bit map pays for itself
        out["nonzero_bits"] = torch.from_numpy(np.packbits(nonzero.reshape(-1).numpy()))
        out["values"] = rows[nonzero].to(dtype).contiguous()
    else:
        out["values"] = rows.to(dtype).contiguous()
    return out


def _is_packed(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == PACKED_FORMAT


def unpack_tokens(obj: dict, path: Path | str = "<packed tokens>") -> tuple[Tensor, Tensor]:
    """The packed dict -> float32 features ``(N, L', D)`` and mask ``(N, L')``, ``L'`` = the longest valid row.

    Trailing positions that are padding in every row are dropped (the model masks padding, so nothing
    downstream changes, see :func:`trim_padding`); padded positions hold zeros.
    """
    try:
        n, length, dim = (int(x) for x in obj["shape"])
        mask, values = obj["mask"].bool(), obj["values"]
        if mask.shape != (n, length) or values.dim() not in (1, 2):
            raise ValueError(f"mask {tuple(mask.shape)} / values {tuple(values.shape)} do not fit shape {(n, length, dim)}")
        n_valid = int(mask.sum())
        if "nonzero_bits" in obj:
            bits = np.unpackbits(obj["nonzero_bits"].numpy(), count=n_valid * dim).view(bool)
            if int(bits.sum()) != values.numel():
                raise ValueError(f"{int(bits.sum())} non-zero bits but {values.numel()} values")
            rows = torch.zeros(n_valid * dim, dtype=torch.float32)
            rows[torch.from_numpy(bits)] = values.float()
            rows = rows.view(n_valid, dim)
        else:
            if values.shape != (n_valid, dim):
                raise ValueError(f"values {tuple(values.shape)} but the mask has {n_valid} valid rows of width {dim}")
            rows = values.float()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise FeatureError(f"{path}: corrupt packed feature file ({exc}). {_FIX}") from exc
    cols = mask.any(dim=0)
    keep = int(cols.nonzero().max()) + 1 if bool(cols.any()) else min(1, length)
    mask = mask[:, :keep].contiguous()
    feats = torch.zeros(n, keep, dim, dtype=torch.float32)
    feats[mask] = rows
    return feats, mask


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


def _load_object(path: Path):
    if not path.is_file():
        raise FeatureError(f"{path}: file not found. {_FIX}")
    try:
        try:   # memory-mapped: only the pages that are used are read
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):     # e.g. a legacy (non-zip) torch.save file cannot be mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated pickle, zip error, foreign object...
        raise FeatureError(f"{path}: cannot be read as a torch tensor file ({type(exc).__name__}: {exc}). "
                           f"{_FIX}") from exc


def _load_tensor(path: Path) -> Tensor:
    obj = _load_object(path)
    if not torch.is_tensor(obj):
        raise FeatureError(f"{path}: holds a {type(obj).__name__}, expected a tensor. {_FIX}")
    return obj


def _load_mask(mpath: Path) -> Tensor:
    """A mask file, refused unless it is boolean: ``.bool()`` would turn 0.3 or -1 into True without a word."""
    mask = _load_tensor(mpath)
    if mask.dtype != torch.bool:
        raise FeatureError(f"{mpath}: mask has dtype {mask.dtype}, expected torch.bool. {_FIX}")
    return mask


def read_tokens(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """One feature file (dense or packed) and its mask file -> validated float32 ``(N, L, D)`` and bool ``(N, L)``."""
    path = Path(path)
    obj = _load_object(path)
    mpath = mask_path_for(path)
    if _is_packed(obj):
        feats, mask = unpack_tokens(obj, path)
        if mpath.is_file():
            stored = _load_mask(mpath)
            if stored.dim() != 2 or stored.shape[0] != mask.shape[0] or not torch.equal(stored[:, :mask.shape[1]], mask) \
                    or bool(stored[:, mask.shape[1]:].any()):
                raise FeatureError(f"{mpath}: does not match the mask stored in {path.name}: the two files come "
                                   f"from different extractions. {_FIX}")
    else:
        if not torch.is_tensor(obj):
            raise FeatureError(f"{path}: holds a {type(obj).__name__}, expected a tensor. {_FIX}")
        feats = obj
        if mpath.is_file():
            mask = _load_mask(mpath)
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
        check_manifest(link_path)
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
                txt_cache[tfile] = read_tokens(tfile)
            if pfile not in pc_offsets:
                feats, mask = read_tokens(pfile)
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
    dims = {txt_cache[f][0].shape[2] for f in txt_cache}
    if len(dims) > 1:
        raise FeatureError(f"text feature files disagree on the width D: {sorted(dims)} in "
                           f"{[str(f) for f in txt_cache]}. Extract all subsets with the same --txt_model.")
    pdims = {p.shape[2] for p in pc_parts}
    if len(pdims) > 1:
        raise FeatureError(f"point feature files disagree on the width D: {sorted(pdims)}. "
                           "Extract all subsets with the same --pc_model.")
    # packed files come back trimmed to their longest row: pad every file to the common length
    txt_len = max(f[0].shape[1] for f in txt_cache.values())
    txt_cache = {f: _pad_length(*fm, txt_len) for f, fm in txt_cache.items()}
    pc_len = max(x.shape[1] for x in pc_parts)
    pc_parts, pc_mask_parts = zip(*(_pad_length(x, m, pc_len) for x, m in zip(pc_parts, pc_mask_parts)))
    txt, txt_mask = _gather_rows(txt_cache, txt_parts)
    return FeatureSplit(txt=txt, txt_mask=txt_mask, pc=torch.cat(pc_parts), pc_mask=torch.cat(pc_mask_parts),
                        txt_to_pc=torch.tensor(txt_to_pc, dtype=torch.long), meta=meta, sources=sources)


def _pad_length(feats: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Pad ``(N, L, D)`` / ``(N, L)`` with zero / False positions up to ``length``."""
    extra = length - feats.shape[1]
    if extra <= 0:
        return feats, mask
    return (torch.nn.functional.pad(feats, (0, 0, 0, extra)), torch.nn.functional.pad(mask, (0, extra), value=False))


def _gather_rows(cache: dict[Path, tuple[Tensor, Tensor]], parts: list[tuple[Path, int]]) -> tuple[Tensor, Tensor]:
    """Rows ``parts = [(file, row), ...]`` of the cached tensors, in order (one ``index_select`` per file)."""
    feats0, mask0 = next(iter(cache.values()))
    out = torch.empty(len(parts), *feats0.shape[1:], dtype=feats0.dtype)
    out_mask = torch.empty(len(parts), mask0.shape[1], dtype=torch.bool)
    by_file: dict[Path, tuple[list[int], list[int]]] = {}
    for k, (f, i) in enumerate(parts):
        dst, src = by_file.setdefault(f, ([], []))
        dst.append(k)
        src.append(i)
    for f, (dst, src) in by_file.items():
        feats, mask = cache[f]
        dst_t, src_t = torch.tensor(dst), torch.tensor(src)
        out[dst_t] = feats.index_select(0, src_t)
        out_mask[dst_t] = mask.index_select(0, src_t)
    return out, out_mask


# --------------------------------------------------------------------------- the extraction manifest

_RECORD_MEMO: dict[tuple, dict] = {}


def _update_with_bytes(h, path: Path) -> None:
    """Feed a file's raw bytes to the hash ``h`` in 4 MiB chunks (no whole-file read into memory)."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)


def file_record(path: str | os.PathLike) -> dict:
    """``{"bytes": size, "blake2b": hash of the raw bytes}`` of one file, memoised per (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _RECORD_MEMO:
        h = hashlib.blake2b(digest_size=16)
        _update_with_bytes(h, path)
        _RECORD_MEMO[key] = {"bytes": st.st_size, "blake2b": h.hexdigest()}
    return _RECORD_MEMO[key]


def manifest_mismatches(folder: Path, files: dict) -> list[str]:
    """For ``files = {relative path: file_record or None}``: a description of every file that differs (empty = all match)."""
    bad = []
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            bad.append(f"{rel} is missing")
        elif not isinstance(want, dict):
            bad.append(f"{rel} has no recorded size/hash")
        else:
            got = file_record(path)
            if got["bytes"] != want.get("bytes"):
                bad.append(f"{rel} has {got['bytes']} bytes, the manifest says {want.get('bytes')}")
            elif got["blake2b"] != want.get("blake2b"):
                bad.append(f"{rel} has other contents than the manifest records (same size)")
    return bad


def check_manifest(link_path: str | os.PathLike) -> None:
    """Refuse a link file whose extraction is incomplete or whose files changed since (issue 13, item 3).

    ``h2arn.extract`` marks a subset/split as being written in ``manifest.json`` before it writes any of
    its files, and records the size and content hash of every file when all are written (manifest
    written last). A link file listed there is therefore only accepted when that entry is complete and
    every file still matches. Folders without a manifest (official features, hand-made files) and link
    files the manifest does not list are read as they are.
    """
    link_path = Path(link_path)
    folder = link_path.parent
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return
    try:
        entries = json.loads(mpath.read_text(encoding="utf-8"))["entries"]
        if not isinstance(entries, dict):
            raise ValueError("'entries' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureError(f"{mpath}: unreadable extraction manifest ({exc}), so {link_path.name} cannot be "
                           f"checked against it. {_FIX}") from exc
    for key, entry in entries.items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not files or link_path.name not in files:
            continue
        if entry.get("state") == "writing":
            raise FeatureError(f"{link_path}: the extraction of {key} into {folder} did not finish (manifest.json "
                               f"still marks it as being written), so its files may mix two extractions and "
                               f"captions would be paired with the wrong clouds. {_FIX}")
        if not isinstance(files, dict):
            raise FeatureError(f"{link_path}: {mpath.name} lists {key} without sizes and hashes (written by an older "
                               f"version), so the files cannot be checked. {_FIX}")
        bad = manifest_mismatches(folder, files)
        if bad:
            raise FeatureError(f"{link_path}: the files of {key} no longer match {mpath.name} ({'; '.join(bad[:3])}): "
                               f"the folder mixes files of two extractions (e.g. an interrupted re-extraction). "
                               f"{_FIX}")


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
        tensors = {"": obj} if torch.is_tensor(obj) else obj if _is_packed(obj) else None
        if tensors is not None:
            for name in sorted(tensors):
                value = tensors[name]
                if torch.is_tensor(value):
                    h.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
                    h.update(value.contiguous().view(torch.uint8).numpy().tobytes() if value.numel() else b"")
                else:
                    h.update(f"{name}={value!r}".encode())
        else:
            _update_with_bytes(h, path)
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
