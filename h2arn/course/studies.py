"""The studies the paper does not have (issue 11, section 4): many cached runs per study, one results file each.

Each study varies one axis and trains every (value, variant, seed) with :func:`h2arn.course.experiments.ensure_trained`
(cached, resumable), then evaluates every run on its test split with the full metric set of
:mod:`h2arn.evaluate` and writes ``docs/studies/<profile>/<study>.json``: per run the summary metrics and the
per-query average precisions (so the report can bootstrap over queries), plus the study's settings.

* ``dimension``: hyperbolic (H2ARN) vs Euclidean (Eu + MP) end-to-end for ``d_model`` in {2, 4, 8, 16, 32, 64};
* ``depth``: the gap as the generated taxonomy gets deeper / narrower (generator knob of :mod:`h2arn.data`);
* ``redundancy``: contribution weighting vs mean pooling vs the oracle (flagged tokens removed) as the
  redundancy fraction grows (generator knob);
* ``scale``: the gap vs the number of training shapes (generator knob).

Studies on generated variants of the benchmark build their own data and features under
``build/studies/`` (:func:`study_links`). Command::

    python -m h2arn.course.studies run dimension --profile ci --seeds 5      # train + evaluate + write JSON
    python -m h2arn.course.studies run all --profile ci --seeds 5 --phase train

``--phase train`` only trains (the runs are cached), ``--phase evaluate`` only evaluates and writes the JSON.
Run it under ``nice`` on a shared machine; it prints one tqdm bar per study.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from h2arn.data.synthetic import GENERATOR_VERSION
from h2arn.features import FeatureError, atomic_write_json, data_fingerprint
from h2arn.paths import repo_root

__all__ = ["STUDIES", "study_runs", "run_study", "results_path", "load_study", "main"]

DIMENSIONS = (2, 4, 8, 16, 32, 64)


def _dim_overrides(d: int) -> dict:
    """d_model 32 is the profiles' default: no override, so those runs are the report's own (cached once)."""
    return {} if d == 32 else {"d_model": d, "nhead": 1 if d < 4 else 2}


# Section 3 of issue 11: training options that engage the geometry, measured on VALIDATION (selection, not test)
TRAINING_OPTIONS: dict[str, dict] = {
    "default": {},
    "hierarchy_positives": {"positives": "hierarchy"},
    "scalar_lr": {"scalar_lr": 0.05},
    "cone_aperture": {"cone_aperture": 0.8},
    "relative_temperature": {"agg_temp_relative": True, "agg_temp_init": 1.0},
    "all": {"positives": "hierarchy", "scalar_lr": 0.05, "cone_aperture": 0.8, "agg_temp_relative": True,
            "agg_temp_init": 1.0},
}
# options that change nothing for the Euclidean baseline (no cone, mean pooling, no curvature) are not run for it
_EUCLIDEAN_OPTIONS = ("default", "hierarchy_positives")

# study -> {axis, values, variants, overrides(value) -> ensure_trained overrides, data(value) -> generator knobs}
STUDIES: dict[str, dict] = {
    "dimension": {"axis": "d_model", "values": DIMENSIONS, "variants": ("h2arn", "euclidean"),
                  "overrides": _dim_overrides, "data": None,
                  "question": "does the hyperbolic advantage appear at low embedding dimension, end to end?"},
    "depth": {"axis": "is-a levels named by captions", "values": (1, 2, 4), "variants": ("h2arn", "euclidean"),
              "overrides": None, "data": lambda v: {"depth": v},
              "question": "does the gap grow as the taxonomy the captions name gets deeper?"},
    "redundancy": {"axis": "share of redundant points per artefact", "values": ("default", 0.0, 0.2, 0.4),
                   "variants": ("h2arn", "mean_pool", "oracle"),
                   "overrides": None, "data": lambda v: {} if v == "default" else {"redundancy": (v, v)},
                   "question": "does contribution weighting discount redundant points as redundancy grows "
                               "(vs mean pooling, and vs the oracle that drops flagged tokens)?"},
    "options": {"axis": "training option", "values": tuple(TRAINING_OPTIONS), "variants": ("h2arn", "euclidean"),
                "overrides": lambda v: dict(TRAINING_OPTIONS[v]), "data": None, "split": "val", "compare": "values",
                "applies": lambda value, variant: variant != "euclidean" or value in _EUCLIDEAN_OPTIONS,
                "question": "which training options engage the geometry and help, on VALIDATION (section 3)?"},
    "scale": {"axis": "training shapes per leaf", "values": (1, 2, 3), "variants": ("h2arn", "euclidean"),
              "overrides": None, "data": lambda v: {"train_per_leaf": v},
              "question": "does the gap close or widen with more training shapes?"},
}


def results_path(profile: str, study: str) -> Path:
    """``docs/studies/<profile>/<study>.json`` (committed; written by :func:`run_study`)."""
    return repo_root() / "docs" / "studies" / profile / f"{study}.json"


def load_study(profile: str, study: str) -> dict | None:
    """The committed results of one study, or ``None`` when it has not run."""
    path = results_path(profile, study)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def study_runs(study: str, seeds: Sequence[int]) -> list[dict]:
    """Every (value, variant, seed) of a study, with its ensure_trained overrides and data knobs."""
    spec = STUDIES[study]
    out = []
    for value in spec["values"]:
        for variant in spec["variants"]:
            if "applies" in spec and not spec["applies"](value, variant):
                continue
            for seed in seeds:
                ov = dict(spec["overrides"](value)) if spec["overrides"] else {}
                knobs = spec["data"](value) if spec["data"] else None
                out.append({"value": value, "variant": variant, "seed": seed, "overrides": ov, "data": knobs})
    return out


def _train_one(profile: str, run: dict, train: bool = True) -> Path | None:
    """Train (cached) one run and return its folder; with ``train=False`` only return it if it has finished."""
    from h2arn.course.experiments import ensure_trained, run_dir_for

    ov = dict(run["overrides"])
    variant = run["variant"]
    from h2arn.course.study_data import is_default_data, study_links   # generator knobs (benchmark v4)

    if variant == "oracle" or not is_default_data(run["data"], profile):   # other data than the default features
        links = study_links(profile, run["data"] or {}, oracle=variant == "oracle", build=train)
        if links is None:
            return None
        ov.update(train_link=links["train"], val_link=links["val"])
        if variant == "oracle":
            variant = "h2arn"
    if train:
        return ensure_trained(profile, variant, device="cpu", seed=run["seed"], **ov)
    d = run_dir_for(profile, variant, run["seed"], ov or None)   # the folder ensure_trained uses for these overrides
    metrics = d / "metrics.json"
    if metrics.is_file() and (d / "best_model.pth").is_file():
        try:
            m = json.loads(metrics.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
        cfg = m.get("config", {})
        try:   # a run trained on features that were re-extracted since (another benchmark version) is stale
            fresh = m.get("data", {}).get("fingerprint") == data_fingerprint(cfg["train_link"] + cfg["val_link"])
        except (KeyError, OSError, FeatureError):
            fresh = False
        if m.get("complete") and fresh:
            return d
    return None


def _last_scalars(run_dir: Path) -> dict:
    from h2arn.runs import read_metrics

    epochs = read_metrics(run_dir).get("epochs") or [{}]
    return {**epochs[-1].get("scalars", {}), "entail_active_frac": epochs[-1].get("loss", {}).get("entail_active_frac")}


def run_study(study: str, profile: str = "ci", seeds: Sequence[int] = range(5), phase: str = "all",
              log: Callable[[str], None] = print, values: Sequence | None = None,
              variants: Sequence[str] | None = None) -> dict | None:
    """Train (cached) and/or evaluate every run of ``study``; write and return its results (phase evaluate/all).

    ``values`` restricts the TRAIN phase to some axis values (to split a study over processes); the results
    file is only written for the whole study.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {sorted(STUDIES)} or 'all'")
    runs = study_runs(study, list(seeds))
    if values is not None:
        if phase != "train":
            raise ValueError("--values only splits the train phase; evaluate the whole study afterwards")
        runs = [r for r in runs if str(r["value"]) in {str(v) for v in values}]
    if variants is not None:
        if phase != "train":
            raise ValueError("--variants only splits the train phase; evaluate the whole study afterwards")
        runs = [r for r in runs if r["variant"] in variants]
    t0 = time.perf_counter()
    dirs = []
    for run in tqdm(runs, desc=f"{study}: {'train' if phase != 'evaluate' else 'find runs'}", disable=None):
        dirs.append(_train_one(profile, run, train=phase != "evaluate"))
    log(f"{study}: {sum(d is not None for d in dirs)} of {len(runs)} runs ready after {time.perf_counter() - t0:.0f} s")
    if phase == "train":
        return None
    missing = [{k: run[k] for k in ("value", "variant", "seed")} for run, d in zip(runs, dirs) if d is None]
    runs, dirs = [r for r, d in zip(runs, dirs) if d is not None], [d for d in dirs if d is not None]
    from h2arn.evaluate import evaluate_run

    records = []
    for run, d in tqdm(list(zip(runs, dirs)), desc=f"{study}: evaluate", disable=None):
        m = evaluate_run(d, STUDIES[study].get("split", "test"), device="cpu")
        scalars = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        records.append({**{k: run[k] for k in ("value", "variant", "seed", "overrides", "data")},
                        "run_dir": str(Path(d).resolve().relative_to(repo_root().resolve())), "metrics": scalars,
                        "scalars_last_epoch": _last_scalars(d)})
    spec = STUDIES[study]
    if not records:
        log(f"{study}: no finished run, nothing written")
        return None
    out = {"format": "h2arn-study", "study": study, "profile": profile, "axis": spec["axis"],
           "split": spec.get("split", "test"), "compare": spec.get("compare", "variants"),
           "values": list(spec["values"]), "variants": list(spec["variants"]), "seeds": list(seeds),
           "question": spec["question"], "runs": records, "missing_runs": missing,
           "command": f"python -m h2arn.course.studies run {study} --profile {profile} --seeds {len(list(seeds))}",
           "generator_version": GENERATOR_VERSION}   # the report flags studies measured on another benchmark
    path = results_path(profile, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, path, indent=1)
    log(f"{study}: results written to {path}")
    return out


def _parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return list(range(int(text)))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m h2arn.course.studies", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train (cached) and evaluate a study, write docs/studies/<profile>/<study>.json")
    r.add_argument("study", help=f"one of {sorted(STUDIES)} or 'all'")
    r.add_argument("--profile", default="ci", choices=["ci", "medium"])
    r.add_argument("--seeds", default="5", help="number of seeds (5) or a range a-b (0-4)")
    r.add_argument("--phase", default="all", choices=["all", "train", "evaluate"])
    r.add_argument("--values", nargs="+", default=None, help="train only these axis values (with --phase train)")
    r.add_argument("--variants", nargs="+", default=None, help="train only these variants (with --phase train)")
    args = ap.parse_args(argv)
    names = sorted(STUDIES) if args.study == "all" else [args.study]
    bad = [n for n in names if n not in STUDIES]
    if bad:
        print(f"error: study {bad[0]!r} unknown; choose one of {sorted(STUDIES)} or 'all'", file=sys.stderr)
        return 2
    try:
        seeds = _parse_seeds(args.seeds)
    except ValueError:
        print(f"error: --seeds {args.seeds!r} is not a number or a range a-b; e.g. --seeds 5", file=sys.stderr)
        return 2
    if (args.values or args.variants) and args.phase != "train":
        print("error: --values only applies to --phase train (the results file needs the whole study)", file=sys.stderr)
        return 2
    for n in names:
        run_study(n, args.profile, seeds, args.phase, values=args.values, variants=args.variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
