"""How close is ``h2arn.lorentz.pairwise_dist`` to the cost of one matrix product, and how does it compare to geoopt?

    python benchmarks/bench_lorentz.py            # N = M = 4096, d = 512, float32 (~2 min on 2 cores, 1 of them geoopt)
    python benchmarks/bench_lorentz.py --quick    # N = M = 1024, d = 128

All-pairs hyperbolic distances need one GEMM for the Lorentz inner products plus elementwise work
(``asinh``, ``sqrt``, clamps). Targets (information, not assertions):
* ``pairwise_dist`` within 1.5x of ONE plain ``torch.matmul`` of the same shapes, ``(N, d+1) @ (d+1, M)``;
  the ratio to the Euclidean ``(N, d) @ (d, M)`` product is printed too.
* faster than geoopt 0.5.1, ``geoopt.Lorentz(k=1/c).dist(x[:, None, :], y[None, :, :])`` (same conventions:
  time first, ``<x, x>_L = -k``). Broadcasting all pairs at once needs ``N * M * (d+1)`` floats, so geoopt is
  run over CHUNKS of rows (about 256 MB of broadcast temporaries per chunk) and the WHOLE chunked
  computation is timed.
The autograd (training) path, which keeps finite gradients at coincident points, is timed for information.
Times are medians after a warm-up (``benchmarks/_util.py``); all ratios come from one run.
"""
from __future__ import annotations

import argparse
import math

import torch

from _util import machine_info, print_table, timeit
from h2arn import lorentz as L


def random_points(n: int, d: int, c: float, radius: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """expmap0 of Gaussian tangent vectors whose norms concentrate at ``radius`` (distance to the origin)."""
    v = torch.randn(n, d, generator=gen, dtype=torch.float64) * (radius / math.sqrt(d * c))
    return L.expmap0(v, c).to(device=device, dtype=dtype)


def geoopt_chunked(manifold, x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """geoopt's broadcast distance for all pairs, ``chunk`` rows of ``x`` at a time: ``(N, M)``."""
    out = torch.empty(x.shape[0], y.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = manifold.dist(x[start:start + chunk, None, :], y[None, :, :])
    return out


def run(device: torch.device, n: int, m: int, d: int, c: float, radius: float, repeats: int,
        geoopt_bytes: int, geoopt_repeats: int, skip_geoopt: bool) -> list[dict]:
    import geoopt

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    gen = torch.Generator().manual_seed(0)
    x = random_points(n, d, c, radius, gen, device, torch.float32)
    y = random_points(m, d, c, radius, gen, device, torch.float32)
    x_space, y_space = x[:, 1:].contiguous(), y[:, 1:].contiguous()
    manifold = geoopt.Lorentz(k=L.to_geoopt_k(c))
    chunk = max(1, geoopt_bytes // (m * (d + 1) * x.element_size()))

    x_grad = x.clone().requires_grad_(True)   # the training path (autograd, asinh form), forward only
    t_grad = timeit(lambda: L.pairwise_dist(x_grad, y, c), repeats=repeats, sync=sync)
    with torch.no_grad():
        t_ours = timeit(lambda: L.pairwise_dist(x, y, c), repeats=repeats, sync=sync)
        t_mm_lorentz = timeit(lambda: torch.matmul(x, y.T), repeats=repeats, sync=sync)
        t_mm_euclid = timeit(lambda: torch.matmul(x_space, y_space.T), repeats=repeats, sync=sync)
        ours = L.pairwise_dist(x, y, c)
        # accuracy reference: the chord form in float64 on the same float32 points (a sample of rows)
        ref = L.dist(x[:64, None, :].double(), y[None, :, :].double(), c)
        err_ours = (ours[:64].double() - ref).abs().max().item()
        if skip_geoopt:
            t_geo, err_geo = float("nan"), float("nan")
        else:
            # one timed run without a separate warm-up: the loop over many chunks warms itself up, and
            # at full size a single run takes a minute on 2 cores (--geoopt-repeats for more)
            t_geo = timeit(lambda: geoopt_chunked(manifold, x, y, chunk), repeats=geoopt_repeats, warmup=0, sync=sync)
            err_geo = (geoopt_chunked(manifold, x[:64], y, chunk).double() - ref).abs().max().item()

    print(f"\n## {device.type.upper()}: N={n}, M={m}, d={d} (ambient {d + 1}), c={c}, float32, "
          f"radius ~{radius}, geoopt chunk={chunk} rows")
    print_table([
        {"operation": "h2arn pairwise_dist (no_grad)", "median s": t_ours, "max abs err vs float64": err_ours},
        {"operation": f"matmul ({n},{d + 1})@({d + 1},{m})", "median s": t_mm_lorentz, "max abs err vs float64": ""},
        {"operation": f"matmul ({n},{d})@({d},{m})", "median s": t_mm_euclid, "max abs err vs float64": ""},
        {"operation": "  (info) pairwise_dist with autograd, forward", "median s": t_grad, "max abs err vs float64": ""},
        {"operation": "geoopt Lorentz.dist, whole chunked run", "median s": t_geo, "max abs err vs float64": err_geo},
    ])
    results = [
        {"ratio": "pairwise_dist / matmul (d+1)", "value": t_ours / t_mm_lorentz, "target": "<= 1.5",
         "verdict": "PASS" if t_ours / t_mm_lorentz <= 1.5 else "MISS"},
        {"ratio": "pairwise_dist / matmul (d)", "value": t_ours / t_mm_euclid, "target": "(info)", "verdict": ""},
        {"ratio": "pairwise_dist / geoopt (chunked)", "value": t_ours / t_geo, "target": "< 1",
         "verdict": "" if math.isnan(t_geo) else ("PASS" if t_ours < t_geo else "MISS")},
    ]
    print()
    print_table(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = M = 1024, d = 128")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--m", type=int, default=None)
    parser.add_argument("--d", type=int, default=None, help="space dimension (ambient d+1)")
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--radius", type=float, default=2.0, help="typical distance of the points to the origin")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--geoopt-mb", type=int, default=256, help="broadcast memory per geoopt chunk")
    parser.add_argument("--geoopt-repeats", type=int, default=1, help="timed runs of the chunked geoopt loop")
    parser.add_argument("--skip-geoopt", action="store_true")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA section even if a GPU is present")
    args = parser.parse_args()
    n = args.n or (1024 if args.quick else 4096)
    m = args.m or n
    d = args.d or (128 if args.quick else 512)
    repeats = args.repeats or 5
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# bench_lorentz: {machine_info()}")
    common = dict(n=n, m=m, d=d, c=args.c, radius=args.radius, geoopt_bytes=args.geoopt_mb << 20,
                  geoopt_repeats=args.geoopt_repeats, skip_geoopt=args.skip_geoopt)
    run(torch.device("cpu"), repeats=repeats, **common)
    if torch.cuda.is_available() and not args.cpu_only:
        run(torch.device("cuda"), repeats=repeats * 4, **common)
    else:
        print("\n## CUDA: skipped (torch.cuda.is_available() is False)" if not torch.cuda.is_available()
              else "\n## CUDA: skipped (--cpu-only)")


if __name__ == "__main__":
    main()
