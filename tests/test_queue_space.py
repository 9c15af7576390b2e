"""examine.queue_space: the rows the queue clusters and scores, reduced by PCA on large pools."""

from __future__ import annotations

import numpy as np
import pytest

import examine.queue_space as qs
from examine.queue_space import preprocess_embeddings, queue_space
from examine.ranking import rank


def _distances(Z: np.ndarray) -> np.ndarray:
    sq = (Z**2).sum(1)
    return sq[:, None] + sq[None, :] - 2 * Z @ Z.T


def _low_rank(n: int, d: int, r: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, r)) @ rng.normal(size=(r, d)) + 50.0).astype(np.float32)  # far from zero


@pytest.mark.parametrize("mode", ["none", "center", "l2", "center-l2"])
def test_reduced_rows_keep_every_distance_when_the_pool_spans_fewer_dimensions(mode):
    """Brute-force reference: the float64 preprocessed rows. A pool of rank 5 (+ an offset) in 40 dimensions
    projected on 8 principal directions keeps every pairwise distance (up to float32 rounding)."""
    X = _low_rank(300, 40, 5)
    X[7] = 0.0  # a zero row stays zero under L2
    want = _distances(preprocess_embeddings(X, mode))
    Z = queue_space(X, mode, dims=8)
    assert Z.shape == (300, 8) and Z.dtype == np.float64
    np.testing.assert_allclose(_distances(Z), want, atol=1e-4 * np.abs(want).max())


def test_the_sample_fits_the_basis_and_every_row_is_projected(monkeypatch):
    monkeypatch.setattr(qs, "FIT_ROWS", 50)  # the PCA sees 50 of 400 rows; the pool still spans 5 dimensions
    X = _low_rank(400, 30, 5, seed=1)
    np.testing.assert_allclose(
        _distances(queue_space(X, "center", dims=6)), _distances(preprocess_embeddings(X, "center")), atol=1e-2
    )


def test_small_or_narrow_pools_are_not_reduced(monkeypatch):
    X = _low_rank(50, 12, 3)
    for dims in (0, 12, 64):  # never, as wide as the pool, wider than it
        np.testing.assert_array_equal(queue_space(X, "center-l2", dims=dims), preprocess_embeddings(X, "center-l2"))
    np.testing.assert_array_equal(queue_space(X, "l2"), preprocess_embeddings(X, "l2"))  # below REDUCE_FROM_ROWS
    monkeypatch.setattr(qs, "REDUCE_FROM_ROWS", 50)
    monkeypatch.setattr(qs, "QUEUE_DIMS", 4)
    assert queue_space(X, "l2").shape == (50, 4)  # automatic at the threshold
    one = queue_space(X[:1], "center", dims=4)  # one row: nothing to fit, nothing reduced
    assert one.shape == (1, 12)


def test_bad_arguments_are_refused():
    X = _low_rank(20, 8, 2)
    with pytest.raises(ValueError, match="dims must be >= 0"):
        queue_space(X, "none", dims=-1)
    with pytest.raises(ValueError, match="unknown preprocess 'whiten'"):
        queue_space(X, "whiten", dims=4)


def test_the_reduced_queue_covers_every_cluster_first():
    """Ten separated clusters in 512 dimensions: the first batch of the reduced cold-start queue holds one
    image of each, as the unreduced queue's does, and the order is deterministic."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 4, (10, 512))
    y = rng.integers(0, 10, 2000)
    X = (centres[y] + rng.normal(size=(2000, 512))).astype(np.float32)
    full = rank(X, dims=0).order[:10]
    reduced = rank(X, dims=32).order[:10]
    assert sorted(y[full]) == list(range(10)) and sorted(y[reduced]) == list(range(10))
    np.testing.assert_array_equal(reduced, rank(X, dims=32).order[:10])


@pytest.mark.parametrize("dims", [0, 6])
def test_rows_give_the_queue_space_of_their_gather_exactly(dims):
    """``rows`` reads the pool X[rows] where it lies: the same numbers as passing the gather (reduced or not)."""
    X = _low_rank(300, 20, 5, seed=3)
    rows = np.sort(np.random.default_rng(0).choice(300, 250, replace=False))
    np.testing.assert_array_equal(
        queue_space(X, "center-l2", dims=dims, rows=rows), queue_space(X[rows], "center-l2", dims=dims)
    )


def test_the_space_cache_computes_once_per_matrix_rows_and_mode():
    X = _low_rank(200, 20, 5)
    X.setflags(write=False)
    cache = qs.SpaceCache()
    first = cache.get(X, "center-l2", dims=6)
    np.testing.assert_array_equal(first, queue_space(X, "center-l2", dims=6))
    assert cache.get(X, "center-l2", dims=6) is first and not first.flags.writeable
    rows = np.arange(1, 200)
    assert cache.get(X, "center-l2", dims=6, rows=rows) is not first  # other rows
    assert cache.get(X, "center", dims=6, rows=rows) is not cache.get(X, "center-l2", dims=6, rows=rows)
    other = X.copy()
    np.testing.assert_array_equal(
        cache.get(other, "center-l2", dims=6), first
    )  # same numbers, another matrix: recomputed
    cache.clear()
    assert cache.get(other, "center-l2", dims=6) is not first


def test_rank_with_a_space_cache_is_rank_without_one():
    X = _low_rank(400, 24, 6, seed=2)
    labeled = np.zeros(400, bool)
    labeled[::37] = True
    cache = qs.SpaceCache()
    for _ in range(2):  # the second call reads the kept rows
        a = rank(X, labeled=labeled, dims=8, space_cache=cache)
        b = rank(X, labeled=labeled, dims=8)
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.cluster, b.cluster)
