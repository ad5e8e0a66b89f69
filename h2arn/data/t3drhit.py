"""Reader for T3DR-HIT v2 and for the generated benchmark (same layout), with strict validation.

Layout under a dataset root (CONTRIBUTING.md, "Data layout"):

* ``Elephant/Elephant_caption_<split>.json`` = ``{"result": {"<obj>": ["caption", ...]}}`` and
  ``Elephant/pcd_normalize_<split>/<obj>/model.txt``
* ``S3DIS/S3DIS_<split>_captions.json`` and ``S3DIS/S3DIS_<split>_pcds/<Area_k_room>.txt``
* point files: whitespace-separated ``x y z r g b`` plus optional extra columns.

The real T3DR-HIT v2 has ``train`` and ``test`` only; ``val`` is optional. Anything corrupt or
inconsistent raises :class:`DatasetError` naming the file and the fix; nothing is skipped silently
(the official script drops a shape whose cloud fails to load, with all its captions).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..paths import data_dir

SUBSETS = ("Elephant", "S3DIS")
T3DRHIT_URL = "https://pan.baidu.com/s/1Moa2hHpj9g2y76h9Gb2qMw?pwd=bstd"
T3DRHIT_CODE = "bstd"

# Point files larger than this are refused before reading (override: H2ARN_MAX_POINT_FILE_MB). Real clouds
# are a few MB (ShapeNet ~0.1-2 MB, S3DIS rooms up to ~100 MB); a multi-GB file is almost surely a mistake.
DEFAULT_MAX_POINT_FILE_MB = 512
# |x|, |y|, |z| above this are refused: clouds are normalised (unit sphere) or in metres (S3DIS rooms < 100 m);
# 1e30 is finite in float32 but turns into inf/NaN in the first squared distance.
MAX_ABS_COORDINATE = 1e6
_LINES_PER_CHUNK = 1 << 16
_SAFE_NAME = re.compile(r"^[^/\\\x00]+$")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent. The message names the file and the fix."""


@dataclass
class ShapeRecord:
    """One shape (artefact or room) with all its captions.

    points: ``(N, 6)`` float32, xyz + rgb in 0..1; extra: ``(N, k)`` float32 extra columns
    (generated data: ``part_id``, ``redundant_flag``) or ``None``; meta: per-shape metadata
    (from ``metadata.json`` when present, else only what the files say).
    """
    name: str
    subset: str
    points: np.ndarray
    captions: List[str]
    extra: Optional[np.ndarray] = None
    meta: Dict = field(default_factory=dict)


def caption_path(root: Path, subset: str, split: str) -> Path:
    if subset == "Elephant":
        return root / "Elephant" / f"Elephant_caption_{split}.json"
    if subset == "S3DIS":
        return root / "S3DIS" / f"S3DIS_{split}_captions.json"
    raise DatasetError(f"unknown subset {subset!r}; expected one of {SUBSETS}")


def cloud_path(root: Path, subset: str, split: str, name: str) -> Path:
    if subset == "Elephant":
        return root / "Elephant" / f"pcd_normalize_{split}" / name / "model.txt"
    return root / "S3DIS" / f"S3DIS_{split}_pcds" / f"{name}.txt"


def available_subsets(dataset_root) -> List[str]:
    """Subsets (``Elephant``, ``S3DIS``) that have at least a train or test caption file under the root."""
    root = Path(dataset_root)
    return [s for s in SUBSETS if any(caption_path(root, s, sp).is_file() for sp in ("train", "test", "val"))]


def available_splits(dataset_root, subset: str) -> List[str]:
    root = Path(dataset_root)
    return [sp for sp in ("train", "val", "test") if caption_path(root, subset, sp).is_file()]


def load_metadata(dataset_root) -> dict:
    """``metadata.json`` of a generated dataset, or ``{}`` for real T3DR-HIT (which has none)."""
    path = Path(dataset_root) / "metadata.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}). Fix: delete the dataset folder and regenerate it "
                           "(python -m h2arn.data generate --profile ci).") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("shapes", {}), dict):
        raise DatasetError(f"{path} must be a JSON object whose 'shapes' entry is an object. Fix: regenerate the "
                           "dataset (python -m h2arn.data generate --force --out ...).")
    return meta


def missing_dataset_message(root: Path) -> str:
    return (
        f"T3DR-HIT v2 was not found under {root} (expected {root / 'Elephant'} and/or {root / 'S3DIS'}).\n"
        f"Fix: download T3DR-HIT v2 from Baidu Netdisk {T3DRHIT_URL} (extraction code {T3DRHIT_CODE}) and "
        f"unpack it so that {root / 'Elephant' / 'Elephant_caption_train.json'} and "
        f"{root / 'S3DIS' / 'S3DIS_train_captions.json'} exist. Without it, use the embedded benchmark: "
        "h2arn.data.ensure_synthetic('ci') or python -m h2arn.data generate --profile ci."
    )


def find_t3drhit(root=None) -> Path:
    """Locate real T3DR-HIT v2: a folder holding ``Elephant/`` and/or ``S3DIS/`` (default ``data/``).

    Raises ONE :class:`DatasetError` that says where to download it and where to put it.
    """
    root = Path(root) if root is not None else data_dir()
    candidates = [root, root / "data"]
    for cand in candidates:
        if (cand / "Elephant").is_dir() or (cand / "S3DIS").is_dir():
            if not available_subsets(cand):
                raise DatasetError(
                    f"{cand} has Elephant/ or S3DIS/ but no caption file such as "
                    f"{caption_path(cand, 'Elephant', 'train')}. Fix: unpack the complete T3DR-HIT v2 archive "
                    f"({T3DRHIT_URL}, code {T3DRHIT_CODE}) there.")
            return cand
    raise DatasetError(missing_dataset_message(root))


def read_captions(path: Path) -> Dict[str, List[str]]:
    """Read and validate one caption JSON: ``{"result": {name: [str, ...]}}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"caption file {path} does not exist. Fix: check the dataset root.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"caption file {path} is not valid JSON ({exc}). Fix: re-download or regenerate it.") from exc
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise DatasetError(f"caption file {path} must be an object {{\"result\": {{name: [captions]}}}}; "
                           "its top-level key 'result' is missing or not an object.")
    for name, caps in result.items():
        check_shape_name(name, path)
        if (not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.strip() for c in caps)):
            raise DatasetError(f"caption file {path}: entry {name!r} must be a non-empty list of non-empty strings.")
    return result


def check_shape_name(name: str, caption_file: Path) -> None:
    """A shape name becomes a file name under the dataset root: ``../x``, ``a/b`` or an absolute path would
    read (and fingerprint) files outside it, so they are refused."""
    if not name or name in (".", "..") or not _SAFE_NAME.match(name) or name.strip() != name:
        raise DatasetError(f"caption file {caption_file}: shape name {name!r} is not a plain file name (no '/', '\\', "
                           "'..' or surrounding spaces), so it could point outside the dataset. Fix: rename the "
                           "shape in the caption file to the name of its point file.")


def max_point_file_bytes() -> int:
    """The size guard of :func:`read_points` (``H2ARN_MAX_POINT_FILE_MB``, default 512 MB)."""
    raw = os.environ.get("H2ARN_MAX_POINT_FILE_MB", "")
    try:
        mb = float(raw) if raw else DEFAULT_MAX_POINT_FILE_MB
    except ValueError:
        raise DatasetError(f"H2ARN_MAX_POINT_FILE_MB={raw!r} is not a number. Fix: set it to a size in MB, "
                           f"e.g. {DEFAULT_MAX_POINT_FILE_MB}.") from None
    return int(mb * 2**20)


def read_points(path: Path, shape: Optional[str] = None) -> np.ndarray:
    """Read one whitespace-separated point file into float32 ``(N, C)`` with ``C >= 6``.

    Checks: file exists, is not empty and not larger than :func:`max_point_file_bytes`; every row
    has the same number of columns (a truncated last row is caught), at least 6 columns, all values
    finite and coordinates within :data:`MAX_ABS_COORDINATE`. The file is parsed in chunks of lines,
    so memory stays near the size of the result (reading it whole as Python tokens took ~13x the
    file size). ``shape`` (the caption file's name for it) is quoted in the errors.
    """
    path = Path(path)
    what = f"point file {path}" + (f" (shape {shape!r})" if shape else "")
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DatasetError(f"{what} does not exist. Fix: re-download or regenerate the dataset.") from exc
    limit = max_point_file_bytes()
    if size > limit:
        raise DatasetError(f"{what} is {size / 2**20:.0f} MB, above the {limit / 2**20:.0f} MB limit for one cloud. "
                           "Fix: downsample it, or raise H2ARN_MAX_POINT_FILE_MB if it really is one cloud.")
    chunks: list[np.ndarray] = []
    n_cols, line_no = None, 0
    try:
        with open(path, "r", encoding="ascii", errors="strict") as fh:
            while True:
                block = fh.readlines(_LINES_PER_CHUNK * 64)
                if not block:
                    break
                first_line = line_no + 1
                line_no += len(block)
                numbered = [(first_line + i, ln.replace(",", " ")) for i, ln in enumerate(block) if ln.strip()]
                if not numbered:
                    continue
                if n_cols is None:
                    n_cols = len(numbered[0][1].split())
                    if n_cols < 6:
                        raise DatasetError(f"{what} has {n_cols} columns; expected at least 6 (x y z r g b). "
                                           "Fix: export the cloud with colours.")
                arr = _parse_block(numbered, n_cols, what)
                _check_values(arr, [no for no, _ in numbered], what)
                chunks.append(arr)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what} is not a text file ({exc}).") from exc
    if not chunks:
        raise DatasetError(f"{what} is empty. Fix: re-download or regenerate the dataset.")
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _parse_block(numbered: List[tuple], n_cols: int, what: str) -> np.ndarray:
    """``(n_lines, n_cols)`` float32 from numbered text lines, parsed in C (``np.fromstring``, strict in
    numpy 2); on any mismatch the slow path finds the first bad line for the message."""
    try:
        flat = np.fromstring("".join(ln for _, ln in numbered), dtype=np.float32, sep=" ")
    except ValueError:
        flat = None
    if flat is not None and flat.size == n_cols * len(numbered):
        return flat.reshape(len(numbered), n_cols)
    for no, ln in numbered:
        parts = ln.split()
        if len(parts) != n_cols:
            raise DatasetError(f"{what}: line {no} has {len(parts)} columns but line 1 has {n_cols} "
                               "(truncated or corrupt file). Fix: re-download or regenerate the dataset.")
        try:
            np.asarray(parts, dtype=np.float32)
        except ValueError as exc:
            raise DatasetError(f"{what}: line {no} holds a value that is not a number ({exc}).") from None
    raise DatasetError(f"{what}: cannot be parsed as whitespace-separated numbers. Fix: re-export it.")


def _check_values(arr: np.ndarray, line_numbers: List[int], what: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise DatasetError(f"{what}: line {line_numbers[row]} holds NaN or inf. Fix: re-download or regenerate it.")
    big = np.abs(arr[:, :3]) > MAX_ABS_COORDINATE
    if big.any():
        row, col = (int(v) for v in np.argwhere(big)[0])
        raise DatasetError(f"{what}: line {line_numbers[row]} has coordinate {'xyz'[col]} = {arr[row, col]:.3g}, "
                           f"beyond the plausible range +-{MAX_ABS_COORDINATE:g} (it would overflow to inf/NaN in "
                           "training). Fix: re-export or normalise the cloud.")


def load_split(dataset_root, subset: str, split: str, limit: Optional[int] = None) -> List[ShapeRecord]:
    """All shapes of one subset and split, in caption-file order (sorted names for generated data).

    ``limit`` reads only the first ``limit`` shapes (quick looks in notebooks). rgb given in 0..255
    (raw S3DIS) is rescaled to 0..1 and recorded as ``meta["rgb_scale"] = 255``.
    """
    root = Path(dataset_root)
    if subset not in SUBSETS:
        raise DatasetError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    cap_file = caption_path(root, subset, split)
    if not cap_file.is_file():
        have = available_splits(root, subset)
        if not root.is_dir() or not have:
            raise DatasetError(missing_dataset_message(root) if not (root / "metadata.json").exists() else
                               f"{cap_file} does not exist. Fix: regenerate the dataset at {root}.")
        raise DatasetError(f"{cap_file} does not exist: {subset} has splits {have} under {root}"
                           + (" (real T3DR-HIT v2 has no val split; use 'train' or 'test')" if split == "val" else ""))
    captions = read_captions(cap_file)
    meta_all = load_metadata(root).get("shapes", {})
    records = []
    for name in list(captions)[:limit] if limit is not None else captions:
        pfile = cloud_path(root, subset, split, name)
        if not pfile.is_file():
            raise DatasetError(f"{cap_file} names shape {name!r} but its point file {pfile} is missing. "
                               "Fix: re-download/unpack the complete dataset or regenerate it.")
        arr = read_points(pfile, shape=name)
        points = np.ascontiguousarray(arr[:, :6])
        meta = dict(meta_all.get(name, {}))
        meta.setdefault("subset", subset)
        meta.setdefault("split", split)
        meta["source_file"] = str(pfile)
        if points[:, 3:6].max() > 1.0:
            if points[:, 3:6].max() > 255.0 or points[:, 3:6].min() < 0:
                raise DatasetError(f"point file {pfile}: colours lie outside both 0..1 and 0..255.")
            points[:, 3:6] /= 255.0
            meta["rgb_scale"] = 255
        if points[:, 3:6].min() < 0:
            raise DatasetError(f"point file {pfile}: negative colour values; expected rgb in 0..1 (or 0..255).")
        extra = np.ascontiguousarray(arr[:, 6:]) if arr.shape[1] > 6 else None
        meta_caps = meta.get("caption_levels")
        if meta_caps is not None and len(meta_caps) != len(captions[name]):
            raise DatasetError(f"{root / 'metadata.json'}: shape {name!r} lists {len(meta_caps)} caption levels but "
                               f"{cap_file} has {len(captions[name])} captions. Fix: regenerate the dataset.")
        records.append(ShapeRecord(name, subset, points, list(captions[name]), extra, meta))
    return records


def iter_pairs(records: List[ShapeRecord]):
    """Flatten records into (caption, record index, caption index): the official one-link-per-caption order."""
    for i, rec in enumerate(records):
        for j, cap in enumerate(rec.captions):
            yield cap, i, j
