"""The GPU kit's CPU dry run: every planned script and module exists and starts, and the JSON is written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_the_plan(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, env={**__import__("os").environ,
                                                                           "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    names = [s["name"] for s in res["steps"]]
    assert names == ["cuda_tests", "bench_lorentz", "bench_train", "features_full", "train_h2arn", "train_euclidean"]
    assert all(s["rc"] == 0 for s in res["steps"]), [(s["name"], s["tail"][-300:]) for s in res["steps"]]
    assert sum(s["limit_s"] for s in res["steps"]) <= res["budget_s"] == 480
    assert "--configs ci paper" in res["steps"][2]["command"]


def test_gpu_check_refuses_to_run_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
