"""The paper's valuation protocol: does a low score flag a bad image?

* :func:`valuation_curves` — a labeled set with planted low-quality images;
  points are removed (or added) in value order and a logistic regression is
  scored on a clean test set.  EXAMINE (no labels) against random,
  leave-one-out and KNN-Shapley (both use labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from examine.baselines import knn_shapley, leave_one_out
from examine.datasets import CORRUPTIONS, corrupt
from examine.evaluate.simulation import probe_accuracy, standardize
from examine.ranking import rank

__all__ = ["auroc", "plant_corruptions", "valuation_curves"]


def auroc(score_bad: np.ndarray, is_bad: np.ndarray) -> float:
    """Area under the ROC curve of ``score_bad`` for detecting ``is_bad`` (ties count ½); NaN without both classes."""
    from scipy.stats import rankdata

    is_bad = np.asarray(is_bad, dtype=bool)
    n_pos, n_neg = int(is_bad.sum()), int((~is_bad).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(score_bad)
    return float((r[is_bad].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: The corruptions of the paper-style valuation protocol (kept fixed so that its figures stay comparable).
VALUATION_KINDS: tuple[str, ...] = CORRUPTIONS[:6]


def plant_corruptions(
    images: np.ndarray, fraction: float, rng: np.random.Generator, kinds: Sequence[str] = VALUATION_KINDS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corrupt a random ``fraction`` of the images, cycling through ``kinds``.

    Returns the new images, a boolean mask of corrupted rows and the kind per row ('' if clean).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = np.array(images, copy=True)
    bad = rng.choice(len(images), size=int(round(fraction * len(images))), replace=False)
    kind = np.full(len(images), "", dtype=object)
    for j, i in enumerate(bad):
        k = kinds[j % len(kinds)]
        out[i] = np.asarray(corrupt(images[i], k, rng)).reshape(out[i].shape)
        kind[i] = k
    mask = np.zeros(len(images), dtype=bool)
    mask[bad] = True
    return out, mask, kind


def valuation_curves(
    X: np.ndarray,
    y: np.ndarray,
    bad: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    step: int = 25,
    seed: int = 0,
    preprocess: Sequence[str] = ("none",),
    knn_k: int = 10,
) -> dict[str, Any]:
    """Values of every method for one labeled set and the accuracy curves they induce.

    Returns ``{"values", "steps", "curves": {method: {kind: (steps,)}}, "auroc": {method: float}}``;
    curve kinds: ``remove_high`` (drop the most valuable first: lower is better),
    ``remove_low`` (drop the least valuable first: higher is better), ``add_high``
    (train on the most valuable first: higher is better).
    """
    X = np.asarray(X, np.float64)
    Xs, Ts = standardize(X, X), standardize(np.asarray(X_test, np.float64), X)
    n = len(Xs)
    max_points = max(0, min(n // 2, n - 10))
    values: dict[str, np.ndarray] = {}
    for prep in preprocess:
        values["examine" if prep == preprocess[0] else f"examine[{prep}]"] = rank(
            X, policy="paper", preprocess=prep
        ).value
    values["random"] = np.random.default_rng(seed).random(n)
    values["knn-shapley"] = knn_shapley(Xs, y, Ts, y_test, k=knn_k)

    def utility(Xa: np.ndarray, ya: np.ndarray) -> float:
        return probe_accuracy(Xa, ya, Ts, y_test)

    values["leave-one-out"] = leave_one_out(Xs, y, utility)
    steps = np.arange(0, max_points + 1, step)
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name, v in values.items():
        order = np.lexsort((np.arange(n), -v))  # most valuable first
        c: dict[str, list[float]] = {"remove_high": [], "remove_low": [], "add_high": []}
        for s in steps:
            keep_h, keep_l = np.ones(n, bool), np.ones(n, bool)
            keep_h[order[:s]] = False
            keep_l[order[n - s :] if s else []] = False
            c["remove_high"].append(utility(Xs[keep_h], y[keep_h]))
            c["remove_low"].append(utility(Xs[keep_l], y[keep_l]))
            top = order[: max(s, step)]
            c["add_high"].append(utility(Xs[top], y[top]))
        curves[name] = {k: np.asarray(a) for k, a in c.items()}
    return {
        "values": values,
        "steps": steps,
        "curves": curves,
        "auroc": {name: auroc(-v, bad) for name, v in values.items()},
    }
