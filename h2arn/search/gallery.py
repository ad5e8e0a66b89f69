r"""The gallery folder on disk: what :meth:`Retriever.save_gallery` writes and :meth:`Retriever.load_gallery` reads.

Why a module of its own: the folder format (``gallery.json`` + ``embeddings.pt`` + an optional
``index.faiss``), its version and its atomic replacement are one contract that the retriever, the command
line (which reads ``gallery.json`` to find the model) and the tests share; here it is read in one place.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import SearchError

GALLERY_FORMAT = "h2arn-gallery"
GALLERY_VERSION = 1
GALLERY_FILE = "gallery.json"
ARRAYS_FILE = "embeddings.pt"
INDEX_FILE = "index.faiss"


@dataclass
class Gallery:
    """Embedded shapes. ids/paths/digests/ups: one per shape; emb ``(N, E)``; mask ``(N, T)`` valid tokens;
    token_weights ``(N, T)`` contribution weights; points: the ``(P_i, C)`` clouds the point encoder saw
    (after FPS), for thumbnails and explanations; tokens ``(N, T, D)`` only in memory (None once loaded)."""

    ids: list[str] = field(default_factory=list)
    paths: list[str | None] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)
    ups: list[str] = field(default_factory=list)
    emb: Tensor | None = None
    mask: Tensor | None = None
    token_weights: Tensor | None = None
    points: list[np.ndarray] = field(default_factory=list)
    tokens: Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: "Gallery") -> None:
        for name in ("ids", "paths", "digests", "ups", "points"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("emb", "mask", "token_weights", "tokens"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else (None if theirs is None else torch.cat([mine, theirs])))


def read_gallery_meta(folder: str | os.PathLike) -> dict:
    """``gallery.json`` of a gallery folder, checked (one clear error when it is not a gallery)."""
    folder = Path(folder)
    path = folder / GALLERY_FILE
    if not path.is_file():
        raise SearchError(f"{folder}: not a gallery (no {GALLERY_FILE}). Fix: build one with python -m h2arn.search "
                          "index --model <model file> --shapes <folder> --out " + str(folder))
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SearchError(f"{path}: unreadable ({exc}). Fix: re-index the shapes.") from None
    if meta.get("format") != GALLERY_FORMAT or int(meta.get("version", 0)) > GALLERY_VERSION:
        raise SearchError(f"{path}: not an h2arn gallery of a known version. Fix: re-index the shapes.")
    return meta


def write_gallery(out: Path, gallery: Gallery, index, *, model_file: Path, model_sha256: str, features: dict,
                  kind: str) -> Path:
    """Write ``gallery`` (and ``index``, a :class:`h2arn.index.LorentzIndex` or None) to the folder ``out``:
    a temp folder renamed into place, so a reader never sees half a gallery; an old gallery there is replaced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        g = gallery
        torch.save({"emb": g.emb, "mask": g.mask, "token_weights": g.token_weights,
                    "points": [torch.as_tensor(p) for p in g.points]}, tmp / ARRAYS_FILE)
        if index is not None:
            index.save(tmp / INDEX_FILE)
        meta = {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "model_file": str(model_file.resolve()),
                "model_sha256": model_sha256, "features": features, "num_shapes": len(g),
                "index": kind, "ids": g.ids, "paths": g.paths, "digests": g.digests, "ups": g.ups,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / GALLERY_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_gallery(folder: Path, meta: dict) -> Gallery:
    """The shapes of a gallery folder whose ``gallery.json`` is ``meta`` (:func:`read_gallery_meta`), checked."""
    try:
        arrays = torch.load(folder / ARRAYS_FILE, map_location="cpu", weights_only=True)
        g = Gallery(ids=list(meta["ids"]), paths=list(meta["paths"]), digests=list(meta["digests"]),
                    ups=list(meta["ups"]), emb=arrays["emb"], mask=arrays["mask"],
                    token_weights=arrays["token_weights"], points=[p.numpy() for p in arrays["points"]])
    except Exception as exc:
        raise SearchError(f"{folder / ARRAYS_FILE}: unreadable or incomplete ({type(exc).__name__}: {exc}). Fix: "
                          "re-index the shapes.") from None
    if g.emb.shape[0] != len(g.ids) or len(g.points) != len(g.ids):
        raise SearchError(f"{folder}: {ARRAYS_FILE} holds {g.emb.shape[0]} shapes but {GALLERY_FILE} lists "
                          f"{len(g.ids)}. Fix: re-index the shapes.")
    return g
