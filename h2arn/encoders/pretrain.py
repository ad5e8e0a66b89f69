"""Classification pretraining of a point encoder on the embedded dataset's train split.

Why: the paper's encoders are *pretrained and frozen* before H2ARN is trained. No DGCNN or PointNet++
object-classification weights can be obtained offline here, and the public PointNet (ModelNet40)
file lives outside the project (``../shared``). So a user with no downloads pretrains the encoder on
the categories of the generated benchmark (``meta["category"]``), which teaches it shape (and colour)
features that differ between chairs, vases, offices and hallways. Only the ``train`` split is used.

Checkpoints go to ``build/encoders/<dataset>_<model>_<fingerprint>.pt`` (h2arn format, see
:mod:`h2arn.encoders.weights`); the fingerprint covers the training files, the network config and
the training options, so :func:`ensure_pretrained` re-uses a file exactly when it would be rebuilt
identically.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..device import cpu_threads, resolve_device
from ..paths import build_dir
from . import build_point_encoder, canonical_pc_name
from .tokens import downsample_clouds
from .weights import load_point_encoder, save_encoder_checkpoint

__all__ = ["DEFAULT_CONFIGS", "DEFAULT_TRAINING", "category_of", "fingerprint_files", "pretrain_encoder",
           "ensure_pretrained", "evaluate_accuracy", "PretrainError"]

# network sizes used when the encoder is pretrained here (the paper's sizes). PointNet sees xyz only:
# on the ci benchmark an xyz+rgb PointNet reached 0.35 val accuracy against 0.65 for xyz (colours are
# drawn at random per shape, so a classifier that looks at them overfits); DGCNN gets rgb as in the paper.
DEFAULT_CONFIGS = {
    "PointNet": dict(channels="xyz"),
    "PointNet2": dict(channels="xyzrgb", variant="ssg"),
    "DGCNN": dict(channels="xyzrgbn", k=20, width=64),
}
# bump when the training recipe changes, so cached checkpoints (and the features made with them) are rebuilt
PRETRAIN_VERSION = 2
DEFAULT_TRAINING = dict(epochs=30, batch_size=16, lr=1e-3, weight_decay=1e-4, train_points=512, seed=0)


class PretrainError(ValueError):
    """The dataset cannot be used for classification pretraining (e.g. no category labels)."""


def category_of(record) -> str:
    """A shape's category: ``meta["category"]`` (generated data), else derived from the name.

    Real T3DR-HIT has no metadata: S3DIS scene names carry the room type (``Area_3_office_1`` ->
    ``office``); other names lose a trailing ``_<digits>``.
    """
    cat = (record.meta or {}).get("category")
    if cat:
        return str(cat)
    return category_from_name(record.name)


def category_from_name(name: str) -> str:
    """``Area_3_office_1`` -> ``office``; ``vase_12`` -> ``vase``; ShapeNet-style ``bottle_1d4480ab...`` -> ``bottle``."""
    m = re.match(r"Area_\d+_(.+?)_\d+$", name)
    if m:
        return m.group(1)
    return re.sub(r"_(\d+|[0-9a-f]{8,})$", "", name)


def fingerprint_files(paths: Iterable[str | os.PathLike], extra: object = None, content: bool = False) -> str:
    """sha256 over file names + sizes + mtimes (or contents with ``content=True``) and a JSON ``extra``.

    Stat-based by default, like ``make``: cheap for thousands of point files, and any rewrite of a
    file (even with the same bytes) invalidates the cache, which is the safe direction.
    """
    h = hashlib.sha256()
    for p in sorted(str(Path(p)) for p in paths):
        path = Path(p)
        h.update(path.as_posix().encode())
        if content:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            st = path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


@contextlib.contextmanager
def cpu_threads_for_small_batches(device: torch.device):
    """Use at most half the cores (1 on a 2-core machine) for torch's CPU thread pool, then restore it.

    Why: pretraining and extraction run many small kernels (16-32 clouds x 512-1024 points). Their
    intra-op parallel speed-up is small, but when other processes share the cores (CI runners, several
    notebooks at once), OpenMP's spinning threads slow every step down 5-10x. Measured on the 2-core
    course machine under load: a PointNet training step 0.1 s with 1 thread vs 0.2-2 s with 2; an
    extraction batch (32 x 1024 points) 0.21 s vs 1.39 s. GPU runs are not affected.
    """
    if device.type != "cpu":
        yield
        return
    with cpu_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))):
        yield


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation about the up axis (y), anisotropic scale, point jitter, small colour jitter."""
    b = x.shape[0]
    theta = torch.rand(b, generator=gen) * 2 * torch.pi
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = c, s, 1.0, -s, c
    scale = 0.8 + 0.4 * torch.rand(b, 1, 3, generator=gen)
    xyz = torch.bmm(x[..., :3], rot) * scale + 0.01 * torch.randn(x[..., :3].shape, generator=gen)
    rgb = (x[..., 3:6] + 0.03 * torch.randn(x[..., 3:6].shape, generator=gen)).clamp(0, 1)
    return torch.cat([xyz, rgb, x[..., 6:]], dim=-1)


def _stack_points(records, num_points: int) -> torch.Tensor:
    """Clouds -> ``(B, num_points, 6)``: FPS when larger, cyclic repeat when smaller (max-pool safe)."""
    out = []
    clouds = downsample_clouds([np.asarray(r.points[:, :6], dtype=np.float32) for r in records], num_points)
    for pts in clouds:
        if pts.shape[0] < num_points:
            pts = pts[torch.arange(num_points) % pts.shape[0]]
        out.append(pts)
    return torch.stack(out)


@torch.no_grad()
def recalibrate_batchnorm(encoder, records, num_points: int = 1024, batch_size: int = 32, device="cpu") -> None:
    """Recompute every BatchNorm's running statistics as an exact average over the training clouds.

    Why: running statistics are an exponential average (momentum 0.1) that still remembers its
    initial values after a short training run, so eval-mode features would differ from what the
    network learned. One no-grad pass with ``momentum=None`` (cumulative average) fixes that.
    Leaves the encoder in ``eval()`` mode.
    """
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    for s in range(0, len(records), batch_size):
        chunk = records[s:s + batch_size]
        if len(chunk) < 2 and s > 0:
            break  # a batch of one has no batch statistics for the head's BatchNorm1d
        x = _stack_points(chunk, num_points).to(device, encoder.dtype)
        encoder.classify(x) if encoder.num_classes > 0 else encoder.global_feature(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    encoder.eval()


@torch.no_grad()
def evaluate_accuracy(encoder, records, labels: Sequence[int], num_points: int = 1024, batch_size: int = 32,
                      device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``encoder.classify`` on FPS-sampled clouds (eval mode)."""
    if not records:
        return float("nan")
    encoder.eval()
    device = torch.device(device)
    correct = 0
    for s in range(0, len(records), batch_size):
        x = _stack_points(records[s:s + batch_size], num_points).to(device, encoder.dtype)
        pred = encoder.classify(x).argmax(-1).cpu()
        correct += int((pred == torch.as_tensor(labels[s:s + batch_size])).sum())
    return correct / len(records)


def pretrain_encoder(pc_model: str, train_records, *, val_records=(), config: dict | None = None,
                     epochs: int = 40, batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-4,
                     train_points: int = 512, seed: int = 0, device: str | torch.device = "auto",
                     progress: bool = True):
    """Train ``encoder.classify`` to predict categories; returns ``(encoder (eval), classes, metrics)``."""
    with cpu_threads_for_small_batches(resolve_device(device)):
        return _pretrain(pc_model, train_records, val_records=val_records, config=config, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, train_points=train_points,
                         seed=seed, device=device, progress=progress)


def _pretrain(pc_model, train_records, *, val_records, config, epochs, batch_size, lr, weight_decay, train_points,
              seed, device, progress):
    """The training loop of :func:`pretrain_encoder`.

    Each step draws a random ``train_points`` subset of every cloud (a cheap form of the density
    changes the encoder meets later) plus :func:`_augment`. Adam, cosine learning rate, label smoothing 0.1.
    """
    from tqdm.auto import tqdm

    name = canonical_pc_name(pc_model)
    train_records = list(train_records)
    classes = sorted({category_of(r) for r in train_records})
    if len(classes) < 2:
        raise PretrainError(f"pretraining needs at least 2 categories in the train split, found {classes}. Fix: "
                            "pass pretrained weights with --pc_weights (e.g. the shared PointNet ModelNet40 file).")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[category_of(r)] for r in train_records])
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = {**DEFAULT_CONFIGS.get(name, {}), **(config or {}), "num_classes": len(classes)}
    encoder = build_point_encoder(name, **cfg).to(device)
    pool = [torch.as_tensor(np.asarray(r.points[:, :6]), dtype=torch.float32) for r in train_records]
    n = len(pool)
    batch_size = max(2, min(batch_size, n))
    steps_per_epoch = max(1, n // batch_size)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    bar = tqdm(range(epochs), desc=f"pretrain {name}", unit="epoch", disable=None if progress else True)
    loss_hist, acc_hist = [], []
    for _ in bar:
        encoder.train()
        perm = torch.randperm(n, generator=gen)
        tot, correct, seen = 0.0, 0, 0
        for st in range(steps_per_epoch):
            ids = perm[st * batch_size:(st + 1) * batch_size]
            clouds = []
            for i in ids.tolist():
                p = pool[i]
                sel = torch.randint(p.shape[0], (train_points,), generator=gen) if p.shape[0] < train_points \
                    else torch.randperm(p.shape[0], generator=gen)[:train_points]
                clouds.append(p[sel])
            x = _augment(torch.stack(clouds), gen).to(device)
            y = labels[ids].to(device)
            logits = encoder.classify(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(ids)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(ids)
        loss_hist.append(tot / seen)
        acc_hist.append(correct / seen)
        bar.set_postfix(loss=f"{loss_hist[-1]:.3f}", acc=f"{acc_hist[-1]:.2f}")
    recalibrate_batchnorm(encoder, train_records, device=device)
    val_records = [r for r in val_records if category_of(r) in index]
    metrics = {"train_loss": loss_hist, "train_acc": acc_hist, "classes": classes,
               "val_acc": evaluate_accuracy(encoder, val_records, [index[category_of(r)] for r in val_records],
                                            device=device) if val_records else None,
               "n_train": n, "n_val": len(val_records)}
    return encoder, classes, metrics


def ensure_pretrained(pc_model: str, dataset_root: str | os.PathLike, *, config: dict | None = None,
                      training: dict | None = None, device: str | torch.device = "auto", out_dir=None,
                      progress: bool = True, force: bool = False) -> Path:
    """Path of an encoder pretrained on ``dataset_root``'s train split(s); trains and caches it if missing."""
    available_subsets, load_split = data_api("available_subsets", "load_split")

    name = canonical_pc_name(pc_model)
    root = Path(dataset_root)
    subsets = available_subsets(root)
    if not subsets:
        raise PretrainError(f"{root}: no Elephant/ or S3DIS/ caption files, nothing to pretrain on.")
    cfg = {**DEFAULT_CONFIGS.get(name, {}), **(config or {})}
    opts = {**DEFAULT_TRAINING, **(training or {})}
    files = _split_files(root, subsets, "train") + _split_files(root, subsets, "val")
    fp = fingerprint_files(files, extra={"model": name, "config": cfg, "training": opts, "format": PRETRAIN_VERSION})
    out_dir = Path(out_dir) if out_dir is not None else build_dir() / "encoders"
    path = out_dir / f"{root.name}_{name}_{fp[:12]}.pt"
    if path.is_file() and not force:
        return path
    train = [r for s in subsets for r in load_split(root, s, "train")]
    val = [r for s in subsets if (_caption_file(root, s, "val")).is_file() for r in load_split(root, s, "val")]
    encoder, classes, metrics = pretrain_encoder(name, train, val_records=val, config=cfg, device=device,
                                                 progress=progress, **opts)
    save_encoder_checkpoint(encoder.cpu(), path, classes=classes, metrics=metrics, fingerprint=fp)
    return path


def data_api(*names: str):
    """Functions of the dataset package (``h2arn.data``), looked up lazily so importing encoders stays cheap."""
    import importlib

    try:
        mod = importlib.import_module("h2arn.data")
        return tuple(getattr(mod, n) for n in names)
    except (ImportError, AttributeError):  # package __init__ not there yet: use the reader module itself
        mod = importlib.import_module("h2arn.data.t3drhit")
        return tuple(getattr(mod, n) for n in names)


def _caption_file(root: Path, subset: str, split: str) -> Path:
    from ..data.t3drhit import caption_path

    return caption_path(root, subset, split)


def _split_files(root: Path, subsets, split: str) -> list[Path]:
    """Caption file + every point file of a split (what a fingerprint must cover)."""
    from ..data.t3drhit import cloud_path, read_captions

    files = []
    for s in subsets:
        cap = _caption_file(root, s, split)
        if not cap.is_file():
            continue
        files.append(cap)
        files.extend(cloud_path(root, s, split, n) for n in read_captions(cap))
    meta = root / "metadata.json"
    if meta.is_file():
        files.append(meta)
    return files


def load_pretrained(path: str | os.PathLike, **overrides):
    """Convenience: ``load_point_encoder`` for files written by :func:`ensure_pretrained`."""
    return load_point_encoder(path, **overrides)
