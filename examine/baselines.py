"""Baselines the EXAMINE rankings are compared with.

Selection (cold-start active learning):
    :func:`kcenter_greedy` (Sener & Savarese 2018) and :func:`typiclust`
    (Hacohen, Dekel & Weinshall 2022).
Data valuation (use labels):
    :func:`knn_shapley` (Jia et al. 2019, exact closed form for a K-NN utility)
    and :func:`leave_one_out` (retrain a model without each point).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["kcenter_greedy", "typiclust", "knn_shapley", "leave_one_out"]


def _check_pool(X: np.ndarray, labeled: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    labeled = np.asarray(labeled)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    if labeled.dtype != bool or labeled.shape != (len(X),):
        raise ValueError(f"labeled must be a boolean mask of shape ({len(X)},)")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return X, labeled


def kcenter_greedy(X: np.ndarray, labeled: np.ndarray, budget: int, *, seed: int = 0) -> np.ndarray:
    """Greedy k-center: repeatedly pick the unlabeled row farthest from all chosen rows.

    With nothing labeled the first row is drawn at random (``seed``).
    Returns up to ``budget`` unlabeled indices in pick order.
    """
    X, labeled = _check_pool(X, labeled, budget)
    unl = ~labeled
    budget = min(budget, int(unl.sum()))
    if budget == 0:
        return np.zeros(0, np.int64)
    sq = np.einsum("ij,ij->i", X, X)
    picks: list[int] = []
    if labeled.any():
        L = X[labeled]
        dist = np.full(len(X), np.inf)
        for start in range(0, len(L), 1024):
            B = L[start : start + 1024]
            d2 = sq[:, None] - 2 * X @ B.T + np.einsum("ij,ij->i", B, B)[None, :]
            dist = np.minimum(dist, d2.min(axis=1))
    else:
        first = int(np.random.default_rng(seed).choice(np.flatnonzero(unl)))
        picks.append(first)
        dist = sq - 2 * X @ X[first] + sq[first]
    dist = np.maximum(dist, 0.0)
    dist[~unl] = -np.inf
    for p in picks:
        dist[p] = -np.inf
    while len(picks) < budget:
        i = int(np.argmax(dist))
        picks.append(i)
        dist = np.minimum(dist, np.maximum(sq - 2 * X @ X[i] + sq[i], 0.0))
        dist[i] = -np.inf
        dist[~unl] = -np.inf
    return np.asarray(picks, np.int64)


def typiclust(
    X: np.ndarray,
    labeled: np.ndarray,
    budget: int,
    *,
    seed: int = 0,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    knn: int = 20,
) -> np.ndarray:
    """TypiClust: cluster into ``|labeled| + budget`` groups, pick the most typical row of uncovered clusters.

    Clusters come from k-means (MiniBatchKMeans above 50 clusters, as in the
    reference implementation).  Each pick goes to the cluster with the fewest
    labeled rows (ties: the largest), among clusters of at least
    ``min_cluster_size`` rows; within it the unlabeled row with the highest
    typicality ``1 / mean distance to its knn nearest neighbours in the cluster``.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    X, labeled = _check_pool(X, labeled, budget)
    budget = min(budget, int((~labeled).sum()))
    if budget == 0:
        return np.zeros(0, np.int64)
    k = int(min(labeled.sum() + budget, max_clusters, len(X)))
    if k <= 50:
        km = KMeans(n_clusters=k, n_init=1, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=seed, batch_size=max(1024, 3 * k))
    assign = km.fit_predict(X)
    sizes = np.bincount(assign, minlength=k)
    covered = np.bincount(assign[labeled], minlength=k).astype(np.float64)
    taken = labeled.copy()
    typical_cache: dict[int, np.ndarray] = {}
    picks: list[int] = []
    while len(picks) < budget:
        ok = (sizes >= min_cluster_size) & np.array([(~taken[assign == c]).any() for c in range(k)])
        if not ok.any():
            ok = np.array([(~taken[assign == c]).any() for c in range(k)])
        cand = np.flatnonzero(ok)
        c = int(cand[np.lexsort((-sizes[cand], covered[cand]))[0]])
        members = np.flatnonzero(assign == c)
        if c not in typical_cache:
            typical_cache[c] = _typicality(X[members], knn)
        typ = np.where(taken[members], -np.inf, typical_cache[c])
        i = int(members[int(np.argmax(typ))])
        picks.append(i)
        taken[i] = True
        covered[c] += 1
    return np.asarray(picks, np.int64)


def _typicality(Xc: np.ndarray, knn: int) -> np.ndarray:
    if len(Xc) == 1:
        return np.ones(1)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    d2 = np.maximum(sq[:, None] - 2 * Xc @ Xc.T + sq[None, :], 0.0)
    np.fill_diagonal(d2, np.inf)
    k = min(knn, len(Xc) - 1)
    nearest = np.sqrt(np.partition(d2, k - 1, axis=1)[:, :k])
    return 1.0 / (nearest.mean(axis=1) + 1e-12)


def knn_shapley(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, k: int = 10
) -> np.ndarray:
    """Exact Shapley values of training rows for the K-NN utility (Jia et al. 2019, Theorem 1).

    Utility of a subset S for one test point: ``(1/K) Σ_{j ≤ min(K, |S|)} 1[y of j-th nearest in S = y_test]``;
    values are averaged over the test points.  Distances are Euclidean; ties are
    broken by index.
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if X_train.ndim != 2 or X_test.ndim != 2 or X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_train and X_test must be 2-D with equal columns, got {X_train.shape}, {X_test.shape}")
    if y_train.shape != (len(X_train),) or y_test.shape != (len(X_test),):
        raise ValueError("y_train / y_test must have one label per row")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(X_train)
    values = np.zeros(n)
    sq = np.einsum("ij,ij->i", X_train, X_train)
    ranks = np.arange(1, n + 1)  # i (1-based) in the recursion
    factor = np.minimum(k, ranks[:-1]) / ranks[:-1] / k
    for start in range(0, len(X_test), 256):
        T = X_test[start : start + 256]
        d2 = sq[None, :] - 2 * T @ X_train.T
        order = np.lexsort((np.broadcast_to(np.arange(n), d2.shape), d2), axis=1)
        match = (y_train[order] == y_test[start : start + 256, None]).astype(np.float64)
        s = np.empty_like(match)
        s[:, -1] = match[:, -1] / n
        # s_i = s_{i+1} + (m_i − m_{i+1}) / K · min(K, i) / i, for i = N−1 … 1.
        steps = (match[:, :-1] - match[:, 1:]) * factor[None, :]
        s[:, :-1] = s[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
        np.add.at(values, order.ravel(), s.ravel())
    return values / len(X_test)


def leave_one_out(
    X: np.ndarray,
    y: np.ndarray,
    utility: Callable[[np.ndarray, np.ndarray], float],
) -> np.ndarray:
    """Leave-one-out values ``U(all) − U(all without i)`` for a utility of a training set."""
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels")
    full = utility(X, y)
    keep = np.ones(len(X), dtype=bool)
    out = np.empty(len(X))
    for i in range(len(X)):
        keep[i] = False
        out[i] = full - utility(X[keep], y[keep])
        keep[i] = True
    return out
