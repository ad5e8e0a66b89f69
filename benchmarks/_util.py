"""Tiny shared helpers for the benchmark scripts (import with ``from _util import timeit, print_table, machine_info``;
the scripts are run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``).

* :func:`timeit` runs a callable ``warmup`` times untimed (allocator, thread pool, lazy init), then
  ``repeats`` times timed, and returns the MEDIAN in seconds: the machine is shared, and the median
  ignores a one-off stall that a mean would smear over every number. Pass ``sync`` (e.g.
  ``torch.cuda.synchronize``) for asynchronous devices so the clock stops when the work is done.
* :func:`print_table` prints rows of dicts as an aligned plain-text table (also valid Markdown).
* :func:`machine_info` says where numbers came from (cores, CPU model, torch/threads, GPU).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Iterable


def timeit(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1,
           sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(rows: Iterable[dict], columns: list[str] | None = None) -> None:
    """Print ``rows`` (dicts, same keys) as a Markdown table; floats get 4 significant digits."""
    rows = list(rows)
    if not rows:
        return
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)   # noqa: E731
    cells = [[fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"   # noqa: E731
    print(line(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print(line(r))


def machine_info() -> str:
    """One line: cores, CPU model, torch version and threads, and the GPU if torch sees one."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"nproc={cores}, CPU={model}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")
