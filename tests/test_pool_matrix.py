"""backend.pool_matrix: one kept embedding matrix per project, rebuilt only when its rows change."""

from __future__ import annotations

import numpy as np
import pytest

from backend.pool_matrix import PoolMatrix
from examine.probe import column_moments
from examine.store import EmbeddingStore


def _store(tmp_path, n=6, version="enc-a"):
    store = EmbeddingStore(tmp_path, version, 3)
    keys = [f"{i:064x}" for i in range(n)]
    store.add(keys, np.arange(n * 3, dtype=np.float32).reshape(n, 3))
    return store, keys


def test_the_same_rows_are_read_once_and_are_read_only(tmp_path):
    store, keys = _store(tmp_path)
    pool = PoolMatrix()
    X = pool.get(store, keys[::-1])
    np.testing.assert_array_equal(X, store.get(keys[::-1]))
    assert pool.get(store, keys[::-1]) is X
    with pytest.raises(ValueError):
        X[0, 0] = 1.0
    m = pool.moments(X)
    assert pool.moments(X) is m
    np.testing.assert_array_equal(m[0], column_moments(X)[0])


def test_other_rows_or_another_store_give_a_new_matrix(tmp_path):
    store, keys = _store(tmp_path)
    pool = PoolMatrix()
    X = pool.get(store, keys)
    fewer = pool.get(store, keys[:-1])  # a task deleted
    assert fewer is not X and len(fewer) == len(keys) - 1
    other, _ = _store(tmp_path, version="enc-b")  # a new encoder: same keys, other vectors folder
    assert pool.get(other, keys[:-1]) is not fewer
    assert pool.moments(X) is not pool.moments(X)  # moments of a matrix no longer kept are computed, not kept
    pool.clear()
    assert pool.get(other, keys[:-1]) is not fewer
