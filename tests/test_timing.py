"""h2arn.timing: repeats after a warm-up, spread and repeat count in every description."""
from __future__ import annotations

import pytest

from h2arn.timing import Timing, load_info, machine_info, measure


def test_measure_counts_warmup_and_repeats():
    calls = []
    t = measure(lambda: calls.append(1), repeats=6, warmup=2)
    assert len(calls) == 8 and t.repeats == 6 and t.warmup == 2 and t.number == 1
    assert all(s >= 0 for s in t.seconds)


def test_min_repeat_s_loops_short_calls_and_reports_per_call_time():
    calls = []
    t = measure(lambda: calls.append(1), repeats=3, min_repeat_s=1e-3)
    assert t.number > 1 and len(calls) == 1 + 3 * t.number
    assert t.median < 1e-3     # per call, not per repeat


def test_statistics_and_descriptions():
    t = Timing((0.004, 0.001, 0.002, 0.003, 0.005))
    assert t.median == 0.003 and t.min == 0.001 and t.quartiles == (0.002, 0.004)
    med, lo, hi = t.rate(12)
    assert (med, lo, hi) == pytest.approx((4000, 3000, 6000))
    assert t.describe("ms") == "3 ms (IQR 2-4, median of 5 repeats)"
    assert t.describe_rate(12, "queries/s") == "4000 queries/s (IQR 3000-6000, median of 5 repeats)"
    assert Timing((0.5,)).quartiles == (0.5, 0.5)


def test_bad_arguments_say_which():
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="min_repeat_s"):
        measure(lambda: None, warmup=0, min_repeat_s=0.1)


def test_machine_and_load_lines():
    assert "nproc=" in machine_info() and "torch" in machine_info()
    assert "UTC" in load_info()
