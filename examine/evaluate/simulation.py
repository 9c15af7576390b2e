"""The annotation simulation: each method labels a pool batch by batch; a linear probe scores each budget.

Labels are hidden from the methods until a batch is chosen; after each batch
they are revealed (as an annotator's would be).  At every budget a logistic
regression on the standardised embeddings of the labeled rows is scored on a
held-out test set.  Each seed draws its own pool; all methods see the same pool
per seed, so differences to random are paired.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from examine.evaluate.selectors import Selector
from examine.ranking import BATCH

__all__ = ["SimulationResult", "simulate_annotation", "probe_accuracy", "probe_map", "standardize", "single_thread"]

BUDGETS: tuple[int, ...] = (10, 20, 50, 100, 200, 300, 500, 750, 1000)
#: The two bands every summary reports: the cold start, and the long run of a real project.
BANDS: tuple[tuple[int, int], ...] = ((20, 200), (300, 1000))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One BLAS thread: the many small fits here are several times slower when threads contend."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def standardize(X: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``X`` centred and scaled by the per-feature mean and std of ``ref`` (constant features scale by 1)."""
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    sd[sd == 0] = 1.0
    return (X - mu) / sd


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of scikit-learn's LogisticRegression (C=1) fitted on already standardised rows.

    With a single training class the prediction is that class; with no rows, 0.
    """
    return probe_accuracies(X_train, y_train, [(X_test, y_test)])[0]


def probe_accuracies(
    X_train: np.ndarray, y_train: np.ndarray, sets: Sequence[tuple[np.ndarray, np.ndarray]]
) -> list[float]:
    """:func:`probe_accuracy` of one fit on each ``(X, y)`` of ``sets`` (NaN for an empty set); multi-label
    ``y`` (a boolean matrix): :func:`probe_map`."""
    if np.ndim(y_train) == 2:
        return probe_map(X_train, y_train, sets)
    if len(y_train) == 0:
        return [0.0] * len(sets)
    if len(np.unique(y_train)) == 1:
        return [float(np.mean(y == y_train[0])) if len(y) else float("nan") for _, y in sets]
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=500, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny sets
        clf.fit(X_train, y_train)
    return [float(np.mean(clf.predict(X) == y)) if len(y) else float("nan") for X, y in sets]


def probe_map(X_train: np.ndarray, y_train: np.ndarray, sets: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Multi-label: one logistic regression (C=1) per class, present or not, fitted on standardised rows; on each
    set the mean over classes present in it of the average precision (mAP). A class whose labels are all one
    way scores every row the same (its average precision is then the class's frequency in the set)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    scores = [np.zeros((len(X), y_train.shape[1])) for X, _ in sets]
    for c in range(y_train.shape[1]):
        yc = y_train[:, c]
        if len(yc) == 0 or yc.all() or not yc.any():
            continue
        clf = LogisticRegression(C=1.0, max_iter=500, tol=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X_train, yc)
        for s, (X, _) in zip(scores, sets):
            if len(X):
                s[:, c] = clf.decision_function(X)
    out = []
    for s, (_, y) in zip(scores, sets):
        present = [c for c in range(y.shape[1]) if len(y) and y[:, c].any()]
        out.append(
            float(np.mean([average_precision_score(y[:, c], s[:, c]) for c in present])) if present else float("nan")
        )
    return out


@dataclass
class SimulationResult:
    """Accuracy per method, seed and budget, and the seconds each method spent choosing."""

    budgets: list[int]
    accuracy: dict[str, np.ndarray]  # method -> (seeds, budgets)
    seconds: dict[str, float] = field(default_factory=dict)
    prelabel: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # method -> (seeds, budgets): the probe on the unlabeled pool

    def mean_std(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over seeds per budget (NaN at budgets the method was not run to)."""
        a = self.accuracy[method]
        ran = ~np.isnan(a).any(axis=0)
        mu, sd = np.full(a.shape[1], np.nan), np.full(a.shape[1], np.nan)
        mu[ran], sd[ran] = a[:, ran].mean(axis=0), a[:, ran].std(axis=0)
        return mu, sd

    def ran_to(self, method: str) -> int:
        """The largest budget the method was run to."""
        ran = ~np.isnan(self.accuracy[method]).any(axis=0)
        return max((b for b, r in zip(self.budgets, ran) if r), default=0)

    def columns(self, budgets: tuple[int, int] = (20, 200)) -> list[int]:
        """Indices of the budgets within ``budgets`` (inclusive), the range every summary averages over."""
        return [j for j, b in enumerate(self.budgets) if budgets[0] <= b <= budgets[1]]

    def delta(self, method: str, budgets: tuple[int, int] = (20, 200), against: str = "random") -> tuple[float, float]:
        """Mean over seeds of the paired gain over ``against``, averaged over budgets in ``budgets``, and its std over seeds.

        NaN when no budget falls in ``budgets``.
        """
        cols = self.columns(budgets)
        d = (self.accuracy[method] - self.accuracy[against])[:, cols]
        if not cols or np.isnan(d).any():
            return float("nan"), float("nan")
        d = d.mean(axis=1)
        return float(d.mean()), float(d.std())

    def labels_to_reach(self, method: str, target: float) -> float | None:
        """Labels at which the mean accuracy curve first reaches ``target`` (linear between budgets; None: never)."""
        mu = self.mean_std(method)[0]
        for j, (b, a) in enumerate(zip(self.budgets, mu)):
            if np.isnan(a):
                return None
            if a >= target:
                if j == 0:
                    return float(b)
                b0, a0 = self.budgets[j - 1], mu[j - 1]
                return float(b0 + (b - b0) * (target - a0) / (a - a0))
        return None


def simulate_annotation(
    X_all: np.ndarray,
    y_all: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    methods: dict[str, Selector],
    *,
    budgets: Sequence[int] = BUDGETS[:-1],
    batch: int = BATCH,
    seeds: int = 5,
    pool_size: int | None = None,
    limits: dict[str, int] | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = lambda s: None,
) -> SimulationResult:
    """Run every method on ``seeds`` pools of ``pool_size`` rows of ``X_all``.

    Selectors see the raw embeddings; the probe sees them standardised with the
    statistics of ``X_all`` (the same for every method).  ``limits`` stops a method
    at a budget (its accuracy beyond is NaN): for selectors too slow to run further.
    ``jobs`` > 1 runs (seed, method) pairs in that many forked processes (the results
    are the same: every pair is deterministic given its seed).
    """
    X_all = np.asarray(X_all, dtype=np.float64)
    y_all = np.asarray(y_all)
    if len(X_all) != len(y_all) or len(X_test) != len(y_test):
        raise ValueError("embeddings and labels differ in length")
    if y_all.ndim not in (1, 2):
        raise ValueError(f"labels must be one class per image or a (images, classes) matrix, got shape {y_all.shape}")
    budgets = sorted(int(b) for b in budgets)
    if not budgets or budgets[0] < 1:
        raise ValueError("budgets must be positive")
    if "random" not in methods:
        raise ValueError("methods must include 'random' (the paired reference)")
    Xs = standardize(X_all, X_all)
    Ts = standardize(np.asarray(X_test, dtype=np.float64), X_all)
    pool_size = len(Xs) if pool_size is None else min(pool_size, len(Xs))
    if budgets[-1] > pool_size:
        raise ValueError(f"largest budget {budgets[-1]} exceeds the pool size {pool_size}")
    acc = {m: np.full((seeds, len(budgets)), np.nan) for m in methods}
    pre = {m: np.full((seeds, len(budgets)), np.nan) for m in methods}
    limits = limits or {}
    secs = {m: 0.0 for m in methods}
    job = _Job(X_all, Xs, y_all, Ts, np.asarray(y_test), methods, budgets, batch, pool_size, limits)
    pairs = [(seed, name) for seed in range(seeds) for name in methods]
    for seed, name, acc_row, pre_row, spent in _map(job, pairs, jobs):
        acc[name][seed], pre[name][seed] = acc_row, pre_row
        secs[name] += spent
        log(f"  seed {seed} {name:<24} " + " ".join(f"{a:.3f}" for a in acc_row if not np.isnan(a)))
    return SimulationResult(budgets, acc, secs, pre)


@dataclass
class _Job:
    """What every (seed, method) run needs; module-level so that forked workers inherit it."""

    X_all: np.ndarray
    Xs: np.ndarray
    y_all: np.ndarray
    Ts: np.ndarray
    y_test: np.ndarray
    methods: dict[str, Selector]
    budgets: list[int]
    batch: int
    pool_size: int
    limits: dict[str, int]

    def run(self, seed: int, name: str) -> tuple[int, str, np.ndarray, np.ndarray, float]:
        """One method on one seed's pool: accuracy and pre-annotation accuracy per budget, seconds choosing."""
        rows = np.sort(np.random.default_rng(1000 + seed).choice(len(self.Xs), size=self.pool_size, replace=False))
        X, Xc, y = self.X_all[rows], self.Xs[rows], self.y_all[rows]
        select = self.methods[name]
        acc = np.full(len(self.budgets), np.nan)
        pre = np.full(len(self.budgets), np.nan)
        spent = 0.0
        labeled = np.zeros(len(X), dtype=bool)
        revealed = np.full(len(X), None, dtype=object)
        for bi, b in enumerate(self.budgets):
            if b > self.limits.get(name, self.budgets[-1]):
                break
            while labeled.sum() < b:
                k = min(self.batch, b - int(labeled.sum()))
                t0 = time.perf_counter()
                pick = np.asarray(select(X, labeled, revealed, k, seed), dtype=np.int64)
                spent += time.perf_counter() - t0
                if len(pick) != k or labeled[pick].any() or len(set(pick.tolist())) != k:
                    raise RuntimeError(f"selector {name!r} returned an invalid batch")
                labeled[pick] = True
                for i in pick:  # multi-label: the set of classes the image holds
                    revealed[i] = frozenset(np.flatnonzero(y[i]).tolist()) if y.ndim == 2 else y[i]
            acc[bi], pre[bi] = probe_accuracies(
                Xc[labeled], y[labeled], [(self.Ts, self.y_test), (Xc[~labeled], y[~labeled])]
            )
        return seed, name, acc, pre, spent


_CURRENT: _Job | None = None


def _run_pair(pair: tuple[int, str]) -> tuple[int, str, np.ndarray, np.ndarray, float]:
    assert _CURRENT is not None
    with single_thread():
        return _CURRENT.run(*pair)


def _map(
    job: _Job, pairs: list[tuple[int, str]], jobs: int
) -> Iterator[tuple[int, str, np.ndarray, np.ndarray, float]]:
    """Run the pairs in order (jobs = 1) or in forked worker processes, yielding results as they come."""
    global _CURRENT
    if jobs <= 1 or len(pairs) <= 1:
        for pair in pairs:
            yield job.run(*pair)
        return
    import multiprocessing

    _CURRENT = job
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(pairs))) as pool:
            yield from pool.imap_unordered(_run_pair, pairs)
    finally:
        _CURRENT = None
