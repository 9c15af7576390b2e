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

from examine.coverage import MINIBATCH_CLUSTERS
from examine.ranking import DEFAULT_POLICY, DEFAULT_PREPROCESS, POLICIES, rank, switch_budget

__all__ = ["Selector", "selectors", "MAIN_METHODS"]

Selector = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray]

#: Methods shown in the plots (the table lists every method).
MAIN_METHODS: tuple[str, ...] = ("random", DEFAULT_POLICY, "clusters", "paper", "typiclust", "margin", "tcm")


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
        from sklearn.cluster import KMeans, MiniBatchKMeans

        y = np.full(len(X), np.nan)
        rows = np.flatnonzero(labeled)
        if len(rows):
            codes = {v: i for i, v in enumerate(sorted(set(labels[rows].tolist()), key=str))}
            y[rows] = [codes[v] for v in labels[rows]]
        state = seed * 100_003 + int(labeled.sum())
        method = name
        if name == "tcm":  # TypiClust, then margin (Doucet et al. 2024), switching where examine's default does
            seen = len(np.unique(y[~np.isnan(y)]))
            method = "margin" if seen >= 2 and len(rows) >= switch_budget(seen) else "typiclust"
        if method in ("margin", "entropy"):
            return _uncertainty(UncertaintySampling, method, X, y, n_classes, batch, state)
        if method == "typiclust":
            # Full k-means up to 50 clusters, mini-batch above, as TypiClust's reference implementation does.
            big = len(rows) + batch > MINIBATCH_CLUSTERS
            algo = MiniBatchKMeans if big else KMeans
            options = {"n_init": 1, "batch_size": max(1024, 3 * (len(rows) + batch))} if big else None
            strategy = TypiClust(random_state=state, cluster_algo=algo, cluster_algo_dict=options)
        elif method == "kcenter":
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


#: examine's policies simulated besides the default: the former default ``clusters`` (coverage only), the most
#: unsure typical images of under-labeled clusters (``coverage-margin``) and the paper's static order.
#: ``class-aware``, ``pool`` and ``deflation`` (measured below random before) can be added with ``policies=``.
SIMULATED_POLICIES: tuple[str, ...] = ("clusters", "coverage-margin", "paper", f"{DEFAULT_POLICY}[pca256]")
#: The default queue in 256 PCA dimensions (:mod:`examine.queue_space`), as projects of 20,000 images or more
#: are ranked: measured on the same pools as the unreduced default.
REDUCED = f"{DEFAULT_POLICY}[pca256]"
#: The baselines: scikit-activeml's TypiClust and uncertainty sampling, and TCM (TypiClust, then margin).
BASELINES: tuple[str, ...] = ("typiclust", "margin", "entropy", "tcm")
#: Methods whose every batch re-clusters the pool into labels + batch k-means clusters (or computes a static
#: EXAMINE pass): 5-25 s per batch above 200 labels on 2 cores, so the evaluation stops them at ``--slow-limit``.
SLOW_METHODS: tuple[str, ...] = ("clusters", "coverage-margin", "paper", "typiclust", "kcenter", "probcover")
#: Measured before and left out of the default run for time (``baselines=`` adds them): k-center greedy and
#: ProbCover stayed below random at 20–200 labels on every set.
OTHER_BASELINES: tuple[str, ...] = ("kcenter", "probcover")


def selectors(
    n_classes: int,
    *,
    policies: tuple[str, ...] = SIMULATED_POLICIES,
    baselines: tuple[str, ...] = BASELINES,
) -> dict[str, Selector]:
    """Every method of the simulation, the default policy first after random.

    ``n_classes`` is given to ProbCover, which sets its ball radius from a clustering into that many
    groups, and to the uncertainty baselines' classifier (the classes a project's config names).
    """
    out: dict[str, Selector] = {"random": _random, DEFAULT_POLICY: _policy(DEFAULT_POLICY)}
    for policy in policies:
        if policy.endswith("[fixed k=20]"):  # what Label Studio serves by itself from predictions with a fixed cluster
            out[policy] = _policy(policy.split("[")[0], clusters=20)
            continue
        if policy.endswith("[pca256]"):
            out[policy] = _policy(policy.split("[")[0], dims=256)
            continue
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {sorted(POLICIES)}")
        out.setdefault(policy, _policy(policy, "none" if policy == "paper" else DEFAULT_PREPROCESS))
    for name in baselines:
        if name not in BASELINES + OTHER_BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES + OTHER_BASELINES)}")
        out[name] = _skactiveml(name, n_classes)
    return out
