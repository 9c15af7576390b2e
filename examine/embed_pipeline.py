"""The overlapped embedding pipeline behind :func:`examine.embed.embed_sources`.

Stages, each ahead of the next::

    fetch + sha256 (processes for local files, threads otherwise)
        → decode (processes; nvJPEG batches on CUDA)
        → resize + normalise (device, side stream) → encoder (caller's thread)
        → async copy to pinned memory → append to the store (one batch later)

A producer thread runs the first three stages a batch ahead of the encoder; the
caller's thread launches the encoder on batch *k*, then waits for batch *k-1*'s
embeddings (already copied out) and appends them to the store while the device
computes *k*. On the CPU the same code runs the encoder synchronously, and the
batches and arithmetic are exactly those of the former serial loop.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examine.decode_pool import DecodePool, decode_rgb, decode_square
from examine.device import autocast, default_workers, resolve_device
from examine.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder
from examine.gpu_decode import jpeg_size, nvjpeg_decode, square_images
from examine.images import ImageLoadError
from examine.store import EmbeddingStore

__all__ = ["Source", "EmbedReport", "embed_sources", "path_sources", "default_batch_size"]

# (item name shown in errors, a function returning the image bytes)
Source = tuple[str, Callable[[], bytes]]

_FETCH_THREADS = 8
# Below this many images to decode, decoding in the producer thread beats starting processes.
_INLINE_DECODE = 64  # fewer images decode in this process: no worker processes (each imports torch) for a handful
_RAMP_START = 64  # first CUDA batch
_AHEAD = 2  # batches the producer may have ready before the encoder takes them
# While embedding on CUDA, threads hand the GIL over within this many seconds (Python's default,
# 5 ms, lets fetch threads hold up the thread that launches the encoder by several ms per wake-up).
_SWITCH_INTERVAL_S = 0.0005


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


def default_batch_size(device: torch.device) -> int:
    """Images per encoder batch: 512 on CUDA (ViT-B/16 bf16 saturates an H100/H200 there), 32 on the CPU."""
    return 512 if device.type == "cuda" else 32


class _FileSource:
    """A picklable source reading a local file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self) -> bytes:
        # os-level reads: a fraction of the interpreter work of Path.read_bytes, which matters when
        # thousands of small files a second are read by threads sharing the GIL.
        fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size) if size else b""
            if len(data) < size:  # short read (network filesystems): the rest, as Python would
                data += b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            return data
        finally:
            os.close(fd)


def path_sources(paths: Iterable[str | Path]) -> list[Source]:
    """Sources reading local files."""
    return [(str(p), _FileSource(p)) for p in paths]


# ------------------------------------------------------------------ fetch

# (bytes, sha256, error, whether nvJPEG decodes it like Pillow — None when not looked at)
_Fetched = tuple["bytes | None", "str | None", "ImageLoadError | None", "bool | None"]


def _fetch(source: Source, look_at_jpeg: bool = False) -> _Fetched:
    item, fetch = source
    try:
        data = fetch()
    except ImageLoadError as exc:
        return None, None, exc, None
    except Exception as exc:  # network, permission, ...: reported per item
        return None, None, ImageLoadError(item, f"cannot read the image ({type(exc).__name__}: {exc})"), None
    if not data:
        return None, None, ImageLoadError(item, "the image is empty (0 bytes)"), None
    gpu_ok = jpeg_size(data) is not None if look_at_jpeg else None
    return data, hashlib.sha256(data).hexdigest(), None, gpu_ok


def _fetch_many(sources: list[Source], look_at_jpeg: bool = False) -> list[_Fetched]:
    return [_fetch(s, look_at_jpeg) for s in sources]


def _fetch_chunks(
    sources: Sequence[Source],
    chunks: list[range],
    threads: ThreadPoolExecutor,
    processes: DecodePool,
    *,
    look_at_jpeg: bool = False,
    ahead: int = 2,
) -> Iterator[tuple[range, list[_Fetched]]]:
    """Yield (chunk, fetched) in order, with the next ``ahead`` chunks being fetched meanwhile.

    Local files are read, hashed (and their JPEG headers looked at) in the worker processes:
    thousands of small reads a second in threads of this process would compete for the GIL
    with the thread that keeps the GPU busy. Other sources (closures over HTTP sessions)
    are fetched by threads.
    """

    def start(chunk: range) -> list[Callable[[], list[_Fetched]]]:
        part = [sources[i] for i in chunk]
        if processes.workers and all(isinstance(fetch, _FileSource) for _, fetch in part):
            per = max(1, -(-len(part) // processes.workers))
            return [processes.call(_fetch_many, part[s : s + per], look_at_jpeg) for s in range(0, len(part), per)]
        per = max(1, -(-len(part) // _FETCH_THREADS))
        return [threads.submit(_fetch_many, part[s : s + per], look_at_jpeg).result for s in range(0, len(part), per)]

    inflight = [start(c) for c in chunks[:ahead]]
    for k, chunk in enumerate(chunks):
        if k + ahead < len(chunks):
            inflight.append(start(chunks[k + ahead]))
        parts = inflight.pop(0)
        yield chunk, [r for wait in parts for r in wait()]


def _chunks(n: int, batch_size: int, *, ramp: bool) -> list[range]:
    """Consecutive source ranges of ``batch_size``; with ``ramp`` the first ones are smaller
    (64, 128, ...) so that the device starts computing while the pipeline fills."""
    out: list[range] = []
    start, size = 0, min(batch_size, _RAMP_START) if ramp else batch_size
    while start < n:
        out.append(range(start, min(start + size, n)))
        start += size
        size = min(batch_size, 2 * size)
    return out


# ------------------------------------------------------------------ bookkeeping


class _Tracker:
    """Which source waits for which key; thread-safe (producer claims, consumer completes)."""

    def __init__(self, report: EmbedReport, store: EmbeddingStore, items: Sequence[str] = ()):
        self.report = report
        self.store = store
        self.items = items  # each source's name: an error shared by identical images names each one
        self.lock = threading.Lock()
        self.pending: dict[str, list[int]] = {}

    def claim(self, i: int, key: str) -> bool:
        """Record source ``i`` as having ``key``; True when its image must be embedded."""
        with self.lock:
            if key in self.pending:
                self.pending[key].append(i)
                return False
            if key in self.store:
                self.report.keys[i] = key
                self.report.cached += 1
                return False
            self.pending[key] = [i]
            return True

    def fail(self, key: str, err: ImageLoadError) -> None:
        with self.lock:
            for j in self.pending.pop(key):
                named = j < len(self.items) and self.items[j] != err.item
                self.report.errors[j] = ImageLoadError(self.items[j], err.reason, err.hint) if named else err

    def done(self, keys: Sequence[str]) -> None:
        with self.lock:
            for key in keys:
                for j in self.pending.pop(key):
                    self.report.keys[j] = key


@dataclass
class _Batch:
    n_sources: int
    keys: list[str]
    x: torch.Tensor | None  # CPU: float [0, 1]; CUDA: normalised, on the device
    ready: Any = None  # CUDA event recorded after x was written


# ------------------------------------------------------------------ producer


class _Producer(threading.Thread):
    """Fetch, hash, decode and preprocess batches ahead of the encoder, into a bounded queue."""

    def __init__(
        self,
        sources: Sequence[Source],
        tracker: _Tracker,
        size: int,
        batch_size: int,
        device: torch.device,
        workers: int,
    ):
        super().__init__(name="examine-embed-producer", daemon=True)
        self.sources = sources
        self.tracker = tracker
        self.size = size
        self.device = device
        self.chunks = _chunks(len(sources), batch_size, ramp=device.type == "cuda")
        n_decode = len(sources)
        self.pool = DecodePool(workers if n_decode > _INLINE_DECODE else 0)
        self.out: queue.Queue = queue.Queue(maxsize=_AHEAD)
        self.stop = threading.Event()
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        try:
            with ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="examine-fetch") as fetchers:
                held = None
                fetched_chunks = _fetch_chunks(
                    self.sources, self.chunks, fetchers, self.pool, look_at_jpeg=self.device.type == "cuda"
                )
                for chunk, fetched in fetched_chunks:
                    if self.stop.is_set():
                        return
                    started = self.start_decode(chunk, fetched)
                    if held is not None:
                        self.put(self.finish(*held))
                    held = (len(chunk), started)
                if held is not None:
                    self.put(self.finish(*held))
            self.put(None)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self.put(exc)

    def start_decode(self, chunk: range, fetched: list) -> tuple:
        """Claim keys and start decoding this chunk's new images (CPU work in processes)."""
        todo: list[tuple[int, str, bytes]] = []
        on_gpu: list[bool] = []
        for i, (data, key, err, gpu_ok) in zip(chunk, fetched):
            if err is not None:
                self.tracker.report.errors[i] = err
            elif data is not None and key is not None and self.tracker.claim(i, key):
                todo.append((i, key, data))
                on_gpu.append(bool(gpu_ok))
        if self.device.type != "cuda":
            jobs = [(self.sources[i][0], data) for i, _, data in todo]
            return todo, self.pool.submit(decode_square, jobs, self.size), None
        jobs = [(self.sources[i][0], data) for (i, _, data), g in zip(todo, on_gpu) if not g]
        return todo, self.pool.submit(decode_rgb, jobs, self.size), on_gpu

    def finish(self, n_sources: int, started: tuple) -> _Batch:
        todo, waiter, on_gpu = started
        if self.device.type != "cuda":
            tensors, keys = [], []
            for (_, key, _), (arr, err) in zip(todo, waiter()):
                if err is not None:
                    self.tracker.fail(key, err)
                else:
                    tensors.append(torch.from_numpy(arr))
                    keys.append(key)
            return _Batch(n_sources, keys, torch.stack(tensors) if tensors else None)
        return self.finish_cuda(n_sources, todo, waiter, on_gpu)

    def finish_cuda(self, n_sources: int, todo: list, waiter: Callable, on_gpu: list[bool]) -> _Batch:
        with torch.cuda.stream(self.side):
            decoded = iter(nvjpeg_decode([d for (_, _, d), g in zip(todo, on_gpu) if g], self.device))
            cpu_results = iter(waiter())
            images: list[torch.Tensor] = []
            keys: list[str] = []
            for (i, key, data), g in zip(todo, on_gpu):
                img = next(decoded) if g else None
                if img is None:
                    arr, err = next(cpu_results) if not g else decode_rgb(self.sources[i][0], data, self.size)
                    if err is not None:
                        self.tracker.fail(key, err)
                        continue
                    host = torch.from_numpy(arr).permute(2, 0, 1).pin_memory()
                    img = host.to(self.device, non_blocking=True)
                images.append(img)
                keys.append(key)
            if not images:
                return _Batch(n_sources, [], None)
            x = square_images(images, self.size)
            ready = torch.cuda.Event()
            ready.record(self.side)
        return _Batch(n_sources, keys, x, ready)


# ------------------------------------------------------------------ consumer


class _Encode:
    """The encoder on the device; returns a handle whose ``result()`` gives the float32 embeddings."""

    def __init__(self, encoder: Encoder, device: torch.device):
        self.encoder = encoder.to(device).eval()
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def launch(self, batch: _Batch) -> Callable[[], np.ndarray]:
        assert batch.x is not None  # only batches with images are launched
        if self.device.type != "cuda":
            x = (batch.x - self.mean) / self.std
            out = self.encoder(x).float().cpu().numpy()
            return lambda: out
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(batch.ready)
        batch.x.record_stream(stream)
        with autocast(self.device):
            out = self.encoder(batch.x)
        host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(out, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)

        def result() -> np.ndarray:
            done.synchronize()
            return host.numpy()

        return result


class _Writer(threading.Thread):
    """Appends finished batches to the store in order, one at a time, off the launching thread."""

    def __init__(self, store: EmbeddingStore, tracker: _Tracker):
        super().__init__(name="examine-embed-writer", daemon=True)
        self.store = store
        self.tracker = tracker
        self.todo: queue.Queue = queue.Queue(maxsize=1)
        self.idle = threading.Semaphore(1)  # held while a batch is being appended
        self.error: BaseException | None = None

    def submit(self, keys: list[str], result: Callable[[], np.ndarray]) -> None:
        """Hand over a batch once the previous one is in the store (so at most one is pending)."""
        self.idle.acquire()
        self.check()
        self.todo.put((keys, result))

    def finish(self) -> None:
        """Wait until everything handed over is in the store; raise what went wrong."""
        self.todo.put(None)
        self.join()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            try:
                if self.error is None:
                    keys, result = item
                    self.tracker.report.added += self.store.add(keys, result())
                    self.tracker.done(keys)
            except BaseException as exc:  # raised in the caller's thread
                self.error = exc
            finally:
                self.idle.release()


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
    """Embed every source not yet in ``store``; return per-source keys and errors.

    ``workers`` decoding processes (0: decode in a thread of this process);
    ``batch_size`` sources per encoder batch (default :func:`default_batch_size`).
    """
    from tqdm.auto import tqdm

    if store.version != encoder.version or store.dim != encoder.dim:
        raise ValueError(f"store is for encoder {store.version} (dim {store.dim}), not {encoder.version}")
    dev = resolve_device(device)
    batch_size = batch_size or default_batch_size(dev)
    workers = default_workers(dev) if workers is None else workers
    report = EmbedReport(keys=[None] * len(sources))
    tracker = _Tracker(report, store, [name for name, _ in sources])
    producer = _Producer(sources, tracker, encoder.config.img_size, batch_size, dev, workers)
    encode: _Encode | None = None
    bar = tqdm(total=len(sources), desc="embedding", unit="img", disable=not progress)
    writer = _Writer(store, tracker)
    switch = sys.getswitchinterval()
    if dev.type == "cuda":
        sys.setswitchinterval(min(switch, _SWITCH_INTERVAL_S))
    producer.start()
    writer.start()
    try:
        while True:
            item = producer.out.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if item.x is not None:
                encode = encode or _Encode(encoder, dev)
                result = encode.launch(item)
                writer.submit(item.keys, result)  # appended while the device computes the next batch
            bar.update(item.n_sources)
        writer.finish()
    finally:
        producer.stop.set()
        if writer.is_alive():
            writer.todo.put(None)
        producer.join(timeout=30)
        writer.join(timeout=30)
        sys.setswitchinterval(switch)
        bar.close()
    return report
