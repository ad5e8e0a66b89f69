"""Tiny shared helpers for the benchmark scripts (import with ``from _util import timeit, print_table, machine_info``;
the scripts are run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``).

* :func:`timeit` runs a callable ``warmup`` times untimed (allocator, thread pool, lazy init), then
  ``repeats`` times timed, and returns the MEDIAN in seconds: the machine is shared, and the median
  ignores a one-off stall that a mean would smear over every number. Pass ``sync`` (e.g.
  ``torch.cuda.synchronize``) for asynchronous devices so the clock stops when the work is done.
* :func:`print_table` prints rows of dicts as an aligned plain-text table (also valid Markdown).
* :func:`machine_info` says where numbers came from (cores, CPU model, torch/threads, GPU); :func:`load_info`
  the time and the load average, so every table says how busy the machine was.
* :func:`interleaved` times several callables in turns (A B C A B C ...), so a burst of load from other
  processes hits every variant alike, and returns median wall time AND median process CPU time: on a
  shared machine the CPU time (what this process computed) is the steadier of the two.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Iterable, Mapping


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


def load_info() -> str:
    """``"2026-12-01 20:45 UTC, load average 7.1 / 6.0 / 3.9 (1/5/15 min)"``: the conditions of a measurement."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        one, five, fifteen = os.getloadavg()
        return f"{stamp}, load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"
    except OSError:
        return f"{stamp}, load average unknown"


def interleaved(fns: Mapping[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, dict[str, float]]:
    """``{name: {"wall_s", "cpu_s"}}``: medians over ``repeats`` rounds in which every ``fn`` runs once, in turn."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if sync is not None:
        sync()
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if sync is not None:
                sync()
            cpus[name].append(time.process_time() - cpu)
            walls[name].append(time.perf_counter() - wall)
    return {name: {"wall_s": statistics.median(walls[name]), "cpu_s": statistics.median(cpus[name])} for name in fns}
