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

import statistics
import time
from typing import Callable, Iterable, Mapping

from h2arn.timing import load_info, machine_info, measure  # noqa: F401  (re-exported for the scripts)


def timeit(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1,
           sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` untimed runs."""
    return measure(fn, repeats=repeats, warmup=warmup, sync=sync).median


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
