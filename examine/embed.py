"""Embed images into the store: fetch bytes, hash, decode, batch through the encoder.

Images already in the store (same sha256, same encoder version) are not
embedded again. A bad image is reported with its item name and skipped; the
batch goes on. Each batch is appended to the store as soon as its embeddings
are back, and the next one is handed to the writer only once the previous one
is stored: an interrupted run loses at most the batch being appended and the
one still on the device.

The stages overlap (:mod:`examine.embed_pipeline`): a producer thread has the
bytes fetched and hashed ahead (local files in worker processes, other sources
in threads), decodes them — in the worker processes on the CPU, or with nvJPEG
in batches on CUDA (other formats fall back to the processes) — and
resizes/normalises on the device; the caller's thread runs the
encoder, copies the embeddings out asynchronously and appends the previous
batch to the store while the device computes the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from examine.device import autocast, resolve_device
from examine.embed_pipeline import EmbedReport, Source, default_batch_size, embed_sources, path_sources
from examine.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder, to_square_tensor

__all__ = ["Source", "EmbedReport", "embed_sources", "path_sources", "embed_arrays", "default_batch_size"]


class _Embedder:
    """Runs normalised batches through the encoder on the chosen device."""

    def __init__(self, encoder: Encoder, device: torch.device):
        self.encoder = encoder.to(device).eval()
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = (batch - self.mean) / self.std
        with autocast(self.device):
            out = self.encoder(x)
        return out.float().cpu().numpy()


def embed_arrays(
    images: Sequence[np.ndarray], encoder: Encoder, *, batch_size: int = 64, device: str | torch.device = "auto"
) -> np.ndarray:
    """Embeddings of in-memory RGB uint8 images (no store): for evaluation and tests."""
    emb = _Embedder(encoder, resolve_device(device))
    size = encoder.config.img_size
    out = [
        emb(torch.stack([to_square_tensor(im, size) for im in images[s : s + batch_size]]))
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)
