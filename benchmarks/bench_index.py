"""Growth curve of hyperbolic top-k retrieval: queries/s and recall@10 of ``h2arn.index.LorentzIndex``
(exact flat, approximate IVF and HNSW) against brute-force torch ``pairwise_dist`` + ``topk``.

    python benchmarks/bench_index.py                 # N = 1e4, 1e5 (about 2 min on 2 cores)
    python benchmarks/bench_index.py --quick         # N = 2e3, 1e4, 200 queries (< 30 s)
    python benchmarks/bench_index.py --max-n 1000000 # adds N = 1e6 (~25 min on 2 shared cores, HNSW build dominates; ~2 GB RAM)
    python benchmarks/bench_index.py --png           # also figures/bench_index_growth.png

Data: ``d``-dimensional points ``expmap0(v)`` with Gaussian tangent vectors ``v ~ N(0, s^2 I)``,
``s = radius / sqrt(d c)``, so distances to the origin concentrate near ``--radius`` (default 2, the range
where trained hyperbolic text/shape embeddings usually sit); ``--radius-spread`` multiplies each radius by
``exp(spread * N(0,1))`` for a spread of levels. Queries are fresh draws from the same distribution.
Isotropic Gaussian data has no cluster structure and is the hard case for approximate search; real
embeddings are easier. Ground truth: float64 brute force with ``h2arn.lorentz.pairwise_dist``.
Search time is the median over repeats of ``index.search`` on all queries, INCLUDING the float64
re-ranking of the candidates (``benchmarks/_util.py``); build time is one run (train + add).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from _util import machine_info, print_table, timeit
from h2arn import lorentz as L
from h2arn.index import LorentzIndex


def hyperbolic_gaussian(n: int, d: int, c: float, radius: float, spread: float, seed: int) -> torch.Tensor:
    """``(n, d+1)`` float32 points, built in float64 in blocks (memory) and rounded once."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, d + 1, dtype=torch.float32)
    for start in range(0, n, 100_000):
        b = min(100_000, n - start)
        v = torch.randn(b, d, generator=gen, dtype=torch.float64) * (radius / math.sqrt(d * c))
        if spread > 0:
            v = v * torch.exp(spread * torch.randn(b, 1, generator=gen, dtype=torch.float64))
        out[start:start + b] = L.expmap0(v, c).float()
    return out


@torch.no_grad()
def brute_force(queries: torch.Tensor, points: torch.Tensor, c: float, k: int, dtype: torch.dtype,
                budget_bytes: int = 256 << 20) -> torch.Tensor:
    """Top-k ids by all-pairs distances, a block of queries at a time (``budget_bytes`` per block)."""
    chunk = max(1, budget_bytes // (points.shape[0] * torch.finfo(dtype).bits // 8))
    pts = points.to(dtype)
    ids = []
    for start in range(0, queries.shape[0], chunk):
        dist = L.pairwise_dist(queries[start:start + chunk].to(dtype), pts, c)
        ids.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(ids)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean fraction of the true top-k that was returned (order ignored)."""
    found, truth = found.numpy(), truth.numpy()
    return float(np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, truth)]) / truth.shape[1])


def configs(n: int, quick: bool, with_raw_ip: bool) -> list[tuple[str, dict, dict]]:
    """(label, constructor kwargs, search-time settings) per index variant."""
    out = [("flat (exact)", {"kind": "flat"}, {})]
    for nprobe in (8, 32) if quick else (8, 32, 128):
        out.append((f"ivf nprobe={nprobe}", {"kind": "ivf"}, {"nprobe": nprobe}))
    for ef in (32, 128) if quick else (32, 128, 512):
        out.append((f"hnsw M=32 ef={ef}", {"kind": "hnsw", "M": 32}, {"ef_search": ef}))
    if with_raw_ip:
        out.append(("ivf nprobe=32, raw IP", {"kind": "ivf", "transform": "ip"}, {"nprobe": 32}))
        out.append(("hnsw ef=128, raw IP", {"kind": "hnsw", "transform": "ip"}, {"ef_search": 128}))
    return out


def bench_size(n: int, args) -> list[dict]:
    points = hyperbolic_gaussian(n, args.dim, args.c, args.radius, args.radius_spread, seed=n)
    queries = hyperbolic_gaussian(args.queries, args.dim, args.c, args.radius, args.radius_spread, seed=n + 1)
    t0 = time.perf_counter()
    truth = brute_force(queries, points, args.c, args.k, torch.float64)
    print(f"N={n}: float64 ground truth in {time.perf_counter() - t0:.1f} s", flush=True)
    # one bound for every augmented index: the data's own largest radius (documented max_dist0 usage)
    max_dist0 = float(L.dist0(points.double(), args.c).max()) * 1.01
    train_n = min(n, args.train_size)
    train_points = points[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:train_n]]
    rows = []

    t_bf = timeit(lambda: brute_force(queries, points, args.c, args.k, torch.float32), repeats=args.repeats)
    bf_ids = brute_force(queries, points, args.c, args.k, torch.float32)
    rows.append({"N": n, "method": "brute force torch float32", "build s": 0.0,
                 "queries/s": args.queries / t_bf, "recall@10": recall(bf_ids, truth), "speedup vs brute": 1.0})

    built: dict[str, LorentzIndex] = {}
    for label, kwargs, settings in configs(n, args.quick, with_raw_ip=(n == args.sizes[0])):
        key = repr(sorted(kwargs.items()))
        if key not in built:
            augmented = kwargs["kind"] != "flat" and kwargs.get("transform", "augment") == "augment"
            extra = {"max_dist0": max_dist0} if augmented else {}
            index = LorentzIndex(args.dim, args.c, **kwargs, **extra)
            t0 = time.perf_counter()
            if kwargs["kind"] == "ivf":
                index.train(train_points)
            index.add(points)
            built[key] = index
            build_s = time.perf_counter() - t0
        else:
            index, build_s = built[key], float("nan")
        for name, value in settings.items():
            setattr(index, name, value)
        t = timeit(lambda: index.search(queries, args.k), repeats=args.repeats)
        ids, _ = index.search(queries, args.k)
        label = label + (f" (nlist={index.nlist})" if kwargs["kind"] == "ivf" and "nprobe=8" in label else "")
        rows.append({"N": n, "method": label, "build s": build_s, "queries/s": args.queries / t,
                     "recall@10": recall(ids, truth), "speedup vs brute": t_bf / t})
        print(f"  {label}: {args.queries / t:.0f} q/s, recall@10 {rows[-1]['recall@10']:.3f}", flush=True)
    return rows


def save_png(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from h2arn.paths import save_figure

    fig, (ax_qps, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"].split(" (nlist")[0] for r in rows):
        sel = [r for r in rows if r["method"].split(" (nlist")[0] == method]
        if len(sel) < 2:
            continue
        ns = [r["N"] for r in sel]
        ax_qps.plot(ns, [r["queries/s"] for r in sel], marker="o", label=method)
        ax_rec.plot(ns, [r["recall@10"] for r in sel], marker="o", label=method)
    for ax, ylabel in ((ax_qps, "queries / s"), (ax_rec, "recall@10")):
        ax.set_xscale("log")
        ax.set_xlabel("indexed points N")
        ax.set_ylabel(ylabel)
    ax_qps.set_yscale("log")
    ax_rec.legend(fontsize=7)
    fig.suptitle("Hyperbolic top-10 retrieval: LorentzIndex vs brute force")
    print(f"saved {save_figure(fig, 'bench_index_growth')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 2e3, 1e4; 200 queries")
    parser.add_argument("--max-n", type=int, default=100_000, help="largest N of 1e4, 1e5, 1e6 to run")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--radius", type=float, default=2.0)
    parser.add_argument("--radius-spread", type=float, default=0.0)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=100_000, help="IVF training sample (nlist = 4 sqrt of it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png", action="store_true", help="save figures/bench_index_growth.png")
    args = parser.parse_args()
    args.sizes = [2_000, 10_000] if args.quick else [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_n]
    args.queries = args.queries or (200 if args.quick else 1000)
    print(f"# bench_index: {machine_info()}, faiss {__import__('faiss').__version__} "
          f"({__import__('faiss').omp_get_max_threads()} threads)")
    print(f"# d={args.dim}, c={args.c}, radius~{args.radius}, spread={args.radius_spread}, "
          f"{args.queries} queries, k={args.k}", flush=True)
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
    print()
    print_table(rows)
    if args.png:
        save_png(rows)


if __name__ == "__main__":
    main()
