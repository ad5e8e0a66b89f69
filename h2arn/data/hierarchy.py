"""Hierarchy-collapse (HRC) experiments: embed a tree in Euclidean space vs the Lorentz model.

Why: H2ARN argues that Euclidean embeddings of abstract-to-specific texts *collapse* (a space whose
volume grows polynomially cannot hold a tree whose size grows exponentially with depth, so deep,
specific nodes crowd together), while hyperbolic space, whose volume grows exponentially, keeps
them apart and orders them by distance from the origin. This module measures that claim on two
trees, at equal dimension ``d`` (Euclidean ``R^d`` vs hyperboloid ``H^d`` with ``d`` space coordinates):

* the benchmark's taxonomy: root > subset > super-category > mid-category > category > leaf > attribute
  group > shape, whose depths 2..7 match caption levels 0..5 (:func:`taxonomy_tree_from_metadata`);
* a balanced tree (:func:`balanced_tree`).

Two objectives, both optimised with Adam on free parameters (points in ``R^d``; tangent vectors at
the origin for the Lorentz model, mapped with ``L.expmap0``, so no Riemannian optimiser is needed; the
Riemannian alternative is below):

* ``ranking`` (Nickel & Kiela 2017): each related pair (ancestor/descendant) must be closer than all
  unrelated nodes: ``loss = d(u,v) + log(exp(-d(u,v)) + sum_{w unrelated} exp(-d(u,w)))``;
  evaluated by **mean average precision** of reconstructing the related sets.
* ``distortion``: match the tree's shortest-path metric, ``mean (d(u,v)/d_T(u,v) - 1)^2``;
  evaluated by **average distortion** ``mean |d(u,v) - d_T(u,v)| / d_T(u,v)``.

Two optimisers for the Lorentz model (``embed_tree(..., optimizer=...)``, same objective, same loop):

* ``"tangent"`` (default): the trick above. Plain Adam on ``v in R^d``, points ``expmap0(v)``. Every
  point is on the hyperboloid by construction, but a step of size ``lr`` in ``v`` moves a point at
  radius ``r`` *sideways* by about ``sinh(r)/r * lr`` of hyperbolic distance: steps grow far from the
  origin, where the deep nodes of a tree live.
* ``"riemannian"``: what the hyperbolic literature does (Nickel & Kiela 2018, HGCN): the points
  themselves are a ``geoopt.ManifoldParameter`` on ``geoopt.Lorentz(k=1/c)`` (:func:`h2arn.lorentz.to_geoopt_k`),
  updated by ``geoopt.optim.RiemannianAdam`` (Euclidean gradient -> Riemannian gradient -> step along
  the geodesic with the exp map, Becigneul & Ganea 2019). A step of size ``lr`` moves any point by
  about ``lr`` of hyperbolic distance, wherever it is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import geoopt
import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from tqdm.auto import tqdm

from .. import lorentz as L

ATTRIBUTE_KEY = {"Elephant": "material", "S3DIS": "size"}  # the attribute that splits a category


@dataclass
class Tree:
    """A rooted tree: ``parent[i]`` (-1 for the root), ``depth[i]``, display ``names``."""
    names: List[str]
    parent: np.ndarray
    depth: np.ndarray

    @property
    def n(self) -> int:
        return len(self.names)

    def related(self) -> np.ndarray:
        """``(n, n)`` bool: ``u`` is an ancestor or descendant of ``v`` (the transitive closure, symmetric)."""
        anc = np.zeros((self.n, self.n), dtype=bool)
        for v in range(self.n):
            u = self.parent[v]
            while u >= 0:
                anc[u, v] = True
                u = self.parent[u]
        return anc | anc.T

    def distances(self) -> np.ndarray:
        """``(n, n)`` shortest-path lengths (number of edges)."""
        child = np.arange(self.n)[self.parent >= 0]
        g = csr_matrix((np.ones(len(child)), (child, self.parent[child])), shape=(self.n, self.n))
        return shortest_path(g, directed=False, unweighted=True)


class _Builder:
    def __init__(self):
        self.names, self.parent, self.depth, self.index = [], [], [], {}

    def add(self, key, name, parent_key):
        if key in self.index:
            return self.index[key]
        p = self.index[parent_key] if parent_key is not None else -1
        self.index[key] = len(self.names)
        self.names.append(name)
        self.parent.append(p)
        self.depth.append(0 if p < 0 else self.depth[p] + 1)
        return self.index[key]

    def tree(self) -> Tree:
        return Tree(self.names, np.asarray(self.parent), np.asarray(self.depth))


def balanced_tree(branching: int, depth: int) -> Tree:
    """Complete ``branching``-ary tree with ``depth`` levels below the root."""
    b = _Builder()
    b.add((), "root", None)
    frontier = [()]
    for _ in range(depth):
        nxt = []
        for key in frontier:
            for j in range(branching):
                k = key + (j,)
                b.add(k, ".".join(map(str, k)), key)
                nxt.append(k)
        frontier = nxt
    return b.tree()


def taxonomy_tree_from_metadata(metadata: dict, max_shapes_per_category: Optional[int] = None,
                                splits: Sequence[str] = ("train", "val", "test")) -> Tree:
    """The benchmark's is-a tree down to the shapes, from ``metadata.json``.

    Benchmark v4 (shapes carry ``taxonomy_path``): root > subset > super-category > mid-category > category >
    leaf > attribute group > shape, so the depth of a node is its caption level + 2 (super-category captions
    are level 0 at depth 2, leaf captions level 3 at depth 5, attribute captions level 4, shape captions 5).
    Older metadata (no path): root > subset > super-category > category > attribute group > shape.
    ``max_shapes_per_category`` caps the shapes kept per leaf (per category for old metadata).
    """
    b = _Builder()
    b.add("root", "root", None)
    per_cat: Dict[str, int] = {}
    for name in sorted(metadata["shapes"]):
        s = metadata["shapes"][name]
        if s["split"] not in splits:
            continue
        path = list(s.get("taxonomy_path") or [s["super_category"], s["category"]])
        key = path[-1]
        if max_shapes_per_category is not None and per_cat.get(key, 0) >= max_shapes_per_category:
            continue
        per_cat[key] = per_cat.get(key, 0) + 1
        attr = s["attributes"].get(ATTRIBUTE_KEY[s["subset"]], "any")
        parent = ("sub", s["subset"])
        b.add(parent, s["subset"], "root")
        for depth, node in enumerate(path):
            k = ("node", tuple(path[:depth + 1]))
            b.add(k, node, parent)
            parent = k
        b.add(("att", key, attr), f"{attr} {key}", parent)
        b.add(("shape", name), name, ("att", key, attr))
    return b.tree()


def caption_level_of_depth(tree: Tree) -> Dict[int, int]:
    """``{tree depth: caption level}`` for the depths below the subsets (depth 2 = level 0, ...)."""
    return {int(d): int(d) - 2 for d in sorted(set(tree.depth.tolist())) if d >= 2}


# --------------------------------------------------------------------------- embedding

OPTIMIZERS = ("tangent", "riemannian")


@dataclass
class Embedding:
    geometry: str
    dim: int
    points: torch.Tensor      # (n, d) Euclidean points, or (n, d+1) hyperboloid points
    c: float = 1.0
    final_loss: float = float("nan")
    optimizer: str = "tangent"
    last_step: Optional[torch.Tensor] = None  # (n,) distance each point moved in the final step (geometry's metric)

    def pairwise(self) -> torch.Tensor:
        """``(n, n)`` distances in the embedding's own geometry."""
        with torch.no_grad():
            if self.geometry == "euclidean":
                return torch.cdist(self.points, self.points)
            return L.pairwise_dist(self.points, self.points, self.c).fill_diagonal_(0.0)

    def dist_from(self, index: int) -> torch.Tensor:
        """Distance of every node from node ``index`` (the root: the embedding's notion of "norm")."""
        return self.pairwise()[index]


def _pairwise_distances(points: torch.Tensor, geometry: str, c: float) -> torch.Tensor:
    """``(..., n, n)`` distances of ``(..., n, d)`` points (leading dims: independent fits)."""
    if geometry == "euclidean":
        sq = points.pow(2).sum(-1)
        gram = points @ points.transpose(-1, -2)   # one GEMM, no (n, n, d) tensor
        d2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * gram).clamp_min(0.0)
        return (d2 + 1e-12).sqrt()  # eps: finite gradient on the diagonal
    return L.pairwise_dist(points, points, c)


def _parameters_and_optimizer(init: torch.Tensor, geometry: str, optimizer: str, lr: float, c: float):
    """The free parameter, the optimiser over it, and how to turn the parameter into points.

    ``init`` are small tangent vectors at the origin (``(S, n, d)``); both Lorentz variants start from the
    same points ``expmap0(init)``, so a comparison with the same seed is paired.
    """
    if optimizer == "tangent":
        params = init.clone().requires_grad_()
        to_points = (lambda p: p) if geometry == "euclidean" else (lambda p: L.expmap0(p, c))
        return params, torch.optim.Adam([params], lr=lr), to_points
    # k as a tensor of the points' dtype: geoopt.Lorentz(k=float) would store k = 1/c in float32
    manifold = geoopt.Lorentz(k=torch.tensor(L.to_geoopt_k(c), dtype=init.dtype, device=init.device))
    params = geoopt.ManifoldParameter(L.expmap0(init, c), manifold=manifold)
    return params, geoopt.optim.RiemannianAdam([params], lr=lr), lambda p: p


def embed_tree(tree: Tree, dim: int, geometry: str = "lorentz", objective: str = "ranking", *,
               steps: int = 400, lr: float = 0.05, seed: int = 0, c: float = 1.0, optimizer: str = "tangent",
               device: str | torch.device = "cpu", dtype=torch.float64) -> Embedding:
    """Optimise an embedding of ``tree`` in ``dim`` dimensions (see module docstring).

    ``optimizer``: ``"tangent"`` (Adam on tangent vectors at the origin, mapped with ``expmap0``) or
    ``"riemannian"`` (``geoopt.ManifoldParameter`` points + ``geoopt.optim.RiemannianAdam``; Lorentz only).
    Full batch (all ``n^2`` pairs per step; fine up to a few thousand nodes). float64 by default so
    that deep nodes far from the origin keep their precision in the Lorentz model.
    """
    return embed_tree_seeds(tree, dim, geometry, objective, seeds=[seed], steps=steps, lr=lr, c=c,
                            optimizer=optimizer, device=device, dtype=dtype)[0]


def embed_tree_seeds(tree: Tree, dim: int, geometry: str = "lorentz", objective: str = "ranking", *,
                     seeds: Sequence[int], steps: int = 400, lr: float = 0.05, c: float = 1.0,
                     optimizer: str = "tangent", device: str | torch.device = "cpu",
                     dtype=torch.float64) -> List[Embedding]:
    """:func:`embed_tree` for several seeds in ONE loop: the seeds are a leading batch dimension.

    Why: a small tree's step costs little more than the per-operation overhead, so five seeds at once cost
    about one. The fits stay independent: the loss is the sum of the per-seed losses, so each seed's
    parameters get the gradient of their own loss only, and Adam (per coordinate) and Riemannian Adam (per
    point) never mix them. ``embed_tree_seeds(..., seeds=[s])[0]`` is ``embed_tree(..., seed=s)``; a
    batch of seeds matches the separate fits up to rounding (batched matrix products sum in another
    order; at large learning rates the dynamics amplify that, as they amplify any rounding).
    """
    if geometry not in ("euclidean", "lorentz"):
        raise ValueError(f"geometry must be 'euclidean' or 'lorentz', got {geometry!r}")
    if objective not in ("ranking", "distortion"):
        raise ValueError(f"objective must be 'ranking' or 'distortion', got {objective!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "riemannian" and geometry != "lorentz":
        raise ValueError("optimizer='riemannian' needs geometry='lorentz' (in R^d Riemannian Adam is plain Adam); "
                         "use optimizer='tangent' for the Euclidean embedding")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: pass at least one seed, e.g. seeds=[0]")
    init = torch.stack([(torch.rand(tree.n, dim, generator=torch.Generator().manual_seed(s), dtype=dtype) - 0.5) * 2e-3
                        for s in seeds]).to(device)                                   # (S, n, dim)
    params, opt, to_points = _parameters_and_optimizer(init, geometry, optimizer, lr, c)
    eye = torch.eye(tree.n, dtype=torch.bool, device=device)
    if objective == "ranking":
        rel = torch.as_tensor(tree.related(), device=device)
        neg_mask = ~rel & ~eye
        pos_u, pos_v = rel.nonzero(as_tuple=True)
    else:
        dt = torch.as_tensor(tree.distances(), dtype=dtype, device=device)
        off = ~eye
    losses = torch.full((len(seeds),), float("nan"), dtype=dtype)
    before = None
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        points = to_points(params)
        before = points.detach().clone()  # clone: RiemannianAdam updates the parameter in place
        d = _pairwise_distances(points, geometry, c)                                  # (S, n, n)
        if objective == "ranking":
            neg_lse = torch.logsumexp((-d).masked_fill(~neg_mask, float("-inf")), dim=-1)  # (S, n)
            dp = d[:, pos_u, pos_v]
            losses = (dp + torch.logaddexp(-dp, neg_lse[:, pos_u])).mean(-1)
        else:
            losses = ((d[:, off] / dt[off] - 1.0) ** 2).mean(-1)
        losses.sum().backward()
        opt.step()
    with torch.no_grad():
        pts = to_points(params.detach()).as_subclass(torch.Tensor).clone()
        last_step = [None] * len(seeds)
        if before is not None:
            before = before.as_subclass(torch.Tensor)
            last_step = list((pts - before).norm(dim=-1) if geometry == "euclidean" else L.dist(before, pts, c))
    return [Embedding(geometry, dim, pts[i].cpu(), c, float(losses[i].detach()), optimizer,
                      None if last_step[i] is None else last_step[i].cpu()) for i in range(len(seeds))]


# --------------------------------------------------------------------------- metrics

def mean_average_precision(dist: np.ndarray, related: np.ndarray, nodes: Optional[np.ndarray] = None) -> float:
    """Nickel & Kiela's reconstruction MAP: for each node, rank all others by distance and take the
    average precision of its related (ancestor/descendant) set. ``nodes`` restricts the queries."""
    dist = np.asarray(dist, float)
    n = len(dist)
    queries = np.arange(n) if nodes is None else np.asarray(nodes)
    aps = []
    for u in queries:
        rel = related[u].copy()
        rel[u] = False
        if not rel.any():
            continue
        d = dist[u].copy()
        d[u] = np.inf
        order = np.argsort(d, kind="stable")[:-1]
        hits = rel[order]
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return float(np.mean(aps)) if aps else float("nan")


def average_distortion(dist: np.ndarray, tree_dist: np.ndarray) -> float:
    """``mean_{u != v} |d(u,v) - d_T(u,v)| / d_T(u,v)`` (0 = isometric)."""
    off = ~np.eye(len(dist), dtype=bool)
    return float(np.mean(np.abs(dist[off] - tree_dist[off]) / tree_dist[off]))


def depth_norm_correlation(emb: Embedding, tree: Tree) -> float:
    """Spearman correlation between a node's depth and its distance from the root node's embedding."""
    from scipy.stats import spearmanr

    r = emb.dist_from(0).numpy()
    return float(spearmanr(tree.depth[1:], r[1:]).statistic)


def sweep(tree: Tree, dims: Sequence[int], *, steps: int = 400, lr: float = 0.05, seeds: Sequence[int] = (0,),
          device: str | torch.device = "cpu", progress: bool = True) -> List[dict]:
    """Both geometries x both objectives for each dimension and seed; one row per ``(geometry, dim, seed)``.

    The seeds of one setting are fitted together (:func:`embed_tree_seeds`), and a seed gives the same initial
    tangent vectors to both geometries, so rows with the same ``seed`` and ``dim`` are paired.
    """
    related = tree.related()
    tdist = tree.distances()
    deep = np.flatnonzero(tree.depth == tree.depth.max())
    seeds = list(seeds)
    rows = []
    jobs = [(g, d) for d in dims for g in ("euclidean", "lorentz")]
    for geometry, dim in tqdm(jobs, desc="embed", disable=None if progress else True):
        ranks = embed_tree_seeds(tree, dim, geometry, "ranking", seeds=seeds, steps=steps, lr=lr, device=device)
        dist_embs = embed_tree_seeds(tree, dim, geometry, "distortion", seeds=seeds, steps=steps, lr=lr, device=device)
        for seed, rank, dist_emb in zip(seeds, ranks, dist_embs):
            rank_dist = rank.pairwise().numpy()
            rows.append({
                "geometry": geometry, "dim": dim, "seed": seed,
                "map": mean_average_precision(rank_dist, related),
                "map_deepest": mean_average_precision(rank_dist, related, deep),
                "distortion": average_distortion(dist_emb.pairwise().numpy(), tdist),
                "depth_norm_spearman": depth_norm_correlation(rank, tree),
                "ranking_embedding": rank, "distortion_embedding": dist_emb,
            })
    return rows


# --------------------------------------------------------------------------- tangent-space vs Riemannian Adam

def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, int]:
    """``(mean, half-width, n)`` of a Student-t interval over the finite ``values`` (e.g. one per seed).

    For a paired comparison pass the per-seed differences. Non-finite values (diverged runs) are
    left out and ``n`` says how many remain; the half-width is NaN below two values.
    """
    from ..stats import mean_interval

    v = np.asarray(values, float)
    r = mean_interval(v[np.isfinite(v)].tolist(), confidence)   # diverged (inf) runs are left out too
    return r["mean"], r["hi"] - r["mean"], r["n"]


def compare_optimizers(tree: Tree, dim: int, *, seeds: Sequence[int], lrs: Sequence[float], steps: int,
                       objectives: Sequence[str] = ("ranking", "distortion"), c: float = 1.0,
                       device: str | torch.device = "cpu", dtype=torch.float64, progress: bool = True) -> List[dict]:
    """Fit ``tree`` in the Lorentz model with both :data:`OPTIMIZERS`, same seeds (same initial points), same
    steps, for each learning rate; one row per ``(optimizer, lr, seed)``.

    Row keys: ``map``/``map_deepest``/``max_radius`` and ``ranking_embedding`` (ranking fit), ``distortion``
    (distortion fit), ``finite`` (no fit produced NaN/inf), ``seconds_<objective>``: wall time of the fit of
    ALL seeds together (:func:`embed_tree_seeds`), the same in every row of that batch. Metrics of a
    diverged fit are NaN, so :func:`t_interval` skips them and its ``n`` counts the survivors.
    """
    related, tdist = tree.related(), tree.distances()
    deep = np.flatnonzero(tree.depth == tree.depth.max())
    seeds = list(seeds)
    rows = {(o, lr, s): {"optimizer": o, "lr": lr, "seed": s, "finite": True}
            for lr in lrs for s in seeds for o in OPTIMIZERS}
    jobs = [(o, lr, obj) for lr in lrs for o in OPTIMIZERS for obj in objectives]
    # untimed warm-up of each code path: otherwise the first timed fit also pays for lazy initialisation
    for optimizer, objective in dict.fromkeys((o, obj) for o, _, obj in jobs):
        embed_tree_seeds(tree, dim, "lorentz", objective, seeds=seeds, steps=2, lr=lrs[0], c=c,
                         optimizer=optimizer, device=device, dtype=dtype)
    for optimizer, lr, objective in tqdm(jobs, desc="optimisers", disable=None if progress else True):
        t0 = time.perf_counter()
        embs = embed_tree_seeds(tree, dim, "lorentz", objective, seeds=seeds, steps=steps, lr=lr, c=c,
                                optimizer=optimizer, device=device, dtype=dtype)
        seconds = time.perf_counter() - t0
        for seed, emb in zip(seeds, embs):
            row = rows[(optimizer, lr, seed)]
            row[f"seconds_{objective}"] = seconds
            finite = bool(torch.isfinite(emb.points).all()) and np.isfinite(emb.final_loss)
            row["finite"] &= finite
            dist = emb.pairwise().double().numpy() if finite else None
            if objective == "ranking":
                row["map"] = mean_average_precision(dist, related) if finite else float("nan")
                row["map_deepest"] = mean_average_precision(dist, related, deep) if finite else float("nan")
                row["max_radius"] = float(L.dist0(emb.points.double(), c).max()) if finite else float("nan")
                row["ranking_embedding"] = emb
            else:
                row["distortion"] = average_distortion(dist, tdist) if finite else float("nan")
    return list(rows.values())
