"""What the labels teach: a linear probe on the stored embeddings.

A :class:`Probe` is scikit-learn's LogisticRegression (C=1) on embeddings
standardised per feature with the statistics of the whole pool (labeled and
unlabeled rows alike), the same probe that ``examine evaluate`` scores queues
with.  It gives

- the class of every image and its probability (pre-annotations),
- the margin between the two most probable classes (how unsure it is: the
  queue's uncertainty signal),
- a cross-validated accuracy and the label count per class (what an admin asks:
  is it learning yet?).

The classes may be given up front (a Label Studio config names them before any
is labeled); classes never labeled get probability 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

__all__ = ["Probe", "ProbeError", "column_moments", "labeled_rows", "linear_logits"]

#: At most this many folds for the cross-validated accuracy.
CV_FOLDS = 5
#: Above this many labels the cross-validation uses a stratified sample of them (its cost stays bounded).
CV_MAX_ROWS = 2000
_CHUNK = 512  # rows per float64 block when standardising or predicting (a block this size stays in cache: 4× faster than 8192 at 3,072 dims)


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation in float64, two passes over row blocks.

    Equal to ``X.mean(0)``, ``X.std(0)`` in float64 without a float64 copy of ``X``.
    """
    X = np.asarray(X)
    n = max(len(X), 1)
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), _CHUNK):
        total += np.asarray(X[start : start + _CHUNK], dtype=np.float64).sum(axis=0)
    mean = total / n
    sq = np.zeros(X.shape[1])
    for start in range(0, len(X), _CHUNK):
        block = np.asarray(X[start : start + _CHUNK], dtype=np.float64) - mean
        sq += np.einsum("ij,ij->j", block, block)
    return mean, np.sqrt(sq / n)


def linear_logits(X: np.ndarray, mean: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``(X - mean) @ weights + bias`` as an ``(n, h)`` float64 array, in row blocks (a pool of 200,000 float32
    embeddings is never copied to float64 whole).

    float32 rows stay float32: centred on a float32 mean (no cancellation in the fold), then one float32 product
    per block, 2-3× faster than converting each block; the logits agree to ~1e-6.
    """
    X = np.asarray(X)
    low = X.dtype == np.float32
    centre = mean.astype(np.float32) if low else mean
    shift = bias + (centre - mean) @ weights
    w = weights.astype(np.float32) if low else weights
    out = np.empty((len(X), weights.shape[1]))
    for start in range(0, len(X), _CHUNK):
        block = (
            X[start : start + _CHUNK] - centre if low else np.asarray(X[start : start + _CHUNK], np.float64) - centre
        )
        out[start : start + len(block)] = (block @ w).astype(np.float64) + shift
    return out


class ProbeError(ValueError):
    """The labels cannot train a probe (fewer than two classes, shapes that do not match)."""


def labeled_rows(labels: Sequence[Any] | None, rows: np.ndarray) -> tuple[np.ndarray, list[Hashable]]:
    """The rows among ``rows`` whose label is set (not None / NaN), and their labels."""
    have: list[int] = []
    vals: list[Hashable] = []
    if labels is None:
        return np.zeros(0, np.int64), vals
    for i in rows:
        lab = labels[int(i)]
        if lab is None or (isinstance(lab, float) and math.isnan(lab)):
            continue
        if isinstance(lab, np.generic):
            lab = lab.item()
        have.append(int(i))
        vals.append(lab)
    return np.asarray(have, np.int64), vals


class Probe:
    """Logistic regression on standardised embeddings.

    Parameters
    ----------
    C : float
        Inverse L2 strength of scikit-learn's LogisticRegression (1, as in the evaluation).
    max_iter : int
        lbfgs iterations.
    cv : bool
        Compute :attr:`cv_accuracy_` while fitting (``CV_FOLDS``-fold stratified, when every
        labeled class has at least two labels).

    Attributes (after :meth:`fit`)
    ------------------------------
    classes_ : list
        Every class the probe can output: the given ``classes`` first (in their order), then
        any other class seen in the labels.
    counts_ : dict
        Labels per class (0 for a class never labeled).
    cv_accuracy_ : float or None
        Cross-validated accuracy on the labeled rows (None when it cannot be estimated).
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 500, cv: bool = False):
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.cv = bool(cv)

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        X: np.ndarray,
        y: Sequence[Hashable],
        *,
        classes: Sequence[Hashable] | None = None,
        reference: np.ndarray | None = None,
        moments: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Probe:
        """Fit on labeled rows ``X`` with labels ``y`` (≥ 2 distinct).

        ``reference`` (default ``X``) gives the per-feature mean and standard deviation used to
        standardise: pass the whole pool so that labeled and unlabeled rows share one scale.
        ``moments`` gives them directly (:func:`column_moments` of the pool, kept while the pool is
        unchanged: at 200,000 × 3,072 they cost two seconds, the fit itself milliseconds).
        """
        X = np.asarray(X, dtype=np.float64)
        y_list = [v.item() if isinstance(v, np.generic) else v for v in y]
        if X.ndim != 2 or len(y_list) != len(X):
            raise ProbeError(f"X must be (n, d) with one label per row, got {X.shape} and {len(y_list)} labels")
        seen = sorted(set(y_list), key=lambda v: (type(v).__name__, str(v)))
        if len(seen) < 2:
            raise ProbeError(f"a probe needs labels of at least 2 classes, got {len(seen)}")
        given = list(dict.fromkeys(classes or []))
        self.classes_ = given + [c for c in seen if c not in given]
        code = {c: k for k, c in enumerate(self.classes_)}
        codes = np.asarray([code[v] for v in y_list], np.int64)
        if moments is not None:
            if reference is not None:
                raise ProbeError("give reference or moments, not both")
            mean, sd = (np.array(m, dtype=np.float64, copy=True) for m in moments)
            if mean.shape != (X.shape[1],) or sd.shape != (X.shape[1],):
                raise ProbeError(f"moments must be two vectors of {X.shape[1]}, got {mean.shape} and {sd.shape}")
            self.mean_ = mean
        else:
            ref = X if reference is None else np.asarray(reference)
            if ref.ndim != 2 or ref.shape[1] != X.shape[1]:
                raise ProbeError(f"reference must have {X.shape[1]} columns, got shape {ref.shape}")
            self.mean_, sd = column_moments(ref)
        sd[sd == 0] = 1.0
        self.scale_ = sd
        Z = self._standardise(X)
        with warnings.catch_warnings():
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)  # expected on a handful of labels
            self.model_ = self._new_model().fit(Z, codes)
            self.cv_accuracy_ = self._cross_validate(Z, codes) if self.cv else None
        self.counts_ = {c: int(n) for c, n in zip(self.classes_, np.bincount(codes, minlength=len(self.classes_)))}
        self.n_labels_ = len(codes)
        return self

    @property
    def classes_seen(self) -> int:
        """Classes with at least one label (the queue's switch to uncertainty counts them)."""
        return sum(1 for n in self.counts_.values() if n)

    def _new_model(self) -> LogisticRegression:
        from sklearn.linear_model import LogisticRegression  # on first use (see examine.coverage)

        return LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-3)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def _cross_validate(self, Z: np.ndarray, codes: np.ndarray) -> float | None:
        counts = np.bincount(codes)
        counts = counts[counts > 0]
        folds = int(min(CV_FOLDS, counts.min()))
        if folds < 2:
            return None
        rng = np.random.default_rng(0)
        if len(codes) > CV_MAX_ROWS:  # a stratified sample keeps the cost bounded at thousands of labels
            keep = np.sort(rng.choice(len(codes), CV_MAX_ROWS, replace=False))
            Z, codes = Z[keep], codes[keep]
            counts = np.bincount(codes)
            folds = int(min(CV_FOLDS, counts[counts > 0].min()))
            if folds < 2:
                return None
        correct = 0
        from sklearn.model_selection import StratifiedKFold

        for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(Z, codes):
            if len(np.unique(codes[train])) < 2:
                correct += int(np.sum(codes[test] == codes[train][0]))
                continue
            model = self._new_model().fit(Z[train], codes[train])
            correct += int(np.sum(model.predict(Z[test]) == codes[test]))
        return correct / len(codes)

    # ------------------------------------------------------------------ using it

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, len(classes_)) probabilities; classes never labeled get 0.

        The standardisation is folded into the model's weights and the rows are taken in chunks, so a
        pool of 200,000 float32 embeddings is never copied to float64 whole; the result equals
        scikit-learn's ``predict_proba`` of the standardised rows.
        """
        coef = np.atleast_2d(self.model_.coef_) / self.scale_  # (k, d): the standardisation folded in
        z = linear_logits(X, self.mean_, coef.T, np.atleast_1d(self.model_.intercept_))
        if len(self.model_.classes_) == 2:  # scikit-learn's binary case: one logit
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            fitted = np.column_stack([1.0 - p, p])
        else:
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            fitted = z / z.sum(axis=1, keepdims=True)
        P = np.zeros((len(X), len(self.classes_)))
        P[:, self.model_.classes_] = fitted
        return P

    def predict(self, X: np.ndarray) -> list[Hashable]:
        """The most probable class of each row."""
        return [self.classes_[k] for k in np.argmax(self.predict_proba(X), axis=1)]

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Probability of the most probable class minus the second's (0 = most unsure, 1 = sure)."""
        P = self.predict_proba(X)
        top2 = np.partition(P, P.shape[1] - 2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
