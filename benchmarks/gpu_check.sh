#!/usr/bin/env bash
# One prepared GPU check (< 8 min on one H200): CUDA tests, bench_lorentz, bench_train (paper config, fp32 + bf16
# AMP), short full-profile training of h2arn and euclidean; every number into build/gpu_check.json.
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # on a CPU: checks every command and flag in seconds (run by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
exec "$PY" benchmarks/gpu_check.py "$@"
