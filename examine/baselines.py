"""Data-valuation baselines EXAMINE's values are compared with (both use labels).

The selection baselines (k-center, TypiClust, ProbCover) come from scikit-activeml
(:mod:`examine.evaluate.selectors`).

    :func:`knn_shapley` (Jia et al. 2019, exact closed form for a K-NN utility)
    and :func:`leave_one_out` (retrain a model without each point).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from examine.validation import as_labels, as_matrix

__all__ = ["knn_shapley", "leave_one_out"]


def knn_shapley(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, k: int = 10
) -> np.ndarray:
    """Exact Shapley values of training rows for the K-NN utility (Jia et al. 2019, Theorem 1).

    Utility of a subset S for one test point: ``(1/K) Σ_{j ≤ min(K, |S|)} 1[y of j-th nearest in S = y_test]``;
    values are averaged over the test points.  Distances are Euclidean; ties are
    broken by index.
    """
    X_train = as_matrix(X_train).astype(np.float64, copy=False)
    X_test = as_matrix(X_test).astype(np.float64, copy=False)
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_train and X_test must have equal columns, got {X_train.shape}, {X_test.shape}")
    y_train = np.asarray(as_labels(y_train, len(X_train)))
    y_test = np.asarray(as_labels(y_test, len(X_test)))
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
    X = as_matrix(X)
    y = np.asarray(as_labels(y, len(X)))
    full = utility(X, y)
    keep = np.ones(len(X), dtype=bool)
    out = np.empty(len(X))
    for i in range(len(X)):
        keep[i] = False
        out[i] = full - utility(X[keep], y[keep])
        keep[i] = True
    return out
