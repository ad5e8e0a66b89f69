"""Course experiments: cached training runs per (profile, variant, seed), test evaluation, the ablation table.

Notebooks 06-09 call :func:`ensure_trained` instead of training inline: the first call trains (or
resumes an interrupted run), later calls return the cached run folder at once. A cached run is
reused only if its stored configuration equals the requested one, so changing a profile here
retrains automatically.

Profiles (model/optimisation sizes; the *data* profile is given by :data:`FEATURE_PROFILE`):

* ``ci``: tiny and fast on 2 CPU cores (about 5 s of CPU per run, one thread) on the ``ci`` features;
* ``medium``: the largest configuration that trains in minutes on a CPU (d_model 64, 8 heads, 2 layers,
  batch 128, 10 epochs: about 7 min on one core) on the ``full`` features. Pass ``train_link``/``val_link``
  to train on other features (``docs/results.md`` shows the command used there);
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

from .checkpoint import CheckpointError, load_model_file
from .device import resolve_device
from .features import FeatureSplit, atomic_write_json, load_feature_splits
from .paths import build_dir
from .train import TrainConfig, data_fingerprint, embed_split, evaluate_split, train

__all__ = ["TRAIN_PROFILES", "FEATURE_PROFILE", "VARIANTS", "VARIANT_ORDER", "PAPER_V2", "run_dir_for",
           "config_for", "ensure_trained", "load_trained", "read_metrics", "test_links_of", "load_run_split",
           "evaluate_run", "ablation_table", "format_ablation_table", "hierarchy_check", "top_k_clouds"]

TRAIN_PROFILES: dict[str, dict] = {
    "ci": dict(d_model=32, nhead=2, num_layers=1, batch_size=64, num_epochs=8, learning_rate=2e-3, num_threads=1),
    "medium": dict(d_model=64, nhead=8, num_layers=2, batch_size=128, num_epochs=10, learning_rate=2e-3,
                   num_threads=1),
    "full": dict(d_model=512, nhead=64, num_layers=6, batch_size=256, num_epochs=100, learning_rate=2e-3),
}
FEATURE_PROFILE: dict[str, str] = {"ci": "ci", "medium": "full", "full": "full"}

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

# The paper's T3DR-HIT v2 numbers (research dossier section 4.2: Table 1 best row, Table 2 ablations,
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
                  "num_threads"}


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


def read_metrics(run_dir: str | Path) -> dict:
    """The run's ``metrics.json`` (per-epoch losses, val recalls, scalars, best epoch)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json. Fix: train the run first (ensure_trained(...)).")
    return json.loads(path.read_text(encoding="utf-8"))


def ensure_trained(profile: str = "ci", variant: str = "h2arn", device: str = "auto", seed: int = 0,
                   force: bool = False, quiet: bool = True, **overrides) -> Path:
    """Train (or resume, or reuse) one run and return its folder (``best_model.pth``, ``metrics.json``, ...).

    A finished run whose stored configuration equals the requested one is reused as is; an
    interrupted one is resumed; a stale one (different configuration or code) is retrained.
    """
    cfg = config_for(profile, variant, seed, device, **overrides)
    run_dir = Path(cfg.run_dir)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if not cfg.train_link:   # fill the default feature links now so the cache key is complete
        from .train import default_links
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
        if m.get("complete") and _identity(m.get("config", {})) == want and fresh:
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


def load_trained(run_dir: str | Path, device: str = "auto"):
    """``(model in eval mode, payload)`` from a run folder's ``best_model.pth`` (selected on val)."""
    return load_model_file(Path(run_dir) / "best_model.pth", resolve_device(device))


def test_links_of(run_dir: str | Path, split: str = "test") -> list[Path]:
    """The ``split`` link files matching a run's training links (``*_link_train.json`` -> ``*_link_<split>.json``)."""
    cfg = read_metrics(run_dir)["config"]
    out = []
    for p in cfg["train_link"]:
        p = Path(p)
        q = p.with_name(p.name.replace("_link_train", f"_link_{split}", 1))
        if q == p or not q.is_file():
            raise FileNotFoundError(f"{q}: no {split} link file beside the run's training links {p}. Fix: "
                                    f"extract the {split} split, or evaluate with python -m h2arn.inference.")
        out.append(q)
    return out


def load_run_split(run_dir: str | Path, split: str = "test") -> FeatureSplit:
    return load_feature_splits(test_links_of(run_dir, split))


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Metrics of a run's best (val-selected) model on ``split``; cached in ``<run>/<split>_metrics.json``."""
    run_dir = Path(run_dir)
    model_path = run_dir / "best_model.pth"
    cache = run_dir / f"{split}_metrics.json"
    stamp = model_path.stat().st_mtime_ns if model_path.is_file() else None
    links = test_links_of(run_dir, split)
    fingerprint = data_fingerprint(links)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("model_mtime_ns") == stamp and cached.get("fingerprint") == fingerprint:
            return cached
    dev = resolve_device(device)
    model, payload = load_trained(run_dir, str(dev))
    data = load_feature_splits(links)
    m = evaluate_split(model, data, dev)
    m.update({"split": split, "best_epoch": payload.get("epoch"), "model_mtime_ns": stamp, "fingerprint": fingerprint,
              "val_rsum": payload.get("val_metrics", {}).get("rsum")})
    atomic_write_json(m, cache, indent=1)
    return m


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


@torch.no_grad()
def hierarchy_check(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Does the distance of a caption's embedding to the origin grow with its specificity level?

    The benchmark tags each caption with ``level`` (0 = super-category, the most generic ... 3 = one
    shape). In a hierarchy-aware hyperbolic space generic captions should sit nearer the origin.
    Returns per-level mean distances, the Spearman correlation between level and distance (and its
    p-value), and the clouds' mean distance. For the Euclidean baseline the embeddings are unit
    vectors, so the check is not applicable (``applicable = False``).
    """
    from scipy.stats import spearmanr

    from . import lorentz as L

    dev = resolve_device(device)
    model, _ = load_trained(run_dir, str(dev))
    data = load_run_split(run_dir, split)
    levels = [m.get("level") for m in data.meta]
    if not model.hyperbolic:
        return {"applicable": False, "reason": "Euclidean embeddings are unit vectors (cosine similarity)"}
    if any(lv is None for lv in levels):
        return {"applicable": False, "reason": "the meta file has no 'level' for every caption"}
    t, p = embed_split(model, data, dev)
    c = model.curvature()
    dt = L.dist0(t, c).cpu()
    dp = L.dist0(p, c).cpu()
    lv = torch.tensor(levels)
    per_level = {int(k): float(dt[lv == k].mean()) for k in sorted(set(levels))}
    rho, pval = spearmanr(lv.numpy(), dt.numpy())
    return {"applicable": True, "per_level_mean_dist": per_level,
            "per_level_count": {int(k): int((lv == k).sum()) for k in sorted(set(levels))},
            "spearman_rho": float(rho), "spearman_p": float(pval), "cloud_mean_dist": float(dp.mean()),
            "text_dist": dt.tolist(), "levels": levels}


@torch.no_grad()
def top_k_clouds(run_dir: str | Path, query_indices: Sequence[int], k: int = 5, split: str = "test",
                 device: str = "auto") -> list[dict]:
    """For each query caption: its text, meta, the top-``k`` cloud indices and whether each is the match.

    Cloud ``j`` is named by the ``shape`` of any caption linked to it (all of them agree).
    """
    dev = resolve_device(device)
    model, _ = load_trained(run_dir, str(dev))
    data = load_run_split(run_dir, split)
    t, p = embed_split(model, data, dev)
    sim = model.similarity(t[list(query_indices)], p).cpu()
    owners = data.pc_to_txt()
    out = []
    for row, q in zip(sim, query_indices):
        top = row.topk(min(k, data.num_clouds)).indices.tolist()
        target = int(data.txt_to_pc[q])
        out.append({"query": q, "caption": data.meta[q].get("caption", f"caption {q}"), "meta": data.meta[q],
                    "target": target, "top": top, "correct": [j == target for j in top],
                    "top_meta": [data.meta[owners[j][0]] if owners[j] else {} for j in top],
                    "scores": [float(row[j]) for j in top]})
    return out
