"""A model directory: the encoder weights and the embedding store, in one place.

    MODEL_DIR/encoder/   encoder.json + encoder.safetensors (+ MAE checkpoint)
    MODEL_DIR/store/     <encoder version>/vectors.f32, keys.tsv, meta.json
                         image-checks-v3/… the screening's image checks, same layout

The CLI and the Label Studio backend both work through this object, so a model
directory made by ``examine pretrain`` serves the backend unchanged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from examine.encoder import Encoder, EncoderConfig, EncoderError, create_encoder
from examine.file_index import FileIndex
from examine.images import ImageLoadError
from examine.store import EmbeddingStore

__all__ = ["Workspace", "load_training_images"]

_CHECKS_BATCH = 256  # image checks appended to the store this many at a time


class Workspace:
    """Encoder + store under one model directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.encoder_dir = self.root / "encoder"
        self.store_root = self.root / "store"
        self._stores: dict[str, EmbeddingStore] = {}  # by encoder version (see store())
        self._stores_lock = threading.Lock()

    def has_encoder(self) -> bool:
        return (self.encoder_dir / "encoder.json").is_file()

    def encoder(self, *, weights: str | Path | None = None, config: EncoderConfig | None = None) -> Encoder:
        """The encoder to use: explicit local weights, else the one pretrained into this directory."""
        if weights is not None:
            return create_encoder(config or EncoderConfig(), weights=weights)
        if self.has_encoder():
            return Encoder.load(self.encoder_dir)
        raise EncoderError(
            f"{self.root} has no encoder yet: pretrain one with `examine pretrain IMAGES_DIR --out {self.root}` "
            "or pass local weights with --weights"
        )

    def store(self, encoder: Encoder) -> EmbeddingStore:
        """The embedding store of ``encoder`` (opened once and kept: :meth:`kept_store`)."""
        return self.kept_store(encoder.version, encoder.dim)

    def kept_store(self, version: str, dim: int) -> EmbeddingStore:
        """The store of ``version``: opened once and kept while its files are intact.

        Opening reads and checks every key (0.2 s at 200,000 images), so a kept store is refreshed instead;
        one whose files were deleted, replaced or truncated since (:meth:`EmbeddingStore.intact`) is opened
        again, which repairs it and says so in its ``repaired``. A kept store's ``repaired`` is empty: what
        its opening repaired was reported by the caller that opened it.
        """
        with self._stores_lock:
            kept = self._stores.get(version)
            if kept is not None and kept.dim == dim and kept.intact():
                kept.repaired = []
                kept.refresh()
                return kept
            store = EmbeddingStore(self.store_root, version, dim)
            self._stores[version] = store
            return store

    def file_index(self) -> FileIndex:
        """The sha256 of local files known unchanged since they were hashed (``store/files.tsv``)."""
        return FileIndex(self.store_root / "files.tsv")

    def checks_store(self) -> EmbeddingStore:
        """The image checks of :mod:`examine.image_checks`, keyed by image hash like the embeddings."""
        from examine.image_checks import N_VALUES, VERSION

        return self.kept_store(VERSION, N_VALUES)

    def measure(
        self,
        items: Iterable[tuple[str, Callable[[], np.ndarray | bytes | str | os.PathLike[str]]]],
        on_error: Callable[[str, Exception], None] = lambda key, exc: None,
    ) -> int:
        """Store the image checks of every image whose sha256 has none yet; returns how many were measured.

        ``items`` yields ``(sha256, load)`` with ``load()`` giving the image's bytes or path (decoded
        within bounded memory, whatever the image's size: :func:`examine.image_checks.source_checks`) or
        the decoded image. A failing image is passed to ``on_error(sha256, exception)`` and skipped: one
        bad image never stops the batch.
        """
        from examine.image_checks import image_checks, source_checks

        store = self.checks_store()
        keys: list[str] = []
        rows: list[np.ndarray] = []
        done = 0
        for key, load in items:
            if key in store or key in keys:
                continue
            try:
                image = load()
                rows.append(image_checks(image) if isinstance(image, np.ndarray) else source_checks(image))
                keys.append(key)
            except Exception as exc:
                on_error(key, exc)
            if len(keys) >= _CHECKS_BATCH:
                done += store.add(keys, np.stack(rows))
                keys, rows = [], []
        if keys:
            done += store.add(keys, np.stack(rows))
        return done

    def checks(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The stored image checks of each key and which keys have them; an unmeasured row gets the
        pool's median checks and no thumbnail, so the screening finds nothing in it."""
        from examine.image_checks import CHECKS, COLOUR_BINS, N_VALUES

        store = self.checks_store()
        have = np.array([k in store for k in keys], bool)
        out = np.zeros((len(keys), N_VALUES), np.float32)
        if have.any():
            out[have] = store.get([k for k, h in zip(keys, have) if h])
            cut = len(CHECKS) + COLOUR_BINS
            out[~have, :cut] = np.median(out[have, :cut], axis=0)
            out[~have, CHECKS.index("one_shade")] = -1.0  # not measured, not a made-up grey image
        return out, have


def load_training_images(
    paths: Sequence[str | Path],
    img_size: int,
    *,
    progress: bool = True,
    workers: int | None = None,
    decode_device: str | None = None,
) -> tuple[list[np.ndarray], list[ImageLoadError]]:
    """Decode images for pretraining (downscaled to at most 2× the model's size); bad ones are reported.

    Decoding runs in ``workers`` processes (default: one per CPU core, at most 16;
    0: in this process). With ``decode_device`` (``"cuda"``: nvJPEG, the embedder's
    decoder) the JPEGs it decodes like Pillow are decoded there in batches, shrunk on
    the device and copied back; every other file goes to the processes. Images come
    back in the order of ``paths``.
    """
    import os

    from tqdm.auto import tqdm

    from examine.decode_pool import DecodePool, decode_training_file

    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(16, cpus)
    pool = DecodePool(workers if len(paths) > 8 else 0)
    results: list[tuple[np.ndarray | None, ImageLoadError | None]] = [(None, None)] * len(paths)
    bar = tqdm(total=len(paths), desc="reading images", unit="img", disable=not progress)
    step = 1024
    waiting = None
    for s in range(0, len(paths) + step, step):  # one block decoding while the previous is collected
        rows = list(range(s, min(s + step, len(paths))))
        if decode_device is not None and rows:
            done = _decode_on_device([paths[i] for i in rows], img_size, decode_device)
            for i, img in zip(rows, done):
                if img is not None:
                    results[i] = (img, None)
            bar.update(sum(img is not None for img in done))
            rows = [i for i, img in zip(rows, done) if img is None]
        part = [(str(paths[i]), str(paths[i])) for i in rows]
        started = (rows, pool.submit(decode_training_file, part, img_size)) if part else None
        if waiting is not None:
            got = waiting[1]()
            for i, r in zip(waiting[0], got):
                results[i] = r
            bar.update(len(got))
        waiting = started
    bar.close()
    images: list[np.ndarray] = []
    errors: list[ImageLoadError] = []
    for img, err in results:
        if err is not None:
            errors.append(err)
        else:
            assert img is not None  # a decoder returns an image or an error
            images.append(img)
    return images, errors


_DEVICE_BATCH = 256
_DEVICE_PIXELS = 64 * 1024 * 1024  # decoded pixels in one device batch at most
_HEAD = 64 * 1024  # bytes read to find a JPEG's frame header (after EXIF and other segments)


def _decode_on_device(paths: Sequence[str | Path], img_size: int, device: str) -> list[np.ndarray | None]:
    """Each file decoded on ``device`` and shrunk to at most 2× ``img_size``, as (H, W, 3) uint8; None for
    a file to decode on the CPU instead (not a JPEG nvJPEG decodes like Pillow, unreadable, refused, or a
    batch the device could not hold)."""
    import torch

    from examine.gpu_decode import fit_within, jpeg_size, nvjpeg_decode

    out: list[np.ndarray | None] = [None] * len(paths)
    batches: list[list[tuple[int, bytes]]] = [[]]
    pixels = 0
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as fh:
                head = fh.read(_HEAD)
                size = jpeg_size(head)
                if size is None:
                    continue  # not for the device; the CPU decoder reads it (and reports what is wrong)
                data = head + fh.read()
        except OSError:
            continue
        if batches[-1] and (len(batches[-1]) >= _DEVICE_BATCH or pixels + size[0] * size[1] > _DEVICE_PIXELS):
            batches.append([])
            pixels = 0
        batches[-1].append((i, data))
        pixels += size[0] * size[1]
    dev = torch.device(device)
    for chunk in batches:
        try:
            decoded = nvjpeg_decode([d for _, d in chunk], dev)
            for (i, _), t in zip(chunk, decoded):
                if t is not None:
                    out[i] = np.ascontiguousarray(fit_within(t, 2 * img_size).permute(1, 2, 0).cpu().numpy())
        except (RuntimeError, MemoryError):  # e.g. the device out of memory: these go to the CPU decoder
            for i, _ in chunk:
                out[i] = None
    return out
