"""One place that decides the torch device (so no code assumes CUDA) and its CPU thread count."""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Iterator

import torch


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine (the message says which one to use)."""


def resolve_device(requested: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> cuda if available else cpu; an explicit request is honoured or refused.

    Asking for CUDA on a machine without it raises one clear error instead of silently
    running on the CPU (or crashing deep inside a kernel later).
    """
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {str(requested)!r} is not a device name ({exc}). Fix: pass --device auto, cpu, "
                          "cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device '{requested}' was requested but this machine has no CUDA GPU "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
            "Fix: pass --device cpu (or device='auto'), or install a CUDA build of torch on a GPU machine."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device '{requested}' was requested but MPS is not available. Fix: use --device cpu.")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) for reproducible runs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count afterwards (``None``: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp`` is set; a no-op elsewhere (CPU runs stay fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
