"""LorentzIndex: exact search equals brute force, approximate search has high recall, files round-trip,
and bad input fails with one clear error."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from h2arn import lorentz as L
from h2arn.index import LorentzIndex, auto_nlist


def hyperbolic_points(n: int, dim: int, c: float, *, seed: int, max_radius: float = 3.0,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """expmap0 of tangent vectors with uniform directions and radii uniform in [0.2, max_radius]: ``(n, dim+1)``."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    radius = 0.2 + (max_radius - 0.2) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    return L.expmap0(direction * radius / math.sqrt(c), c).to(dtype)


def brute_force(queries: torch.Tensor, points: torch.Tensor, c: float, k: int):
    """Reference ranking: float64 all-pairs distances, k smallest per row (ids, distances)."""
    dist = L.pairwise_dist(queries.double(), points.double(), c)
    values, ids = dist.topk(k, dim=1, largest=False, sorted=True)
    return ids, values


def recall_at(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return sum(hits) / truth.numel()


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_flat_search_equals_brute_force(c):
    points = hyperbolic_points(1500, 12, c, seed=1)
    queries = hyperbolic_points(60, 12, c, seed=2)
    index = LorentzIndex(12, c, "flat").add(points)
    ids, dist = index.search(queries, 10)
    ref_ids, ref_dist = brute_force(queries, points, c, 10)
    assert ids.dtype == torch.int64 and dist.dtype == torch.float64 and ids.shape == (60, 10)
    assert torch.equal(ids, ref_ids)
    # the index stores float32 space parts: distances agree to float32 input rounding
    torch.testing.assert_close(dist, ref_dist, rtol=1e-5, atol=1e-5)
    assert (dist[:, 1:] >= dist[:, :-1]).all()


def test_flat_distances_are_exact_for_float32_points():
    """Points that were float32 to begin with are stored exactly, so distances match float64 brute force tightly."""
    c = 1.0
    points = hyperbolic_points(800, 8, c, seed=3, dtype=torch.float32)
    queries = hyperbolic_points(20, 8, c, seed=4, dtype=torch.float32)
    ids, dist = LorentzIndex(8, c).add(points).search(queries, 5)
    exact = L.dist(queries.double()[:, None, :], L.project(points.double(), c)[ids], c)
    torch.testing.assert_close(dist, exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_reach_high_recall(kind):
    c = 1.0
    points = hyperbolic_points(4000, 16, c, seed=5)
    queries = hyperbolic_points(100, 16, c, seed=6)
    index = LorentzIndex(16, c, kind, nprobe=16, ef_search=128).add(points)
    ids, dist = index.search(queries, 10)
    ref_ids, _ = brute_force(queries, points, c, 10)
    assert recall_at(ids, ref_ids) >= 0.9
    # whatever is returned carries its true distance
    exact = L.dist(queries[:, None, :], L.project(points, c)[ids], c)
    torch.testing.assert_close(dist, exact, rtol=1e-5, atol=1e-5)


def test_augment_transform_beats_raw_inner_product_for_hnsw():
    """Why the default transform exists: a graph built on raw inner products navigates badly."""
    c = 1.0
    points = hyperbolic_points(1500, 16, c, seed=7)
    queries = hyperbolic_points(100, 16, c, seed=8)
    ref_ids, _ = brute_force(queries, points, c, 10)
    recall = {t: recall_at(LorentzIndex(16, c, "hnsw", transform=t).add(points).search(queries, 10)[0], ref_ids)
              for t in ("ip", "augment")}
    assert recall["augment"] > recall["ip"] + 0.3


def test_custom_ids_incremental_add_and_padding():
    c = 0.5
    points = hyperbolic_points(300, 6, c, seed=9)
    ext = torch.arange(1000, 1300)
    index = LorentzIndex(6, c)
    index.add(points[:100], ids=ext[:100]).add(points[100:], ids=ext[100:].numpy())
    ids, _ = index.search(points[:5], 3)
    ref_ids, _ = brute_force(points[:5], points, c, 3)
    assert torch.equal(ids, ext[ref_ids])
    assert torch.equal(ids[:, 0], ext[:5])          # every point is its own nearest neighbour
    small = LorentzIndex(6, c).add(points[:4])
    ids, dist = small.search(points[:2], 6)           # k > ntotal: padded like FAISS
    assert (ids[:, 4:] == -1).all() and torch.isinf(dist[:, 4:]).all() and (ids[:, :4] >= 0).all()


def test_ivf_trains_on_first_add_with_auto_nlist():
    index = LorentzIndex(8, 1.0, "ivf")
    assert not index.is_trained
    index.add(hyperbolic_points(2000, 8, 1.0, seed=10))
    assert index.is_trained and index.nlist == auto_nlist(2000) and len(index) == 2000


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    c = 2.0
    points = hyperbolic_points(800, 10, c, seed=11)
    queries = hyperbolic_points(30, 10, c, seed=12)
    index = LorentzIndex(10, c, kind, nprobe=8)
    index.add(points, ids=np.arange(5000, 5800))
    path = index.save(tmp_path / "sub" / f"{kind}.faiss")
    loaded = LorentzIndex.load(path, c=c, dim=10)
    assert (loaded.kind, loaded.c, loaded.dim, loaded.nprobe, len(loaded)) == (kind, c, 10, 8, 800)
    for a, b in zip(index.search(queries, 7), loaded.search(queries, 7)):
        assert torch.equal(a, b)
    loaded.add(hyperbolic_points(5, 10, c, seed=13, max_radius=1.0), ids=[1, 2, 3, 4, 5])   # still usable
    assert len(loaded) == 805


def test_wrong_dimension_is_refused():
    index = LorentzIndex(8, 1.0)
    with pytest.raises(ValueError, match=r"shape \(N, D\+1\) = \(N, 9\)"):
        index.add(hyperbolic_points(10, 7, 1.0, seed=0))
    with pytest.raises(ValueError, match="shape"):
        index.add(torch.zeros(9))
    index.add(hyperbolic_points(10, 8, 1.0, seed=0))
    with pytest.raises(ValueError, match="shape"):
        index.search(hyperbolic_points(2, 9, 1.0, seed=0), 3)


def test_off_manifold_and_non_finite_points_are_refused():
    c = 1.0
    points = hyperbolic_points(50, 8, c, seed=14)
    index = LorentzIndex(8, c)
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        index.add(torch.randn(50, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        index.add(hyperbolic_points(50, 8, 2.0, seed=14))        # built for another curvature
    flipped = points.clone()
    flipped[3, 0] = -flipped[3, 0]                               # lower sheet
    with pytest.raises(ValueError, match="row 3"):
        index.add(flipped)
    nan = points.clone()
    nan[7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        index.add(nan)
    assert len(index) == 0                                        # nothing half-added
    # float32 points from expmap0 pass the dtype-aware tolerance, a float32-sized error in float64 does not
    index.add(points.float())
    nudged = points.clone()
    nudged[:, 0] *= 1 + 1e-6
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        index.search(nudged, 3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kind"):
        LorentzIndex(8, 1.0, "lsh")
    with pytest.raises(ValueError, match="curvature"):
        LorentzIndex(8, -1.0)
    index = LorentzIndex(4, 1.0)
    with pytest.raises(RuntimeError, match="empty"):
        index.search(hyperbolic_points(2, 4, 1.0, seed=0), 1)
    index.add(hyperbolic_points(20, 4, 1.0, seed=0))
    with pytest.raises(ValueError, match="k must be"):
        index.search(hyperbolic_points(2, 4, 1.0, seed=0), 0)
    with pytest.raises(ValueError, match="unique"):
        index.add(hyperbolic_points(2, 4, 1.0, seed=1), ids=[0, 1])
    with pytest.raises(TypeError, match="floating-point"):
        index.add(np.ones((2, 5), dtype=np.int64))


def test_augment_bound_is_enforced_with_a_clear_error():
    c = 1.0
    index = LorentzIndex(8, c, "hnsw").add(hyperbolic_points(100, 8, c, seed=15, max_radius=1.0))
    with pytest.raises(ValueError, match="max_dist0"):
        index.add(hyperbolic_points(10, 8, c, seed=16, max_radius=6.0))
    roomy = LorentzIndex(8, c, "hnsw", max_dist0=6.5).add(hyperbolic_points(100, 8, c, seed=15, max_radius=1.0))
    roomy.add(hyperbolic_points(10, 8, c, seed=16, max_radius=6.0))
    assert len(roomy) == 110


def test_load_errors_name_the_file(tmp_path):
    c = 1.0
    path = LorentzIndex(6, c).add(hyperbolic_points(50, 6, c, seed=17)).save(tmp_path / "idx.faiss")
    sidecar = tmp_path / "idx.faiss.json"
    with pytest.raises(FileNotFoundError, match="missing.faiss"):
        LorentzIndex.load(tmp_path / "missing.faiss")
    with pytest.raises(ValueError, match="curvature c=1.0"):
        LorentzIndex.load(path, c=2.0)
    with pytest.raises(ValueError, match="dim=7"):
        LorentzIndex.load(path, dim=7)

    good_index, good_meta = path.read_bytes(), sidecar.read_text()
    path.write_bytes(good_index[: len(good_index) // 2])           # truncated index file
    with pytest.raises(ValueError, match="SHA-256"):
        LorentzIndex.load(path)
    meta = json.loads(good_meta)
    meta["faiss_sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))                           # matching checksum, still unreadable
    with pytest.raises(ValueError, match="FAISS cannot read"):
        LorentzIndex.load(path)

    path.write_bytes(good_index)
    sidecar.write_text(good_meta[:40])                             # corrupt JSON
    with pytest.raises(ValueError, match="idx.faiss.json is corrupt"):
        LorentzIndex.load(path)
    sidecar.unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        LorentzIndex.load(path)
