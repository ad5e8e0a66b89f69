r"""Text-to-shape search over a trained model: embed a query, rank a gallery, explain the ranking.

Two entry points, one ranking:

* :class:`Retriever` (scripts, the command line): ``Retriever.from_run(model_file)`` loads a trained model
  **and** the text and point encoders its features were made with (the model file records them, see
  :func:`h2arn.extract.feature_settings`); :meth:`Retriever.add_shapes` embeds your own meshes, point-cloud
  files or arrays (read by :mod:`h2arn.meshes`, point tokens cached on disk by file content);
  :meth:`Retriever.search` / :meth:`Retriever.search_many` return ranked ids, distances and the per-token
  contribution weights of the query and of each hit (the model's explanation). Large galleries are
  searched through :class:`h2arn.index.LorentzIndex`.
* :class:`RetrievalSession` (the course's widgets, :mod:`h2arn.course.widgets`): a trained model and a
  test-split gallery with its captions, for the Poincaré-disk and contribution pictures of chapter 08;
  :meth:`Retriever.session` turns your own gallery into one.

Command line (``python -m h2arn.search -h``)::

    python -m h2arn.search index --model build/runs/ci/h2arn-s0/best_model.pth --shapes my_meshes/ --out build/gallery [--up z]
    python -m h2arn.search query --gallery build/gallery "a tall vase with two handles" --k 10 [--json] [--html out.html]

Distances are the model's own: Lorentz geodesic distance at the learned curvature (``-model.similarity``)
for hyperbolic models, cosine distance ``1 - cos`` for the Euclidean baseline.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from h2arn import lorentz as L

__all__ = ["SearchError", "Hit", "QueryResult", "Gallery", "Retriever", "main", "SearchResult", "RetrievalSession", "session_from_run", "encode_query", "search", "token_assignment", "contribution_map",
           "redundancy_share", "effective_number", "text_contributions"]


@dataclass
class SearchResult:
    """One retrieved cloud: ``rank`` (1-based), gallery ``index``, shape ``name``, Lorentz ``distance``."""

    rank: int
    index: int
    name: str
    distance: float
    category: str | None = None


@dataclass
class RetrievalSession:
    """What the interactive chapter needs, in memory.

    model: a trained :class:`h2arn.model.H2ARN` (eval mode). encode_captions: ``list[str] -> (tokens
    (N, L_t, D_t), mask (N, L_t))``, the text encoder that produced the caption features.
    cloud_tokens ``(N_pc, L_p, D_p)`` / cloud_mask ``(N_pc, L_p)``: the gallery's point features;
    cloud_emb ``(N_pc, E)``: their embeddings; cloud_names / cloud_points (each ``(N_i, >=6)`` xyz rgb)
    / cloud_categories: one per cloud. text_emb ``(N_txt, E)``, captions, caption_levels (or None),
    txt_to_pc ``(N_txt,)``: the test captions, for the disk. num_tokens_per_cloud / points_per_cloud:
    how extraction tokenised each cloud (for :func:`token_assignment`). cloud_redundant: per cloud, a
    bool ``(N_i,)`` marking the generator's redundant points (duplicates, supports, clutter) or None.
    tokenize: optional
    ``str -> list[str]`` naming the word pieces of a query (for :func:`draw_text_contributions`).
    """

    model: Any
    encode_captions: Callable[[Sequence[str]], tuple[Tensor, Tensor]]
    cloud_tokens: Tensor
    cloud_mask: Tensor
    cloud_emb: Tensor
    cloud_names: list[str]
    cloud_points: list[np.ndarray]
    text_emb: Tensor
    captions: list[str]
    txt_to_pc: Tensor
    cloud_categories: list[str | None] = field(default_factory=list)
    caption_levels: list[int | None] | None = None
    points_per_cloud: int | None = None
    cloud_redundant: list[np.ndarray | None] | None = None
    tokenize: Callable[[str], list[str]] | None = None
    device: torch.device = torch.device("cpu")
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.cloud_emb.shape[0]
        for what, seq in (("cloud_names", self.cloud_names), ("cloud_points", self.cloud_points),
                          ("cloud_tokens", self.cloud_tokens)):
            if len(seq) != n:
                raise ValueError(f"session: {what} has {len(seq)} entries but there are {n} cloud embeddings")
        if not self.cloud_categories:
            self.cloud_categories = [None] * n
        if self.text_emb.shape[0] != len(self.captions) or self.txt_to_pc.shape[0] != len(self.captions):
            raise ValueError("session: text_emb, captions and txt_to_pc must have one entry per caption")

    @property
    def curvature(self) -> float:
        """The model's curvature ``c`` (hyperbolic models only)."""
        return float(self.model.curvature().detach())

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        return search(self, query, k)


def session_from_run(run_dir: str | os.PathLike, split: str = "test", device: str = "auto") -> RetrievalSession:
    """A run's ``split`` gallery (its clouds, captions and their embeddings) as a :class:`RetrievalSession`.

    The caption features and the query use the same text encoder (the run's ``txt_model``); the clouds
    are read from the generated dataset the features were extracted from (matched by the ``shape`` in the
    meta file); ``points_per_cloud`` is the point count extraction kept (recorded in the model file).
    """
    from h2arn.data import available_subsets, ensure_synthetic, load_metadata, load_split
    from h2arn.device import resolve_device
    from h2arn.encoders.text import load_text_encoder
    from h2arn.evaluate import embed_split
    from h2arn.runs import load_run_split, load_trained, read_metrics

    dev = resolve_device(device)
    run_dir = Path(run_dir)
    model, payload = load_trained(run_dir, str(dev))
    if not model.hyperbolic:
        raise ValueError(f"{run_dir}: the interactive chapter needs a hyperbolic model (this run is Euclidean). "
                         "Fix: use a run of the h2arn variant.")
    config = read_metrics(run_dir)["config"]
    data = load_run_split(run_dir, split)
    text_emb, cloud_emb = embed_split(model, data, dev)
    owners = data.pc_to_txt()
    names = [data.meta[o[0]].get("shape") if o else None for o in owners]
    if any(n is None for n in names):
        raise ValueError(f"{data.sources}: the meta file has no 'shape' for every cloud; the gallery cannot be "
                         "matched to point files. Fix: re-run feature extraction (it writes *_meta_<split>.json).")
    root = ensure_synthetic(config.get("profile", "ci"))
    records = {}
    for subset in available_subsets(root):
        records.update({r.name: r for r in load_split(root, subset, split)})
    missing = [n for n in names if n not in records]
    if missing:
        raise ValueError(f"{root}: shapes {missing[:3]} of the {split} features have no point file there. Fix: "
                         "regenerate the dataset and the features of this profile (they must come from the same seed).")
    encoder = load_text_encoder(str(config.get("txt_model", "MiniLM")), device=dev, progress=False)
    recs = [records[n] for n in names]
    columns = list(load_metadata(root).get("columns", []))
    flag_col = columns.index("redundant_flag") - 6 if "redundant_flag" in columns else None
    redundant = [(r.extra[:, flag_col] > 0) if flag_col is not None and r.extra is not None
                 and r.extra.shape[1] > flag_col else None for r in recs]
    features = payload.get("features") or {}
    return RetrievalSession(
        model=model, encode_captions=lambda caps: encoder.encode(list(caps), progress=False), cloud_tokens=data.pc,
        cloud_mask=data.pc_mask, cloud_emb=cloud_emb.cpu(), cloud_names=list(names),
        cloud_points=[r.points for r in recs], cloud_categories=[r.meta.get("category") for r in recs],
        text_emb=text_emb.cpu(), captions=[m.get("caption", "") for m in data.meta], txt_to_pc=data.txt_to_pc.cpu(),
        caption_levels=[m.get("level") for m in data.meta], tokenize=lambda text: word_pieces(encoder, text),
        device=dev, cloud_redundant=redundant, points_per_cloud=features.get("num_points"))


# --------------------------------------------------------------------------- search

@torch.no_grad()
def encode_query(session: RetrievalSession, query: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(embedding (E,), tokens (1, L_t, D_t), mask (1, L_t))`` of one query string."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: type a description, e.g. 'a tall blue vase with two handles'")
    tokens, mask = session.encode_captions([query])
    emb = session.model.encode_text(tokens.to(session.device), mask.to(session.device))[0].float().cpu()
    return emb, tokens, mask


@torch.no_grad()
def search(session: RetrievalSession, query: str, k: int = 5) -> list[SearchResult]:
    """Top-``k`` gallery clouds for a free-text query, nearest first (Lorentz distance at the model's c)."""
    emb, _, _ = encode_query(session, query)
    session._cache["last_query"] = (query, emb)
    d = L.pairwise_dist(emb[None].double(), session.cloud_emb.double(), session.curvature)[0]
    k = max(1, min(int(k), d.numel()))
    top = torch.topk(-d, k).indices.tolist()
    return [SearchResult(rank=i + 1, index=j, name=session.cloud_names[j], distance=float(d[j]),
                         category=session.cloud_categories[j]) for i, j in enumerate(top)]


# --------------------------------------------------------------------------- explanation

def token_assignment(points: np.ndarray, num_tokens: int, num_points: int | None = None) -> np.ndarray:
    """Which token each point of a cloud belongs to, as spatial token pooling builds them: ``(N,)`` int.

    Extraction downsamples the cloud by farthest-point sampling (``fps_downsample``), picks ``T``
    centroids by FPS on what is left, and max-pools the features of the points nearest each centroid
    (:func:`h2arn.encoders.tokens.pool_tokens`). The same deterministic steps are replayed here; every
    ORIGINAL point is then given the token of its nearest centroid, so the whole cloud can be coloured.
    """
    from h2arn.encoders.tokens import farthest_point_sample, fps_downsample

    pts = torch.as_tensor(np.asarray(points)[:, :3], dtype=torch.float32)
    kept = fps_downsample(pts, num_points) if num_points else pts
    t_real = min(num_tokens, kept.shape[0])
    centre_idx = farthest_point_sample(kept[None], t_real)[0]
    centres = kept[centre_idx]
    return torch.cdist(pts, centres).argmin(-1).numpy()


@torch.no_grad()
def contribution_map(session: RetrievalSession, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (N, >=6), per-point weight (N,), token weights (L_p,))`` of gallery cloud ``index``.

    Token weights come from ``model.contributions`` (0 on padding, sum 1); a point gets its token's weight
    divided by the token's point count, so the colours of all points sum to 1 too (a big region does not
    look important just because it has many points).
    """
    w = session.model.contributions(session.cloud_tokens[index:index + 1].to(session.device),
                                    session.cloud_mask[index:index + 1].to(session.device), "cloud")[0].cpu()
    points = session.cloud_points[index]
    assign = token_assignment(points, session.cloud_mask.shape[1], session.points_per_cloud)
    counts = np.bincount(assign, minlength=w.numel()).astype(float)
    per_point = w.numpy()[assign] / np.maximum(counts[assign], 1.0)
    return points, per_point, w.numpy()


def redundancy_share(session: RetrievalSession) -> dict[str, np.ndarray]:
    """Per gallery cloud with redundancy flags: share of its POINTS that are redundant vs share of its
    contribution WEIGHT that lands on them (mean pooling would give both the same on average).

    Returns arrays ``point_share``, ``weight_share`` and ``index`` (the gallery rows measured).
    """
    rows, ps, ws = [], [], []
    for j, flags in enumerate(session.cloud_redundant or []):
        if flags is None or not flags.any():
            continue
        _, per_point, _ = contribution_map(session, j)
        rows.append(j)
        ps.append(float(flags.mean()))
        ws.append(float(per_point[flags].sum() / per_point.sum()))
    return {"index": np.array(rows, dtype=int), "point_share": np.array(ps), "weight_share": np.array(ws)}


def effective_number(w: np.ndarray) -> float:
    """``exp(entropy)``: how many tokens the weight is effectively spread over."""
    p = w[w > 0]
    return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


@torch.no_grad()
def text_contributions(session: RetrievalSession, query: str) -> tuple[list[str], np.ndarray]:
    """The query's valid word pieces and their contribution weights (sum 1)."""
    _, tokens, mask = encode_query(session, query)
    w = session.model.contributions(tokens.to(session.device), mask.to(session.device), "text")[0].cpu().numpy()
    valid = mask[0].numpy().astype(bool)
    n = int(valid.sum())
    names = session.tokenize(query)[:n] if session.tokenize else [f"t{i}" for i in range(n)]
    names += [f"t{i}" for i in range(len(names), n)]
    return names, w[valid]


# =========================================================================== your own shapes: the Retriever

GALLERY_FORMAT = "h2arn-gallery"
GALLERY_VERSION = 1
GALLERY_FILE = "gallery.json"
ARRAYS_FILE = "embeddings.pt"
INDEX_FILE = "index.faiss"
INDEX_AUTO_MIN = 20_000      # galleries at least this large are searched through h2arn.index (HNSW)
CACHE_VERSION = 1            # bump when meshes.py sampling or the token cache layout changes


class SearchError(ValueError):
    """A model, gallery, shape or query cannot be used for search; the message names it and the fix."""


@dataclass
class Hit:
    """One retrieved shape: ``rank`` (1-based), gallery ``index``, ``id``, source ``path`` (or None for
    arrays), the model's ``distance`` to the query, and ``token_weights``: the contribution weight of each
    of the shape's valid point tokens (sum 1, :meth:`h2arn.model.H2ARN.contributions`)."""

    rank: int
    index: int
    id: str
    path: str | None
    distance: float
    token_weights: np.ndarray
    category: str | None = None

    def to_dict(self) -> dict:
        w = self.token_weights
        top = np.argsort(-w)[:5]
        return {"rank": self.rank, "id": self.id, "path": self.path, "distance": round(self.distance, 6),
                "category": self.category, "effective_tokens": round(effective_number(w), 3),
                "top_tokens": [{"token": int(t), "weight": round(float(w[t]), 6)} for t in top]}


@dataclass
class QueryResult:
    """The hits of one query, nearest first, and the query's word pieces with their contribution weights."""

    query: str
    hits: list[Hit]
    query_tokens: list[str]
    query_token_weights: np.ndarray

    def to_dict(self) -> dict:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits],
                "query_tokens": [{"token": t, "weight": round(float(w), 6)}
                                 for t, w in zip(self.query_tokens, self.query_token_weights)]}


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


def _sha256(path: str | os.PathLike) -> str:
    from h2arn.encoders.weights import sha256_file

    return sha256_file(path)


def _extractor_key(features: dict, num_points: int) -> str:
    """What decides a shape's point tokens (not the text side): the cache folder name."""
    import hashlib

    keep = {k: features.get(k) for k in ("pc_model", "pc_weights_sha256", "num_points", "num_tokens", "pooling")}
    keep.update(sample_points=int(num_points), cache=CACHE_VERSION)
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:20]


def _unique_ids(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}~{k}")
    return out


class Retriever:
    """A trained model + the encoders its features were made with + a gallery of your shapes.

    Build with :meth:`from_run`; then :meth:`add_shapes` (or :meth:`load_gallery`), :meth:`search`.
    ``cache_dir``: where point tokens of shape files are cached (default ``build/cache/shape_tokens``),
    keyed by the file's sha256, the up axis and the point encoder's identity, so a gallery is embedded once.
    """

    def __init__(self, model, *, model_file: str | os.PathLike, model_sha256: str, features: dict, text_encoder,
                 point_encoder, device: torch.device, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> None:
        self.model = model
        self.model_file = Path(model_file)
        self.model_sha256 = model_sha256
        self.features = dict(features)
        self.text_encoder = text_encoder
        self.point_encoder = point_encoder
        self.device = device
        self.progress = progress
        if cache_dir is None:
            from h2arn.paths import build_dir

            cache_dir = build_dir() / "cache" / "shape_tokens"
        self.cache_dir = Path(cache_dir)
        self.gallery = Gallery()
        self.index = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, model_file: str | os.PathLike, device: str = "auto", *, pc_weights: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> "Retriever":
        """Load a model file (or a run folder holding ``best_model.pth``) and the encoders it records.

        ``pc_weights``: where the point-encoder weights are, when not at the path recorded at training
        time (their sha256 must equal the recorded one). Refuses, with one clear error, a model file that
        does not record its feature extractor, and encoders that differ from the recorded ones.
        """
        from h2arn.checkpoint import load_model_file
        from h2arn.device import resolve_device

        path = Path(model_file)
        if path.is_dir():
            path = path / "best_model.pth"
        dev = resolve_device(device)
        model, payload = load_model_file(path, dev)
        features = payload.get("features")
        if not features:
            raise SearchError(f"{path}: the model file does not record how its features were made (point encoder, "
                              "its weights, point and token counts, pooling, text model), so new shapes cannot be "
                              "embedded compatibly. Fix: retrain it with this version of h2arn (python -m h2arn.train "
                              "..., or ensure_trained(...) in the course), which records them.")
        point_encoder = _load_recorded_point_encoder(features, path, dev, pc_weights)
        text_encoder = _load_recorded_text_encoder(features, path, dev)
        return cls(model, model_file=path, model_sha256=_sha256(path), features=features, text_encoder=text_encoder,
                   point_encoder=point_encoder, device=dev, cache_dir=cache_dir, progress=progress)

    def empty_copy(self) -> "Retriever":
        """The same model and encoders (shared, nothing reloaded) with an empty gallery."""
        return Retriever(self.model, model_file=self.model_file, model_sha256=self.model_sha256,
                         features=self.features, text_encoder=self.text_encoder, point_encoder=self.point_encoder,
                         device=self.device, cache_dir=self.cache_dir, progress=self.progress)

    @property
    def num_points(self) -> int:
        """Points per cloud the encoder saw at training time (meshes are sampled to this many, clouds FPS'd)."""
        return int(self.features["num_points"])

    # ------------------------------------------------------------------ adding shapes
    def add_shapes(self, shapes, up: str = "y", ids: Sequence[str] | None = None) -> list[str]:
        """Embed shapes and append them to the gallery; returns their ids.

        ``shapes``: a file or folder path, a list of them (OBJ, PLY, OFF, STL, GLB, XYZ, TXT, NPY; folders are
        searched recursively), an ``(N, 3|6)`` array or a list of arrays (ids default to ``shape_<i>``).
        ``up``: the shapes' up axis, ``"y"`` (the benchmark's) or ``"z"`` (rotated to y-up first).
        Every shape is read and checked before anything is added, so one bad file adds nothing.
        """
        from h2arn.meshes import find_shapes, prepare_points, to_y_up

        to_y_up(np.zeros((1, 3)), up)   # validates up before any work
        if isinstance(shapes, np.ndarray) or (isinstance(shapes, (list, tuple)) and shapes
                                               and all(isinstance(x, (np.ndarray, Tensor)) for x in shapes)):
            arrays = [shapes] if isinstance(shapes, np.ndarray) else list(shapes)
            clouds = [prepare_points(np.asarray(a), up, f"array {i}") for i, a in enumerate(arrays)]
            names = list(ids) if ids is not None else [f"shape_{len(self.gallery) + i}" for i in range(len(clouds))]
            if len(names) != len(clouds):
                raise SearchError(f"add_shapes: {len(clouds)} arrays but {len(names)} ids. Fix: one id per array.")
            part = self._embed(clouds, names, [None] * len(clouds), [None] * len(clouds), up)
        else:
            files = find_shapes(shapes)
            names = list(ids) if ids is not None else [p.stem for p in files]
            if len(names) != len(files):
                raise SearchError(f"add_shapes: {len(files)} shape files but {len(names)} ids. Fix: one id per file.")
            part = self._embed_files(files, names, up)
        part.ids = _unique_ids(self.gallery.ids + part.ids)[len(self.gallery):]
        self.gallery.extend(part)
        self.index = None
        return list(part.ids)

    def _embed_files(self, files: Sequence[Path], names: Sequence[str], up: str) -> Gallery:
        """Read (or take from the token cache) every file, then encode the ones not cached."""
        from tqdm.auto import tqdm

        from h2arn.encoders.tokens import downsample_clouds
        from h2arn.meshes import file_digest, read_shape

        folder = self.cache_dir / _extractor_key(self.features, self.num_points)
        digests = [file_digest(p) for p in files]
        cached: dict[int, dict] = {}
        todo: list[int] = []
        clouds: dict[int, np.ndarray] = {}
        for i, (p, dg) in enumerate(tqdm(list(zip(files, digests)), desc="reading shapes", unit="shape",
                                         disable=None if self.progress else True, leave=False)):
            entry = folder / f"{dg}_{up}.pt"
            if entry.is_file():
                try:
                    cached[i] = torch.load(entry, map_location="cpu", weights_only=True)
                    continue
                except Exception:
                    pass   # an unreadable cache entry is recomputed (and rewritten) below
            clouds[i] = read_shape(p, self.num_points, up)
            todo.append(i)
        if todo:
            self._check_channels([clouds[i] for i in todo], [files[i] for i in todo])
            seen = downsample_clouds([torch.as_tensor(clouds[i]) for i in todo], self.num_points)  # FPS once
            tokens, mask = self._encode_points([c.numpy() for c in seen])
            from h2arn.features import atomic_save

            for j, i in enumerate(todo):
                cached[i] = {"tokens": tokens[j], "mask": mask[j], "points": seen[j].float()}
                atomic_save(cached[i], folder / f"{digests[i]}_{up}.pt")
        order = range(len(files))
        tokens = torch.stack([cached[i]["tokens"] for i in order])
        mask = torch.stack([cached[i]["mask"] for i in order])
        points = [cached[i]["points"].numpy() for i in order]
        return self._gallery_from_tokens(tokens, mask, points, list(names), [str(p) for p in files], digests,
                                         [up] * len(files))

    def _embed(self, clouds, names, paths, digests, up) -> Gallery:
        from h2arn.encoders.tokens import downsample_clouds

        self._check_channels(clouds, [f"array {i}" for i in range(len(clouds))])
        seen = [c.float().numpy() for c in downsample_clouds([torch.as_tensor(c) for c in clouds], self.num_points)]
        tokens, mask = self._encode_points(seen)   # already FPS-downsampled: encode_clouds keeps them as they are
        return self._gallery_from_tokens(tokens, mask, seen, list(names), list(paths), list(digests), [up] * len(clouds))

    def _check_channels(self, clouds, sources) -> None:
        need = 3 if self.point_encoder.channels == "xyz" else 6
        for c, src in zip(clouds, sources):
            if c.shape[1] < need:
                raise SearchError(f"{src}: has no colours, but the model's point encoder ({self.features['pc_model']}, "
                                  f"channels={self.point_encoder.channels!r}) needs x y z r g b. Fix: pass shapes "
                                  "with vertex colours, or use a model trained on xyz-only features.")

    def _encode_points(self, clouds) -> tuple[Tensor, Tensor]:
        from h2arn.extract import encode_clouds

        cols = 3 if self.point_encoder.channels == "xyz" else 6   # same width in a batch; rgb unused by xyz encoders
        return encode_clouds(self.point_encoder, [np.asarray(c)[:, :cols] for c in clouds], self.num_points,
                             device=self.device, progress=self.progress, desc="point tokens")

    @torch.no_grad()
    def _gallery_from_tokens(self, tokens, mask, points, names, paths, digests, ups) -> Gallery:
        embs, weights = [], []
        for s in range(0, tokens.shape[0], 256):
            t, m = tokens[s:s + 256].to(self.device), mask[s:s + 256].to(self.device)
            embs.append(self.model.encode_cloud(t, m).float().cpu())
            weights.append(self.model.contributions(t, m, "cloud").float().cpu())
        return Gallery(ids=names, paths=paths, digests=digests, ups=ups, emb=torch.cat(embs), mask=mask.bool(),
                       token_weights=torch.cat(weights), points=list(points), tokens=tokens)

    # ------------------------------------------------------------------ searching
    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """``(embeddings (Q, E), tokens (Q, L, D), mask (Q, L))`` of free-text queries."""
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise SearchError("a query is empty. Fix: type a description, e.g. 'a tall vase with two handles'.")
        tokens, mask = self.text_encoder.encode(list(texts), progress=False)
        emb = self.model.encode_text(tokens.to(self.device), mask.to(self.device)).float().cpu()
        return emb, tokens, mask

    def distances(self, query_emb: Tensor) -> Tensor:
        """The model's distance ``(Q, N)`` from query embeddings to every gallery shape (brute force)."""
        sim = self.model.similarity(query_emb.to(self.device), self.gallery.emb.to(self.device)).double().cpu()
        return -sim if self.model.hyperbolic else 1.0 - sim

    def search(self, text: str, k: int = 10) -> QueryResult:
        """The ``k`` nearest gallery shapes to a free-text query, with the explanation."""
        return self.search_many([text], k)[0]

    @torch.no_grad()
    def search_many(self, texts: Sequence[str], k: int = 10) -> list[QueryResult]:
        """:meth:`search` for a batch of queries (one text-encoder pass)."""
        if len(self.gallery) == 0:
            raise SearchError("the gallery is empty. Fix: add_shapes(...) or load_gallery(...) first.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SearchError(f"k must be a positive integer, got {k!r}.")
        texts = list(texts)
        emb, tokens, mask = self.encode_queries(texts)
        k = min(int(k), len(self.gallery))
        if self.index is not None:
            idx, dist = self.index.search(emb, k)
        else:
            d = self.distances(emb)
            dist, idx = torch.topk(d, k, dim=1, largest=False)
        qw = self.model.contributions(tokens.to(self.device), mask.to(self.device), "text").float().cpu()
        from h2arn.encoders.pretrain import category_from_name

        out = []
        for q, text in enumerate(texts):
            valid = mask[q].bool()
            hits = []
            for r, (j, dj) in enumerate(zip(idx[q].tolist(), dist[q].tolist())):
                if j < 0:
                    continue
                w = self.gallery.token_weights[j][self.gallery.mask[j]].numpy()
                gid = self.gallery.ids[j]
                hits.append(Hit(rank=r + 1, index=j, id=gid, path=self.gallery.paths[j], distance=float(dj),
                                token_weights=w, category=category_from_name(gid)))
            out.append(QueryResult(text, hits, word_pieces(self.text_encoder, text)[:int(valid.sum())],
                                   qw[q][valid].numpy()))
        return out

    def build_index(self, kind: str = "hnsw") -> None:
        """Search through :class:`h2arn.index.LorentzIndex` (``flat`` exact, ``hnsw``/``ivf`` approximate)."""
        if not self.model.hyperbolic:
            raise SearchError(f"{self.model_file}: an index needs a hyperbolic model (this one is Euclidean). Fix: "
                              "search without one (--index none).")
        from h2arn.index import LorentzIndex

        index = LorentzIndex(self.gallery.emb.shape[1] - 1, float(self.model.curvature().detach()), kind)
        if kind == "ivf":
            index.train(self.gallery.emb)
        index.add(self.gallery.emb)   # float32, as made: the index checks them at float32 tolerance
        self.index = index

    # ------------------------------------------------------------------ gallery files
    def save_gallery(self, out: str | os.PathLike, index: str = "auto") -> Path:
        """Write the gallery folder atomically (a temp folder renamed into place: never a half gallery).

        ``index``: ``"auto"`` (an HNSW index from :data:`INDEX_AUTO_MIN` shapes on, hyperbolic models only),
        ``"none"``, ``"flat"``, ``"hnsw"`` or ``"ivf"``. An existing gallery at ``out`` is replaced; any other
        existing folder is refused (nothing of yours is deleted).
        """
        out = Path(out)
        if len(self.gallery) == 0:
            raise SearchError(f"{out}: nothing to write, the gallery is empty. Fix: add shapes first.")
        if out.exists() and not (out / GALLERY_FILE).is_file():
            if out.is_file() or any(out.iterdir()):
                raise SearchError(f"{out}: exists and is not a gallery. Fix: pass a new folder for --out (nothing "
                                  "there is deleted).")
        kind = ("hnsw" if self.model.hyperbolic and len(self.gallery) >= INDEX_AUTO_MIN else "none") \
            if index == "auto" else index
        if kind not in ("none", "flat", "hnsw", "ivf"):
            raise SearchError(f"--index {index!r}: choose auto, none, flat, hnsw or ivf.")
        if kind != "none":
            self.build_index(kind)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            g = self.gallery
            torch.save({"emb": g.emb, "mask": g.mask, "token_weights": g.token_weights,
                        "points": [torch.as_tensor(p) for p in g.points]}, tmp / ARRAYS_FILE)
            if self.index is not None:
                self.index.save(tmp / INDEX_FILE)
            meta = {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "model_file": str(self.model_file.resolve()),
                    "model_sha256": self.model_sha256, "features": self.features, "num_shapes": len(g),
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

    def load_gallery(self, folder: str | os.PathLike) -> "Retriever":
        """Read a gallery folder written by :meth:`save_gallery`; refuses one made with another model."""
        folder = Path(folder)
        meta = read_gallery_meta(folder)
        if meta["model_sha256"] != self.model_sha256:
            raise SearchError(f"{folder}: this gallery was embedded with another model ({meta['model_file']}, sha256 "
                              f"{meta['model_sha256'][:12]}...), not {self.model_file} (sha256 {self.model_sha256[:12]}...): "
                              "its embeddings are not comparable. Fix: re-index the shapes with this model "
                              f"(python -m h2arn.search index --model {self.model_file} ...).")
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
        self.gallery = g
        self.index = None
        if meta.get("index", "none") != "none":
            from h2arn.index import LorentzIndex

            self.index = LorentzIndex.load(folder / INDEX_FILE, c=float(self.model.curvature().detach()),
                                           dim=g.emb.shape[1] - 1)
        return self

    def session(self) -> RetrievalSession:
        """The gallery as a :class:`RetrievalSession` (no captions), for the chapter's drawing functions."""
        g = self.gallery
        if g.tokens is None:
            raise SearchError("session(): the point tokens are only in memory right after add_shapes. Fix: add the "
                              "shapes in this process (they come from the token cache, so it is fast).")
        enc = self.text_encoder
        return RetrievalSession(
            model=self.model, encode_captions=lambda caps: enc.encode(list(caps), progress=False),
            cloud_tokens=g.tokens, cloud_mask=g.mask, cloud_emb=g.emb, cloud_names=list(g.ids),
            cloud_points=list(g.points), text_emb=torch.zeros(0, g.emb.shape[1]), captions=[],
            txt_to_pc=torch.zeros(0, dtype=torch.long), tokenize=lambda text: word_pieces(enc, text),
            device=self.device, points_per_cloud=None)


def word_pieces(text_encoder, text: str) -> list[str]:
    """The tokenizer's pieces of ``text`` (with its special tokens), aligned with the feature positions."""
    ids = text_encoder.tokenizer(text, truncation=True, max_length=text_encoder.max_length)["input_ids"]
    return text_encoder.tokenizer.convert_ids_to_tokens(ids)


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


def _load_recorded_text_encoder(features: dict, model_file: Path, device):
    """The text encoder named in the model file; refused when its files differ from the recorded ones."""
    from h2arn.encoders.text import load_text_encoder
    from h2arn.extract import text_identity

    rec = dict(features["txt_model"])
    path = None if rec.get("source", "default") == "default" else rec["source"]
    now = text_identity(rec["name"], path)
    if rec.get("files") is not None and now.get("files") != rec.get("files"):
        raise SearchError(f"{model_file}: its features were made with the {rec['name']} text model from {rec['source']}, "
                          "but the files found there now differ, so queries would not match the captions it was "
                          "trained on. Fix: install the text model it was trained with (pyproject.toml pins it), or retrain.")
    return load_text_encoder(rec["name"], path, device=device, max_length=int(features["max_length"]), progress=False)


def _load_recorded_point_encoder(features: dict, model_file: Path, device, override=None):
    """The point encoder (and weights) the model's features were made with, checked by sha256."""
    from h2arn.encoders.weights import load_point_encoder, shared_pointnet_path
    from h2arn.extract import build_pc_encoder

    sha = features["pc_weights_sha256"]
    if sha == "random":
        return build_pc_encoder("random", None, features["pc_model"], int(features["num_tokens"]),
                                features["pooling"], device)
    candidates = [Path(override)] if override is not None else \
        [Path(p) for p in (features.get("pc_weights"), shared_pointnet_path()) if p]
    for path in candidates:
        if path.is_file() and _sha256(path) == sha:
            enc, _ = load_point_encoder(path, pc_model=features["pc_model"], num_tokens=int(features["num_tokens"]),
                                        pooling=features["pooling"])
            return enc.to(device)
    where = ", ".join(map(str, candidates)) or "nowhere"
    raise SearchError(f"{model_file}: its features were made with {features['pc_model']} weights of sha256 {sha[:12]}... "
                      f"(recorded at {features.get('pc_weights')}); no file with that content at {where}. Fix: pass "
                      "--pc_weights <that file> (e.g. rebuild it with the same ensure_features/extract command), or "
                      "retrain the model on features of weights you have.")


# --------------------------------------------------------------------------- HTML report

def _thumbnail_png(points: np.ndarray, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from h2arn.data.viz import plot_cloud

    fig = plt.figure(figsize=(2.4, 2.4))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    plot_cloud(ax, points, title=None, size=2.0, max_points=2048)
    ax.set_title(title, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(results: Sequence[QueryResult], retriever: Retriever, path: str | os.PathLike) -> Path:
    """One self-contained page: per query, its token weights and a rendered thumbnail + distance per hit."""
    from html import escape

    parts = ["<!doctype html><meta charset='utf-8'><title>h2arn search</title>",
             "<style>body{font-family:sans-serif} .hit{display:inline-block;margin:4px;text-align:center;"
             "font-size:12px;vertical-align:top} .tok{display:inline-block;margin:1px;padding:1px 3px;"
             "background:#fde3c8;border-radius:3px;font-size:12px}</style>",
             f"<p>model <code>{escape(str(retriever.model_file))}</code>, {len(retriever.gallery)} shapes; "
             "distances: " + ("Lorentz geodesic" if retriever.model.hyperbolic else "cosine") + "</p>"]
    for res in results:
        parts.append(f"<h2>{escape(res.query)}</h2><p>query token weights: ")
        top = float(res.query_token_weights.max()) if len(res.query_token_weights) else 1.0
        for t, w in zip(res.query_tokens, res.query_token_weights):
            alpha = 0.15 + 0.85 * float(w) / top
            parts.append(f"<span class='tok' style='opacity:{alpha:.2f}' title='{w:.3f}'>{escape(t)} {w:.2f}</span>")
        parts.append("</p><div>")
        for h in res.hits:
            png = _thumbnail_png(retriever.gallery.points[h.index], f"#{h.rank} {h.id}")
            parts.append(f"<div class='hit'><img src='data:image/png;base64,{png}' width='190'><br>"
                         f"#{h.rank} <b>{escape(h.id)}</b><br>d = {h.distance:.4f}<br>"
                         f"effective tokens {effective_number(h.token_weights):.1f} of {len(h.token_weights)}<br>"
                         "top token weights " + " ".join(f"{w:.2f}" for w in np.sort(h.token_weights)[::-1][:5])
                         + "</div>")
        parts.append("</div>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m h2arn.search", description="Search your own 3-D shapes by text.")
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="embed a folder of meshes/clouds into a gallery folder")
    ix.add_argument("--model", required=True, help="model file (best_model.pth) or run folder")
    ix.add_argument("--shapes", required=True, nargs="+", help="files and/or folders (searched recursively)")
    ix.add_argument("--out", required=True, help="gallery folder to write (replaced atomically)")
    ix.add_argument("--up", default="y", choices=["y", "z"], help="the shapes' up axis (the benchmark is y-up)")
    ix.add_argument("--index", default="auto", choices=["auto", "none", "flat", "hnsw", "ivf"],
                    help=f"FAISS index (h2arn.index); auto = hnsw from {INDEX_AUTO_MIN} shapes on")
    ix.add_argument("--pc_weights", default=None, help="point-encoder weights, if not where training recorded them")
    ix.add_argument("--cache", default=None, help="token cache folder (default build/cache/shape_tokens)")
    ix.add_argument("--device", default="auto")
    q = sub.add_parser("query", help="search a gallery folder with free text")
    q.add_argument("--gallery", required=True)
    q.add_argument("text", nargs="+", help="one or more queries")
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--model", default=None, help="default: the model file the gallery was indexed with")
    q.add_argument("--json", action="store_true", help="print machine-readable results")
    q.add_argument("--html", default=None, help="write a page with thumbnails, distances and token weights")
    q.add_argument("--device", default="auto")
    return p


def _run(args) -> int:
    if args.command == "index":
        r = Retriever.from_run(args.model, args.device, pc_weights=args.pc_weights, cache_dir=args.cache)
        ids = r.add_shapes(args.shapes, up=args.up)
        out = r.save_gallery(args.out, index=args.index)
        print(f"gallery {out}: {len(ids)} shapes embedded with {r.model_file}")
        return 0
    if args.k < 1:
        raise SearchError(f"--k {args.k}: must be a positive integer.")
    meta = read_gallery_meta(args.gallery)
    r = Retriever.from_run(args.model or meta["model_file"], args.device, progress=False)
    r.load_gallery(args.gallery)
    results = r.search_many(args.text, args.k)
    if args.html:
        write_html(results, r, args.html)
    if args.json:
        print(json.dumps([res.to_dict() for res in results], indent=1))
    else:
        for res in results:
            print(f"query: {res.query!r}")
            for h in res.hits:
                print(f"  #{h.rank:<3d} {h.id:40s} d = {h.distance:.4f}   {h.path or ''}")
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from h2arn.checkpoint import CheckpointError
    from h2arn.cli import run_cli
    from h2arn.encoders.text import TextEncoderError
    from h2arn.encoders.weights import CheckpointError as WeightsError
    from h2arn.features import FeatureError
    from h2arn.meshes import ShapeReadError

    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args),
                   (SearchError, ShapeReadError, CheckpointError, WeightsError, TextEncoderError, FeatureError))


if __name__ == "__main__":
    raise SystemExit(main())
