"""Embeddings on disk, keyed by the sha256 of the image bytes and the encoder version.

Layout: ``root/<encoder version>/`` holds ``vectors.f32`` (raw float32 rows,
appended), ``keys.tsv`` (one ``sha256`` per row, appended after its vector is
on disk) and ``meta.json``. Append-only: a row, once written, never changes, so
readers need no lock and always see a consistent prefix; a file lock keeps
writers (there should be one) from interleaving. A crash between the two
appends leaves an orphan vector past the last key, which the next writer cuts.

Damage is detected when the store is opened: a ``vectors.f32`` shorter than its keys
(truncated copy, full disk) or a ``keys.tsv`` with lines that are not keys loses the
rows past the last complete one (their images are simply embedded again), and an
unreadable ``meta.json`` is rewritten; ``repaired`` says what was done. A dimension
mismatch is refused (StoreError naming the file), never "repaired".
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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
        self.repaired: list[str] = []  # what opening the store had to repair (empty: nothing)
        saved = self._read_meta()
        if saved is not None and saved.get("dim") != self.dim:
            raise StoreError(
                f"{self._meta}: stored dim {saved.get('dim')} differs from the encoder's {self.dim}; "
                "this folder belongs to another encoder: move it away"
            )
        if saved is None:
            self._meta.write_text(json.dumps({"version": version, "dim": self.dim}))
        self._index: dict[str, int] = {}
        self._keys_read = 0  # bytes of keys.tsv already parsed
        self._read_lock = threading.Lock()  # one process may share the store between threads
        self._repair()
        self.refresh()
        self._opened = (self._identity(self._keys), self._identity(self._vectors))

    def _read_meta(self) -> dict | None:
        """``meta.json`` as a dict; None when absent; an unreadable one is noted and rewritten."""
        if not self._meta.is_file():
            return None
        try:
            saved = json.loads(self._meta.read_text())
            if isinstance(saved, dict) and isinstance(saved.get("dim"), int):
                return saved
        except (ValueError, UnicodeDecodeError):
            pass
        self.repaired.append(f"{self._meta} was unreadable and was rewritten")
        return None

    def _repair(self) -> None:
        """Cut ``keys.tsv`` and ``vectors.f32`` to their longest consistent prefix (under the writer lock)."""
        if not self._keys.is_file():
            return
        with open(self.folder / "write.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                raw = self._keys.read_bytes()
                lines = raw[: raw.rfind(b"\n") + 1].split(b"\n")[:-1] if raw else []
                good = 0
                for line in lines:
                    if not _SHA.match(line.decode("ascii", "replace")):
                        break
                    good += 1
                row = self.dim * 4
                size = self._vectors.stat().st_size if self._vectors.is_file() else 0
                complete = min(good, size // row)
                if complete < len(lines) or (raw and not raw.endswith(b"\n")):
                    keep = b"".join(line + b"\n" for line in lines[:complete])
                    tmp = self._keys.with_name("keys.tsv.repair")
                    tmp.write_bytes(keep)
                    os.replace(tmp, self._keys)
                    self.repaired.append(
                        f"{self.folder}: {len(lines) - complete} of {len(lines)} rows were damaged "
                        f"(vectors.f32 holds {size} bytes, keys.tsv {good} valid keys) and were dropped; "
                        "their images are embedded again"
                    )
                if size > complete * row:
                    os.truncate(self._vectors, complete * row)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _identity(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def intact(self) -> bool:
        """The files are the ones this object opened and hold at least what it read (cheap: two ``stat`` calls).

        False when the folder or a file was deleted, replaced or truncated since: open the store again (which
        repairs what it can) instead of reading on. Damage that keeps the files' identity and size is only
        found by a new opening.
        """
        with self._read_lock:
            try:
                keys, vectors = self._keys.stat(), self._vectors.stat()
            except FileNotFoundError:
                return not self._index and self._opened == (None, None) and self.folder.is_dir()
            return (
                self._opened == ((keys.st_dev, keys.st_ino), (vectors.st_dev, vectors.st_ino))
                and keys.st_size >= self._keys_read
                and vectors.st_size >= len(self._index) * self.dim * 4
            )

    # ----------------------------------------------------------- reading

    def refresh(self) -> None:
        """Pick up rows appended by a writer (another process or thread) since the last look."""
        if not self._keys.is_file():
            return
        with self._read_lock:
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
        size = self._vectors.stat().st_size if self._vectors.is_file() else 0
        if size < n * self.dim * 4:
            raise StoreError(
                f"{self._vectors} holds {size} bytes, fewer than its {n} keys need ({n * self.dim * 4}): "
                "the file was truncated; open the store again to drop the damaged rows"
            )
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
            if None in self._opened:  # the first rows: the files exist from now on
                self._opened = (self._identity(self._keys), self._identity(self._vectors))
        return len(fresh)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys without an embedding, each once, in first-seen order."""
        self.refresh()
        return list(dict.fromkeys(k for k in keys if k not in self._index))
