"""Short ``full``-profile trainings for the GPU check (``benchmarks/gpu_check.py``): one JSON line per run.

``python -m h2arn.course.gpu_train --prepare`` builds the ``full`` features (generation + extraction);
``python -m h2arn.course.gpu_train --variant h2arn --epochs 3`` trains the paper-sized model for a few epochs
(bf16 AMP on CUDA, cached like every course run), evaluates it on test and prints its metrics as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from h2arn.course.experiments import VARIANTS

    ap = argparse.ArgumentParser(prog="python -m h2arn.course.gpu_train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="h2arn", choices=sorted(VARIANTS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prepare", action="store_true", help="only build the full features, then exit")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.prepare:
        from h2arn.extract import ensure_features

        path = ensure_features("full", device=args.device, progress=False)
        print(json.dumps({"features": str(path), "prepare_s": round(time.perf_counter() - t0, 1)}))
        return 0
    from h2arn.course.experiments import ensure_trained
    from h2arn.evaluate import evaluate_run
    from h2arn.runs import read_metrics

    try:
        run = ensure_trained("full", args.variant, args.device, seed=0, num_epochs=args.epochs, amp=True)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = evaluate_run(run, "test", args.device)
    rm = read_metrics(run)
    keep = ("rsum", "t2p_R@1", "p2t_R@1", "t2p_hmAP", "p2t_hmAP", "t2p_nDCG@10", "chance_rsum", "chance_t2p_hmAP")
    out = {"variant": args.variant, "epochs": args.epochs, "train_wall_s": rm.get("wall_s"),
           "pairs_per_s_last_epoch": rm["epochs"][-1].get("pairs_per_s"), "best_epoch": rm["best"]["epoch"],
           **{k: m.get(k) for k in keep}, "total_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
