"""Image decoding in worker processes, so that decoding never runs under the caller's GIL.

The pool is created on first use and kept for the life of the process (starting
workers costs an import of torch each), with the ``spawn`` start method: safe in
a threaded server and after CUDA was initialised. Workers get the image *bytes*
(the caller fetches them, since sources may be closures over HTTP sessions; local
files are read and hashed in the workers too, through :meth:`DecodePool.call`) and
return arrays; each result is ``(array, None)`` or ``(None, ImageLoadError)``
naming the item, exactly as :func:`examine.images.load_image` would raise it.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np

from examine.images import ImageLoadError, load_image

__all__ = ["DecodeResult", "decode_square", "decode_rgb", "decode_training_file", "DecodePool"]

DecodeResult = tuple["np.ndarray | None", "ImageLoadError | None"]
#: What a decoder reads an image from: its bytes, or a file path.
_Data = TypeVar("_Data", bytes, str)
_T = TypeVar("_T")


def _as_error(item: str, exc: Exception) -> ImageLoadError:
    if isinstance(exc, ImageLoadError):
        return exc
    return ImageLoadError(item, f"cannot decode the image ({type(exc).__name__}: {exc})")


def decode_rgb(item: str, data: bytes, img_size: int) -> DecodeResult:
    """``load_image(data, max_side=4 * img_size)``: an RGB uint8 (H, W, 3) array, or the error."""
    try:
        return np.ascontiguousarray(load_image(data, item=item, max_side=4 * img_size)), None
    except Exception as exc:  # a decoder bug must not stop the batch either
        return None, _as_error(item, exc)


def decode_square(item: str, data: bytes, img_size: int) -> DecodeResult:
    """What the embedder feeds the encoder on the CPU: float32 (3, size, size) in [0, 1], or the error."""
    from examine.encoder import to_square_tensor

    img, err = decode_rgb(item, data, img_size)
    if err is not None:
        return None, err
    assert img is not None  # decode_rgb returns an image or an error
    try:
        return to_square_tensor(img, img_size).numpy(), None
    except Exception as exc:
        return None, _as_error(item, exc)


def decode_training_file(item: str, path: str, img_size: int) -> DecodeResult:
    """``load_image(path, max_side=2 * img_size)`` (MAE training images), or the error."""
    try:
        return np.ascontiguousarray(load_image(path, item=item, max_side=2 * img_size)), None
    except Exception as exc:
        return None, _as_error(item, exc)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core already


def _run_chunk(
    fn: Callable[[str, _Data, int], DecodeResult], jobs: list[tuple[str, _Data]], size: int
) -> list[DecodeResult]:
    return [fn(item, data, size) for item, data in jobs]


class DecodePool:
    """A lazily started, process-wide pool of decoding processes (``workers == 0``: decode in the caller)."""

    _lock = threading.Lock()
    _pool: ProcessPoolExecutor | None = None
    _size = 0

    def __init__(self, workers: int):
        self.workers = max(0, int(workers))

    @classmethod
    def _get(cls, workers: int) -> ProcessPoolExecutor:
        with cls._lock:
            if cls._pool is None or cls._size != workers:
                if cls._pool is not None:
                    cls._pool.shutdown(wait=False, cancel_futures=True)
                cls._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
                cls._size = workers
            return cls._pool

    @classmethod
    def _reset(cls) -> None:
        with cls._lock:
            if cls._pool is not None:
                cls._pool.shutdown(wait=False, cancel_futures=True)
            cls._pool, cls._size = None, 0

    def call(self, fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        """Start ``fn(*args)`` in a worker (``fn`` and ``args`` picklable); the returned function waits for it.

        For work that cannot crash a process (reading files): without workers, or when the
        pool is broken, ``fn`` runs in the thread that asks for the result.
        """
        if self.workers == 0:
            return lambda: fn(*args)
        try:
            fut = self._get(self.workers).submit(fn, *args)
        except BrokenProcessPool:
            self._reset()
            return lambda: fn(*args)

        def result() -> _T:
            try:
                return fut.result()
            except BrokenProcessPool:
                self._reset()
                return fn(*args)

        return result

    def submit(
        self, fn: Callable[[str, _Data, int], DecodeResult], jobs: Sequence[tuple[str, _Data]], size: int
    ) -> Callable[[], list[DecodeResult]]:
        """Start decoding ``jobs`` (item, bytes); the returned function waits for the results, in order."""
        jobs = list(jobs)
        if self.workers == 0 or not jobs:
            return lambda: _run_chunk(fn, jobs, size)
        pool = self._get(self.workers)
        per = max(1, -(-len(jobs) // (2 * self.workers)))  # about two chunks per worker
        futures: list[tuple[list[tuple[str, _Data]], Future]] = []
        try:
            for s in range(0, len(jobs), per):
                part = jobs[s : s + per]
                futures.append((part, pool.submit(_run_chunk, fn, part, size)))
        except BrokenProcessPool:
            self._reset()
            return lambda: _run_chunk(fn, jobs, size)

        def results() -> list[DecodeResult]:
            out: list[DecodeResult] = []
            for part, fut in futures:
                try:
                    out.extend(fut.result())
                except BrokenProcessPool:  # a decoder crashed its process: name the items, start afresh
                    self._reset()
                    out.extend(
                        (
                            None,
                            ImageLoadError(
                                item,
                                "the decoder crashed on this image (or a neighbour)",
                                "check the file; it may be damaged",
                            ),
                        )
                        for item, _ in part
                    )
            return out

        return results


@atexit.register
def _shutdown() -> None:
    DecodePool._reset()
