"""EXAMINE within clusters: the queue against a step-by-step reference, and its coverage."""

from __future__ import annotations

import numpy as np
import pytest

from examine.coverage import MIN_CLUSTER_SIZE, cluster_pool, coverage_order
from examine.ranking import rank
from examine.scoring import examine_scores


def _served_one_by_one(X, labeled, assign):
    """Reference: serve one image at a time as Label Studio's per-cluster round robin would.

    Next = the cluster with the fewest labels (tiny clusters count one more), then the larger
    cluster, then the image with the highest EXAMINE score within its cluster, then the lower index.
    """
    k = assign.max() + 1
    value = np.ones(len(X))
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if len(members) >= 2:
            value[members] = examine_scores(X[members])
    sizes = np.bincount(assign, minlength=k)
    count = np.bincount(assign[labeled], minlength=k) + (sizes < MIN_CLUSTER_SIZE)
    left = set(np.flatnonzero(~labeled).tolist())
    order = []
    while left:
        i = min(left, key=lambda j: (count[assign[j]], -sizes[assign[j]], -value[j], j))
        order.append(i)
        left.remove(i)
        count[assign[i]] += 1
    return value, np.array(order, dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_order_matches_the_one_by_one_reference(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 60)), int(rng.integers(1, 8))
    X = rng.normal(size=(n, 4)) + rng.integers(0, 3, (n, 1))
    assign = rng.integers(0, k, n)
    labeled = rng.random(n) < 0.3
    value, order = coverage_order(X, labeled, assign)
    ref_value, ref_order = _served_one_by_one(X, labeled, assign)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert order.tolist() == ref_order.tolist()


def test_awkward_inputs():
    X = np.zeros((4, 3))  # all-zero embeddings: every score 1, the order by cluster size then index
    v, o = coverage_order(X, np.zeros(4, bool), np.array([0, 1, 1, 1]))
    assert sorted(o.tolist()) == [0, 1, 2, 3] and np.all(v == 1)
    v, o = coverage_order(X, np.ones(4, bool), np.zeros(4, np.int64))
    assert o.size == 0
    dup = np.repeat(np.eye(3), 4, axis=0)  # duplicates
    assert len(set(cluster_pool(dup, 3, seed=1).tolist())) == 3
    assert cluster_pool(np.ones((1, 2)), 5).tolist() == [0]


def test_cluster_pool_is_deterministic_and_clamped():
    X = np.random.default_rng(0).normal(size=(40, 5))
    a, b = cluster_pool(X, 7, seed=3), cluster_pool(X, 7, seed=3)
    assert a.tolist() == b.tolist() and a.max() < 7
    assert cluster_pool(X, 100).max() < 40
    assert cluster_pool(X, 60, seed=0).max() < 60  # the mini-batch path


def test_each_batch_lands_in_new_clusters():
    """Ten separated blobs: the first ten picks cover all ten, and after labels the next batch avoids covered blobs."""
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 0.3, (30, 10)) + 10 * np.eye(10)[c] for c in range(10)])
    blob = np.repeat(np.arange(10), 30)
    first = rank(X, policy="clusters", batch=10).order[:10]
    assert sorted(blob[first].tolist()) == list(range(10))
    labeled = np.zeros(300, bool)
    labeled[[0, 30, 60, 90, 120]] = True  # one label in each of blobs 0–4
    nxt = rank(X, labeled=labeled, policy="clusters", batch=5).order[:5]
    assert sorted(blob[nxt].tolist()) == [5, 6, 7, 8, 9]


def test_best_image_of_a_cluster_is_typical():
    """Within one tight cluster the first image served is the one closest to the cluster's direction."""
    rng = np.random.default_rng(2)
    centre = np.ones(8) / np.sqrt(8)
    X = centre + rng.normal(0, 0.05, (50, 8))
    X[7] = centre  # exactly typical
    first = rank(X, policy="clusters", clusters=1, preprocess="l2").order[0]
    assert first == 7
