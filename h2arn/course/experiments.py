"""Course experiments: cached training runs per (profile, variant, seed) and the ablation table.

Evaluation of a run lives in :mod:`h2arn.evaluate`, reading a run folder in :mod:`h2arn.runs`.

Notebooks 06-09 call :func:`ensure_trained` instead of training inline: the first call trains (or
resumes an interrupted run), later calls return the cached run folder at once. A cached run is
reused only if its stored configuration equals the requested one, so changing a profile here
retrains automatically.

Profiles (model/optimisation sizes; the *data* profile is given by :data:`FEATURE_PROFILE`):

* ``ci``: tiny and fast on 2 CPU cores (about 5 s of CPU per run, one thread) on the ``ci`` features;
* ``medium``: the ``ci`` model trained to convergence (30 epochs instead of 8) on the ``ci`` features: the
  studies and the report under ``medium`` (``python -m h2arn.course.report --profile medium``) are sized to finish
  in under an hour on this 2-core machine. Pass ``train_link``/``val_link`` to train on other features;
* ``full``: the paper's configuration (d_model 512, 64 heads, 6 layers, batch 256, lr 2e-3,
  100 epochs) on the ``full`` features (a GPU job).

Variants (the paper's Tables 2-3, plus a fixed curvature):

* ``h2arn``: the full method;
* ``euclidean``: the paper's "Eu + MP" baseline: Euclidean geometry, mean pooling, cosine similarity,
  no cone loss (the cone is not defined there);
* ``euclidean_ca``: "Eu + CA": Euclidean geometry with contribution weighting;
* ``no_cone``: H2ARN without the entailment-cone loss (``--loss_lambda 0``);
* ``mean_pool``: H2ARN without contribution weighting (lifted masked mean);
* ``fixed_curvature``: H2ARN with ``c = 1`` frozen.

Every model is selected on the validation split and evaluated once on the test split.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Iterable, Sequence

import torch

from h2arn.checkpoint import CheckpointError
from h2arn.evaluate import evaluate_run
from h2arn.extract import feature_settings
from h2arn.features import data_fingerprint
from h2arn.paths import build_dir
from h2arn.train import TrainConfig, default_links, train

__all__ = ["TRAIN_PROFILES", "FEATURE_PROFILE", "VARIANTS", "VARIANT_ORDER", "PAPER_V2", "run_dir_for",
           "config_for", "ensure_trained", "ablation_table", "format_ablation_table"]

TRAIN_PROFILES: dict[str, dict] = {
    "ci": dict(d_model=32, nhead=2, num_layers=1, batch_size=64, num_epochs=8, learning_rate=2e-3, num_threads=1),
    "medium": dict(d_model=32, nhead=2, num_layers=1, batch_size=64, num_epochs=30, learning_rate=2e-3,
                   num_threads=1),
    "full": dict(d_model=512, nhead=64, num_layers=6, batch_size=256, num_epochs=100, learning_rate=2e-3),
}
FEATURE_PROFILE: dict[str, str] = {"ci": "ci", "medium": "ci", "full": "full"}

VARIANTS: dict[str, dict] = {
    "h2arn": {},
    "euclidean": {"geometry": "euclidean", "aggregation": "mean", "loss_lambda": 0.0},
    "euclidean_ca": {"geometry": "euclidean", "aggregation": "contribution", "loss_lambda": 0.0},
    "no_cone": {"loss_lambda": 0.0},
    "mean_pool": {"aggregation": "mean"},
    "fixed_curvature": {"fixed_curvature": True},
}
VARIANT_ORDER = ("h2arn", "euclidean", "euclidean_ca", "no_cone", "mean_pool", "fixed_curvature")
DESCRIPTIONS = {
    "h2arn": "H2ARN (hyperbolic, contribution weighting, cone loss, learned c)",
    "euclidean": "Euclidean baseline, mean pooling (Eu + MP)",
    "euclidean_ca": "Euclidean, contribution weighting (Eu + CA)",
    "no_cone": "without entailment-cone loss (w/o L_ord)",
    "mean_pool": "mean pooling instead of contribution weighting (w/o aggregation)",
    "fixed_curvature": "fixed curvature c = 1",
}

# The paper's T3DR-HIT v2 numbers (the paper: Table 1 best row, Table 2 ablations,
# Table 3 Euclidean variants). None = not reported (Tables 2-3 give only R@1 and R@5).
PAPER_V2: dict[str, dict] = {
    "h2arn": {"t2p_R@1": 16.4, "t2p_R@5": 44.5, "t2p_R@10": 60.6, "p2t_R@1": 19.6, "p2t_R@5": 42.3,
              "p2t_R@10": 55.1, "rsum": 238.5, "source": "Table 1 (v2), batch 256, 64 heads, 6 layers"},
    "euclidean": {"t2p_R@1": 10.1, "t2p_R@5": 38.8, "p2t_R@1": 12.5, "p2t_R@5": 32.5, "rsum": 196.3,
                  "source": "Table 3, Eu + MP"},
    "euclidean_ca": {"t2p_R@1": 12.5, "t2p_R@5": 41.0, "p2t_R@1": 14.2, "p2t_R@5": 36.4, "rsum": 215.1,
                     "source": "Table 3, Eu + CA"},
    "no_cone": {"t2p_R@1": 15.3, "t2p_R@5": 40.1, "p2t_R@1": 18.4, "p2t_R@5": 41.1, "rsum": 229.6,
                "source": "Table 2, without L_ord"},
    "mean_pool": {"t2p_R@1": 15.2, "t2p_R@5": 43.6, "p2t_R@1": 16.9, "p2t_R@5": 41.2, "rsum": 233.5,
                  "source": "Table 2, without aggregation"},
    "fixed_curvature": {"source": "not reported in the paper"},
}

RECALL_KEYS = ("t2p_R@1", "t2p_R@5", "t2p_R@10", "p2t_R@1", "p2t_R@5", "p2t_R@10", "rsum")
# settings that define a cached run (everything except where/how it runs)
_IDENTITY_SKIP = {"device", "resume", "run_dir", "save_model_path", "checkpoint_path", "eval_batch_size",
                  "num_threads", "overwrite"}


def run_dir_for(profile: str, variant: str = "h2arn", seed: int = 0, overrides: dict | None = None) -> Path:
    """``build/runs/<profile>/<variant>-s<seed>[-<hash of overrides>]``.

    Runs with different overrides (e.g. a cone aperture study) get their own folders, so studies
    never evict the default run that other chapters reuse.
    """
    name = f"{variant}-s{seed}"
    if overrides:
        digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return build_dir() / "runs" / profile / name


def config_for(profile: str, variant: str = "h2arn", seed: int = 0, device: str = "auto",
               **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of one (profile, variant, seed) run."""
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(TRAIN_PROFILES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANT_ORDER)}")
    kw = dict(TRAIN_PROFILES[profile])
    kw.update(VARIANTS[variant])
    kw.update(overrides)
    kw.update(profile=FEATURE_PROFILE[profile], seed=seed, device=device,
              run_dir=str(run_dir_for(profile, variant, seed, overrides)), resume=True)
    return TrainConfig(**kw)


def _identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _IDENTITY_SKIP}


def ensure_trained(profile: str = "ci", variant: str = "h2arn", device: str = "auto", seed: int = 0,
                   force: bool = False, quiet: bool = True, pc_weights: str | None = None, **overrides) -> Path:
    """Train (or resume, or reuse) one run and return its folder (``best_model.pth``, ``metrics.json``, ...).

    A finished run whose stored configuration equals the requested one is reused as is; an
    interrupted one is resumed; a stale one (different configuration or code, or a model file that does
    not record its feature extractor) is retrained. ``pc_weights`` (a checkpoint path or ``"shared"``)
    trains on features extracted with that point encoder instead of the profile's pretrained one.
    """
    if pc_weights is not None and not overrides.get("train_link"):
        from h2arn.extract import ensure_features, link_paths

        feats = ensure_features(FEATURE_PROFILE[profile], txt_model=overrides.get("txt_model", "MiniLM"),
                                pc_model=overrides.get("pc_model") or "PointNet", device=device, pc_weights=pc_weights)
        overrides = {**overrides, "train_link": [str(p) for p in link_paths(feats, "train")],
                     "val_link": [str(p) for p in link_paths(feats, "val")]}
    cfg = config_for(profile, variant, seed, device, **overrides)
    run_dir = Path(cfg.run_dir)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if not cfg.train_link:   # fill the default feature links now so the cache key is complete
        cfg.train_link = [str(p) for p in default_links(cfg, "train")]
        cfg.val_link = [str(p) for p in default_links(cfg, "val")]
    want = _identity(cfg.to_dict())
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and (run_dir / "best_model.pth").is_file():
        try:
            m = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            m = {}
        fresh = m.get("data", {}).get("fingerprint") == data_fingerprint(cfg.train_link + cfg.val_link)
        if m.get("complete") and _identity(m.get("config", {})) == want and fresh \
                and _recorded_features(run_dir / "best_model.pth") == feature_settings(cfg.train_link):
            return run_dir
        if not fresh:   # the features were re-extracted: the checkpoint belongs to other data
            shutil.rmtree(run_dir)
    ckpt = run_dir / "checkpoint.pth"
    if ckpt.is_file():
        try:
            stored = torch.load(ckpt, map_location="cpu", weights_only=True).get("train_config", {})
        except Exception:
            stored = {}
        if _identity(stored) != want:   # stale: a different configuration; start afresh
            shutil.rmtree(run_dir)
    try:
        train(cfg, quiet=quiet)
    except CheckpointError:
        shutil.rmtree(run_dir, ignore_errors=True)
        train(cfg, quiet=quiet)
    return run_dir


def _recorded_features(model_file: Path) -> dict | None:
    """How a model file says its features were made (older files say nothing: they are retrained)."""
    try:
        return torch.load(model_file, map_location="cpu", weights_only=True).get("features")
    except Exception:
        return None


def ablation_table(profile: str = "ci", variants: Sequence[str] = VARIANT_ORDER, seeds: Iterable[int] = (0,),
                   device: str = "auto", split: str = "test") -> list[dict]:
    """One row per variant: mean (and std over seeds) of the test recalls and Rsum, with the paper's row.

    Rows carry ``rsum_delta`` (variant minus H2ARN, mean over seeds) and ``rsum_std``, so a reader
    can see whether a difference is larger than the seed-to-seed spread.
    """
    seeds = list(seeds)
    rows = []
    for v in variants:
        per_seed = [evaluate_run(ensure_trained(profile, v, device, seed=s), split, device) for s in seeds]
        row = {"variant": v, "description": DESCRIPTIONS[v], "seeds": seeds, "n_seeds": len(seeds)}
        for k in RECALL_KEYS + ("t2p_mrr", "p2t_mrr", "t2p_mean_rank", "p2t_mean_rank"):
            vals = [m[k] for m in per_seed]
            row[k] = statistics.fmean(vals)
            row[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        row["rsum_per_seed"] = [m["rsum"] for m in per_seed]
        row["best_epochs"] = [m["best_epoch"] for m in per_seed]
        row["paper"] = PAPER_V2.get(v, {})
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "h2arn"), None)
    for r in rows:
        r["rsum_delta"] = r["rsum"] - base["rsum"] if base else float("nan")
        if base and r["n_seeds"] > 1:
            spread = math.sqrt((r["rsum_std"] ** 2 + base["rsum_std"] ** 2) / r["n_seeds"])
            r["rsum_delta_se"] = spread          # standard error of the difference of two means
        else:
            r["rsum_delta_se"] = float("nan")
    return rows


def _fmt(x, nd=1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def format_ablation_table(rows: Sequence[dict], with_paper: bool = True) -> str:
    """Markdown: ours (mean ± std over seeds) beside the paper's T3DR-HIT v2 numbers."""
    head = ("| variant | T→3D R@1 | R@5 | R@10 | 3D→T R@1 | R@5 | R@10 | Rsum (± std) | Δ vs H2ARN |"
            + (" paper Rsum | paper T→3D R@1 | paper 3D→T R@1 |" if with_paper else ""))
    sep = "|" + "---|" * (9 + (3 if with_paper else 0))
    lines = [head, sep]
    for r in rows:
        rs = f"{r['rsum']:.1f}" + (f" ± {r['rsum_std']:.1f}" if r["n_seeds"] > 1 else "")
        delta = "" if r["variant"] == "h2arn" else f"{r['rsum_delta']:+.1f}"
        cells = [r["variant"]] + [_fmt(r[k]) for k in RECALL_KEYS[:6]] + [rs, delta]
        if with_paper:
            p = r.get("paper", {})
            cells += [_fmt(p.get("rsum")), _fmt(p.get("t2p_R@1")), _fmt(p.get("p2t_R@1"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
