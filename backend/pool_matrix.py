"""The project's embedding matrix and its column moments, kept in memory while its rows stay the same.

Every re-rank reads the pool's embeddings in task order. At 200,000 tasks × 3,072 dimensions that is a
2.4 GB gather from the store and two passes for the probe's column moments: seconds per label, paid again
for the same rows. :class:`PoolMatrix` keeps one copy per project, keyed by the store and the exact list
of row keys, and builds a new one only when they change (tasks added or deleted, a new encoder).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from examine.probe import column_moments
from examine.queue_space import SpaceCache
from examine.store import EmbeddingStore

__all__ = ["PoolMatrix", "keys_fingerprint"]


def keys_fingerprint(keys: Sequence[str]) -> str:
    """The sha256 of image keys in order: which rows a pool holds (the kept matrix, the screening's last pool)."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


class PoolMatrix:
    """One project's kept embedding matrix (read-only) and its column moments."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str] | None = None
        self._X: np.ndarray | None = None
        self._moments: tuple[np.ndarray, np.ndarray] | None = None
        self.space = SpaceCache()  # the queue's PCA rows of the kept matrix (examine.ranking.rank's space_cache)

    def get(self, store: EmbeddingStore, keys: Sequence[str], *, fingerprint: str | None = None) -> np.ndarray:
        """The embeddings of ``keys`` in that order (read-only: shared by every re-rank of the same rows);
        ``fingerprint``: the caller's sha256 of the keys joined by newlines, when it keeps one."""
        key = (str(store.folder), fingerprint or keys_fingerprint(keys))
        with self._lock:
            if key == self._key and self._X is not None:
                return self._X
            self._X = self._moments = None  # the old copy goes before the new one is read (memory)
            self.space.clear()
            X = store.get(keys)
            X.setflags(write=False)
            self._key, self._X = key, X
            return X

    def moments(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column mean and standard deviation of ``X`` (the matrix :meth:`get` returned), computed once."""
        with self._lock:
            if X is self._X and self._moments is not None:
                return self._moments
            found = column_moments(X)
            if X is self._X:
                self._moments = found
            return found

    def clear(self) -> None:
        """Forget the kept matrix (its memory is freed once no re-rank holds it)."""
        with self._lock:
            self._key = self._X = self._moments = None
            self.space.clear()
