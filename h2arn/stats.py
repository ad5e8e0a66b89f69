"""Comparing two methods honestly: paired t-intervals over seeds and a paired bootstrap over queries.

Why paired: two runs that share a seed share the data order and the initialisation stream, so most of
the seed-to-seed spread cancels in their difference. A comparison of two means with "two standard
errors over two seeds" cannot separate methods whose seed spread is larger than their gap.

* :func:`paired_t_interval`: mean of per-seed differences ``b - a`` with a Student t interval (n - 1 d.o.f.);
* :func:`bootstrap_interval`: percentile bootstrap over queries of a per-query difference (the gallery's
  sampling noise, which the seeds do not cover);
* :func:`mean_interval`: one method's mean with its t interval (for tables of absolute numbers).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["paired_t_interval", "mean_interval", "bootstrap_interval", "format_interval"]


def _t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """``{"mean", "sd", "se", "lo", "hi", "n", "level"}``: the mean of ``values`` with a t interval.

    With one value the interval is undefined (NaN bounds): report ``n`` beside it.
    """
    x = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "se": math.nan, "lo": math.nan, "hi": math.nan, "n": 0,
                "level": level}
    mean = sum(x) / n
    if n < 2:
        return {"mean": mean, "sd": math.nan, "se": math.nan, "lo": math.nan, "hi": math.nan, "n": 1, "level": level}
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t_quantile(0.5 + level / 2, n - 1) * se
    return {"mean": mean, "sd": sd, "se": se, "lo": mean - half, "hi": mean + half, "n": n, "level": level}


def paired_t_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Paired comparison of ``b`` vs ``a`` (same seeds, same order): mean of ``b_i - a_i`` with a t interval.

    Returns :func:`mean_interval`'s keys plus ``t`` (mean / se) and ``p`` (two-sided). Raises if the
    lists differ in length: a paired comparison needs one pair per seed.
    """
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs one value per seed on both sides; got {len(a)} and {len(b)}")
    out = mean_interval([float(y) - float(x) for x, y in zip(a, b)], level)
    if out["n"] >= 2 and out["se"] > 0:
        from scipy.stats import t

        out["t"] = out["mean"] / out["se"]
        out["p"] = float(2 * t.sf(abs(out["t"]), out["n"] - 1))
    else:
        out["t"], out["p"] = math.nan, math.nan
    return out


def bootstrap_interval(a: Sequence[float], b: Sequence[float] | None = None, level: float = 0.95,
                       n_boot: int = 2000, seed: int = 0) -> dict:
    """Percentile bootstrap over queries of ``mean(b - a)`` (or of ``mean(a)`` when ``b`` is None).

    ``a``/``b``: one value per query (e.g. per-caption AP of two models on the same gallery, each
    averaged over seeds). NaN queries (no relevant item) are dropped pairwise. Deterministic for a seed.
    Returns ``{"mean", "lo", "hi", "n", "level", "n_boot"}``.
    """
    x = torch.as_tensor([float(v) for v in a], dtype=torch.float64)
    d = x if b is None else torch.as_tensor([float(v) for v in b], dtype=torch.float64) - x
    d = d[~torch.isnan(d)]
    n = int(d.numel())
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "level": level, "n_boot": n_boot}
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    means = d[idx].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=torch.float64)).tolist()
    return {"mean": float(d.mean()), "lo": lo, "hi": hi, "n": n, "level": level, "n_boot": n_boot}


def format_interval(r: dict, nd: int = 1, signed: bool = False) -> str:
    """``"+3.2 [1.0, 5.4]"`` (or ``"3.2"`` when the interval is undefined)."""
    if r.get("mean") is None or math.isnan(r["mean"]):
        return "–"
    m = f"{r['mean']:+.{nd}f}" if signed else f"{r['mean']:.{nd}f}"
    if math.isnan(r.get("lo", math.nan)):
        return m
    return f"{m} [{r['lo']:.{nd}f}, {r['hi']:.{nd}f}]"
