r"""Search your own shapes by text: :class:`Retriever`, a trained model + its recorded encoders + a gallery.

Why a module of its own: this is the search API a script or the command line uses (``Retriever.from_run``,
:meth:`~Retriever.add_shapes`, :meth:`~Retriever.search`, :meth:`~Retriever.search_many`, index building,
saving and loading galleries); it knows nothing of pages or flags (:mod:`h2arn.search.html`,
:mod:`h2arn.search.cli`). Shape files are read by :mod:`h2arn.meshes`, their point tokens cached on disk by
file content; large galleries are searched through :class:`h2arn.index.LorentzIndex`. Distances are the
model's own: Lorentz geodesic distance at the learned curvature (``-model.similarity``) for hyperbolic
models, cosine distance ``1 - cos`` for the Euclidean baseline.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from . import recorded
from .errors import SearchError
from .explain import effective_number
from .gallery import GALLERY_FILE, INDEX_FILE, Gallery, read_gallery, read_gallery_meta, write_gallery
from .session import RetrievalSession, word_pieces

INDEX_AUTO_MIN = 20_000      # galleries at least this large are searched through h2arn.index (HNSW)
CACHE_VERSION = 1            # bump when meshes.py sampling or the token cache layout changes


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
        from h2arn.encoders.weights import sha256_file

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
        point_encoder = recorded.point_encoder(features, path, dev, pc_weights)
        text_encoder = recorded.text_encoder(features, path, dev)
        return cls(model, model_file=path, model_sha256=sha256_file(path), features=features, text_encoder=text_encoder,
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
        return write_gallery(out, self.gallery, self.index, model_file=self.model_file,
                             model_sha256=self.model_sha256, features=self.features, kind=kind)

    def load_gallery(self, folder: str | os.PathLike) -> "Retriever":
        """Read a gallery folder written by :meth:`save_gallery`; refuses one made with another model."""
        folder = Path(folder)
        meta = read_gallery_meta(folder)
        if meta["model_sha256"] != self.model_sha256:
            raise SearchError(f"{folder}: this gallery was embedded with another model ({meta['model_file']}, sha256 "
                              f"{meta['model_sha256'][:12]}...), not {self.model_file} (sha256 {self.model_sha256[:12]}...): "
                              "its embeddings are not comparable. Fix: re-index the shapes with this model "
                              f"(python -m h2arn.search index --model {self.model_file} ...).")
        self.gallery = read_gallery(folder, meta)
        self.index = None
        if meta.get("index", "none") != "none":
            from h2arn.index import LorentzIndex

            self.index = LorentzIndex.load(folder / INDEX_FILE, c=float(self.model.curvature().detach()),
                                           dim=self.gallery.emb.shape[1] - 1)
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
