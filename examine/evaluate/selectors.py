"""Who picks the next batch: the ranking policies and the baselines they are judged against.

A selector maps ``(X, labeled mask, revealed labels, batch, seed)`` to the row
indices of the next batch.  Baselines, as scikit-activeml implements them:
random, k-center greedy (CoreSet, Sener & Savarese 2018), and the cold-start
methods TypiClust (Hacohen et al., ICML 2022) and ProbCover (Yehuda et al.,
NeurIPS 2022).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from examine.ranking import DEFAULT_POLICY, DEFAULT_PREPROCESS, POLICIES, rank

__all__ = ["Selector", "selectors", "MAIN_METHODS"]

Selector = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray]

#: Methods shown in the plots (the table lists every method).
MAIN_METHODS: tuple[str, ...] = ("random", DEFAULT_POLICY, "paper", "class-aware", "kcenter", "typiclust", "probcover")


def _random(X: np.ndarray, labeled: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, int(labeled.sum())])
    return rng.choice(np.flatnonzero(~labeled), size=batch, replace=False)


def _policy(policy: str, preprocess: str | None = None, **options: Any) -> Selector:
    def select(X: np.ndarray, labeled: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> np.ndarray:
        lab = [labels[i] if labeled[i] else None for i in range(len(X))]
        kwargs: dict[str, Any] = dict(options)
        if preprocess is not None:
            kwargs["preprocess"] = preprocess
        return rank(X, labeled=labeled, labels=lab, policy=policy, seed=seed, batch=batch, **kwargs).order[:batch]

    return select


def _skactiveml(name: str, n_classes: int) -> Selector:
    """A scikit-activeml pool strategy; labels are mapped to integers, unlabeled rows are NaN."""

    def select(X: np.ndarray, labeled: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> np.ndarray:
        from skactiveml.pool import CoreSet, ProbCover, TypiClust, UncertaintySampling

        y = np.full(len(X), np.nan)
        rows = np.flatnonzero(labeled)
        if len(rows):
            codes = {v: i for i, v in enumerate(sorted(set(labels[rows].tolist()), key=str))}
            y[rows] = [codes[v] for v in labels[rows]]
        state = seed * 100_003 + int(labeled.sum())
        if name in ("margin", "entropy"):
            return _uncertainty(UncertaintySampling, name, X, y, n_classes, batch, state)
        if name == "typiclust":
            strategy = TypiClust(random_state=state)
        elif name == "kcenter":
            strategy = CoreSet(random_state=state)
        else:
            strategy = ProbCover(n_classes=n_classes, random_state=state)
        return np.asarray(strategy.query(X, y, batch_size=batch), dtype=np.int64)

    return select


def _uncertainty(strategy_cls: Any, name: str, X: np.ndarray, y: np.ndarray, n_classes: int, batch: int, state: int):
    """scikit-activeml's margin or entropy sampling with the evaluation's probe (standardised logistic regression).

    Before two classes are labeled the classifier knows nothing, and the pick is random (as scikit-activeml does).
    """
    from skactiveml.classifier import SklearnClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labeled = ~np.isnan(y)
    if len(np.unique(y[labeled])) < 2:
        rng = np.random.default_rng(state)
        return rng.choice(np.flatnonzero(~labeled), size=batch, replace=False)
    clf = SklearnClassifier(
        make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500, tol=1e-3)),
        classes=np.arange(n_classes),
        random_state=state,
    )
    method = "margin_sampling" if name == "margin" else "entropy"
    strategy = strategy_cls(method=method, random_state=state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(strategy.query(X, y, clf=clf, batch_size=batch), dtype=np.int64)


#: Policies simulated besides the default: the paper's static order, and the probe's predicted classes as
#: clusters (``class-aware``).  ``pool`` and ``deflation`` (measured below random before) can be added with
#: ``policies=``; ``deflation`` costs seconds per batch on 768-d embeddings.
SIMULATED_POLICIES: tuple[str, ...] = ("paper", "class-aware")


def selectors(n_classes: int, *, policies: tuple[str, ...] = SIMULATED_POLICIES) -> dict[str, Selector]:
    """Every method of the simulation, the default policy first after random.

    ``n_classes`` is given to ProbCover, which sets its ball radius from a
    clustering into that many groups (it is the only method told the number of classes).
    """
    out: dict[str, Selector] = {"random": _random, DEFAULT_POLICY: _policy(DEFAULT_POLICY)}
    # What Label Studio serves by itself from predictions that carry a fixed cluster (its per-cluster round robin).
    out[f"{DEFAULT_POLICY}[fixed k=20]"] = _policy(DEFAULT_POLICY, clusters=20)
    for policy in policies:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {sorted(POLICIES)}")
        out.setdefault(policy, _policy(policy, "none" if policy == "paper" else DEFAULT_PREPROCESS))
    out["kcenter"] = _skactiveml("kcenter", n_classes)
    out["typiclust"] = _skactiveml("typiclust", n_classes)
    out["probcover"] = _skactiveml("probcover", n_classes)
    return out
