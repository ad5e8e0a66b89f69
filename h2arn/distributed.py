r"""Multi-process (DistributedDataParallel) training helpers: process group, sharding, gathered negatives.

Why this module exists: H2ARN's contrastive loss compares every caption of a batch with every
cloud of the batch (multi-positive InfoNCE, :mod:`h2arn.losses`). Plain data parallelism would
give each GPU its own small batch, so each caption would only see ``B / world_size`` negatives and
the positives ``pc_idx[i] == pc_idx[j]`` that fall on another GPU would be missed. Here every rank
encodes its shard of the GLOBAL batch, the embeddings and cloud ids of all ranks are gathered
(with gradients), and every rank evaluates the loss on the full ``(B, B)`` similarity matrix, so
the loss, the gradients and therefore the whole training trajectory equal single-process training
on the same global batch (up to float summation order).

Launch: ``torchrun --nproc_per_node=N -m h2arn.train ...`` (see ``docs/distributed.md``).
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup_distributed` reads them. Without them (or with ``WORLD_SIZE=1``) everything here is
a no-op and the single-process code path is unchanged.

Gradient bookkeeping (why :func:`all_gather_with_grad` all-reduces in backward): every rank
computes the SAME global loss ``L(e_1, ..., e_W)``, where ``e_r`` are rank ``r``'s embeddings.
The true gradient of a parameter is ``sum_r dL/de_r * de_r/dtheta``, but rank ``r``'s autograd
graph only reaches ``e_r``. DDP then AVERAGES parameter gradients over the ranks. So in backward
the gather sums the incoming gradient over ranks (``all_reduce(SUM)``, giving ``W * dL/de_r``
because every rank holds the same ``dL/de_r``) and keeps this rank's slice; DDP's ``1/W`` average
turns that into exactly ``sum_r dL/de_r de_r/dtheta``. Parameters the loss uses directly (the
curvature ``c`` in ``-d_L``) get the same gradient on every rank and DDP's average leaves it as
is. The all-reduce form is also correct if ranks computed *different* losses (e.g. only their own
rows of the matrix), which is why it is used rather than "multiply the loss by W".
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .device import resolve_device

__all__ = ["DistributedSetupError", "DistContext", "ENV_VARS", "launched_distributed", "setup_distributed", "cleanup_distributed", "is_distributed", "get_rank",
           "get_world_size", "is_main_process", "barrier", "main_process_first", "broadcast_object",
           "all_gather_object", "shard_bounds", "shard_batch", "all_gather_with_grad", "all_gather_no_grad",
           "GatheredLoss", "wrap_ddp", "unwrap", "check_batches_fit"]

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# --------------------------------------------------------------------------- process group

class DistributedSetupError(RuntimeError):
    """The torchrun environment or the batch settings cannot give a correct multi-process run."""


@dataclass
class DistContext:
    """Where this process stands: ``active`` is False for ordinary single-process runs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    active: bool = False
    owns_group: bool = False       # True when setup_distributed created the group (cleanup destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    """True when started by torchrun with more than one process (``WORLD_SIZE > 1``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        return True   # let setup_distributed report the malformed variable


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DistributedSetupError(f"environment variable {name}={raw!r} is not an integer. Fix: launch with "
                           "`torchrun --nproc_per_node=N -m h2arn.train ...`, which sets RANK, WORLD_SIZE, "
                           "LOCAL_RANK, MASTER_ADDR and MASTER_PORT.") from None


def _device_for_rank(requested: str | torch.device | None, local_rank: int) -> torch.device:
    """``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` (one GPU per process); ``cpu`` stays ``cpu``."""
    req = "auto" if requested is None else str(requested)
    if req == "auto":
        req = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(req)  # refuses CUDA on a machine without it, with a clear message
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        raise DistributedSetupError(f"--device {requested} was requested, but under torchrun each process uses the GPU of "
                           f"its LOCAL_RANK (this one: cuda:{local_rank}). Fix: pass --device cuda (or auto) and "
                           "choose GPUs with CUDA_VISIBLE_DEVICES.")
    if local_rank >= torch.cuda.device_count():
        raise DistributedSetupError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                           "visible. Fix: use --nproc_per_node <= the number of GPUs (or CUDA_VISIBLE_DEVICES).")
    return torch.device("cuda", local_rank)


def setup_distributed(device: str | torch.device | None = "auto", backend: str | None = None,
                      timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun process group if ``WORLD_SIZE > 1``; otherwise return an inactive context.

    The backend defaults to ``nccl`` for CUDA devices and ``gloo`` for CPU. If a process group
    already exists (a test or a launcher created it) it is reused and left alone at cleanup.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise DistributedSetupError(f"WORLD_SIZE={world} but this torch build has no torch.distributed. Fix: run without "
                           "torchrun, or install a torch build with distributed support.")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        dev = _device_for_rank(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(rank, world, local_rank, dev, dist.get_backend(), active=world > 1, owns_group=False)
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise DistributedSetupError(f"WORLD_SIZE={world} but {', '.join(missing)} not set. Fix: launch with "
                           "`torchrun --nproc_per_node=N -m h2arn.train ...` rather than setting WORLD_SIZE by hand.")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    dev = _device_for_rank(device, local_rank)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "gloo" and not dist.is_gloo_available():
        raise DistributedSetupError("the gloo backend is not available in this torch build. Fix: train on CUDA (nccl) or "
                           "install a torch build with gloo.")
    if backend == "nccl" and not dist.is_nccl_available():
        raise DistributedSetupError("the nccl backend is not available in this torch build. Fix: install a CUDA build of "
                           "torch, or pass --device cpu to use gloo.")
    kw: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world,
                          "timeout": datetime.timedelta(seconds=timeout_s)}
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        kw["device_id"] = dev   # binds NCCL to this GPU (avoids the "guessing device" warning and hangs)
    dist.init_process_group(**kw)
    return DistContext(rank, world, local_rank, dev, backend, active=True, owns_group=True)


def cleanup_distributed(ctx: DistContext | None = None) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx is not None and ctx.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in every single-process run: only it writes files and prints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds cached data), the others run it afterwards (and find the cache)."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- sharding the global batch

def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` rows of a global batch of ``n`` for each rank (sizes differ by <= 1).

    Same split as ``torch.tensor_split``: the first ``n % world_size`` ranks get one extra row.
    Contiguous shards gathered in rank order give back the global batch in its original order,
    so the gathered similarity matrix is laid out exactly as the single-process one.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    base, extra = divmod(int(n), world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard_batch(global_idx: Tensor, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """This rank's contiguous slice of a global batch of link indices ``(B,)`` -> ``(B_r,)``.

    Every rank must pass the same ``global_idx`` (the same seeded shuffle), which
    :class:`h2arn.train.LinkBatcher` guarantees: it is a pure function of ``(seed, epoch)``.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    start, stop = shard_bounds(global_idx.shape[0], world_size)[rank]
    return global_idx[start:stop]


def check_batches_fit(batch_sizes: Sequence[int], world_size: int, where: str = "") -> None:
    """Every rank needs >= 1 link per step (the encoders cannot run on an empty batch)."""
    small = sorted({int(b) for b in batch_sizes if int(b) < world_size})
    if small:
        raise DistributedSetupError(f"{where + ': ' if where else ''}global batches of {small} link(s) cannot be split over "
                         f"{world_size} processes (each needs >= 1 link). Fix: use --batch_size >= {world_size} and "
                         "choose it so the last, partial batch (number of links modulo --batch_size) is 0 or "
                         f">= {world_size}, or launch fewer processes.")


# --------------------------------------------------------------------------- gathering with gradients

def _gather_sizes(n_local: int, device: torch.device) -> list[int]:
    size = torch.tensor([n_local], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """all_gather rows of possibly different counts: pad to the largest, gather, strip, concatenate."""
    world, n_max = len(sizes), max(sizes)
    x = x.contiguous()
    if x.shape[0] < n_max:
        pad = x.new_zeros((n_max - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad])
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's rows. Backward: sum the gradient over ranks, keep our rows.

    ``dist.all_gather`` on its own writes into preallocated tensors outside autograd: the gathered
    result has no ``grad_fn``, so no gradient flows back to this rank's embeddings at all (and the
    common patch "put the local tensor back into its own slot" recovers only this rank's copy of the
    gradient, which DDP's averaging then divides by ``world_size``). See the module docstring.
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:  # type: ignore[override]
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop], None, None


def all_gather_with_grad(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Rows of ``x`` ``(B_r, ...)`` from every rank, in rank order: ``(sum_r B_r, ...)``, differentiable.

    ``sizes`` (each rank's ``B_r``) may be given when known (saves one small collective); ranks may
    hold different numbers of rows. Identity when not distributed.
    """
    if not is_distributed():
        return x
    sizes = tuple(int(s) for s in sizes) if sizes is not None else tuple(_gather_sizes(x.shape[0], x.device))
    if sizes[dist.get_rank()] != x.shape[0]:
        raise ValueError(f"rank {dist.get_rank()} holds {x.shape[0]} rows but sizes says {sizes[dist.get_rank()]}")
    return _AllGatherWithGrad.apply(x, sizes, dist.get_rank())


@torch.no_grad()
def all_gather_no_grad(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Same layout as :func:`all_gather_with_grad` for tensors that need no gradient (e.g. cloud ids)."""
    if not is_distributed():
        return x
    sizes = list(sizes) if sizes is not None else _gather_sizes(x.shape[0], x.device)
    return _gather_padded(x, sizes)


class GatheredLoss(nn.Module):
    """Wrap :class:`h2arn.losses.H2ARNLoss` so each rank's loss is the loss of the GLOBAL batch.

    ``forward(model, t_emb, p_emb, pc_idx)`` takes this rank's rows (``(B_r, E)``, ``(B_r, E)``,
    ``(B_r,)``), gathers all ranks' rows in rank order (embeddings with gradient, cloud ids without)
    and calls the wrapped loss on ``(B, E)``, ``(B, E)``, ``(B,)``: the similarity matrix, the
    positive mask (positives on other ranks included) and the cone pairs are the single-process
    ones. Returns what the wrapped loss returns (the logged terms are global, equal on every rank).
    Single process: a transparent pass-through.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion
        self.config = getattr(criterion, "config", None)   # so callers can log the loss settings

    def forward(self, model: nn.Module, t_emb: Tensor, p_emb: Tensor, pc_idx: Tensor):
        if not is_distributed():
            return self.criterion(model, t_emb, p_emb, pc_idx)
        if not (t_emb.shape[0] == p_emb.shape[0] == pc_idx.shape[0]):
            raise ValueError(f"t_emb {tuple(t_emb.shape)}, p_emb {tuple(p_emb.shape)}, pc_idx {tuple(pc_idx.shape)} "
                             "must have the same number of rows on each rank")
        sizes = _gather_sizes(t_emb.shape[0], t_emb.device)
        t_all = all_gather_with_grad(t_emb.float(), sizes)
        p_all = all_gather_with_grad(p_emb.float(), sizes)
        pc_all = all_gather_no_grad(pc_idx.to(device=t_emb.device, dtype=torch.long), sizes)
        return self.criterion(unwrap(model), t_all, p_all, pc_all)


# --------------------------------------------------------------------------- DDP

def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when ``ctx.active`` (parameters broadcast from rank 0)."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.device.type == "cuda":
        return DDP(model, device_ids=[ctx.device.index], output_device=ctx.device.index)
    return DDP(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (its ``curvature()``, ``project_parameters_()``, ...)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model
