"""EXAMINE within clusters: a queue that covers the data and serves each part by its most valuable image.

The paper's score, σ1's leave-one-out drop, is to first order the squared
projection on the top singular direction, so a queue sorted by it serves one
mode of the data.  Here the pool is cut into k-means clusters and EXAMINE is
computed *inside* each cluster: on L2-normalised embeddings a cluster's top
singular direction is its typical image, so the cluster's best EXAMINE image is
its most typical one.  The queue then serves the largest clusters that hold no
label yet, each by its best image, and continues round-robin: the r-th image of
a cluster with ``c`` labels is served at level ``c + r``, larger clusters first
within a level.  This is the order Label Studio's uncertainty sampling gives
when each prediction carries its cluster (fewest solved tasks in the cluster
first, then the lowest score).

With ``k = labels + batch`` clusters (the cold-start rule of TypiClust,
Hacohen et al. 2022) at least ``batch`` clusters are uncovered at every step,
so the next batch always lands in new parts of the data.
"""

from __future__ import annotations

import numpy as np

from examine.scoring import examine_scores, value_order

__all__ = ["cluster_pool", "coverage_order"]

#: Above this many rows or clusters k-means runs in mini-batches, as in TypiClust's reference
#: implementation (seconds, not minutes, on 20,000 tasks; measured more even clusters than full k-means).
MINIBATCH_ROWS = 10_000
MINIBATCH_CLUSTERS = 50
#: Clusters smaller than this (outliers) are served one level later, as TypiClust skips them.
MIN_CLUSTER_SIZE = 5


def cluster_pool(X: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """k-means cluster index (0 … k−1) of every row of ``X``; deterministic given ``seed``."""
    n = len(X)
    k = int(max(1, min(k, n)))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    # scikit-learn is imported on first use, so a command that ranks nothing does not pay 1.5 s for it; the
    # backend imports it at start (backend.runtime), not while it answers webhooks.
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > MINIBATCH_ROWS or k > MINIBATCH_CLUSTERS:
        km = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=seed, batch_size=max(1024, 3 * k))
    else:
        km = KMeans(n_clusters=k, n_init=1, random_state=seed)
    return km.fit_predict(np.asarray(X, dtype=np.float64)).astype(np.int64)


def coverage_order(
    X: np.ndarray, labeled: np.ndarray, assign: np.ndarray, within: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Serve clusters by coverage, each by its own EXAMINE order.

    Parameters
    ----------
    X : (n, d) float array, already preprocessed (L2-normalised rows recommended).
    labeled : (n,) bool mask of labeled rows.
    assign : (n,) cluster index of each row.
    within : (n,) value that orders each cluster instead of EXAMINE (higher first), optional.

    Returns
    -------
    value : (n,) EXAMINE score of each row within its cluster (1 = the cluster's best).
    order : indices of the unlabeled rows, first served first.
    """
    n = len(X)
    k = int(assign.max()) + 1 if n else 0
    sizes = np.bincount(assign, minlength=k)
    covered = np.bincount(assign[labeled], minlength=k)
    value = np.ones(n, dtype=np.float64)
    level = np.zeros(n, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(assign == c)
        if within is not None:
            value[members] = within[members]
        elif len(members) >= 2:
            value[members] = examine_scores(X[members])
        unl = members[~labeled[members]]
        if len(unl):
            rank_in_cluster = np.empty(len(unl), dtype=np.int64)
            rank_in_cluster[value_order(value[unl])] = np.arange(len(unl))
            level[unl] = covered[c] + rank_in_cluster + (sizes[c] < MIN_CLUSTER_SIZE)
    rows = np.flatnonzero(~labeled)
    # Level first (fewest labels in the cluster), then larger clusters, then the better image, then the index.
    keys = (rows, -value[rows], -sizes[assign[rows]], level[rows])
    return value, rows[np.lexsort(keys)].astype(np.int64)
