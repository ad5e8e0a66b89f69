"""Training H2ARN: the official recipe, with a validation split and exact resume.

What is kept from the official ``train.py`` (dossier section 3): AdamW with betas (0.91, 0.9993),
eps 1e-8; a linear warm-up over ``warmup_ratio`` of all steps then linear decay to 0, stepped
every batch; gradient-norm clipping at 1.0; batches of *links* (caption, cloud) where several
captions of one cloud in a batch are all positives (``pc_idx``).

What is changed, and why:

* **Model selection on a validation split.** The official script picks the best epoch on the
  *test* split (three times: R@1, R@5, R@10), which makes its reported numbers optimistic.
  Here the best epoch is the one with the highest validation Rsum; the test split is never read.
* **Resumable checkpoints** every epoch (model, optimiser, scheduler, all RNG states, history),
  written atomically: an interrupted run resumed with ``--resume`` ends with the same metrics as
  an uninterrupted one (on CPU, bit for bit).
* **metrics.json** per run: every loss term, validation recalls, learnable scalars (curvature,
  temperatures, alphas), learning rate and wall time per epoch; written atomically each epoch.
* Weight decay skips the learnable scalars (the official code decays log c and the temperatures).
* **Several GPUs** with ``torchrun --nproc_per_node=N -m h2arn.train``: DDP, negatives gathered
  from every rank, ``--batch_size`` is the global batch, rank 0 writes and evaluates; the run
  follows the single-process one (``h2arn.distributed``, ``docs/distributed.md``).
* No per-batch ``torch.cuda.empty_cache()``/``gc.collect()`` (the official loop does both, which
  only slows it down).

Python API: :class:`TrainConfig` and :func:`train`. CLI: ``python -m h2arn.train --help``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, capture_rng_state, load_payload, restore_rng_state,
                         save_model_file)
from .cli import Interrupted, UsageError, rank_is_main, run_cli
from .device import DeviceError, autocast, cpu_threads, resolve_device, seed_everything
from .distributed import (DistContext, DistributedSetupError, GatheredLoss, all_gather_object, broadcast_object,
                          check_batches_fit, cleanup_distributed, launched_distributed, main_process_first,
                          setup_distributed, shard_batch, unwrap, wrap_ddp)
from .evaluate import evaluate_split
from .features import (FeatureError, FeatureSplit, atomic_save, atomic_write_json, data_fingerprint,
                       load_feature_splits, trim_padding)

__all__ = ["TrainConfig", "WarmupLinearDecay", "LinkBatcher", "train", "training_step", "default_links",
           "load_split_for_training", "check_feature_dims", "build_model", "build_loss", "validate_config",
           "check_outputs", "CONFIG_RANGES", "Range", "main"]

SELECTION_NOTE = ("best epoch = highest Rsum on the VALIDATION split; the test split is never read during "
                  "training (the official code selects on test)")


@dataclass
class TrainConfig:
    """Every setting of a training run. Plain types only, so it round-trips through JSON and checkpoints.

    ``d_txt``/``d_pcd`` of ``None`` are read from the features; explicit values must match them.
    ``train_link``/``val_link`` empty -> the ``h2arn.extract.ensure_features(profile)`` link files.
    """

    # official flag names
    save_model_path: str | None = None
    checkpoint_path: str | None = None
    d_txt: int | None = None
    d_pcd: int | None = None
    d_model: int = 512
    batch_size: int = 256
    num_epochs: int = 100
    learning_rate: float = 2e-3
    nhead: int = 64
    num_layers: int = 6
    # data
    train_link: list = field(default_factory=list)
    val_link: list = field(default_factory=list)
    profile: str = "ci"
    txt_model: str = "MiniLM"
    pc_model: str | None = None
    # optimisation
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    betas: tuple = (0.91, 0.9993)
    adam_eps: float = 1e-8
    # loss
    loss_lambda: float = 0.2
    loss_temp: float = 0.07
    K: float = 0.1
    logits: str = "distance"
    # training options that engage the geometry (issue 11, section 3; measured on validation in docs/results.md)
    positives: str = "instance"     # "hierarchy": every cloud satisfying the caption is a positive (averaged)
    scalar_lr: float | None = None  # own learning rate for c, alpha, T (None = the shared learning_rate)
    cone_aperture: float | None = None   # radians: cone K set per batch relative to the text radii (None = K)
    agg_temp_relative: bool = False      # aggregation T relative to each sample's token spread
    # model variants
    geometry: str = "hyperbolic"
    aggregation: str = "contribution"
    lift: str = "expmap"
    fixed_curvature: bool = False
    curv_init: float = 1.0          # initial (or, with fixed_curvature, the fixed) curvature c
    agg_temp_init: float = 0.07     # initial aggregation temperature T (the paper's code: 0.07)
    dropout: float = 0.1
    dim_feedforward: int | None = None
    # run
    device: str = "auto"
    seed: int = 0
    amp: bool = False
    resume: bool = False
    overwrite: bool = False          # replace an existing run in run_dir (without it, a rerun is refused)
    run_dir: str | None = None
    eval_batch_size: int = 512
    num_threads: int | None = None   # torch CPU threads during the run (None = leave torch's setting)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["train_link"] = [str(p) for p in self.train_link]
        d["val_link"] = [str(p) for p in self.val_link]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return cls(**kw)

    def resolved_paths(self) -> tuple[Path, Path, Path]:
        """(run_dir, save_model_path, checkpoint_path) with the defaults filled in."""
        from .paths import build_dir

        if self.run_dir:
            run_dir = Path(self.run_dir)
        elif self.save_model_path:
            run_dir = Path(self.save_model_path).parent
        else:
            run_dir = build_dir() / "runs" / "default"
        save = Path(self.save_model_path) if self.save_model_path else run_dir / "best_model.pth"
        ckpt = Path(self.checkpoint_path) if self.checkpoint_path else run_dir / "checkpoint.pth"
        return run_dir, save, ckpt


# settings that must be equal for a checkpoint to be resumed (everything that changes the trajectory)
_RESUME_KEYS = ("d_model", "batch_size", "num_epochs", "learning_rate", "nhead", "num_layers", "warmup_ratio",
                "weight_decay", "grad_clip", "loss_lambda", "loss_temp", "K", "logits", "geometry", "aggregation",
                "lift", "fixed_curvature", "curv_init", "agg_temp_init", "dropout", "dim_feedforward", "seed",
                "amp", "positives", "scalar_lr", "cone_aperture", "agg_temp_relative")


# --------------------------------------------------------------------------- flag validation (before any work)

@dataclass(frozen=True)
class Range:
    """The valid values of one :class:`TrainConfig` field, stated once so the error can print them."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False          # True: lo itself is not allowed
    hi_open: bool = False
    integer: bool = False
    optional: bool = False         # None is allowed (read from the features / a default)
    choices: tuple = ()
    note: str = ""                 # printed after the range, e.g. what a special value means

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if math.isnan(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.lo > -math.inf:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi < math.inf:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        elif not self.integer:
            kind = "a finite number" if self.hi_open else kind
        text = f"{kind} {' and '.join(parts)}".strip()
        text += " (or left out)" if self.optional else ""
        return text + (f" ({self.note})" if self.note else "")


_POSITIVE_INT = Range(lo=1, integer=True)
_POSITIVE = Range(lo=0.0, lo_open=True, hi_open=True)
_NON_NEGATIVE = Range(lo=0.0, hi_open=True)

# One row per field: a new flag adds one row. Fields not listed (paths, booleans, names) are not range-checked.
CONFIG_RANGES: dict[str, Range] = {
    "d_txt": Range(lo=1, integer=True, optional=True),
    "d_pcd": Range(lo=1, integer=True, optional=True),
    "d_model": _POSITIVE_INT,
    "batch_size": _POSITIVE_INT,
    "num_epochs": _POSITIVE_INT,
    "learning_rate": _POSITIVE,
    "nhead": _POSITIVE_INT,
    "num_layers": _POSITIVE_INT,
    "warmup_ratio": Range(lo=0.0, hi=1.0),
    "weight_decay": _NON_NEGATIVE,
    # 0 would freeze training and a negative value turns clip_grad_norm_ into gradient ascent; inf = no clipping
    "grad_clip": Range(lo=0.0, lo_open=True, note="inf = no clipping"),
    "adam_eps": _POSITIVE,
    "loss_lambda": _NON_NEGATIVE,
    "loss_temp": _POSITIVE,
    "K": _POSITIVE,
    "logits": Range(choices=("distance", "inner")),
    "geometry": Range(choices=("hyperbolic", "euclidean")),
    "aggregation": Range(choices=("contribution", "mean")),
    "lift": Range(choices=("expmap", "official")),
    "curv_init": _POSITIVE,
    "agg_temp_init": _POSITIVE,
    "dropout": Range(lo=0.0, hi=1.0, hi_open=True),
    "dim_feedforward": Range(lo=1, integer=True, optional=True),
    "seed": Range(lo=0, integer=True),
    "eval_batch_size": _POSITIVE_INT,
    "num_threads": Range(lo=1, integer=True, optional=True),
}


def _flag(name: str) -> str:
    return f"--{name}"


def validate_config(cfg: TrainConfig) -> None:
    """Refuse a bad setting before any work, with one line naming the flag, the value and the valid range.

    Checks every row of :data:`CONFIG_RANGES`, then the settings that depend on each other: ``nhead``
    must divide ``d_model``, ``curv_init`` must lie within the model's curvature bounds, the Adam betas
    in ``[0, 1)``. Raises :class:`h2arn.cli.UsageError` (exit code 2 from the CLI).
    """
    from .model import ModelConfig

    defaults = TrainConfig()
    for name, rng in CONFIG_RANGES.items():
        value = getattr(cfg, name, None)
        if not rng.accepts(value):
            default = getattr(defaults, name, None)
            hint = f" (the default is {default})" if default is not None else ""
            raise UsageError(f"{_flag(name)} {value!r} is out of range: it must be {rng.describe()}{hint}. "
                             f"Fix: pass a valid {_flag(name)}.")
    if cfg.d_model % cfg.nhead:
        divisors = [k for k in range(1, cfg.d_model + 1) if cfg.d_model % k == 0]
        raise UsageError(f"--nhead {cfg.nhead} does not divide --d_model {cfg.d_model} (attention splits d_model into "
                         f"nhead equal heads). Fix: pass --nhead from {divisors[-8:]}, or change --d_model.")
    lo = getattr(cfg, "curv_min", ModelConfig.curv_min)
    hi = getattr(cfg, "curv_max", ModelConfig.curv_max)
    if not lo <= cfg.curv_init <= hi:
        raise UsageError(f"--curv_init {cfg.curv_init!r} is outside the curvature bounds [{lo:g}, {hi:g}] the model "
                         f"keeps c in. Fix: pass --curv_init between {lo:g} and {hi:g}.")
    betas = tuple(cfg.betas)
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
        raise UsageError(f"betas {betas!r} are out of range: two numbers in [0, 1) (the default is "
                         f"{defaults.betas}). Fix: pass valid Adam betas.")


def _probe_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` if needed and write and delete a probe file in it: the way to know it is writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{existing} is a file where {flag} needs a folder ({folder}). Fix: remove or rename that "
                         f"file, or pass another {flag}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".h2arn-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write the {flag} output there ({exc.strerror or exc}). Fix: make the "
                         f"folder writable or pass another {flag}.") from None


def _output_paths(cfg: TrainConfig) -> dict[str, Path]:
    run_dir, save_path, ckpt_path = cfg.resolved_paths()
    return {"--save_model_path": save_path, "--checkpoint_path": ckpt_path,
            "--run_dir (metrics.json)": run_dir / "metrics.json"}


def check_outputs(cfg: TrainConfig) -> None:
    """Refuse, before any work, outputs that would lose data or fail after an epoch of training.

    * two outputs on one file (``--save_model_path`` = ``--checkpoint_path``: the checkpoint written
      every epoch would overwrite the best model, and inference would score the last epoch as "best"),
      or an output on an input link file;
    * a run folder that already holds a run, unless ``--resume`` (continue it) or ``--overwrite``;
    * an output that is a folder, or whose folder is a file, read-only or missing rights.
    """
    outputs = _output_paths(cfg)
    seen: dict[Path, str] = {}
    inputs = {Path(p).resolve(): "--train_link" for p in cfg.train_link}
    inputs.update({Path(p).resolve(): "--val_link" for p in cfg.val_link})
    for flag, path in outputs.items():
        key = path.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {flag} are the same file {path}: one would overwrite the other "
                             f"(the checkpoint is rewritten every epoch, the best model only when validation "
                             f"improves). Fix: give them different paths (or leave them out: defaults differ).")
        if key in inputs:
            raise UsageError(f"{flag} {path} is also given as {inputs[key]}: training would overwrite its input. "
                             f"Fix: pass another {flag}.")
        seen[key] = flag
    for flag, path in outputs.items():
        if path.is_dir():
            raise UsageError(f"{path} is a folder, but {flag} must be a file path. Fix: pass a file path.")
    if not cfg.resume and not cfg.overwrite:
        existing = [p for p in outputs.values() if p.exists()]
        if existing:
            raise UsageError(f"{existing[0]} already exists: this run folder holds an earlier run. Fix: pass --resume "
                             f"to continue it, --overwrite to replace it, or another --run_dir/--save_model_path.")
    for flag, path in outputs.items():
        _probe_writable(path.parent, flag)


def _check_free_space(cfg: TrainConfig, n_params: int) -> None:
    """Enough free space for a checkpoint, the best model and their temporary copies, or one clear error now."""
    checkpoint = 4 * n_params * 3 + (1 << 20)      # weights + two Adam moments + history
    need_by_folder: dict[Path, int] = {}
    for flag, path in _output_paths(cfg).items():
        size = checkpoint if "checkpoint" in flag else (4 * n_params + (1 << 20) if "save" in flag else 1 << 20)
        need_by_folder[path.parent] = need_by_folder.get(path.parent, 0) + 2 * size   # temp file + old file
    for folder, need in need_by_folder.items():
        free = shutil.disk_usage(folder).free
        if free < need:
            raise UsageError(f"{folder}: only {free / 2**20:.1f} MiB free, but this run's checkpoint and model files "
                             f"need about {need / 2**20:.1f} MiB. Fix: free space or pass --run_dir on another disk.")


def _save_or_explain(write: Callable[[], object], path: Path, epoch: int, ckpt_path: Path) -> None:
    """Run one atomic write; a failure becomes one error naming the file (torch's own message names neither
    the file nor the cause). The previous file is intact: writes go to a temporary file first."""
    try:
        write()
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write failed (disk full?)"
        raise CheckpointError(f"{path}: could not be written after epoch {epoch} ({reason}). The previous "
                              f"checkpoint {ckpt_path} is intact. Fix: free space or make the folder writable, "
                              "then rerun the same command with --resume.") from None


# --------------------------------------------------------------------------- schedule and batches

class WarmupLinearDecay:
    """LR multiplier: 0 -> 1 linearly over ``warmup`` steps, then 1 -> 0 linearly at ``total``.

    Same shape as ``transformers.get_linear_schedule_with_warmup`` (which the official code uses),
    without the dependency. A class rather than a lambda so ``LambdaLR.state_dict`` stores it.
    """

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        return max(0.0, float(self.total_steps - step) / float(max(1, self.total_steps - self.warmup_steps)))


class LinkBatcher:
    """Shuffled batches of link indices; epoch ``e`` uses a generator seeded from ``(seed, e)``.

    Seeding per epoch (rather than carrying one generator along) makes the order of every epoch
    a pure function of the seed, so a resumed run sees exactly the batches the interrupted one
    would have. No ``drop_last``: the last, smaller batch is trained on, as in the official code.
    """

    def __init__(self, num_links: int, batch_size: int, seed: int):
        if num_links <= 0:
            raise ValueError("no training links")
        self.num_links, self.batch_size, self.seed = num_links, batch_size, seed

    def __len__(self) -> int:
        return math.ceil(self.num_links / self.batch_size)

    def epoch(self, epoch: int) -> list[Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_links, generator=g)
        return list(order.split(self.batch_size))


# --------------------------------------------------------------------------- data

def default_links(cfg: TrainConfig, split: str) -> list[Path]:
    """The link files of ``split`` of the profile's features (extracted first if missing)."""
    from .extract import ensure_features, link_paths

    kw = {"profile": cfg.profile, "txt_model": cfg.txt_model, "device": cfg.device}
    if cfg.pc_model:
        kw["pc_model"] = cfg.pc_model
    return list(link_paths(ensure_features(**kw), split))


def _sibling_val_links(train_links: Sequence[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, train_links):
        cand = p.with_name(p.name.replace("_link_train", "_link_val", 1))
        if cand == p or not cand.is_file():
            raise FeatureError(f"{p}: no validation link file beside it ({cand.name} not found). Model selection "
                               "needs a validation split (the test split is never used for it). Fix: pass "
                               "--val_link <file>, or re-extract features with a val split.")
        out.append(cand)
    return out


def check_feature_dims(split: FeatureSplit, d_txt: int | None, d_pcd: int | None, what: str,
                       reference: str | None = None) -> None:
    """One clear error if the features' widths differ from the expected model input widths.

    ``reference`` says where the expected widths come from when they are not flags the user passed
    (e.g. ``"the training features"``, ``"the model in best.pth"``), so the message blames the right thing.
    """
    for name, want, got, kind in (("--d_txt", d_txt, split.d_txt, "text"), ("--d_pcd", d_pcd, split.d_pcd, "point")):
        if want is not None and want != got:
            if reference is None:
                raise FeatureError(
                    f"{', '.join(split.sources)}: the {what} {kind} features have width {got} but {name} {want} was "
                    f"requested. Fix: pass {name} {got} (or leave it out: it is read from the features), or point "
                    f"to features extracted with the encoder the model expects.")
            raise FeatureError(
                f"{', '.join(split.sources)}: the {what} {kind} features have width {got}, but the width expected "
                f"from {reference} is {want} (no flag asked for it). Fix: use {what} features extracted with the "
                f"same encoders as {reference}.")


def _check_links_exist(links: Sequence[str | os.PathLike], what: str) -> None:
    for p in map(Path, links):
        if not p.is_file():
            raise FeatureError(f"{p}: {what} link file (--{what}_link) not found. Fix: pass the *_link_{what}.json "
                               "written by feature extraction (python -m h2arn.extract ...).")


def load_split_for_training(links: Sequence[str | os.PathLike], what: str) -> FeatureSplit:
    """Load and validate one split's link files (errors name the file, see :mod:`h2arn.features`)."""
    if not links:
        raise FeatureError(f"no {what} link files given. Fix: pass --{what}_link <file> ...")
    _check_links_exist(links, what)
    return load_feature_splits([Path(p) for p in links])


def build_model(cfg: TrainConfig, d_txt: int, d_pcd: int):
    """The H2ARN (or ablation) model described by ``cfg``."""
    from .model import H2ARN, ModelConfig

    kw = dict(d_txt=d_txt, d_pcd=d_pcd, d_model=cfg.d_model, nhead=cfg.nhead, num_layers=cfg.num_layers,
              dim_feedforward=cfg.dim_feedforward, dropout=cfg.dropout, geometry=cfg.geometry,
              aggregation=cfg.aggregation, lift=cfg.lift, learn_curvature=not cfg.fixed_curvature,
              curv_init=cfg.curv_init, agg_temp_init=cfg.agg_temp_init, agg_temp_relative=cfg.agg_temp_relative)
    return H2ARN(ModelConfig(**kw))


def build_loss(cfg: TrainConfig):
    from .losses import H2ARNLoss
    from .model import LossConfig

    return H2ARNLoss(LossConfig(tau=cfg.loss_temp, cone_weight=cfg.loss_lambda, K=cfg.K, logits=cfg.logits,
                                positive_reduction="mean" if cfg.positives == "hierarchy" else "logsumexp",
                                cone_aperture=cfg.cone_aperture))


def _loss_config_dict(criterion) -> dict:
    conf = getattr(criterion, "config", None) or getattr(criterion, "cfg", None)
    if conf is not None and hasattr(conf, "to_dict"):
        return dict(conf.to_dict())
    if conf is not None and hasattr(conf, "__dataclass_fields__"):
        return asdict(conf)
    return {}


def _scalars(model) -> dict:
    out = {}
    for k, v in model.scalars().items():
        out[k] = float(v.detach().float().item()) if torch.is_tensor(v) else float(v)
    return out


# --------------------------------------------------------------------------- training

def training_step(model, criterion, optimizer, scheduler, txt: Tensor, txt_mask: Tensor, pc: Tensor,
                  pc_mask: Tensor, pc_idx: Tensor, *, grad_clip: float = 1.0, amp: bool = False,
                  where: str = "", pos_mask: Tensor | None = None) -> tuple[Tensor, dict, Tensor]:
    """One optimisation step on a batch of links: ``(loss, named terms, grad norm before clipping)``.

    txt ``(B, L_t, D_t)``, pc ``(B, L_p, D_p)`` (row k = the cloud of link k), pc_idx ``(B,)`` cloud ids
    (equal ids = positives). Encoders run under bf16 autocast when ``amp`` on CUDA; the model keeps
    its geometry and the loss in float32.
    """
    device = txt.device
    with autocast(device, amp):
        t_emb, p_emb = model(txt, txt_mask, pc, pc_mask)
    extra = {} if pos_mask is None else {"pos_mask": pos_mask}   # hierarchy-aware positives (TrainConfig.positives)
    loss, terms = criterion(unwrap(model), t_emb.float(), p_emb.float(), pc_idx, **extra)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at {where or 'this step'} ({terms}). Fix: lower --learning_rate, "
            "drop --amp, or check the features for outliers.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    unwrap(model).project_parameters_()
    scheduler.step()
    return loss.detach(), terms, gn


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(msg)


def train(cfg: TrainConfig, *, stop_after_epoch: int | None = None, quiet: bool = False,
          on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train one model; return ``{"run_dir", "best_model_path", "checkpoint_path", "metrics_path", "best", "history"}``.

    ``stop_after_epoch`` ends the run after that epoch (as an interruption would; the checkpoint
    is complete) so resume can be tested and long runs split. ``on_epoch_end`` gets each epoch's
    record (used by notebooks for live plots). ``cfg.num_threads`` is applied for the run only:
    small models on a shared CPU run several times faster on one thread than on oversubscribed ones.
    """
    validate_config(cfg)
    check_outputs(cfg)
    dist_ctx = DistContext()
    with cpu_threads(cfg.num_threads):
        try:
            if launched_distributed():  # started by torchrun with several processes: join their group
                dist_ctx = setup_distributed(cfg.device)
            return _train(cfg, stop_after_epoch=stop_after_epoch, quiet=quiet, on_epoch_end=on_epoch_end,
                          dist_ctx=dist_ctx)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise
            raise Interrupted(_interrupted_message(cfg)) from None
        finally:
            cleanup_distributed(dist_ctx)


def _interrupted_message(cfg: TrainConfig) -> str:
    """One line for Ctrl-C: where the last complete checkpoint is (writes are atomic, so it is intact)."""
    _, _, ckpt_path = cfg.resolved_paths()
    if not ckpt_path.is_file():
        return f"training stopped before the first epoch ended; no checkpoint was written ({ckpt_path})."
    try:
        epoch = load_payload(ckpt_path, expect=CHECKPOINT_FORMAT, what="training checkpoint").get("epoch")
    except CheckpointError:
        epoch = "?"
    return (f"training stopped; the last complete checkpoint (epoch {epoch}) is {ckpt_path}. Resume with the same "
            "command plus --resume.")


def _train(cfg: TrainConfig, *, stop_after_epoch: int | None, quiet: bool,
           on_epoch_end: Callable[[dict], None] | None, dist_ctx: DistContext) -> dict:
    # multi-process (torchrun): rank 0 alone prints, writes files and evaluates; see docs/distributed.md
    distributed, is_main = dist_ctx.active, dist_ctx.is_main
    quiet = quiet or not is_main
    if not cfg.train_link:
        with main_process_first():        # rank 0 builds/extracts the default features, the others reuse them
            cfg.train_link = [str(p) for p in default_links(cfg, "train")]
            if not cfg.val_link:
                cfg.val_link = [str(p) for p in default_links(cfg, "val")]
    elif not cfg.val_link:
        _check_links_exist(cfg.train_link, "train")   # before looking for val files beside them
        cfg.val_link = [str(p) for p in _sibling_val_links(cfg.train_link)]
    device = dist_ctx.device if distributed else resolve_device(cfg.device)
    run_dir, save_path, ckpt_path = cfg.resolved_paths()
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"

    fingerprint = data_fingerprint(list(cfg.train_link) + list(cfg.val_link))
    from .extract import check_features_match, feature_settings
    features_made_by = feature_settings(cfg.train_link)   # recorded in the model file (h2arn.search)
    check_features_match(features_made_by, list(cfg.val_link), "the training split")
    train_split = load_split_for_training(cfg.train_link, "train")
    val_split = load_split_for_training(cfg.val_link, "val")
    check_feature_dims(train_split, cfg.d_txt, cfg.d_pcd, "training")
    check_feature_dims(val_split, train_split.d_txt, train_split.d_pcd, "validation",
                       reference=f"the training features ({', '.join(train_split.sources)})")
    if cfg.amp and device.type != "cuda":
        _log(f"--amp: bf16 autocast is only used on CUDA; training in float32 on {device}.", quiet)

    seed_everything(cfg.seed)
    model = build_model(cfg, train_split.d_txt, train_split.d_pcd).to(device)
    criterion = build_loss(cfg)
    optimizer = torch.optim.AdamW(model.param_groups(cfg.weight_decay, cfg.scalar_lr), lr=cfg.learning_rate,
                                  betas=tuple(cfg.betas), eps=cfg.adam_eps)
    batcher = LinkBatcher(train_split.num_texts, cfg.batch_size, cfg.seed)
    if distributed:  # --batch_size is the GLOBAL batch; each rank encodes its slice of it
        check_batches_fit([len(b) for b in batcher.epoch(1)], dist_ctx.world_size, "--batch_size")
        criterion = GatheredLoss(criterion)
    total_steps = len(batcher) * cfg.num_epochs
    schedule = WarmupLinearDecay(total_steps, int(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    history: list[dict] = []
    steps: list[dict] = []
    best = {"epoch": None, "val_rsum": -math.inf, "val": {}}
    start_epoch = 1
    wall_before = 0.0
    if cfg.resume and ckpt_path.exists():
        ck = load_payload(ckpt_path, expect=CHECKPOINT_FORMAT, what="training checkpoint")
        stored = ck.get("train_config", {})
        diffs = [k for k in _RESUME_KEYS if k in stored and stored[k] != getattr(cfg, k)]
        if diffs:
            raise CheckpointError(f"{ckpt_path}: cannot resume, these settings differ from the checkpoint's: "
                                  + ", ".join(f"{k} ({stored[k]!r} vs {getattr(cfg, k)!r})" for k in diffs)
                                  + ". Fix: resume with the original flags, or pass --overwrite instead of --resume "
                                  "to start afresh.")
        try:
            model.load_state_dict(ck["state_dict"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt_path}: weights do not fit this model ({str(exc)[:300]}). Fix: resume "
                                  "with the original flags, or pass --overwrite instead of --resume to start "
                                  "afresh.") from exc
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        rng_ranks = ck.get("rng_ranks") or []
        restore_rng_state(rng_ranks[dist_ctx.rank] if len(rng_ranks) == dist_ctx.world_size else ck["rng"])
        history, steps = list(ck["history"]), list(ck.get("steps", []))
        best = dict(ck["best"])
        start_epoch = int(ck["epoch"]) + 1
        wall_before = float(history[-1]["wall_s"]) if history else 0.0
        _log(f"resumed from {ckpt_path} after epoch {ck['epoch']} (best val Rsum so far "
             f"{best['val_rsum']:.2f} at epoch {best['epoch']})", quiet)
    elif cfg.resume:
        _log(f"--resume: no checkpoint at {ckpt_path}; starting from scratch.", quiet)
    if distributed and not (cfg.resume and ckpt_path.exists()) and dist_ctx.rank > 0:
        torch.manual_seed(cfg.seed * 1_000_003 + dist_ctx.rank)   # own dropout stream per rank
    train_model = wrap_ddp(model, dist_ctx)   # = model in single-process runs

    train_txt, train_txt_mask = train_split.txt.to(device), train_split.txt_mask.to(device)
    train_pc, train_pc_mask = train_split.pc.to(device), train_split.pc_mask.to(device)
    txt_to_pc = train_split.txt_to_pc.to(device)
    satisfies = None
    if cfg.positives == "hierarchy":   # (N_txt, N_pc): cloud satisfies caption (h2arn.data.relevance), from the meta
        if distributed:
            raise FeatureError("--positives hierarchy is single-process only (the gathered loss uses cloud ids). "
                               "Fix: drop torchrun or use --positives instance")
        from .evaluate import relevance_tensors
        try:
            satisfies = relevance_tensors(train_split.meta, train_split.txt_to_pc, train_split.num_clouds)[0].to(device)
        except (ValueError, KeyError) as exc:
            raise FeatureError(f"{', '.join(train_split.sources)}: --positives hierarchy needs caption meta with "
                               f"levels ({exc}). Fix: re-extract the features or use --positives instance") from exc
    loss_cfg = _loss_config_dict(criterion)
    n_params = sum(p.numel() for p in model.parameters())
    _check_free_space(cfg, n_params)   # every rank: a refusal on rank 0 alone would leave the others waiting
    _log(f"training on {device}: {train_split.num_texts} train links / {train_split.num_clouds} clouds, "
         f"{val_split.num_texts} val links / {val_split.num_clouds} clouds, {n_params:,} parameters, "
         f"{cfg.num_epochs} epochs x {len(batcher)} steps. Model selection: {SELECTION_NOTE}.", quiet)

    def write_metrics(complete: bool) -> None:
        if not is_main:
            return
        payload = {
            "format": "h2arn-metrics", "complete": complete, "config": cfg.to_dict(),
            "model_config": dict(model.config.to_dict()), "loss_config": loss_cfg,
            "device": str(device), "torch": torch.__version__, "machine": platform.platform(),
            "cpu_threads": torch.get_num_threads(), "num_parameters": n_params,
            "data": {"train_links": train_split.num_texts, "train_clouds": train_split.num_clouds,
                     "val_links": val_split.num_texts, "val_clouds": val_split.num_clouds,
                     "train_sources": train_split.sources, "val_sources": val_split.sources,
                     "fingerprint": fingerprint},
            "selection": {"split": "val", "metric": "rsum", "note": SELECTION_NOTE},
            "best": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in best.items()},
            "epochs": history, "steps": steps,
            "wall_s": history[-1]["wall_s"] if history else 0.0,
        }
        if distributed:
            payload["distributed"] = {"world_size": dist_ctx.world_size, "backend": dist_ctx.backend}
        atomic_write_json(payload, metrics_path, indent=1)

    stop_at = cfg.num_epochs if stop_after_epoch is None else min(cfg.num_epochs, stop_after_epoch)
    epochs_bar = tqdm(range(start_epoch, stop_at + 1), desc="epochs", disable=True if quiet else None,
                      initial=start_epoch - 1, total=cfg.num_epochs)
    t_start = time.perf_counter()
    for epoch in epochs_bar:
        model.train()
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        n_batches, grad_norms = 0, []
        for idx in tqdm(batcher.epoch(epoch), desc=f"epoch {epoch}", leave=False, disable=True if quiet else None):
            if distributed:
                idx = shard_batch(idx, dist_ctx.rank, dist_ctx.world_size)
            idx = idx.to(device)
            pc_idx = txt_to_pc[idx]
            txt, txt_mask = trim_padding(train_txt[idx], train_txt_mask[idx])
            pc, pc_mask = trim_padding(train_pc[pc_idx], train_pc_mask[pc_idx])
            loss, terms, gn = training_step(train_model, criterion, optimizer, scheduler, txt, txt_mask, pc, pc_mask, pc_idx,
                                            grad_clip=cfg.grad_clip, amp=cfg.amp,
                                            where=f"epoch {epoch}, step {n_batches + 1}",
                                            pos_mask=None if satisfies is None else satisfies[idx][:, pc_idx])
            n_batches += 1
            grad_norms.append(float(gn))
            record = {k: float(v) for k, v in terms.items()}
            for k, v in record.items():
                sums[k] = sums.get(k, 0.0) + v
            steps.append({"step": len(steps) + 1, "epoch": epoch, "lr": scheduler.get_last_lr()[0], **record})
        val = evaluate_split(model, val_split, device, cfg.eval_batch_size, cfg.amp) if is_main else None
        val = broadcast_object(val)   # the other ranks wait here for rank 0's validation
        epoch_s = time.perf_counter() - t_epoch
        rec = {"epoch": epoch, "loss": {k: v / n_batches for k, v in sums.items()}, "val": val,
               "scalars": _scalars(model), "lr": scheduler.get_last_lr()[0],
               "grad_norm_mean": sum(grad_norms) / len(grad_norms), "epoch_s": epoch_s,
               "wall_s": wall_before + (time.perf_counter() - t_start),
               "pairs_per_s": train_split.num_texts / epoch_s}
        history.append(rec)
        improved = val["rsum"] > best["val_rsum"]
        if improved:
            best = {"epoch": epoch, "val_rsum": val["rsum"], "val": val}
        if improved and is_main:
            _save_or_explain(lambda: save_model_file(save_path, model, loss_config=loss_cfg, epoch=epoch,
                                                     val_metrics=val, train_config=cfg.to_dict(),
                                                     extra={"features": features_made_by}),
                             save_path, epoch, ckpt_path)
        rng_ranks = all_gather_object(capture_rng_state()) if distributed else None
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "version": 1, "model_config": dict(model.config.to_dict()),
            "loss_config": loss_cfg, "train_config": cfg.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(), "epoch": epoch, "best": best, "history": history, "steps": steps,
            "val_metrics": val,
        }
        if rng_ranks is not None:
            checkpoint["rng_ranks"] = rng_ranks
        if is_main:
            _save_or_explain(lambda: atomic_save(checkpoint, ckpt_path), ckpt_path, epoch, ckpt_path)
        write_metrics(complete=epoch == cfg.num_epochs)
        _log(f"epoch {epoch:3d}/{cfg.num_epochs}  loss {rec['loss']['loss']:.4f}  val R@1 t2p "
             f"{val.get('t2p_R@1', float('nan')):.1f} p2t {val.get('p2t_R@1', float('nan')):.1f}  val Rsum "
             f"{val['rsum']:.2f}{'  *best (val)' if improved else ''}  c={rec['scalars'].get('curvature', float('nan')):.3f}"
             f"  {epoch_s:.1f}s", quiet)
        if on_epoch_end is not None:
            on_epoch_end(rec)
    epochs_bar.close()
    if distributed:
        broadcast_object(None)   # barrier: every file of rank 0 is complete before any rank returns
    if not history:
        raise CheckpointError(f"{ckpt_path}: nothing to resume, the run already finished epoch {start_epoch - 1} of "
                              f"{cfg.num_epochs}. Fix: use its results, or pass --overwrite instead of --resume to "
                              "train it again.")
    if history and history[-1]["epoch"] == cfg.num_epochs:
        write_metrics(complete=True)
    _log(f"best epoch {best['epoch']} (val Rsum {best['val_rsum']:.2f}) saved to {save_path}; "
         f"metrics in {metrics_path}", quiet)
    return {"run_dir": run_dir, "best_model_path": save_path, "checkpoint_path": ckpt_path,
            "metrics_path": metrics_path, "best": best, "history": history}


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m h2arn.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--save_model_path", default=None, help="best model file (default: <run_dir>/best_model.pth)")
    ap.add_argument("--checkpoint_path", default=None, help="resumable checkpoint (default: <run_dir>/checkpoint.pth)")
    ap.add_argument("--run_dir", default=None, help="folder for metrics.json and the default model/checkpoint files")
    ap.add_argument("--d_txt", type=int, default=None, help="text feature width (default: read from the features)")
    ap.add_argument("--d_pcd", type=int, default=None, help="point feature width (default: read from the features)")
    ap.add_argument("--d_model", type=int, default=d.d_model)
    ap.add_argument("--batch_size", type=int, default=d.batch_size,
                    help="GLOBAL batch of links (under torchrun it is split over the processes)")
    ap.add_argument("--num_epochs", type=int, default=d.num_epochs)
    ap.add_argument("--learning_rate", type=float, default=d.learning_rate)
    ap.add_argument("--nhead", type=int, default=d.nhead)
    ap.add_argument("--num_layers", type=int, default=d.num_layers)
    ap.add_argument("--dim_feedforward", type=int, default=None, help="FFN width (default 4 x d_model)")
    ap.add_argument("--dropout", type=float, default=d.dropout)
    ap.add_argument("--train_link", nargs="+", default=[], help="training link file(s) (default: ensure_features)")
    ap.add_argument("--val_link", nargs="+", default=[],
                    help="validation link file(s) for model selection (default: *_link_val.json beside --train_link)")
    ap.add_argument("--profile", default=d.profile, help="feature profile used when no link files are given")
    ap.add_argument("--txt_model", default=d.txt_model, help="text encoder of the default features")
    ap.add_argument("--pc_model", default=None, help="point encoder of the default features")
    ap.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (geometry stays fp32 in the model)")
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint_path if it exists")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace an earlier run in the same folder (without it or --resume, a rerun is refused)")
    ap.add_argument("--warmup_ratio", type=float, default=d.warmup_ratio)
    ap.add_argument("--weight_decay", type=float, default=d.weight_decay)
    ap.add_argument("--grad_clip", type=float, default=d.grad_clip)
    ap.add_argument("--loss_lambda", type=float, default=d.loss_lambda, help="weight of the entailment-cone loss")
    ap.add_argument("--loss_temp", type=float, default=d.loss_temp, help="InfoNCE temperature tau (fixed)")
    ap.add_argument("--K", type=float, default=d.K, help="cone aperture constant")
    ap.add_argument("--logits", default=d.logits, choices=["distance", "inner"])
    ap.add_argument("--geometry", default=d.geometry, choices=["hyperbolic", "euclidean"])
    ap.add_argument("--aggregation", default=d.aggregation, choices=["contribution", "mean"])
    ap.add_argument("--lift", default=d.lift, choices=["expmap", "official"])
    ap.add_argument("--fixed_curvature", action="store_true", help="keep c = --curv_init fixed (ablation)")
    ap.add_argument("--curv_init", type=float, default=d.curv_init, help="initial curvature c (default 1)")
    ap.add_argument("--agg_temp_init", type=float, default=d.agg_temp_init,
                    help="initial aggregation temperature T (default 0.07, as the official code)")
    ap.add_argument("--positives", default=d.positives, choices=["instance", "hierarchy"],
                    help="hierarchy: every cloud that satisfies a caption is a positive, averaged over them")
    ap.add_argument("--scalar_lr", type=float, default=None, help="own learning rate for c, alpha and T")
    ap.add_argument("--cone_aperture", type=float, default=None,
                    help="cone half-aperture (radians) at the batch's mean text radius; sets K per batch")
    ap.add_argument("--agg_temp_relative", action="store_true",
                    help="aggregation temperature in units of each sample's mean token distance")
    ap.add_argument("--eval_batch_size", type=int, default=d.eval_batch_size)
    ap.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kw = {k: v for k, v in vars(args).items() if k != "quiet"}
    cfg = TrainConfig.from_dict(kw)

    def body() -> int:
        result = train(cfg, quiet=args.quiet)
        if rank_is_main():
            print(json.dumps({"best_model_path": str(result["best_model_path"]), "best_epoch": result["best"]["epoch"],
                              "best_val_rsum": result["best"]["val_rsum"], "metrics": str(result["metrics_path"])}))
        return 0

    return run_cli(body, (FeatureError, CheckpointError, FloatingPointError, DeviceError, DistributedSetupError))


if __name__ == "__main__":
    raise SystemExit(main())
