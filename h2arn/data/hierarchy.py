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
the origin for the Lorentz model, mapped with ``L.expmap0``, so no Riemannian optimiser is needed):

* ``ranking`` (Nickel & Kiela 2017): each related pair (ancestor/descendant) must be closer than all
  unrelated nodes: ``loss = d(u,v) + log(exp(-d(u,v)) + sum_{w unrelated} exp(-d(u,w)))``;
  evaluated by **mean average precision** of reconstructing the related sets.
* ``distortion``: match the tree's shortest-path metric, ``mean (d(u,v)/d_T(u,v) - 1)^2``;
  evaluated by **average distortion** ``mean |d(u,v) - d_T(u,v)| / d_T(u,v)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

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

@dataclass
class Embedding:
    geometry: str
    dim: int
    points: torch.Tensor      # (n, d) Euclidean points, or (n, d+1) hyperboloid points
    c: float = 1.0
    final_loss: float = float("nan")

    def pairwise(self) -> torch.Tensor:
        """``(n, n)`` distances in the embedding's own geometry."""
        with torch.no_grad():
            if self.geometry == "euclidean":
                return torch.cdist(self.points, self.points)
            return L.pairwise_dist(self.points, self.points, self.c).fill_diagonal_(0.0)

    def dist_from(self, index: int) -> torch.Tensor:
        """Distance of every node from node ``index`` (the root: the embedding's notion of "norm")."""
        return self.pairwise()[index]


def _distances(params: torch.Tensor, geometry: str, c: float) -> torch.Tensor:
    if geometry == "euclidean":
        sq = params.pow(2).sum(-1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * params @ params.T).clamp_min(0.0)  # one GEMM, no (n, n, d) tensor
        return (d2 + 1e-12).sqrt()  # eps: finite gradient on the diagonal
    x = L.expmap0(params, c)
    return L.pairwise_dist(x, x, c)


def embed_tree(tree: Tree, dim: int, geometry: str = "lorentz", objective: str = "ranking", *,
               steps: int = 400, lr: float = 0.05, seed: int = 0, c: float = 1.0,
               device: str | torch.device = "cpu", dtype=torch.float64) -> Embedding:
    """Optimise an embedding of ``tree`` in ``dim`` dimensions (see module docstring).

    Full batch (all ``n^2`` pairs per step; fine up to a few thousand nodes). float64 by default so
    that deep nodes far from the origin keep their precision in the Lorentz model.
    """
    if geometry not in ("euclidean", "lorentz"):
        raise ValueError(f"geometry must be 'euclidean' or 'lorentz', got {geometry!r}")
    if objective not in ("ranking", "distortion"):
        raise ValueError(f"objective must be 'ranking' or 'distortion', got {objective!r}")
    gen = torch.Generator().manual_seed(seed)
    params = ((torch.rand(tree.n, dim, generator=gen, dtype=dtype) - 0.5) * 2e-3).to(device).requires_grad_()
    opt = torch.optim.Adam([params], lr=lr)
    eye = torch.eye(tree.n, dtype=torch.bool, device=device)
    if objective == "ranking":
        rel = torch.as_tensor(tree.related(), device=device)
        neg_mask = ~rel & ~eye
        pos_u, pos_v = rel.nonzero(as_tuple=True)
    else:
        dt = torch.as_tensor(tree.distances(), dtype=dtype, device=device)
        off = ~eye
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        d = _distances(params, geometry, c)
        if objective == "ranking":
            neg_lse = torch.logsumexp((-d).masked_fill(~neg_mask, float("-inf")), dim=1)  # (n,)
            dp = d[pos_u, pos_v]
            loss = (dp + torch.logaddexp(-dp, neg_lse[pos_u])).mean()
        else:
            loss = ((d[off] / dt[off] - 1.0) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pts = params.detach() if geometry == "euclidean" else L.expmap0(params.detach(), c)
    return Embedding(geometry, dim, pts.cpu(), c, float(loss.detach()))


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


def sweep(tree: Tree, dims: Sequence[int], *, steps: int = 400, lr: float = 0.05, seed: int = 0,
          device: str | torch.device = "cpu", progress: bool = True) -> List[dict]:
    """Run both geometries x both objectives for each dimension; one result row per (geometry, dim)."""
    related = tree.related()
    tdist = tree.distances()
    rows = []
    jobs = [(g, d) for d in dims for g in ("euclidean", "lorentz")]
    for geometry, dim in tqdm(jobs, desc="embed", disable=None if progress else True):
        rank = embed_tree(tree, dim, geometry, "ranking", steps=steps, lr=lr, seed=seed, device=device)
        dist_emb = embed_tree(tree, dim, geometry, "distortion", steps=steps, lr=lr, seed=seed, device=device)
        deep = np.flatnonzero(tree.depth == tree.depth.max())
        rows.append({
            "geometry": geometry, "dim": dim,
            "map": mean_average_precision(rank.pairwise().numpy(), related),
            "map_deepest": mean_average_precision(rank.pairwise().numpy(), related, deep),
            "distortion": average_distortion(dist_emb.pairwise().numpy(), tdist),
            "depth_norm_spearman": depth_norm_correlation(rank, tree),
            "ranking_embedding": rank, "distortion_embedding": dist_emb,
        })
    return rows
