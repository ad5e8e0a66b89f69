"""Paired t-intervals over seeds and the bootstrap over queries, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from h2arn.stats import bootstrap_interval, format_interval, mean_interval, paired_t_interval


def test_paired_t_interval_by_hand():
    # differences 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5), t_{0.975, 4} = 2.7764
    r = paired_t_interval([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert r["mean"] == pytest.approx(3.0) and r["n"] == 5
    assert r["sd"] == pytest.approx(math.sqrt(2.5))
    assert r["lo"] == pytest.approx(3 - 2.776445 * math.sqrt(0.5), abs=1e-5)
    assert r["hi"] == pytest.approx(3 + 2.776445 * math.sqrt(0.5), abs=1e-5)
    assert r["t"] == pytest.approx(3 / math.sqrt(0.5))


def test_pairing_removes_the_shared_seed_effect():
    a = [10.0, 20.0, 30.0, 40.0, 50.0]        # large seed spread ...
    b = [11.0, 21.5, 30.5, 41.0, 51.0]        # ... shared by b: the difference is tight
    r = paired_t_interval(a, b)
    assert 0 < r["lo"] < r["mean"] < r["hi"] < 2


def test_paired_needs_equal_lengths_and_one_value_has_no_interval():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_t_interval([1, 2], [1])
    r = mean_interval([3.0])
    assert r["mean"] == 3.0 and math.isnan(r["lo"]) and r["n"] == 1
    assert format_interval(r) == "3.0"


def test_bootstrap_constant_difference_collapses_and_is_deterministic():
    r = bootstrap_interval([0.0] * 50, [2.0] * 50)
    assert r["mean"] == r["lo"] == r["hi"] == 2.0
    x = [float(i % 7) for i in range(100)]
    y = [v + (1.0 if i % 2 else -0.5) for i, v in enumerate(x)]
    r1, r2 = bootstrap_interval(x, y, seed=3), bootstrap_interval(x, y, seed=3)
    assert r1 == r2 and r1["mean"] == pytest.approx(0.25) and r1["lo"] < 0.25 < r1["hi"]
    assert bootstrap_interval([math.nan, 1.0], [2.0, 3.0])["n"] == 1


def test_format_interval():
    assert format_interval({"mean": 3.21, "lo": 1.0, "hi": 5.44}, signed=True) == "+3.2 [1.0, 5.4]"
