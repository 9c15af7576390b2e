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


def test_the_rows_are_kept_until_a_task_comes_or_goes_a_key_changes_or_the_store_grows(tmp_path):
    from backend.pool_rows import pool_rows
    from backend.state import ProjectState
    from backend.task_info import TaskInfo

    store, keys = _store(tmp_path)
    state = ProjectState(pid=1)
    state.tasks = {t: TaskInfo(uri=f"/x/{t}", key=keys[t]) for t in (3, 1, 2)}
    state.tasks[4] = TaskInfo(uri="/x/4", key=f"{99:064x}")  # its embedding was lost
    state.tasks[5] = TaskInfo(uri="/x/5")  # not embedded yet
    first = pool_rows(state, store)
    assert [t for t, _ in first.rows] == [1, 2, 3] and first.lost == 1 and first.keys == [keys[1], keys[2], keys[3]]
    assert list(first.tids) == [1, 2, 3]
    state.tasks[2].labeled = True  # a label: the same rows (they hold the live records)
    assert pool_rows(state, store) is first and first.rows[1][1].labeled
    state.tasks[5].key = keys[5]
    second = pool_rows(state, store)
    assert second is not first and [t for t, _ in second.rows] == [1, 2, 3, 5]
    del state.tasks[1]
    third = pool_rows(state, store)
    assert [t for t, _ in third.rows] == [2, 3, 5]
    store.add([f"{99:064x}"], np.zeros((1, 3), np.float32))  # the lost embedding is back
    fourth = pool_rows(state, store)
    assert fourth is not third and fourth.lost == 0 and [t for t, _ in fourth.rows] == [2, 3, 4, 5]
    state.tasks.setdefault(2, TaskInfo())  # already there: nothing moved
    assert pool_rows(state, store) is fourth
