"""The one command that writes the project's results: ``python -m h2arn.course.report --profile ci``.

It trains (or reuses, :func:`h2arn.course.experiments.ensure_trained`) every variant over the seeds, evaluates
each run on its test split with every metric of :mod:`h2arn.evaluate`, reads the committed study results
(``docs/studies/<profile>/*.json``, written by :mod:`h2arn.course.studies`), and writes

* ``docs/results_<profile>.json``: every number per seed, the seed-averaged AP per query, the data fingerprint;
* ``docs/results.md``: the tables (the section of each profile that was run is replaced, others kept);
* the README's results section between ``<!-- results:begin -->`` and ``<!-- results:end -->`` (``ci`` only);
* one figure per study, ``figures/study_<study>_<profile>.png``.

So no number in those files is copied by hand. Comparisons are paired over seeds (same seed = same data
order and initialisation) with 95 % t-intervals, plus a paired bootstrap over queries; every table says n,
the interval and the gallery size, with chance levels and ceilings beside it. ``tests/test_report.py``
retrains seed 0 of two variants and checks the committed ``ci`` numbers were produced by the current code and data.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from h2arn.data.synthetic import GENERATOR_VERSION
from h2arn.docs_blocks import replace_marked_block, write_text_atomic
from h2arn.features import atomic_write_json
from h2arn.paths import repo_root
from h2arn.stats import bootstrap_interval, format_interval, mean_interval, paired_t_interval

__all__ = ["REPORT_VARIANTS", "KEY_METRICS", "PAPER_CLAIMS", "collect", "results_json_path", "render_markdown",
           "write_report", "summarise_study", "study_figure", "study_section", "verdict", "claims", "claims_table",
           "headline", "main_table", "paired_table", "level_table", "engagement_table", "main"]

REPORT_VARIANTS = ("h2arn", "euclidean", "euclidean_ca", "no_cone", "mean_pool", "fixed_curvature")
# metric key -> column title
KEY_METRICS = {"rsum": "Rsum", "t2p_R@1": "T→3D R@1", "p2t_R@1": "3D→T R@1", "t2p_hmAP": "T→3D hmAP",
               "p2t_hmAP": "3D→T hmAP", "t2p_nDCG@10": "T→3D nDCG@10"}
HEADLINE = "t2p_hmAP"   # the metric the headline is stated on (least seed spread, rewards the whole hierarchy)
README_BEGIN = "<!-- results:begin (written by python -m h2arn.course.report --profile ci; do not edit by hand) -->"
README_END = "<!-- results:end -->"


def results_json_path(profile: str) -> Path:
    return repo_root() / "docs" / f"results_{profile}.json"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _relative(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def _scalar_metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def evaluate_variant_seed(profile: str, variant: str, seed: int, device: str = "cpu") -> tuple[dict, dict]:
    """``(metrics, run_info)`` of one cached run (trained if missing)."""
    from h2arn.course.experiments import ensure_trained
    from h2arn.evaluate import engagement, evaluate_run
    from h2arn.runs import read_metrics

    run = ensure_trained(profile, variant, device, seed=seed)
    m = evaluate_run(run, "test", device, per_query=True)
    eng = engagement(run, "test", device)
    rm = read_metrics(run)
    last = rm["epochs"][-1] if rm.get("epochs") else {}
    info = {"run_dir": _relative(run), "best_epoch": rm["best"]["epoch"],
            "scalars_last_epoch": last.get("scalars", {}),
            "entail_active_frac_last_epoch": last.get("loss", {}).get("entail_active_frac"),
            "engagement": {k: v for k, v in eng.items() if isinstance(v, (int, float, dict))},
            "wall_s": rm.get("wall_s"), "data": {k: rm["data"][k] for k in ("train_links", "train_clouds",
                                                                           "val_links", "val_clouds")}}
    return m, info


def _mean_over_seeds(per_query: Sequence[Sequence[float]]) -> list[float]:
    n = len(per_query[0])
    out = []
    for i in range(n):
        vals = [float(q[i]) for q in per_query if not math.isnan(float(q[i]))]
        out.append(sum(vals) / len(vals) if vals else math.nan)
    return out


def collect(profile: str = "ci", seeds: Sequence[int] = range(5), variants: Sequence[str] = REPORT_VARIANTS,
            device: str = "cpu") -> dict:
    """Train/reuse and evaluate every (variant, seed); return the results dict written to JSON."""
    from tqdm.auto import tqdm

    from h2arn.course.experiments import DESCRIPTIONS, PAPER_V2, config_for
    from h2arn.evaluate import METRICS_VERSION
    from h2arn.runs import test_links_of
    from h2arn.features import data_fingerprint

    seeds = list(seeds)
    out: dict = {"format": "h2arn-results", "profile": profile, "seeds": seeds, "variants": {},
                 "metrics_version": METRICS_VERSION, "headline_metric": HEADLINE,
                 "command": f"python -m h2arn.course.report --profile {profile} --seeds {len(seeds)}"
                            + ("" if tuple(variants) == REPORT_VARIANTS else f" --variants {' '.join(variants)}"),
                 "config": {k: v for k, v in config_for(profile, "h2arn").to_dict().items()
                            if k not in ("train_link", "val_link", "run_dir", "device", "resume")}}
    per_query: dict[str, list] = {}
    t0 = time.perf_counter()
    for v in variants:
        rows, pq = [], []
        for s in tqdm(seeds, desc=f"report {profile}: {v}", disable=None):
            m, info = evaluate_variant_seed(profile, v, s, device)
            rows.append({"seed": s, **_scalar_metrics(m), **info})
            pq.append({k: [round(float(x), 5) for x in v] for k, v in m["per_query"].items()})
            first = m
        per_query[v] = pq
        out["variants"][v] = {"description": DESCRIPTIONS[v], "paper": PAPER_V2.get(v, {}), "per_seed": rows,
                              "mean": {k: mean_interval([r[k] for r in rows]) for k in KEY_METRICS}}
    out["wall_s"] = time.perf_counter() - t0
    ref = first
    out["gallery"] = {"clouds": ref.get("gallery_clouds"), "captions": int(ref.get("n_txt", 0)),
                      "relevant_per_caption": ref.get("relevant_per_caption")}
    out["chance"] = {k[len("chance_"):]: v for k, v in ref.items() if k.startswith("chance_")}
    out["ceiling"] = {k[len("ceiling_"):]: v for k, v in ref.items() if k.startswith("ceiling_")}
    out["ceiling"].update({"t2p_hmAP": 100.0, "p2t_hmAP": 100.0, "t2p_nDCG@10": 100.0})
    out["levels"] = ref.get("levels", [])
    out["per_level_gallery"] = {str(lv): {k: ref[f"L{lv}_{k}"] for k in ("n", "relevant_mean", "chance_t2p_hmAP",
                                                                          "ceiling_t2p_R@1", "ceiling_t2p_R@5",
                                                                          "ceiling_t2p_R@10")}
                                for lv in out["levels"]}
    out["per_level"] = {v: {str(lv): {k: mean_interval([r[f"L{lv}_{k}"] for r in d["per_seed"]])
                                      for k in ("t2p_R@1", "t2p_R@5", "t2p_hmAP", "t2p_nDCG@10")}
                            for lv in out["levels"]} for v, d in out["variants"].items()}
    out["per_query_t2p_ap_mean_over_seeds"] = {v: [round(x, 5) for x in _mean_over_seeds([q["t2p_ap"] for q in pq])]
                                               for v, pq in per_query.items()}
    base = "h2arn"
    out["paired_vs_h2arn"] = {}
    if base in out["variants"]:
        b_rows = out["variants"][base]["per_seed"]
        b_q = _mean_over_seeds([q["t2p_ap"] for q in per_query[base]])
        for v, d in out["variants"].items():
            if v == base:
                continue
            comp = {k: paired_t_interval([r[k] for r in b_rows], [r[k] for r in d["per_seed"]]) for k in KEY_METRICS}
            v_q = _mean_over_seeds([q["t2p_ap"] for q in per_query[v]])
            comp["bootstrap_t2p_hmAP"] = bootstrap_interval([100 * x for x in b_q], [100 * x for x in v_q])
            out["paired_vs_h2arn"][v] = comp
    links = test_links_of(Path(repo_root()) / out["variants"][variants[0]]["per_seed"][0]["run_dir"], "test")
    out["data_fingerprint"] = {_relative(k): h for k, h in data_fingerprint(links).items()}
    return out


# --------------------------------------------------------------------------- studies

def summarise_study(study: dict, metric: str = HEADLINE) -> dict:
    """Per axis value: each variant's mean with t interval, and paired differences (same seeds).

    ``compare == "variants"`` (default): every variant vs the first one at the same value (e.g. Euclidean − H2ARN);
    ``compare == "values"``: every value vs the first value for the same variant (e.g. an option vs the default).
    """
    variants = study["variants"]
    by_values = study.get("compare") == "values"
    out = {"metric": metric, "rows": [], "compare": "values" if by_values else "variants"}

    def seeds_of(value, variant):
        return {r["seed"]: r["metrics"].get(metric) for r in study["runs"]
                if r["value"] == value and r["variant"] == variant}

    for value in study["values"]:
        if not any(r["value"] == value for r in study["runs"]):
            continue
        row = {"value": value, "variants": {}, "paired": {}}
        for v in variants:
            row["variants"][v] = mean_interval(list(seeds_of(value, v).values()))
        pairs = ([(v, seeds_of(study["values"][0], v), seeds_of(value, v)) for v in variants] if by_values else
                 [(v, seeds_of(value, variants[0]), seeds_of(value, v)) for v in variants[1:]])
        for v, ref, other in pairs:
            common = sorted(set(ref) & set(other))
            row["paired"][v] = paired_t_interval([ref[s] for s in common], [other[s] for s in common])
        out["rows"].append(row)
    return out


def study_figure(study: dict, summary: dict, profile: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from h2arn.paths import save_figure

    variants = study["variants"]
    categorical = summary["compare"] == "values" or any(isinstance(r["value"], str) for r in summary["rows"])
    xs = list(range(len(summary["rows"]))) if categorical else [r["value"] for r in summary["rows"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v in variants:
        m = [r["variants"][v]["mean"] for r in summary["rows"]]
        lo = [r["variants"][v]["lo"] for r in summary["rows"]]
        hi = [r["variants"][v]["hi"] for r in summary["rows"]]
        a1.plot(xs, m, marker="o", label=v)
        a1.fill_between(xs, lo, hi, alpha=0.2)
    a1.set_xlabel(study["axis"])
    a1.set_ylabel(f"{study.get('split', 'test')} {summary['metric']} (%)")
    a1.legend()
    a1.set_title(f"{study['study']}: mean and 95 % t-interval over seeds")
    for v in _paired_names(summary):
        m = [r["paired"].get(v, {}).get("mean", math.nan) for r in summary["rows"]]
        lo = [r["paired"].get(v, {}).get("lo", math.nan) for r in summary["rows"]]
        hi = [r["paired"].get(v, {}).get("hi", math.nan) for r in summary["rows"]]
        a2.errorbar(xs, m, yerr=[[a - b for a, b in zip(m, lo)], [b - a for a, b in zip(m, hi)]], marker="o",
                    capsize=3, label=_paired_label(study, summary, v))
    a2.axhline(0, color="black", lw=0.8)
    a2.set_xlabel(study["axis"])
    a2.set_ylabel("paired difference (points)")
    a2.legend()
    a2.set_title("paired over seeds, 95 % t-interval")
    if study["study"] == "dimension":
        a1.set_xscale("log", base=2)
        a2.set_xscale("log", base=2)
    if categorical:
        for ax in (a1, a2):
            ax.set_xticks(xs, [str(r["value"]) for r in summary["rows"]], rotation=20, fontsize=7)
    fig.tight_layout()
    path = save_figure(fig, f"study_{study['study']}_{profile}")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the paper's claims

# (claim, variant compared with H2ARN, what the paper says: the variant is WORSE than H2ARN)
PAPER_CLAIMS = (
    ("hyperbolic space beats Euclidean space (H2ARN vs Eu + MP)", "euclidean"),
    ("contribution-aware aggregation beats mean pooling", "mean_pool"),
    ("the entailment-cone loss helps", "no_cone"),
    ("a learned curvature helps (vs c = 1 fixed)", "fixed_curvature"),
)


def verdict(interval: dict) -> str:
    """Paper's direction = the variant is below H2ARN (difference variant - H2ARN < 0)."""
    if interval is None or interval.get("n", 0) < 2 or math.isnan(interval.get("lo", math.nan)):
        return "not measured"
    if interval["hi"] < 0:
        return "supported"
    if interval["lo"] > 0:
        return "contradicted"
    return "not separable"


def claims(res: dict) -> list[dict]:
    """Each claim of the paper with the paired difference (variant - H2ARN) on the headline metric and Rsum."""
    out = []
    for text, v in PAPER_CLAIMS:
        comp = res["paired_vs_h2arn"].get(v)
        if comp is None:
            out.append({"claim": text, "variant": v, "verdict": "not measured"})
            continue
        out.append({"claim": text, "variant": v, "hmAP": comp[HEADLINE], "rsum": comp["rsum"],
                    "verdict": verdict(comp[HEADLINE]), "verdict_rsum": verdict(comp["rsum"])})
    return out


def claims_table(res: dict) -> list[str]:
    lines = ["| claim of the paper | variant − H2ARN, T→3D hmAP | verdict (hmAP) | variant − H2ARN, Rsum | verdict (Rsum) |",
             "|---|---|---|---|---|"]
    for c in claims(res):
        if c["verdict"] == "not measured":
            lines.append(f"| {c['claim']} | – | not measured | – | – |")
            continue
        lines.append(f"| {c['claim']} | {format_interval(c['hmAP'], signed=True)} | **{c['verdict']}** | "
                     f"{format_interval(c['rsum'], signed=True)} | {c['verdict_rsum']} |")
    return lines


# --------------------------------------------------------------------------- markdown

def _f(x, nd=1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def headline(res: dict) -> str:
    p = res["paired_vs_h2arn"].get("euclidean", {}).get(HEADLINE)
    if not p:
        return "The Euclidean baseline was not run."
    h = res["variants"]["h2arn"]["mean"][HEADLINE]
    e = res["variants"]["euclidean"]["mean"][HEADLINE]
    if p["lo"] > 0:
        verdict = "the Euclidean baseline is **ahead** of H2ARN"
    elif p["hi"] < 0:
        verdict = "H2ARN is **ahead** of the Euclidean baseline"
    else:
        verdict = "H2ARN and the Euclidean baseline are **not distinguishable** (the interval contains 0)"
    return (f"On the `{res['profile']}` test gallery ({res['gallery']['clouds']} clouds, {res['gallery']['captions']} "
            f"captions, n = {p['n']} paired seeds), {verdict}: text→3D hierarchy-aware mAP {_f(h['mean'])} (H2ARN) vs "
            f"{_f(e['mean'])} (Euclidean), paired difference Eu − H2ARN {format_interval(p, signed=True)} "
            f"(95 % t-interval; chance {_f(res['chance'].get('t2p_hmAP'))}, ceiling 100).")


def _n_and_gallery(res: dict) -> str:
    g = res["gallery"]
    return f"n = {len(res['seeds'])} seeds; test gallery {g['clouds']} clouds / {g['captions']} captions"


def main_table(res: dict) -> list[str]:
    cols = list(KEY_METRICS)
    lines = [f"*Mean [95 % t-interval over seeds], {_n_and_gallery(res)}.*", "","| variant | " + " | ".join(KEY_METRICS[c] for c in cols) + " | paper Rsum |",
             "|---|" + "---|" * (len(cols) + 1)]
    for v, d in res["variants"].items():
        cells = [format_interval(d["mean"][c]) for c in cols]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {_f(d['paper'].get('rsum'))} |")
    lines.append("| *chance* | " + " | ".join(_f(res["chance"].get(c)) for c in cols) + " | |")
    lines.append("| *ceiling* | " + " | ".join(_f(res["ceiling"].get(c)) for c in cols) + " | |")
    return lines


def paired_table(res: dict) -> list[str]:
    cols = list(KEY_METRICS)
    lines = [f"*Paired over seeds, {_n_and_gallery(res)}.*", "","| variant − H2ARN | " + " | ".join(KEY_METRICS[c] for c in cols) + " | bootstrap T→3D hmAP |",
             "|---|" + "---|" * (len(cols) + 1)]
    for v, comp in res["paired_vs_h2arn"].items():
        cells = [format_interval(comp[c], signed=True) for c in cols]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {format_interval(comp['bootstrap_t2p_hmAP'], signed=True)} |")
    return lines


def level_table(res: dict, variants=("h2arn", "euclidean")) -> list[str]:
    lines = ["| caption level | n captions | relevant clouds / caption | R@1 ceiling | R@5 ceiling | chance hmAP | "
             + " | ".join(f"{v} R@1 | {v} hmAP" for v in variants if v in res["per_level"]) + " |",
             "|---|---|---|---|---|---|" + "---|---|" * sum(v in res["per_level"] for v in variants)]
    for lv in res["levels"]:
        g = res["per_level_gallery"][str(lv)]
        cells = [str(lv), str(g["n"]), _f(g["relevant_mean"], 2), _f(g["ceiling_t2p_R@1"]), _f(g["ceiling_t2p_R@5"]),
                 _f(g["chance_t2p_hmAP"])]
        for v in variants:
            if v in res["per_level"]:
                p = res["per_level"][v][str(lv)]
                cells += [format_interval(p["t2p_R@1"]), format_interval(p["t2p_hmAP"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def engagement_table(res: dict) -> list[str]:
    """Learnable scalars after training, cone satisfaction and pooling statistics on test (mean over seeds)."""
    lines = ["| variant | curvature c | T text | T cloud | positives inside their cone (test) | mean radius text / cloud "
             "| effective pooled tokens text / cloud (of valid) | weight on redundant cloud tokens (uniform) |",
             "|---|---|---|---|---|---|---|---|"]

    def m(rows, key, nd=3):
        vals = [r.get(key) for r in rows if r.get(key) is not None and not math.isnan(r.get(key))]
        return _f(sum(vals) / len(vals), nd) if vals else "n/a"

    for v, d in res["variants"].items():
        sc = [r["scalars_last_epoch"] for r in d["per_seed"]]
        eng = [r.get("engagement", {}) for r in d["per_seed"]]
        hyper = eng and eng[0].get("hyperbolic")
        contribution = v not in ("euclidean", "mean_pool")
        cells = [m(sc, "curvature") if hyper and v != "fixed_curvature" else "n/a",
                 m(sc, "temp_txt") if contribution else "n/a", m(sc, "temp_pcd") if contribution else "n/a",
                 m(eng, "cone_inside", 3) if hyper else "n/a",
                 f"{m(eng, 'radius_text', 2)} / {m(eng, 'radius_cloud', 2)}" if hyper else "unit vectors",
                 f"{m(eng, 'eff_tokens_text', 1)} / {m(eng, 'eff_tokens_cloud', 1)} "
                 f"({m(eng, 'valid_tokens_text', 1)} / {m(eng, 'valid_tokens_cloud', 1)})",
                 f"{m(eng, 'redundant_weight_mass')} ({m(eng, 'redundant_uniform_mass')})"]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def _paired_names(summary: dict) -> list[str]:
    names: list[str] = []
    for r in summary["rows"]:
        names += [k for k in r["paired"] if k not in names]
    return names


def _paired_label(study: dict, summary: dict, v: str) -> str:
    if summary["compare"] == "values":
        return f"{v}: option − {study['values'][0]}"
    return f"{v} − {study['variants'][0]}"


# what a paired difference below / above 0 means, per study and compared column (the paper's direction first)
STUDY_READINGS: dict[str, dict[str, tuple[str, str]]] = {
    "dimension": {"euclidean": ("hyperbolic ahead (the paper's direction)", "Euclidean ahead")},
    "depth": {"euclidean": ("hyperbolic ahead (the paper's direction)", "Euclidean ahead")},
    "scale": {"euclidean": ("hyperbolic ahead (the paper's direction)", "Euclidean ahead")},
    "redundancy": {"mean_pool": ("contribution weighting ahead of mean pooling (the paper's direction)",
                                 "mean pooling ahead"),
                   "oracle": ("the flagged tokens help", "redundant tokens cost H2ARN accuracy its weighting "
                              "does not recover (dropping them helps)")},
    "options": {"h2arn": ("the option hurts on validation (not kept)", "the option helps on validation (kept)"),
                "euclidean": ("the option hurts on validation (not kept)", "the option helps on validation (kept)")},
}


def study_reading(study: dict, summary: dict) -> list[str]:
    """Plain-words reading of a study table, computed from its intervals (so it cannot go stale)."""
    readings = STUDY_READINGS.get(study["study"], {})
    lines = []
    for v in _paired_names(summary):
        groups: dict[str, list[str]] = {"below": [], "above": [], "neither": []}
        for r in summary["rows"]:
            p = r["paired"].get(v)
            if not p or not p.get("n") or math.isnan(p.get("lo", math.nan)) or (p["lo"] == p["hi"] == 0):
                continue
            groups["below" if p["hi"] < 0 else "above" if p["lo"] > 0 else "neither"].append(str(r["value"]))
        below, above = readings.get(v, ("below 0", "above 0"))
        parts = [f"{what} at {', '.join(vals)}" for what, vals in
                 ((below, groups["below"]), (above, groups["above"]), ("not separable", groups["neither"])) if vals]
        if parts:
            lines.append(f"- `{_paired_label(study, summary, v)}`: " + "; ".join(parts) + ".")
    return (["", "**Reading** (computed from the paired intervals above; a direction is named only where the 95 % "
             "interval excludes 0, *not separable* = it contains 0):", ""] + lines) if lines else []


def study_section(study: dict, profile: str) -> list[str]:
    s = summarise_study(study)
    fig = study_figure(study, s, profile)
    variants = study["variants"]
    names = _paired_names(s)
    split = study.get("split", "test")
    gallery = {r["metrics"].get("gallery_clouds") for r in study["runs"]}
    against = f"`{study['values'][0]}`" if s["compare"] == "values" else f"`{variants[0]}`"
    lines = [f"### Study: {study['study']} — {study['question']}", "",
             f"Command: `{study['command']}`. Seeds: {study['seeds']}. Metric: {split} text→3D hierarchy-aware mAP (%), "
             f"mean [95 % t-interval] over seeds; paired differences vs {against} (same seeds). {split.capitalize()} gallery: "
             f"{', '.join(str(g) for g in sorted(x for x in gallery if x))} clouds.", "",
             f"![{study['study']}](../{Path(fig).relative_to(repo_root())})", "",
             f"| {study['axis']} | " + " | ".join(variants) + " | " + " | ".join(_paired_label(study, s, v) for v in names)
             + " |", "|---|" + "---|" * (len(variants) + len(names))]
    for r in s["rows"]:
        cells = [str(r["value"])] + [format_interval(r["variants"][v]) for v in variants]
        for v in names:
            p = r["paired"].get(v)
            cells.append(format_interval(p, signed=True) + f" (n {p['n']})" if p and p["n"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += study_reading(study, s)
    measured_on = study.get("generator_version")
    if measured_on != GENERATOR_VERSION:
        lines += ["", f"**Stale:** these runs were measured on benchmark generator version "
                  f"{measured_on if measured_on is not None else '(not recorded; measured before the studies stamped it)'}; the "
                  f"current benchmark is version {GENERATOR_VERSION}. The report does not rerun studies: rerun "
                  f"`{study['command']}` (then this report) to refresh them."]
    if study.get("missing_runs"):
        miss = study["missing_runs"]
        lines += ["", f"**Not run** ({len(miss)} of {len(miss) + len(study['runs'])} runs; CPU time ran out in the session "
                  "that wrote this): " + ", ".join(f"{m['value']}/{m['variant']}/s{m['seed']}" for m in miss) + "."]
    return lines


def render_markdown(res: dict, studies: Sequence[dict]) -> str:
    """The ``docs/results.md`` section of one profile."""
    p = res["profile"]
    cfg = res["config"]
    lines = [f"<!-- profile:{p}:begin -->", f"## `{p}` profile", "", "**Headline.** " + headline(res), "",
             f"* **Command:** `{res['command']}` (writes this section, `docs/results_{p}.json` and, for `ci`, the README's "
             "results).",
             f"* **Model:** d_model {cfg['d_model']}, {cfg['nhead']} heads, {cfg['num_layers']} layer(s), batch "
             f"{cfg['batch_size']}, {cfg['num_epochs']} epochs, lr {cfg['learning_rate']}; selected on validation Rsum.",
             f"* **Data:** test gallery {res['gallery']['clouds']} clouds / {res['gallery']['captions']} captions; on average "
             f"{_f(res['gallery']['relevant_per_caption'], 2)} clouds satisfy a caption. Train "
             f"{res['variants']['h2arn']['per_seed'][0]['data']['train_links']} captions of "
             f"{res['variants']['h2arn']['per_seed'][0]['data']['train_clouds']} clouds.",
             f"* **Seeds:** {res['seeds']} (n = {len(res['seeds'])}); code `{res.get('git_commit')}`, measured "
             f"{res.get('measured')}, {_f(res['wall_s'] / 60, 0)} min of wall time.", "",
             "Mean [95 % t-interval over seeds]. hmAP = hierarchy-aware mAP (a cloud is relevant to a caption when it "
             "satisfies it at the caption's level); nDCG@10 with graded relevance from the taxonomy. Chance = "
             "a uniformly random ranking; ceiling = what a model that ranks by relevance alone is guaranteed on this "
             "gallery (text→3D instance recall is capped because a generic caption is true of several clouds and "
             "the model cannot know which one the caption was written for; 3D→text can reach 100).", ""]
    lines += ["**The paper's claims on this benchmark** (supported = the paired 95 % interval excludes 0 in the "
              "paper's direction; contradicted = it excludes 0 the other way):", ""] + claims_table(res) + [""]
    not_run = [v for v in REPORT_VARIANTS if v not in res["variants"]]
    if not_run:
        lines += [f"**Variants not run in this report** (the CPU time of the session that wrote it ran out): "
                  f"{', '.join(not_run)}. `python -m h2arn.course.report --profile {p} --seeds 5` runs all six.", ""]
    lines += main_table(res) + ["", "**Paired differences** (variant − H2ARN, same seeds, 95 % t-interval; "
                                 "the last column is a paired bootstrap over test captions of the seed-averaged AP):", ""]
    lines += paired_table(res) + ["", "**Per caption level** (0 = most generic). The ceiling is the instance R@K of a "
                                   "perfect model that cannot tell apart the clouds satisfying the caption:", ""]
    lines += level_table(res) + ["", "**Is the hyperbolic machinery engaged?** Learnable scalars after the last epoch "
                                  "and the share of test (caption, own cloud) pairs inside the caption's entailment cone, the mean distance to "
                                  "the origin, the effective number of pooled tokens (exp of the weights' entropy) and the "
                                  "pooling weight on cloud tokens that are more than half redundant points (uniform pooling's "
                                  "in brackets):", ""]
    lines += engagement_table(res) + [""]
    for st in studies:
        lines += study_section(st, p) + [""]
    missing = [n for n in ("dimension", "depth", "redundancy", "scale", "options") if n not in {s["study"] for s in studies}]
    if missing:
        lines += [f"Studies not run yet under `{p}`: {', '.join(missing)} (`python -m h2arn.course.studies run <study> "
                  f"--profile {p}`).", ""]
    lines.append(f"<!-- profile:{p}:end -->")
    return "\n".join(lines)


_DOC_HEAD = """# Measured results

Written by `python -m h2arn.course.report --profile <profile>` from the runs themselves; do not edit by hand
(`tests/test_report.py` checks that the committed `ci` numbers come from the current code and data). Every
model is selected on the **validation** split and evaluated once on test. Our features are MiniLM text tokens
and PointNet point tokens on the generated benchmark; the paper used CLIP + DGCNN on T3DR-HIT v2, so absolute
values are not comparable with the paper's column, only the direction of differences whose interval excludes 0.
"""


def readme_block(res: dict) -> str:
    return "\n".join([README_BEGIN, "", "**Headline (`ci`, measured by `python -m h2arn.course.report --profile ci`).** "
                      + headline(res), ""] + main_table(res)
                     + ["", "Paired differences vs H2ARN and per-level results, chance levels, ceilings and the studies: "
                        "[`docs/results.md`](docs/results.md).", "", README_END])


README_MEDIUM_BEGIN = ("<!-- results-medium:begin (written by python -m h2arn.course.report --profile medium; "
                       "do not edit by hand) -->")
README_MEDIUM_END = "<!-- results-medium:end -->"


def readme_medium_block(res: dict) -> str:
    """The README's line for the ``medium`` profile (the ci data trained to convergence), below the ci block."""
    variants = ", ".join(f"`{v}`" for v in res["variants"])
    return "\n".join([README_MEDIUM_BEGIN, "", "**Trained to convergence (`medium`: the `ci` data, 30 epochs instead of 8; "
                      f"variants {variants}; measured by `{res['command']}`).** " + headline(res), "",
                      README_MEDIUM_END])


def _write_readme_blocks(res: dict) -> Path | None:
    readme = repo_root() / "README.md"
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or res["profile"] not in ("ci", "medium"):
        return None
    if res["profile"] == "ci":
        text = replace_marked_block(text, README_BEGIN, README_END, readme_block(res))
    elif README_MEDIUM_BEGIN in text:
        text = replace_marked_block(text, README_MEDIUM_BEGIN, README_MEDIUM_END, readme_medium_block(res))
    else:   # first write: right below the ci block
        cut = text.index(README_END) + len(README_END)
        text = text[:cut] + "\n\n" + readme_medium_block(res) + text[cut:]
    return write_text_atomic(readme, text)


def write_report(res: dict, studies: Sequence[dict]) -> dict:
    """Write the JSON, the profile's section of docs/results.md and (ci, medium) its README block; return their paths."""
    root = repo_root()
    p = res["profile"]
    paths = {"json": results_json_path(p), "markdown": root / "docs" / "results.md"}
    atomic_write_json(res, paths["json"], indent=1)
    doc = paths["markdown"].read_text(encoding="utf-8") if paths["markdown"].is_file() else ""
    if "<!-- profile:" not in doc:
        doc = _DOC_HEAD
    section = render_markdown(res, studies)
    doc = replace_marked_block(doc, f"<!-- profile:{p}:begin -->", f"<!-- profile:{p}:end -->", section)
    paths["markdown"].write_text(doc, encoding="utf-8")
    readme = _write_readme_blocks(res)
    if readme is not None:
        paths["readme"] = readme
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from h2arn.course.studies import STUDIES, load_study

    ap = argparse.ArgumentParser(prog="python -m h2arn.course.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="ci", choices=["ci", "medium", "full"])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (>= 5 for the paired intervals)")
    ap.add_argument("--variants", nargs="+", default=list(REPORT_VARIANTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the markdown/README from the committed docs/results_<profile>.json and the study "
                         "files, without evaluating (after a study was re-evaluated)")
    args = ap.parse_args(argv)
    if args.render_only:
        path = results_json_path(args.profile)
        if not path.is_file():
            print(f"error: {path} not found; run without --render-only first", file=sys.stderr)
            return 2
        res = json.loads(path.read_text(encoding="utf-8"))
        studies = [s for s in (load_study(args.profile, n) for n in STUDIES) if s]
        for k, v in write_report(res, studies).items():
            print(f"wrote {k}: {v}")
        return 0
    bad = [v for v in args.variants if v not in REPORT_VARIANTS]
    if bad or "h2arn" not in args.variants:
        print(f"error: --variants must include h2arn and only {list(REPORT_VARIANTS)}; got {args.variants}", file=sys.stderr)
        return 2
    if args.seeds < 2:
        print("error: --seeds must be >= 2 for an interval (use 5 or more)", file=sys.stderr)
        return 2
    res = collect(args.profile, range(args.seeds), args.variants, args.device)
    res["git_commit"] = _git_commit()
    res["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    studies = [s for s in (load_study(args.profile, n) for n in STUDIES) if s]
    paths = write_report(res, studies)
    print(headline(res))
    for k, v in paths.items():
        print(f"wrote {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
