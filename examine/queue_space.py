"""The rows the queue clusters and scores: preprocessed embeddings, on large pools reduced by PCA.

The queue's k-means and its exact EXAMINE pass inside each cluster cost O(n·d·k) and O(k·d³): at
200,000 images × 3,072 dimensions (the default CPU read-out) one re-rank took 817 s and 8 GB, most of
it in d × d eigendecompositions, one per cluster. Above :data:`REDUCE_FROM_ROWS` rows the
preprocessed rows are projected on their top :data:`QUEUE_DIMS` principal directions (scikit-learn's
randomized PCA, fitted on a seeded sample of :data:`FIT_ROWS` rows), so clustering and EXAMINE run in
256 dimensions; the probe keeps reading the full embeddings. Rows are preprocessed and projected in
float32 blocks, so the pool is never copied to float64 whole. Below the threshold nothing changes:
the committed simulation (``benchmarks/RESULTS.md``) measured the unreduced queue, and its
``adaptive[pca256]`` rows measure the reduced one on the same pools.
"""

from __future__ import annotations

import hashlib
import threading
import weakref

import numpy as np

__all__ = [
    "QUEUE_DIMS",
    "REDUCE_FROM_ROWS",
    "FIT_ROWS",
    "PREPROCESSING",
    "SpaceCache",
    "preprocess_embeddings",
    "queue_space",
]

#: Dimensions the queue works in on large pools.
QUEUE_DIMS = 256
#: Pools with at least this many rows (and more than QUEUE_DIMS columns) are reduced.
REDUCE_FROM_ROWS = 20_000
#: Rows the PCA is fitted on (a seeded sample): its cost stays bounded however large the pool.
FIT_ROWS = 10_000
_BLOCK = 256  # rows per float32 block (3 MB at 3,072 dims: it stays in cache)

PREPROCESSING: tuple[str, ...] = ("none", "center", "l2", "center-l2")


def _check_mode(mode: str) -> None:
    if mode not in PREPROCESSING:
        raise ValueError(f"unknown preprocess {mode!r}; choose one of {sorted(PREPROCESSING)}")


def preprocess_embeddings(X: np.ndarray, mode: str) -> np.ndarray:
    """Return a float64 copy of ``X`` centred and/or L2-normalised per ``mode``.

    ``mode`` is one of :data:`PREPROCESSING`.  Zero rows stay zero under L2 normalisation.
    """
    _check_mode(mode)
    X = np.array(X, dtype=np.float64, copy=True)
    if "center" in mode:
        X -= X.mean(axis=0, keepdims=True)
    if "l2" in mode:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        np.divide(X, norms, out=X, where=norms > 0)
    return X


def _block(X: np.ndarray, rows: np.ndarray | None, start: int) -> np.ndarray:
    """Rows ``start`` … ``start + _BLOCK`` of the pool ``X[rows]`` (a slice of ``X`` when ``rows`` is None)."""
    return X[start : start + _BLOCK] if rows is None else X[rows[start : start + _BLOCK]]


def _column_mean(X: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    total = np.zeros(X.shape[1])
    for start in range(0, n, _BLOCK):
        total += _block(X, rows, start).sum(axis=0, dtype=np.float64)
    return total / max(n, 1)


def _prepare_block(block: np.ndarray, mean: np.ndarray | None, l2: bool) -> np.ndarray:
    out = block - mean if mean is not None else np.array(block, dtype=np.float32, copy=True)
    out = out.astype(np.float32, copy=False)
    if l2:
        norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64)).astype(np.float32)[:, None]
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def queue_space(
    X: np.ndarray, mode: str, *, dims: int | None = None, seed: int = 0, rows: np.ndarray | None = None
) -> np.ndarray:
    """The float64 rows the queue clusters and scores.

    ``dims=None`` reduces pools of at least :data:`REDUCE_FROM_ROWS` rows to :data:`QUEUE_DIMS`
    dimensions; ``dims=0`` never reduces; a positive ``dims`` reduces any pool wider than it.  A
    reduced pool is preprocessed per ``mode`` (as :func:`preprocess_embeddings`), then projected on the
    top ``dims`` principal directions of a seeded sample of at most :data:`FIT_ROWS` preprocessed rows.
    Unreduced, it is :func:`preprocess_embeddings` itself. ``rows``: the pool is ``X[rows]`` (equal to
    passing that gather, without copying a large pool).
    """
    _check_mode(mode)
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    n, d = (len(X) if rows is None else len(rows)), X.shape[1]
    if dims is None:
        dims = QUEUE_DIMS if n >= REDUCE_FROM_ROWS else 0
    if dims < 0:
        raise ValueError(f"dims must be >= 0, got {dims}")
    k = min(dims, n - 1, d)
    if dims == 0 or d <= dims or k < 1:
        return preprocess_embeddings(X if rows is None else X[rows], mode)
    from sklearn.decomposition import PCA  # on first use (see examine.coverage)

    mean = _column_mean(X, rows, n).astype(np.float32) if "center" in mode else None
    l2 = "l2" in mode
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, FIT_ROWS), replace=False))
    if rows is not None:
        sample = rows[sample]
    pca = PCA(n_components=k, svd_solver="randomized", iterated_power=3, random_state=seed)
    fit_rows = np.concatenate(
        [_prepare_block(X[sample[i : i + _BLOCK]], mean, l2) for i in range(0, len(sample), _BLOCK)]
    )
    pca.fit(fit_rows)
    del fit_rows
    basis = pca.components_.astype(np.float32).T  # (d, k)
    shift = (pca.mean_.astype(np.float32) @ basis).astype(np.float64)
    out = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, _BLOCK):
        out[start : start + _BLOCK] = _prepare_block(_block(X, rows, start), mean, l2) @ basis
    out -= shift
    return out


class SpaceCache:
    """The last :func:`queue_space` of one matrix, for a caller that ranks the same pool again.

    The backend re-ranks its pool after labels: only which rows are labeled changes, not the embeddings, so the
    PCA and the projection (4–5 s at 200,000 × 3,072 on two cores) are done once per pool. One entry: a new
    matrix, other rows, mode, dimensions or seed replace it. An unreduced space (a pool under
    :data:`REDUCE_FROM_ROWS` rows) is not kept: it is a float64 copy of the pool, cheap to make again. The matrix
    must not change in place (the backend's is read-only).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._X: weakref.ref[np.ndarray] | None = None  # held weakly: the caller decides when the pool goes
        self._space: np.ndarray | None = None

    def get(
        self, X: np.ndarray, mode: str, *, dims: int | None = None, seed: int = 0, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """:func:`queue_space` ``(X, mode, dims=dims, seed=seed, rows=rows)``, computed once (read-only)."""
        picked = None if rows is None else hashlib.sha1(np.ascontiguousarray(rows, np.int64).tobytes()).hexdigest()
        key = (X.shape, mode, dims, seed, picked)
        with self._lock:
            if self._X is not None and self._X() is X and self._key == key and self._space is not None:
                return self._space
            self._X = self._space = None  # the old one goes first (memory)
            space = queue_space(X, mode, dims=dims, seed=seed, rows=rows)
            if space.shape[1] < X.shape[1]:  # only a reduced space is kept: the PCA is what costs
                space.setflags(write=False)
                self._X, self._key, self._space = weakref.ref(X), key, space
            return space

    def clear(self) -> None:
        """Forget the kept rows."""
        with self._lock:
            self._X = self._key = self._space = None
