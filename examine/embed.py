"""Embed images into the store: fetch bytes, hash, decode, batch through the encoder.

Images already in the store (same sha256, same encoder version) are not
embedded again. A bad image is reported with its item name and skipped; the
batch goes on. Each batch is appended to the store as soon as it is computed,
so an interrupted run loses at most one batch.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from examine.device import autocast, default_workers, resolve_device
from examine.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder, to_square_tensor
from examine.images import ImageLoadError, load_image
from examine.store import EmbeddingStore

__all__ = ["Source", "EmbedReport", "embed_sources", "path_sources", "embed_arrays"]

# (item name shown in errors, a function returning the image bytes)
Source = tuple[str, Callable[[], bytes]]


@dataclass
class EmbedReport:
    """What happened to each source: its key (sha256) or its error."""

    keys: list[str | None]
    errors: dict[int, ImageLoadError] = field(default_factory=dict)
    added: int = 0
    cached: int = 0

    def ok(self) -> np.ndarray:
        """Boolean mask of the sources that have an embedding."""
        return np.array([k is not None for k in self.keys], dtype=bool)


def path_sources(paths: Iterable[str | Path]) -> list[Source]:
    """Sources reading local files."""
    return [(str(p), (lambda p=p: Path(p).read_bytes())) for p in paths]


def _fetch(source: Source) -> tuple[bytes | None, ImageLoadError | None]:
    item, fetch = source
    try:
        data = fetch()
    except ImageLoadError as exc:
        return None, exc
    except Exception as exc:  # network, permission, ...: reported per item
        return None, ImageLoadError(item, f"cannot read the image ({type(exc).__name__}: {exc})")
    if not data:
        return None, ImageLoadError(item, "the image is empty (0 bytes)")
    return data, None


def _decode(item: str, data: bytes, img_size: int) -> tuple[torch.Tensor | None, ImageLoadError | None]:
    try:
        img = load_image(data, item=item, max_side=4 * img_size)
    except ImageLoadError as exc:
        return None, exc
    except Exception as exc:  # a decoder bug must not stop the batch either
        return None, ImageLoadError(item, f"cannot decode the image ({type(exc).__name__}: {exc})")
    return to_square_tensor(img, img_size), None


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


def embed_sources(
    sources: Sequence[Source],
    encoder: Encoder,
    store: EmbeddingStore,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> EmbedReport:
    """Embed every source not yet in ``store``; return per-source keys and errors."""
    from tqdm.auto import tqdm

    if store.version != encoder.version or store.dim != encoder.dim:
        raise ValueError(f"store is for encoder {store.version} (dim {store.dim}), not {encoder.version}")
    dev = resolve_device(device)
    batch_size = batch_size or (256 if dev.type == "cuda" else 32)
    workers = workers or default_workers(dev)
    size = encoder.config.img_size
    report = EmbedReport(keys=[None] * len(sources))
    embedder: _Embedder | None = None
    bar = tqdm(total=len(sources), desc="embedding", unit="img", disable=not progress)
    pending: dict[str, list[int]] = {}  # key → source positions waiting for its vector
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(sources), batch_size):
            chunk = list(range(start, min(start + batch_size, len(sources))))
            todo: list[tuple[int, str, bytes]] = []
            for i, (data, err) in zip(chunk, pool.map(_fetch, [sources[i] for i in chunk])):
                if err is not None:
                    report.errors[i] = err
                    continue
                key = hashlib.sha256(data).hexdigest()
                if key in store:
                    report.keys[i] = key
                    report.cached += 1
                elif key in pending:
                    pending[key].append(i)
                else:
                    pending[key] = [i]
                    todo.append((i, key, data))
            decoded = pool.map(lambda t: _decode(sources[t[0]][0], t[2], size), todo)
            tensors, keys = [], []
            for (i, key, _), (tensor, err) in zip(todo, decoded):
                if err is not None:
                    for j in pending.pop(key):
                        report.errors[j] = err
                    continue
                tensors.append(tensor)
                keys.append(key)
            if tensors:
                embedder = embedder or _Embedder(encoder, dev)
                report.added += store.add(keys, embedder(torch.stack(tensors)))
                for key in keys:
                    for j in pending.pop(key):
                        report.keys[j] = key
            bar.update(len(chunk))
    bar.close()
    return report


def embed_arrays(images: Sequence[np.ndarray], encoder: Encoder, *, batch_size: int = 64,
                 device: str | torch.device = "auto") -> np.ndarray:
    """Embeddings of in-memory RGB uint8 images (no store): for evaluation and tests."""
    emb = _Embedder(encoder, resolve_device(device))
    size = encoder.config.img_size
    out = [emb(torch.stack([to_square_tensor(im, size) for im in images[s : s + batch_size]]))
           for s in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)
