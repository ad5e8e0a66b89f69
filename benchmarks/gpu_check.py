"""One prepared GPU check (issue 11, section 6): every number into one JSON, in under 8 minutes on one H200.

Steps, each a subprocess with its own time limit (a step that fails or times out is recorded, the next runs):

1. ``cuda_tests``: the CUDA tests (``pytest -k cuda`` over tests/test_model.py, tests/test_train.py);
2. ``bench_lorentz``: ``benchmarks/bench_lorentz.py`` on CUDA (all-pairs distance vs one GEMM);
3. ``bench_train``: ``benchmarks/bench_train.py --configs ci paper`` on CUDA (fp32 and bf16 AMP pairs/s);
4. ``features_full``: generate and extract the ``full`` benchmark (:mod:`h2arn.course.gpu_train` ``--prepare``);
5. ``train_h2arn`` / ``train_euclidean``: a short ``full``-profile training (paper model, ``--epochs`` epochs,
   bf16 AMP) of H2ARN and of the Euclidean baseline on the ``full`` features (built first if missing),
   then their test metrics with :func:`h2arn.evaluate.evaluate_run`.

Output: ``--out`` (default ``build/gpu_check.json``): machine, per step the command, return code, wall time,
the last lines of its output and the numbers parsed from it. ``--dry-run`` runs on the CPU in seconds: it
checks that every script and module exists and starts (``--help``, in one process), and writes the same JSON with the planned commands,
so CI catches a renamed script or module before a GPU session is wasted on it (``tests/test_gpu_check.py``).

Run: ``bash benchmarks/gpu_check.sh`` (or ``python benchmarks/gpu_check.py [--dry-run] [--out FILE]``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NUMBER = re.compile(r"([A-Za-z][\w@/ .()\-]*?)\s*[:=]?\s+(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\b")


def steps(epochs: int) -> list[dict]:
    """The planned steps: name, command, time limit (s), and the ``--help`` command the dry run checks."""
    train = [PY, "-m", "h2arn.course.gpu_train", "--epochs", str(epochs)]
    return [
        {"name": "cuda_tests", "limit": 90,
         "cmd": [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/test_model.py",
                 "tests/test_train.py"],
         "check": [PY, "-m", "pytest", "--version"]},
        {"name": "bench_lorentz", "limit": 45, "cmd": [PY, "benchmarks/bench_lorentz.py", "--skip-geoopt"],
         "check": [PY, "benchmarks/bench_lorentz.py", "--help"]},
        {"name": "bench_train", "limit": 75,
         "cmd": [PY, "benchmarks/bench_train.py", "--device", "cuda", "--configs", "ci", "paper", "--steps", "5"],
         "check": [PY, "benchmarks/bench_train.py", "--help"]},
        {"name": "features_full", "limit": 120, "cmd": train[:3] + ["--prepare"], "check": train[:3] + ["--help"]},
        {"name": "train_h2arn", "limit": 80, "cmd": train + ["--variant", "h2arn"],
         "check": train + ["--variant", "h2arn", "--help"]},
        {"name": "train_euclidean", "limit": 60, "cmd": train + ["--variant", "euclidean"],
         "check": train + ["--variant", "euclidean", "--help"]},
    ]


def parse_numbers(text: str) -> dict:
    """``label -> last number`` for every ``label: 1.23``-like pair in the output (best effort), plus the JSON
    objects printed on their own line (the training step prints its metrics that way)."""
    out: dict = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                out.update(json.loads(line))
                continue
            except json.JSONDecodeError:
                pass
        for label, value in NUMBER.findall(line):
            out[label.strip()[:80]] = float(value)
    return out


def check_in_process(cmd: list[str]) -> tuple[int, str]:
    """Dry run of one command without a new interpreter: run its script/module with ``--help`` (argparse exits 0
    when every flag before ``--help`` parses; a renamed script, module or flag fails)."""
    import contextlib
    import io
    import runpy

    args = cmd[1:]
    buf = io.StringIO()
    old_argv = sys.argv
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if args[:2] == ["-m", "pytest"]:
                import pytest  # noqa: F401
                return 0, "pytest importable"
            if args[0] == "-m":
                sys.argv = [args[1]] + args[2:]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = args
                runpy.run_path(str(ROOT / args[0]), run_name="__main__")
        return 0, buf.getvalue()
    except SystemExit as exc:
        return (0 if exc.code in (0, None) else 2), buf.getvalue()
    except Exception as exc:  # a missing module or script: the dry run's whole point is to report it
        return 1, buf.getvalue() + f"\n{type(exc).__name__}: {exc}"
    finally:
        sys.argv = old_argv


def run_step(step: dict, dry_run: bool) -> dict:
    cmd = step["check"] if dry_run else step["cmd"]
    t0 = time.perf_counter()
    if dry_run:
        rc, text = check_in_process(cmd)
        return {"name": step["name"], "command": " ".join(step["cmd"]), "ran": " ".join(cmd) + " (in process)",
                "rc": rc, "wall_s": round(time.perf_counter() - t0, 2), "limit_s": step["limit"], "tail": text[-4000:]}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=step["limit"], env=env)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        text = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")) \
            + f"\n[timed out after {step['limit']} s]"
    rec = {"name": step["name"], "command": " ".join(step["cmd"]), "ran": " ".join(cmd), "rc": rc,
           "wall_s": round(time.perf_counter() - t0, 2), "limit_s": step["limit"], "tail": text[-4000:]}
    if not dry_run:
        rec["numbers"] = parse_numbers(text)
    return rec


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    except ImportError:
        info["torch"] = None
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, seconds: check every command's flags, run nothing")
    ap.add_argument("--out", default=str(ROOT / "build" / "gpu_check.json"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the short full-profile trainings")
    ap.add_argument("--only", nargs="+", default=None, help="run only these steps (names as in the JSON)")
    args = ap.parse_args(argv)
    info = machine()
    if not args.dry_run and not info.get("cuda_available"):
        print("error: no CUDA device visible (torch.cuda.is_available() is False). Fix: run on a GPU machine, or "
              "pass --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    planned = steps(args.epochs)
    if args.only:
        unknown = sorted(set(args.only) - {s["name"] for s in planned})
        if unknown:
            print(f"error: --only {unknown}: unknown step; choose from {[s['name'] for s in planned]}", file=sys.stderr)
            return 2
        planned = [s for s in planned if s["name"] in args.only]
    t0 = time.perf_counter()
    results = []
    for s in planned:
        limit = "dry run" if args.dry_run else f"limit {s['limit']} s"
        print(f"[gpu_check] {s['name']} ({limit})",
              flush=True)
        rec = run_step(s, args.dry_run)
        print(f"[gpu_check] {s['name']}: rc {rec['rc']} in {rec['wall_s']} s", flush=True)
        results.append(rec)
    out = {"format": "h2arn-gpu-check", "dry_run": args.dry_run, "machine": info,
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "total_s": round(time.perf_counter() - t0, 1), "budget_s": 480, "steps": results}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"[gpu_check] wrote {path} ({out['total_s']} s)")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
