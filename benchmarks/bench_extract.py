"""Throughput of the point encoders (shapes per second) and of the text encoder (captions per second).

    python benchmarks/bench_extract.py              # 1024 points, batch 16, paper-size encoders
    python benchmarks/bench_extract.py --quick      # 512 points, batch 8
    python benchmarks/bench_extract.py --points 10000 --batch 4 --device cuda   # the paper's Elephant setting

Measures the forward pass that ``python -m h2arn.extract`` runs per batch (``encoder(points)``: per-point
network + token pooling to 100 x 512), in eval mode without gradients, on random clouds, for every encoder
and for both poolings (spatial = FPS centroids + nearest-centroid max-pool; index = the official
AdaptiveMaxPool1d). Also times the FPS downsampling of 2x-larger clouds and MiniLM on 32 captions.
Runs on the CPU and, when available, on the GPU. Times are medians after a warm-up (``benchmarks/_util.py``).
Information only: nothing is asserted.
"""
from __future__ import annotations

import argparse

import torch

from _util import machine_info, print_table, timeit
from h2arn.encoders import build_point_encoder
from h2arn.encoders.tokens import downsample_clouds

CONFIGS = {"PointNet": dict(channels="xyz"), "PointNet2 (ssg)": dict(variant="ssg"),
           "PointNet2 (msg)": dict(variant="msg"), "DGCNN": dict()}


def bench_device(device: torch.device, points: int, batch: int, repeats: int) -> list[dict]:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(batch, points, 3, generator=gen) * 2 - 1, torch.rand(batch, points, 3, generator=gen)],
                  -1).to(device)
    rows = []
    for label, cfg in CONFIGS.items():
        name = label.split(" ")[0]
        for pooling in ("spatial", "index"):
            enc = build_point_encoder(name, pooling=pooling, **cfg).to(device).eval()
            with torch.no_grad():
                t = timeit(lambda: enc(x), repeats=repeats, warmup=1, sync=sync)
            rows.append({"device": device.type, "encoder": label, "pooling": pooling, "points": points,
                         "batch": batch, "ms/batch": 1e3 * t, "shapes/s": batch / t})
    big = [c for c in torch.rand(batch, 2 * points, 6, generator=gen).to(device)]
    t = timeit(lambda: downsample_clouds(big, points), repeats=repeats, warmup=1, sync=sync)
    rows.append({"device": device.type, "encoder": f"FPS {2 * points}->{points}", "pooling": "-", "points": points,
                 "batch": batch, "ms/batch": 1e3 * t, "shapes/s": batch / t})
    return rows


def bench_text(device: torch.device, repeats: int) -> dict:
    from h2arn.encoders.text import load_text_encoder

    enc = load_text_encoder("MiniLM", device=device)
    caps = [f"a tall {c} ceramic vase with two curved handles and a narrow neck" for c in range(32)]
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    t = timeit(lambda: enc.encode(caps, batch_size=32, progress=False), repeats=repeats, warmup=1, sync=sync)
    return {"device": device.type, "encoder": "MiniLM text (77 tokens)", "pooling": "-", "points": "-",
            "batch": 32, "ms/batch": 1e3 * t, "shapes/s": 32 / t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda when available)")
    p.add_argument("--quick", action="store_true", help="512 points, batch 8, 2 repeats")
    p.add_argument("--no_text", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.points, args.batch, args.repeats = 512, 8, 2
    print(machine_info())
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = []
    for dev in devices:
        rows += bench_device(dev, args.points, args.batch, args.repeats)
        if not args.no_text:
            rows.append(bench_text(dev, args.repeats))
    print_table(rows)
    if len(devices) == 2:
        cpu = {(r["encoder"], r["pooling"]): r["shapes/s"] for r in rows if r["device"] == "cpu"}
        for r in rows:
            if r["device"] == "cuda" and (r["encoder"], r["pooling"]) in cpu:
                print(f"GPU/CPU speed-up {r['encoder']:24s} {r['pooling']:8s} {r['shapes/s'] / cpu[(r['encoder'], r['pooling'])]:.1f}x")


if __name__ == "__main__":
    main()
