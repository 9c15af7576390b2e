"""Where tensors go: CUDA when present (bf16 autocast, pinned memory), the CPU otherwise."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["resolve_device", "autocast", "default_workers"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA if available else CPU; explicit names are checked."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on the CPU, where float32 keeps embeddings reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_workers(device: torch.device) -> int:
    """Image-decoding processes: all cores but one on a GPU box (JPEG goes to nvJPEG; Pillow decodes
    the rest at ~370 img/s per core), one per core on a small CPU machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(16, max(1, cpus - 1)) if device.type == "cuda" else min(2, cpus)
