"""Wall-clock timings that say how much they vary: repeats after a warm-up, median and interquartile range.

Why not one ``perf_counter`` pair: the first call pays for lazy initialisation (thread pools, allocator,
FAISS and BLAS kernels), and on a shared machine any single pass can land on a stall. :func:`measure` runs
the callable ``warmup`` times untimed, then ``repeats`` times timed, and keeps every repeat, so a printed
number can carry its spread and its number of repeats (:meth:`Timing.describe`). The median ignores a
one-off stall that a mean would smear over every number; the interquartile range says how steady the
machine was. Calls much shorter than the clock's useful resolution are looped ``number`` times per repeat
(``min_repeat_s`` picks ``number`` from the warm-up), and the per-call time is reported.

Numbers measured here describe the machine that ran them (:func:`machine_info` names it, :func:`load_info`
says how busy it was): compare points of one run, never across machines. ``benchmarks/_util.py`` reuses
these functions.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["Timing", "measure", "machine_info", "load_info"]


@dataclass(frozen=True)
class Timing:
    """Per-call wall times in seconds of ``len(seconds)`` timed repeats (each the mean of ``number`` calls)."""

    seconds: tuple[float, ...]
    number: int = 1
    warmup: int = 1

    @property
    def repeats(self) -> int:
        return len(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(Q1, Q3) of the repeats (inclusive method: defined for any number of repeats >= 1)."""
        if len(self.seconds) == 1:
            return self.seconds[0], self.seconds[0]
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return q1, q3

    def rate(self, items: float) -> tuple[float, float, float]:
        """``items`` per second: (median, low, high), low and high from Q3 and Q1 of the times."""
        q1, q3 = self.quartiles
        return items / self.median, items / q3, items / q1

    def describe(self, unit: str = "ms") -> str:
        """``"1.23 ms (IQR 1.20-1.31, median of 7 repeats)"``; ``unit`` is ``"s"``, ``"ms"`` or ``"us"``."""
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
        q1, q3 = self.quartiles
        return (f"{self.median * scale:.3g} {unit} (IQR {q1 * scale:.3g}-{q3 * scale:.3g}, "
                f"median of {self.repeats} repeats)")

    def describe_rate(self, items: float, what: str = "/s") -> str:
        """``"51200 queries/s (IQR 48000-53000, median of 7 repeats)"`` for ``what="queries/s"``."""
        med, lo, hi = self.rate(items)
        return f"{_short(med)} {what} (IQR {_short(lo)}-{_short(hi)}, median of {self.repeats} repeats)"


def _short(x: float) -> str:
    """Three significant digits, without an exponent for large numbers (``51234.5`` -> ``"51200"``)."""
    return f"{float(f'{x:.3g}'):.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def measure(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, number: int = 1,
            min_repeat_s: float = 0.0, sync: Callable[[], None] | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed repeats of ``number`` calls each.

    ``min_repeat_s > 0`` raises ``number`` so that one repeat lasts about that long (estimated from the
    last warm-up call; at least one warm-up is then required). ``sync`` (e.g. ``torch.cuda.synchronize``)
    runs before the clock stops, for asynchronous devices.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(f"measure: repeats and number must be >= 1 and warmup >= 0; got repeats={repeats}, "
                         f"number={number}, warmup={warmup}")
    if min_repeat_s > 0 and warmup < 1:
        raise ValueError("measure: min_repeat_s needs warmup >= 1 (the warm-up call estimates the call time)")
    one = 0.0
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        one = time.perf_counter() - start
    if min_repeat_s > 0:
        number = max(number, math.ceil(min_repeat_s / max(one, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) / number)
    return Timing(tuple(times), number=number, warmup=warmup)


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), or ``None`` where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        return None


def machine_info() -> str:
    """One line: cores, CPU model, torch version and threads, and the GPU if torch sees one."""
    import torch

    model = cpu_model() or platform.processor() or "unknown CPU"
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
