"""Embeddings on disk, keyed by the sha256 of the image bytes and the encoder version.

Layout: ``root/<encoder version>/`` holds ``vectors.f32`` (raw float32 rows,
appended), ``keys.tsv`` (one ``sha256`` per row, appended after its vector is
on disk) and ``meta.json``. Append-only: a row, once written, never changes, so
readers need no lock and always see a consistent prefix; a file lock keeps
writers (there should be one) from interleaving. A crash between the two
appends leaves an orphan vector past the last key, which the next writer cuts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["EmbeddingStore", "StoreError"]

_SHA = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class StoreError(RuntimeError):
    """The store is unusable as asked (dimension mismatch, bad key, bad version)."""


class EmbeddingStore:
    """Append-only embedding store for one encoder version."""

    def __init__(self, root: str | Path, version: str, dim: int):
        if not _VERSION.match(version):
            raise StoreError(f"encoder version {version!r} is not a safe folder name")
        self.root = Path(root)
        self.version = version
        self.dim = int(dim)
        self.folder = self.root / version
        self.folder.mkdir(parents=True, exist_ok=True)
        self._vectors = self.folder / "vectors.f32"
        self._keys = self.folder / "keys.tsv"
        self._meta = self.folder / "meta.json"
        if self._meta.is_file():
            saved = json.loads(self._meta.read_text())
            if saved.get("dim") != self.dim:
                raise StoreError(f"{self.folder}: stored dim {saved.get('dim')} differs from the encoder's {self.dim}")
        else:
            self._meta.write_text(json.dumps({"version": version, "dim": self.dim}))
        self._index: dict[str, int] = {}
        self._keys_read = 0  # bytes of keys.tsv already parsed
        self.refresh()

    # ----------------------------------------------------------- reading

    def refresh(self) -> None:
        """Pick up rows appended by a writer (another process) since the last look."""
        if not self._keys.is_file():
            return
        with open(self._keys, "rb") as fh:
            fh.seek(self._keys_read)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # ignore a line still being written
        for line in data[:end].decode().splitlines():
            if line:
                self._index.setdefault(line, len(self._index))
        self._keys_read += end

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row numbers of ``keys`` (KeyError names the first missing one)."""
        try:
            return np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} has no embedding for encoder {self.version}") from None

    def matrix(self) -> np.ndarray:
        """All stored rows as a read-only memory-mapped (n, dim) float32 matrix."""
        n = len(self._index)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self._vectors, dtype=np.float32, mode="r", shape=(n, self.dim))

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The embeddings of ``keys``, in that order, as a contiguous float32 array."""
        return np.ascontiguousarray(self.matrix()[self.rows(keys)])

    # ----------------------------------------------------------- writing

    @contextmanager
    def _writer(self) -> Iterator[None]:
        with open(self.folder / "write.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.refresh()
                self._cut_orphans()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _cut_orphans(self) -> None:
        expected = len(self._index) * self.dim * 4
        if self._vectors.is_file() and self._vectors.stat().st_size > expected:
            os.truncate(self._vectors, expected)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Append embeddings for new keys; keys already stored are skipped. Returns rows added."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(keys), self.dim):
            raise StoreError(f"expected vectors of shape ({len(keys)}, {self.dim}), got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            bad = [keys[i] for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1))[:3]]
            raise StoreError(f"refusing non-finite embeddings for images {bad}")
        for k in keys:
            if not _SHA.match(k):
                raise StoreError(f"key {k!r} is not a lowercase sha256 hex digest")
        with self._writer():
            fresh: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k not in self._index and k not in fresh:
                    fresh[k] = i
            if not fresh:
                return 0
            block = np.ascontiguousarray(vectors[list(fresh.values())])
            with open(self._vectors, "ab") as fh:
                fh.write(block.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            with open(self._keys, "ab") as fh:
                fh.write("".join(f"{k}\n" for k in fresh).encode())
                fh.flush()
                os.fsync(fh.fileno())
            self.refresh()
        return len(fresh)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys without an embedding, each once, in first-seen order."""
        self.refresh()
        return list(dict.fromkeys(k for k in keys if k not in self._index))
