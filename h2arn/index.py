r"""Top-k hyperbolic retrieval (exact and approximate) on FAISS.

Why a Euclidean library can do hyperbolic search
------------------------------------------------
For a fixed curvature ``c`` the geodesic distance ``d(q, x) = acosh(-c <q, x>_L) / sqrt(c)`` is a
*decreasing* function of the Lorentz inner product, and ``<q, x>_L = q~ . x`` is an ordinary dot
product once the time coordinate of the query is negated, ``q~ = (-q_0, q_1, ..., q_D)``
(:func:`h2arn.lorentz.pairwise_inner`). So the ``k`` nearest points in hyperbolic distance are exactly
the ``k`` largest inner products with ``q~``: top-k hyperbolic retrieval *is* maximum-inner-product
search (MIPS), which FAISS does natively.

Kinds (``kind=``)
-----------------
* ``"flat"``: brute force in FAISS (``IndexFlatIP``). Exact.
* ``"ivf"``: inverted file (k-means cells, ``nlist`` cells, ``nprobe`` visited per query). Approximate.
* ``"hnsw"``: graph search (``M`` links per node, ``ef_search`` beam width). Approximate.

Metric transform for the approximate kinds (``transform=``)
-----------------------------------------------------------
Search only ever compares scores of one query, so the inner product ranks correctly; but the
approximate kinds are *built* by comparing stored points with each other (k-means cells; graph links),
and the raw inner product is a poor similarity there: our points have very different Euclidean norms
(``|x|^2 = 1/c + 2 |x_s|^2`` grows like ``exp(2 sqrt(c) r)`` with the distance ``r`` to the origin), so a
far-out point "matches" everything and a point is not its own best match. Measured (N=10^4, d=64,
``benchmarks/README.md``): recall@10 0.009 for HNSW and 0.40 for IVF with the raw product, against 0.999
and 0.991 with the augmentation below. The approximate kinds therefore use, by default
(``transform="augment"``), the MIPS augmentation of Bachrach et al. (RecSys 2014): every stored point
gets one extra coordinate,

    ``x' = (x, sqrt(Phi^2 - |x|^2))``,  queries ``q' = (q~, 0)``,

so all stored vectors lie on one sphere of radius ``Phi`` (there inner product, cosine and L2 order
the same way: k-means and graph construction see a proper metric), while for a query
``q' . x' = <q, x>_L`` *exactly*. FAISS still runs in ``METRIC_INNER_PRODUCT``: the L2 form
``|q' - x'|^2 = |q~|^2 + Phi^2 - 2 <q, x>_L`` ranks identically in exact arithmetic, but adding ``Phi^2``
to every score costs float32 resolution (measured on 2*10^4 points, d=64, radii 0.5..3: IVF recall 0.38
with L2 cell selection against 0.999 with inner-product cell selection, nprobe=16 of 512 cells).
Nothing is approximated by the transform itself, only by the search. ``Phi`` must bound the norm of
every stored point; it is fixed when the index first sees data (``train`` or the first ``add``) as the
norm at the largest distance to the origin in that batch plus a margin of ``0.5/sqrt(c)`` (or at
``max_dist0`` if you pass it), and points beyond it are refused with an error that says so. A loose
bound makes the construction geometry coarser (the extra coordinate dominates), a tight one refuses more
points later. ``transform="ip"`` keeps the raw inner product (the default for ``flat``, where the
augmentation changes nothing; for ``ivf``/``hnsw`` kept for comparison, see ``benchmarks/bench_index.py``).

Precision
---------
FAISS works in float32. Every search fetches ``max(k + 8, rerank * k)`` candidates, reads the stored
points back, recomputes their time coordinates from the space parts in float64 (the space part is the
stored quantity, as everywhere in :mod:`h2arn.lorentz`), and re-ranks with the chord-form
:func:`h2arn.lorentz.dist` in float64. Returned distances are therefore true Lorentz distances between
the (float64) query and the stored (float32-rounded) point, sorted ascending, and near-ties that float32
would misorder are repaired.

GPU
---
When ``faiss.get_num_gpus() > 0`` (a ``faiss-gpu`` build), ``flat`` and ``ivf`` search on GPU 0 from a
replica of the CPU index (the CPU index stays the source of truth for adds, re-ranking and saving; the
replica is rebuilt after adds). FAISS has no GPU HNSW, so ``hnsw`` stays on the CPU.

Files
-----
:meth:`LorentzIndex.save` writes ``<path>`` (``faiss.write_index``) and ``<path>.json`` (curvature,
dimension, kind, parameters, external ids, the bound ``Phi^2`` and the SHA-256 of the FAISS file).
:meth:`LorentzIndex.load` checks both and fails with one clear error on a missing, corrupt or mismatched file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Union

import faiss
import numpy as np
import torch

from h2arn import lorentz as L
from h2arn.encoders.weights import sha256_file
from h2arn.features import atomic_write_json

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["LorentzIndex", "auto_nlist"]

_KINDS = ("flat", "ivf", "hnsw")
_TRANSFORMS = ("ip", "augment")
_FORMAT = "h2arn.LorentzIndex"
_FORMAT_VERSION = 1
_CHUNK = 65_536          # rows converted/validated at a time in add()
_QUERY_CHUNK = 1_024     # queries re-ranked at a time in search()
_RERANK_EXTRA = 8        # at least this many candidates beyond k are re-ranked


def auto_nlist(n_train: int) -> int:
    """Default number of IVF cells for ``n_train`` training points: ``~4 sqrt(N)``.

    Capped at ``N / 39`` because FAISS's k-means wants at least 39 points per centroid.
    """
    return max(1, min(int(round(4.0 * math.sqrt(n_train))), n_train // 39))


def _manifold_rtol(dtype: torch.dtype, n_coords: int) -> float:
    """Relative tolerance on ``<x,x>_L + 1/c``: the worst-case rounding of a length-``n`` dot product
    (``n * eps``) with a margin of 4, relative to ``x_0^2 + |x_s|^2``. Dtype-aware: a float32 point
    produced by :func:`h2arn.lorentz.expmap0` passes, a raw Euclidean vector does not, nor does a point made
    for another curvature unless it lies so far out that ``1/c`` is below the rounding of ``x_0^2``
    (there the two hyperboloids are indistinguishable in that dtype)."""
    return 4.0 * n_coords * torch.finfo(dtype).eps


def _to_numpy64(points: ArrayLike, what: str) -> tuple[np.ndarray, torch.dtype]:
    """(array as float64 numpy, the caller's dtype for the tolerance). Accepts torch (any device) or numpy."""
    if isinstance(points, torch.Tensor):
        dtype = points.dtype
        if not dtype.is_floating_point:
            raise TypeError(f"{what} must be a floating-point tensor, got {dtype}. "
                            "Fix: pass hyperboloid points as float32/float64.")
        return points.detach().to("cpu", torch.float64).numpy(), dtype
    arr = np.asarray(points)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array, got dtype {arr.dtype}. "
                        "Fix: pass hyperboloid points as float32/float64.")
    dtype = {np.dtype("float16"): torch.float16, np.dtype("float32"): torch.float32}.get(arr.dtype, torch.float64)
    return arr.astype(np.float64, copy=False), dtype


class LorentzIndex:
    """Top-k nearest neighbours in hyperbolic distance for points on the hyperboloid ``<x,x>_L = -1/c``.

    Parameters
    ----------
    dim: space dimension ``D``; points are ``(N, D+1)`` with the time coordinate first.
    c: curvature magnitude (``> 0``), the same ``c`` as :mod:`h2arn.lorentz`.
    kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate).
    nlist: IVF cells; ``None`` = :func:`auto_nlist` of the training set size.
    nprobe: IVF cells visited per query (recall/speed knob, settable later).
    M: HNSW links per node. ef_construction / ef_search: HNSW beam widths (``ef_search`` settable later).
    transform: ``"augment"`` (points on a sphere, see module docstring) or ``"ip"`` (raw); default ``"ip"``
        for flat, ``"augment"`` otherwise.
    max_dist0: for ``transform="augment"``, the largest distance to the origin the index will accept;
        ``None`` = fixed from the first data seen (see module docstring).
    rerank: candidates fetched per query are ``max(k + 8, rerank * k)``, re-ranked in float64.
    use_gpu: ``None`` = use a GPU if FAISS sees one (flat/ivf only); ``True`` = require one.
    """

    def __init__(self, dim: int, c: float, kind: str = "flat", *, nlist: int | None = None,
                 nprobe: int = 16, M: int = 32, ef_construction: int = 80, ef_search: int = 64,
                 transform: str | None = None, max_dist0: float | None = None, rerank: int = 2,
                 use_gpu: bool | None = None) -> None:
        if not (isinstance(dim, (int, np.integer)) and dim >= 1):
            raise ValueError(f"dim must be a positive int (the space dimension D), got {dim!r}.")
        c = float(c)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"curvature c must be a finite positive number, got {c!r}.")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
        transform = transform or ("ip" if kind == "flat" else "augment")
        if transform not in _TRANSFORMS:
            raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}.")
        for name, value in (("nprobe", nprobe), ("M", M), ("ef_construction", ef_construction),
                            ("ef_search", ef_search), ("rerank", rerank)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}.")
        if nlist is not None and int(nlist) < 1:
            raise ValueError(f"nlist must be >= 1 or None, got {nlist!r}.")
        if max_dist0 is not None and not (math.isfinite(max_dist0) and max_dist0 > 0):
            raise ValueError(f"max_dist0 must be a finite positive distance, got {max_dist0!r}.")
        if use_gpu and faiss.get_num_gpus() == 0:
            raise RuntimeError("use_gpu=True but FAISS sees no GPU (faiss-cpu build or no CUDA device). "
                               "Fix: pass use_gpu=None/False, or install faiss-gpu on a GPU machine.")

        self.dim = int(dim)
        self.c = c
        self.kind = kind
        self.transform = transform
        self.nlist = None if nlist is None else int(nlist)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.rerank = int(rerank)
        self.max_dist0 = None if max_dist0 is None else float(max_dist0)
        self._nprobe = int(nprobe)
        self._ef_search = int(ef_search)
        self._use_gpu = kind != "hnsw" and (faiss.get_num_gpus() > 0 if use_gpu is None else bool(use_gpu))
        self._phi_sq: float | None = None if max_dist0 is None else self._sq_norm_at(self.max_dist0)
        self._ids: np.ndarray | None = None   # None while the external ids are 0..ntotal-1
        self._cpu = None if kind == "ivf" else self._new_faiss_index(None)
        self._gpu = None
        self._gpu_res = None

    # ------------------------------------------------------------------ properties

    @property
    def ntotal(self) -> int:
        """Number of stored points."""
        return 0 if self._cpu is None else int(self._cpu.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        """False only for an IVF index before :meth:`train` (or its first :meth:`add`)."""
        return self._cpu is not None and bool(self._cpu.is_trained)

    @property
    def nprobe(self) -> int:
        """IVF cells visited per query (higher = better recall, slower)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"nprobe must be >= 1, got {value!r}.")
        self._nprobe = int(value)
        self._apply_search_params()

    @property
    def ef_search(self) -> int:
        """HNSW beam width at query time (higher = better recall, slower)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"ef_search must be >= 1, got {value!r}.")
        self._ef_search = int(value)
        self._apply_search_params()

    @property
    def faiss_dim(self) -> int:
        """Width of the vectors stored in FAISS: ``D+1``, plus one for the augmentation."""
        return self.dim + 1 + (self.transform == "augment")

    def __repr__(self) -> str:
        return (f"LorentzIndex(dim={self.dim}, c={self.c}, kind={self.kind!r}, transform={self.transform!r}, "
                f"ntotal={self.ntotal}, gpu={self._use_gpu})")

    # ------------------------------------------------------------------ building

    def train(self, points: ArrayLike) -> "LorentzIndex":
        """Learn the IVF cells from ``points`` ``(N, D+1)`` (no-op for flat/hnsw apart from fixing ``Phi``).

        Called automatically by the first :meth:`add` of an untrained IVF index. Needs ``N >= nlist``.
        """
        x = self._validated(points, "training points")
        self._fix_phi(x)
        if self.kind != "ivf":
            return self
        if self.is_trained:
            raise RuntimeError("this IVF index is already trained. Fix: build a new LorentzIndex to retrain.")
        n = x.shape[0]
        nlist = self.nlist if self.nlist is not None else auto_nlist(n)
        if n < nlist:
            raise ValueError(f"IVF training needs at least nlist={nlist} points, got {n}. "
                             "Fix: train on more points or pass a smaller nlist.")
        self.nlist = nlist
        index = self._new_faiss_index(nlist)
        index.train(self._to_faiss(x))
        index.make_direct_map()   # lets re-ranking read stored vectors back by position
        self._cpu = index
        self._apply_search_params()
        return self

    def add(self, points: ArrayLike, ids: ArrayLike | None = None) -> "LorentzIndex":
        """Store ``points`` ``(N, D+1)`` (torch or numpy, on the hyperboloid of this ``c``).

        ``ids``: ``(N,)`` non-negative unique int64 returned by :meth:`search`; default ``ntotal .. ntotal+N-1``.
        An untrained IVF index is first trained on this batch. The batch is converted to float64 once for
        validation (8 bytes per coordinate): add very large collections in several calls.
        Nothing is stored unless the whole batch is valid.
        """
        if self.kind == "ivf" and not self.is_trained:
            self.train(points)
        x_all = self._validated(points, "points")   # everything is checked before anything is stored
        n = x_all.shape[0]
        new_ids = self._check_new_ids(ids, n)
        self._fix_phi(x_all)
        for start in range(0, n, _CHUNK):
            self._cpu.add(self._to_faiss(x_all[start:start + _CHUNK]))
        if new_ids is not None:
            base = np.arange(self.ntotal - n, dtype=np.int64) if self._ids is None else self._ids
            self._ids = np.concatenate([base, new_ids])
        self._gpu = None   # the GPU replica is stale now
        return self

    # ------------------------------------------------------------------ searching

    @torch.no_grad()
    def search(self, queries: ArrayLike, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` stored points nearest to each query in hyperbolic distance.

        queries: ``(Q, D+1)`` on the hyperboloid. Returns ``(ids, distances)``, both ``(Q, k)`` CPU tensors:
        int64 external ids and float64 Lorentz distances (:func:`h2arn.lorentz.dist`), sorted ascending.
        Where fewer than ``k`` results exist (``k > ntotal``, or an IVF probe that found too few points)
        the row is padded with id ``-1`` and distance ``inf``, as FAISS does.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}.")
        if self.ntotal == 0:
            raise RuntimeError("the index is empty. Fix: call add(points) before search().")
        q = self._validated(queries, "queries")
        n_q, k = q.shape[0], int(k)
        n_cand = min(self.ntotal, max(k + _RERANK_EXTRA, self.rerank * k))
        out_ids = np.full((n_q, k), -1, dtype=np.int64)
        out_dist = np.full((n_q, k), np.inf, dtype=np.float64)
        index = self._search_index()
        for start in range(0, n_q, _QUERY_CHUNK):
            q_chunk = q[start:start + _QUERY_CHUNK]
            _, cand = index.search(self._queries_to_faiss(q_chunk), n_cand)
            ids, dist = self._rerank(q_chunk, cand, k)
            out_ids[start:start + len(q_chunk), :ids.shape[1]] = ids
            out_dist[start:start + len(q_chunk), :ids.shape[1]] = dist
        if self._ids is not None:
            found = out_ids >= 0
            out_ids[found] = self._ids[out_ids[found]]
        return torch.from_numpy(out_ids), torch.from_numpy(out_dist)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Float64 distances to the FAISS candidates ``cand`` ``(Q, n_cand)`` (internal positions, -1 = none);
        returns the best ``min(k, n_cand)`` per row, sorted ascending."""
        valid = cand >= 0
        flat = np.where(valid, cand, 0).reshape(-1)
        stored = self._cpu.reconstruct_batch(flat)[:, 1:self.dim + 1]      # space parts, float32
        points = L.lift(torch.from_numpy(stored.astype(np.float64)), self.c).reshape(*cand.shape, self.dim + 1)
        dist = L.dist(torch.from_numpy(q)[:, None, :], points, self.c).numpy()
        dist[~valid] = np.inf
        keep = min(k, cand.shape[1])
        order = np.argsort(dist, axis=1, kind="stable")[:, :keep]
        ids = np.take_along_axis(cand, order, axis=1)
        best = np.take_along_axis(dist, order, axis=1)
        ids[~np.isfinite(best)] = -1
        return ids, best

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (the FAISS index) and ``path.json`` (everything else). Returns ``path``."""
        if self._cpu is None:
            raise RuntimeError("this IVF index has not been trained yet, there is nothing to save. "
                               "Fix: call train()/add() first.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._cpu, str(tmp))
        os.replace(tmp, path)
        meta = {
            "format": _FORMAT, "version": _FORMAT_VERSION, "c": self.c, "dim": self.dim, "kind": self.kind,
            "transform": self.transform, "nlist": self.nlist, "nprobe": self._nprobe, "M": self.M,
            "ef_construction": self.ef_construction, "ef_search": self._ef_search, "rerank": self.rerank,
            "max_dist0": self.max_dist0, "phi_sq": self._phi_sq, "ntotal": self.ntotal,
            "faiss_sha256": sha256_file(path), "faiss_version": faiss.__version__,
            "ids": None if self._ids is None else self._ids.tolist(),
        }
        atomic_write_json(meta, _sidecar(path))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, c: float | None = None, dim: int | None = None,
             use_gpu: bool | None = None) -> "LorentzIndex":
        """Read an index written by :meth:`save`. Pass ``c``/``dim`` to assert they match your model's."""
        path = Path(path)
        sidecar = _sidecar(path)
        fix = "Fix: rebuild the index and save it again with LorentzIndex.save(path)."
        if not path.is_file():
            raise FileNotFoundError(f"index file {path} does not exist. Fix: check the path, or build and save "
                                    "the index with LorentzIndex(...).add(points).save(path).")
        if not sidecar.is_file():
            raise FileNotFoundError(f"index sidecar {sidecar} is missing (it holds c, dim and ids for {path.name}); "
                                    f"save() writes both files and they must be kept together. {fix}")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, "
                                 f"expected {_FORMAT!r} version {_FORMAT_VERSION}")
            index = cls(int(meta["dim"]), float(meta["c"]), meta["kind"], nlist=meta["nlist"],
                        nprobe=meta["nprobe"], M=meta["M"], ef_construction=meta["ef_construction"],
                        ef_search=meta["ef_search"], transform=meta["transform"], max_dist0=meta["max_dist0"],
                        rerank=meta["rerank"], use_gpu=use_gpu)
            phi_sq, ntotal, ids, digest = meta["phi_sq"], int(meta["ntotal"]), meta["ids"], meta["faiss_sha256"]
        except (ValueError, KeyError, TypeError, AttributeError) as err:   # JSONDecodeError is a ValueError
            raise ValueError(f"index sidecar {sidecar} is corrupt or not written by h2arn ({err}). {fix}") from err
        if sha256_file(path) != digest:
            raise ValueError(f"index file {path} does not match its sidecar {sidecar.name} (SHA-256 differs): "
                             f"the file is corrupt or comes from a different save. {fix}")
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1]
            raise ValueError(f"FAISS cannot read index file {path} ({reason}). {fix}") from err
        if raw.d != index.faiss_dim or raw.ntotal != ntotal:
            raise ValueError(f"index file {path} holds {raw.ntotal} vectors of width {raw.d}, but its sidecar "
                             f"says {ntotal} of width {index.faiss_dim}. {fix}")
        if ids is not None and len(ids) != ntotal:
            raise ValueError(f"index sidecar {sidecar} lists {len(ids)} ids for {ntotal} points. {fix}")
        if c is not None and not math.isclose(float(c), index.c, rel_tol=1e-12):
            raise ValueError(f"index {path} was built for curvature c={index.c}, but c={c} was expected. "
                             "Fix: rebuild the index with the model's curvature (distances depend on c).")
        if dim is not None and int(dim) != index.dim:
            raise ValueError(f"index {path} holds {index.dim}-dimensional points, but dim={dim} was expected. "
                             "Fix: rebuild the index from embeddings of the current model.")
        index._cpu = raw   # read_index already returns the concrete class (and owns it; no downcast_index)
        if index.kind == "ivf" and faiss.extract_index_ivf(index._cpu).direct_map.type == faiss.DirectMap.NoMap:
            index._cpu.make_direct_map()
        index._phi_sq = None if phi_sq is None else float(phi_sq)
        index._ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        index._apply_search_params()
        return index

    # ------------------------------------------------------------------ internals

    def _new_faiss_index(self, nlist: int | None):
        # Always the inner product: for a query (q~, 0) it is exactly <q, x>_L, with the float32 error of
        # the Lorentz product itself (an L2 metric would add Phi^2 to every score and drown the signal).
        metric, d = faiss.METRIC_INNER_PRODUCT, self.faiss_dim
        if self.kind == "flat":
            return faiss.IndexFlatIP(d)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.M, metric)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self._ef_search
            return index
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, metric)

    def _apply_search_params(self) -> None:
        if self._cpu is None:
            return
        if self.kind == "ivf":
            faiss.extract_index_ivf(self._cpu).nprobe = self._nprobe
        elif self.kind == "hnsw":
            self._cpu.hnsw.efSearch = self._ef_search
        self._gpu = None

    def _search_index(self):
        """The FAISS index that answers queries: a GPU replica of the CPU index when enabled."""
        if not self._use_gpu:
            return self._cpu
        if self._gpu is None:
            if self._gpu_res is None:
                self._gpu_res = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._cpu)
            if self.kind == "ivf":
                faiss.GpuParameterSpace().set_index_parameter(self._gpu, "nprobe", self._nprobe)
        return self._gpu

    def _sq_norm_at(self, radius: float) -> float:
        """Euclidean ``|x|^2 = 1/c + 2|x_s|^2`` of a point at distance ``radius`` from the origin."""
        space = math.sinh(math.sqrt(self.c) * radius) / math.sqrt(self.c)
        return 1.0 / self.c + 2.0 * space * space

    def _radius_at(self, sq_norm: float) -> float:
        """Inverse of :meth:`_sq_norm_at`: distance to the origin of a point with ``|x|^2 = sq_norm``."""
        space = math.sqrt(max(sq_norm - 1.0 / self.c, 0.0) / 2.0)
        return math.asinh(math.sqrt(self.c) * space) / math.sqrt(self.c)

    def _fix_phi(self, x: np.ndarray) -> None:
        """Set the augmentation bound ``Phi^2`` from the first data seen, then refuse points beyond it."""
        if self.transform != "augment" or x.shape[0] == 0:
            return
        sq = (x * x).sum(axis=1)
        worst = int(np.argmax(sq))
        if self._phi_sq is None:
            self._phi_sq = self._sq_norm_at(self._radius_at(float(sq[worst])) + 0.5 / math.sqrt(self.c))
        if sq[worst] > self._phi_sq * (1.0 + 1e-9):
            raise ValueError(
                f"a point (row {worst}) lies at distance {self._radius_at(float(sq[worst])):.4g} from the origin, "
                f"beyond the bound {self._radius_at(self._phi_sq):.4g} this {self.kind} index fixed from the first "
                "data it saw (transform='augment' needs a norm bound). Fix: build the index with "
                "LorentzIndex(..., max_dist0=<largest radius you expect>), or train/add the outermost points first.")

    def _to_faiss(self, x: np.ndarray) -> np.ndarray:
        """Stored representation (float32): ``x``, or ``(x, sqrt(Phi^2 - |x|^2))`` for ``transform='augment'``."""
        if self.transform == "ip":
            return np.ascontiguousarray(x, dtype=np.float32)
        extra = np.sqrt(np.maximum(self._phi_sq - (x * x).sum(axis=1, keepdims=True), 0.0))
        return np.ascontiguousarray(np.concatenate([x, extra], axis=1), dtype=np.float32)

    def _queries_to_faiss(self, q: np.ndarray) -> np.ndarray:
        """Query representation: time coordinate negated (Lorentz -> dot product), plus a 0 for ``'augment'``."""
        parts = [-q[:, :1], q[:, 1:]]
        if self.transform == "augment":
            parts.append(np.zeros((q.shape[0], 1)))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _validated(self, points: ArrayLike, what: str) -> np.ndarray:
        x, dtype = _to_numpy64(points, what)
        self._check_shape(x, what)
        for start in range(0, x.shape[0], _CHUNK):
            self._check_on_manifold(x[start:start + _CHUNK], dtype, what, offset=start)
        return x

    def _check_shape(self, x: np.ndarray, what: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim + 1:
            raise ValueError(f"{what} must have shape (N, D+1) = (N, {self.dim + 1}) for this dim={self.dim} index "
                             f"(time coordinate first), got {tuple(x.shape)}. Fix: pass hyperboloid points, "
                             "e.g. h2arn.lorentz.expmap0(tangent (N, D), c), from a model with the same D.")

    def _check_on_manifold(self, x: np.ndarray, dtype: torch.dtype, what: str, offset: int = 0) -> None:
        if not np.isfinite(x).all():
            row = int(np.argwhere(~np.isfinite(x))[0, 0]) + offset
            raise ValueError(f"{what} contain NaN/inf (first at row {row}). Fix: check the embeddings that "
                             "produced them (exp map overflow, NaN features).")
        sq_space = (x[:, 1:] * x[:, 1:]).sum(axis=1)
        sq_time = x[:, 0] * x[:, 0]
        residual = np.abs(sq_space - sq_time + 1.0 / self.c)
        allowed = _manifold_rtol(dtype, self.dim + 1) * (sq_time + sq_space)
        bad = (residual > allowed) | (x[:, 0] <= 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{int(bad.sum())} of {len(x)} {what} are not on the hyperboloid <x,x>_L = -1/c with x_0 > 0 for "
                f"c={self.c} (row {row + offset}: <x,x>_L = {sq_space[row] - sq_time[row]:.6g}, expected "
                f"{-1.0 / self.c:.6g}, x_0 = {x[row, 0]:.6g}). Fix: map tangent vectors with "
                "h2arn.lorentz.expmap0(v, c) (or lorentz.project(x, c)), put the time coordinate first, and build "
                "the index with the curvature the embeddings were made with.")

    def _check_new_ids(self, ids: ArrayLike | None, n: int) -> np.ndarray | None:
        """Validated external ids for ``n`` new points, or ``None`` when they continue ``0..ntotal-1``."""
        if ids is None:
            if self._ids is None:
                return None
            new = np.arange(self.ntotal, self.ntotal + n, dtype=np.int64)
        else:
            new = (ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids))
            if new.shape != (n,) or new.dtype.kind not in "iu":
                raise ValueError(f"ids must be a 1-D integer array of length {n} (one per point), "
                                 f"got shape {new.shape} dtype {new.dtype}.")
            new = new.astype(np.int64)
            if (new < 0).any():
                raise ValueError("ids must be non-negative (-1 marks 'no result' in search output).")
        existing = np.arange(self.ntotal, dtype=np.int64) if self._ids is None else self._ids
        if len(np.unique(new)) != n or np.isin(new, existing).any():
            raise ValueError("ids must be unique, also across earlier add() calls. Fix: pass fresh ids.")
        if ids is not None and self._ids is None and np.array_equal(new, np.arange(self.ntotal, self.ntotal + n)):
            return None
        return new


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")
