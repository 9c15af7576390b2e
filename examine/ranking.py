"""Order the unlabeled pool by EXAMINE value, adapting to the labels that exist.

The paper (Huang, Lei & Li 2022) scores a static, fully unlabeled pool.  In an
annotation loop labels arrive batch by batch; the policies here decide how the
queue reacts.  Every policy maps embeddings ``X`` (n × d), a mask of labeled
rows and their labels to a :class:`Ranking` of the *unlabeled* rows:

``paper``
    EXAMINE scores of all rows (labeled ones included), labeled rows removed
    from the order.  The static score of the paper.
``pool``
    EXAMINE scores recomputed on the unlabeled rows only.
``deflation``
    The top directions spanned by the labeled rows' embeddings (those holding
    ``deflation_energy`` of their energy) are projected out of the unlabeled
    embeddings, which are then scored: what the labels already cover stops
    counting as value.  The first ``deflation_greedy`` positions (a batch) are
    picked one at a time, each pick deflated as if labeled before the next.
``class-aware``
    A linear probe (multinomial logistic regression) fitted on the labeled rows
    predicts a class for each unlabeled row; rows are scored by EXAMINE within
    their predicted class and the classes are interleaved with quotas
    proportional to ``1 / (1 + labels of the class)``, so classes with few labels
    are served first.  With fewer than two labeled classes it falls back to
    ``class_fallback`` (default ``deflation``; ``pool`` is the plain choice).

``clusters``
    EXAMINE within k-means clusters, served by coverage (:mod:`examine.coverage`): the
    cold-start queue.
``margin``
    The linear probe's (:class:`examine.probe.Probe`) least certain rows first: the
    smallest gap between its two most probable classes.
``adaptive`` (the default)
    ``clusters`` until the probe has seen :data:`SWITCH_PER_CLASS` labels per class
    seen, then Cluster-Margin (Citovsky et al. 2021): the ``10 × batch`` least certain
    rows, cut into ``batch`` k-means clusters, each giving its least certain row
    first, then every other row by margin.  Coverage wins the cold start; once the
    probe knows every class a little, uncertainty is what keeps beating random.
``tcm``
    ``clusters``, then plain ``margin``, switching at the same point (TCM, Doucet et
    al. 2024, with examine's coverage in place of TypiClust).
``coverage-margin``
    The coverage order of ``clusters`` with each cluster served by the probe's
    uncertainty instead of EXAMINE: the most unsure images of under-labeled clusters.

Embeddings can be preprocessed first (``preprocess``): ``"none"`` (the paper's
unspecified default), ``"center"`` (subtract the mean row), ``"l2"`` (unit-norm
rows) or ``"center-l2"``.  ``clusters`` clusters and scores the preprocessed
rows.  The default policy was chosen by the annotation
simulation of :mod:`examine.evaluate` on several labeled sets (see
``benchmarks/RESULTS.md``): the paper's static order and the other EXAMINE-only
policies keep serving one mode of the data and fall below random picking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from examine.coverage import cluster_pool, coverage_order
from examine.linear_probe import LinearProbe
from examine.probe import Probe, column_moments, labeled_rows
from examine.queue_space import PREPROCESSING, SpaceCache, preprocess_embeddings, queue_space
from examine.scoring import examine_scores, value_order
from examine.targets import TargetProbe, fit_label_sets, label_sets_seen
from examine.validation import as_labels, as_mask, as_matrix

__all__ = [
    "Ranking",
    "POLICIES",
    "PREPROCESSING",
    "DEFAULT_POLICY",
    "DEFAULT_PREPROCESS",
    "LABEL_POLICIES",
    "BATCH",
    "rank",
    "preprocess_embeddings",
    "LinearProbe",
]


@dataclass(frozen=True)
class Ranking:
    """The queue of unlabeled rows.

    Attributes
    ----------
    order : numpy.ndarray of int64
        Indices into ``X`` of the unlabeled rows, most valuable first.
    value : numpy.ndarray of float64, shape (n,)
        The policy's value of each row of ``X`` (NaN for labeled rows); for
        display only — the order is authoritative (``class-aware`` interleaves
        classes, so its order is not sorted by ``value``).
    policy : str
        Name of the policy that produced the ranking.
    cluster : numpy.ndarray of int64, shape (n,)
        The group each row was served from (its coverage cluster, or its Cluster-Margin
        cluster); −1 where the policy groups nothing.  Label Studio's uncertainty sampling
        serves the group with the fewest labels first, so a published head that carries
        it moves away from the group just labeled before the next re-rank lands.
    """

    order: np.ndarray
    value: np.ndarray
    policy: str
    cluster: np.ndarray


# --------------------------------------------------------------------------- helpers


def _scores_subset(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """EXAMINE scores of ``X[rows]`` (a single row, or none, scores 1)."""
    if len(rows) < 2:
        return np.ones(len(rows), dtype=np.float64)
    return examine_scores(X[rows])


def _order_unlabeled(value: np.ndarray, unlabeled: np.ndarray) -> np.ndarray:
    """Unlabeled indices sorted by descending ``value`` (ties by index)."""
    idx = np.flatnonzero(unlabeled)
    return idx[value_order(value[idx])].astype(np.int64)


def _encode_labels(labels: Sequence[Any] | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Integer codes of the labels of ``rows`` that have one (not None / NaN).

    Returns the rows with a label, their codes and the list of distinct labels
    (sorted by their string form, so any hashable mix works deterministically).
    """
    have, vals = labeled_rows(labels, rows)
    classes = sorted(set(vals), key=lambda v: (type(v).__name__, str(v)))
    code = {c: k for k, c in enumerate(classes)}
    return have, np.asarray([code[v] for v in vals], np.int64), classes


# --------------------------------------------------------------------------- policies
# Each policy: (X preprocessed float64, labeled mask, labels or None, seed, options)
# -> value array (n,) with NaN on labeled rows, and the order of the unlabeled rows.


def _policy_paper(X, labeled, labels, seed, opts):
    value = examine_scores(X) if len(X) >= 2 else np.ones(len(X))
    value = value.astype(np.float64)
    value[labeled] = np.nan
    return value, _order_unlabeled(value, ~labeled)


def _policy_pool(X, labeled, labels, seed, opts):
    value = np.full(len(X), np.nan)
    rows = np.flatnonzero(~labeled)
    value[rows] = _scores_subset(X, rows)
    return value, _order_unlabeled(value, ~labeled)


def _deflated_scores(X: np.ndarray, covered: np.ndarray, rows: np.ndarray, energy: float) -> np.ndarray:
    """EXAMINE scores of ``X[rows]`` after projecting out the top directions of ``X[covered]``."""
    U = X[rows]
    if covered.any():
        _, s, Vt = np.linalg.svd(X[covered], full_matrices=False)
        cum = np.cumsum(s**2)
        if cum[-1] > 0:
            r = int(np.searchsorted(cum, energy * cum[-1]) + 1)
            r = min(r, X.shape[1] - 1, len(s))
            if r > 0:
                B = Vt[:r]
                U = U - (U @ B.T) @ B
    return _scores_subset(U, np.arange(len(rows)))


def _policy_deflation(X, labeled, labels, seed, opts):
    value = np.full(len(X), np.nan)
    covered = labeled.copy()
    head: list[int] = []
    # The first `deflation_greedy` picks are made one at a time, each pick
    # counting as covered for the next (a batch then spans several directions);
    # the rest of the queue follows the last scores.
    for _ in range(max(1, opts["deflation_greedy"])):
        rows = np.flatnonzero(~covered)
        if not len(rows):
            break
        s = _deflated_scores(X, covered, rows, opts["deflation_energy"])
        value[rows] = s
        best = int(rows[value_order(s)[0]])
        head.append(best)
        covered[best] = True
        if opts["deflation_greedy"] <= 1:
            break
    rest = ~covered if opts["deflation_greedy"] > 1 else ~labeled
    tail = _order_unlabeled(value, rest)
    order = np.concatenate([np.asarray(head if opts["deflation_greedy"] > 1 else [], np.int64), tail])
    return value, order


def _policy_class_aware(X, labeled, labels, seed, opts):
    rows = np.flatnonzero(~labeled)
    have, y, classes = _encode_labels(labels, np.flatnonzero(labeled))
    if len(classes) < 2 or len(rows) == 0:
        return POLICIES[opts["class_fallback"]](X, labeled, labels, seed, opts)
    probe = LinearProbe(l2=opts["probe_l2"]).fit(X[have], y)
    pred = probe.predict(X[rows])
    counts = np.bincount(y, minlength=len(classes))
    weight = 1.0 / (1.0 + counts)
    value = np.full(len(X), np.nan)
    keys = np.empty(len(rows))
    for c in range(len(classes)):
        members = rows[pred == c]
        if not len(members):
            continue
        s = _scores_subset(X, members)
        value[members] = s
        pos = np.empty(len(members))
        pos[value_order(s)] = np.arange(len(members))
        # Stride scheduling: the k-th pick of class c sits at (k + ½) / w_c,
        # so over any prefix class c gets a share proportional to w_c.
        keys[pred == c] = (pos + 0.5) / weight[c]
    order = rows[np.lexsort((rows, keys))].astype(np.int64)
    return value, order


def _policy_clusters(X, labeled, labels, seed, opts):
    n_labeled = int(labeled.sum())
    k = opts["clusters"] or n_labeled + opts["batch"]
    # Clusters and EXAMINE in one geometry: the preprocessed (centred, unit-norm) rows, i.e. cosine similarity.
    assign = cluster_pool(X, min(k, opts["max_clusters"]), seed=seed)
    value, order = coverage_order(X, labeled, assign)
    return value, order, assign


# ----------------------------------------------------------------- policies that learn from labels


def _margins(
    X: np.ndarray, labeled: np.ndarray, labels: Sequence[Any] | None, opts: dict
) -> tuple[np.ndarray, int] | None:
    """The probe's margin of every row (low = unsure) and the number of classes seen; None below 2 classes.

    The probe reads the embeddings as given (``opts["raw"]``), standardised: the same probe that
    pre-annotates and that the evaluation scores.  A probe passed to :func:`rank` is used as it is.
    """
    raw = opts["raw"]
    probe = opts["probe"]
    rows = opts.get("raw_rows")  # the pool is raw[rows]
    if probe is not None:
        n_classes = probe.classes_seen
        if n_classes < 2:
            return None
        margin = probe.margin(raw)  # row by row: the margins of raw[rows] without copying them
        return (margin if rows is None else margin[rows]), n_classes
    if rows is not None:
        raw = raw[rows]  # the probe is fitted here against the pool's moments (a library call with deferred rows)
    have, y = labeled_rows(labels, np.flatnonzero(labeled))
    if _multi_label(y):  # several classes per image: one yes/no probe per class
        probe = fit_label_sets(raw[have], [_members(v) for v in y], column_moments(raw))
        if probe is None:
            return None
    elif len(set(y)) < 2:
        return None
    else:
        probe = Probe().fit(raw[have], y, reference=raw)
    n_classes = probe.classes_seen
    return (probe.margin(raw), n_classes) if n_classes >= 2 else None


def switch_budget(n_classes: int) -> int:
    """Labels after which the queue trusts the probe's uncertainty more than coverage.

    Cold-start studies (TypiClust; TCM, Doucet et al. 2024) find uncertainty useless until the
    probe has seen a few examples of every class and coverage useless once it has; the switch
    comes at ``SWITCH_PER_CLASS`` labels per class seen (at least ``2 * SWITCH_PER_CLASS``).
    """
    return SWITCH_PER_CLASS * max(2, n_classes)


#: Labels per class before the default queue switches from coverage to uncertainty (measured: see README).
SWITCH_PER_CLASS = 5


def _uncertain_and_diverse(
    X: np.ndarray, labeled: np.ndarray, margin: np.ndarray, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster-Margin (Citovsky et al. 2021): the ``10 × batch`` most unsure rows, cut into ``batch``
    k-means clusters, and from each its most unsure row first; then every other row by margin."""
    rows = np.flatnonzero(~labeled)
    by_margin = rows[np.lexsort((rows, margin[rows]))]
    cand = by_margin[: min(len(rows), CANDIDATES_PER_PICK * batch)]
    head: list[int] = []
    cluster = np.full(len(X), -1, dtype=np.int64)
    if len(cand) > batch > 1:
        assign = cluster_pool(X[cand], batch, seed=seed)
        cluster[cand] = assign
        for c in range(int(assign.max()) + 1):
            members = cand[assign == c]  # already in margin order
            if len(members):
                head.append(int(members[0]))
        head.sort(key=lambda i: (margin[i], i))
    taken = set(head)
    order = np.asarray(head + [int(i) for i in by_margin if int(i) not in taken], np.int64)
    value = np.full(len(X), np.nan)
    value[rows] = 1.0 - margin[rows]  # uncertainty: 1 = most unsure
    return value, order, cluster


#: Cluster-Margin's candidate pool per pick of a batch.
CANDIDATES_PER_PICK = 10
#: The queue's batch: the images chosen together before their labels are known (the simulation's, the backend's).
BATCH = 10


def _policy_margin(X, labeled, labels, seed, opts):
    m = _margins(X, labeled, labels, opts)
    if m is None:
        return _policy_clusters(X, labeled, labels, seed, opts)
    rows = np.flatnonzero(~labeled)
    value = np.full(len(X), np.nan)
    value[rows] = 1.0 - m[0][rows]
    return value, rows[np.lexsort((rows, m[0][rows]))].astype(np.int64)


def _classes_seen(labeled: np.ndarray, labels: Sequence[Any] | None, opts: dict) -> int:
    """Classes with at least one label: the given probe's, else those of ``labels`` on the labeled rows."""
    if opts["probe"] is not None:
        return int(opts["probe"].classes_seen)
    y = labeled_rows(labels, np.flatnonzero(labeled))[1]
    return label_sets_seen([_members(v) for v in y]) if _multi_label(y) else len(set(y))


def _multi_label(y: Sequence[Any]) -> bool:
    """Labels that are collections of classes (a multi-label project), not one class each."""
    return any(isinstance(v, (frozenset, set, tuple, list)) for v in y)


def _members(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (frozenset, set, tuple, list)) else [v]


def _before_switch(labeled: np.ndarray, labels: Sequence[Any] | None, opts: dict) -> bool:
    """Still the cold start: fewer than two classes, or fewer labels than :func:`switch_budget` (no probe
    needed to tell, so a cold-start re-rank of a large pool costs no probe fit and no pass over it)."""
    seen = _classes_seen(labeled, labels, opts)
    return seen < 2 or labeled.sum() < switch_budget(seen)


def _policy_tcm(X, labeled, labels, seed, opts):
    if _before_switch(labeled, labels, opts):
        return _policy_clusters(X, labeled, labels, seed, opts)
    m = _margins(X, labeled, labels, opts)
    if m is None:  # the switch was checked above (_before_switch: the same classes seen)
        return _policy_clusters(X, labeled, labels, seed, opts)
    return _policy_margin(X, labeled, labels, seed, opts)


def _policy_coverage_margin(X, labeled, labels, seed, opts):
    m = _margins(X, labeled, labels, opts)
    if m is None:
        return _policy_clusters(X, labeled, labels, seed, opts)
    k = opts["clusters"] or int(labeled.sum()) + opts["batch"]
    assign = cluster_pool(X, min(k, opts["max_clusters"]), seed=seed)
    value, order = coverage_order(X, labeled, assign, within=1.0 - m[0])
    return value, order, assign


def _policy_adaptive(X, labeled, labels, seed, opts):
    if _before_switch(labeled, labels, opts):
        return _policy_clusters(X, labeled, labels, seed, opts)
    m = _margins(X, labeled, labels, opts)
    if m is None:  # the switch was checked above (_before_switch: the same classes seen)
        return _policy_clusters(X, labeled, labels, seed, opts)
    return _uncertain_and_diverse(X, labeled, m[0], opts["batch"], seed)


#: name → policy(X, labeled, labels, seed, options) → (value, order) or (value, order, cluster).
POLICIES: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "adaptive": _policy_adaptive,
    "clusters": _policy_clusters,
    "margin": _policy_margin,
    "tcm": _policy_tcm,
    "coverage-margin": _policy_coverage_margin,
    "paper": _policy_paper,
    "pool": _policy_pool,
    "deflation": _policy_deflation,
    "class-aware": _policy_class_aware,
}
#: Policies whose order depends on the labels themselves, not only on which rows are labeled.
LABEL_POLICIES: frozenset[str] = frozenset({"adaptive", "margin", "tcm", "coverage-margin", "class-aware"})
# Chosen by the annotation simulation in benchmarks/RESULTS.md (README, "Evidence").
DEFAULT_POLICY: str = "adaptive"
DEFAULT_PREPROCESS: str = "center-l2"


# --------------------------------------------------------------------------- entry point


def rank(
    X: Any,
    *,
    labeled: np.ndarray | Sequence[bool] | None = None,
    labels: Sequence[Any] | None = None,
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
    preprocess: str | None = None,
    deflation_energy: float = 0.9,
    deflation_greedy: int = 10,
    probe_l2: float = 1e-3,
    class_fallback: str = "deflation",
    batch: int = BATCH,
    clusters: int | None = None,
    max_clusters: int = 500,
    probe: Probe | TargetProbe | None = None,
    deferred: Sequence[int] | np.ndarray | None = None,
    dims: int | None = None,
    space_cache: SpaceCache | None = None,
) -> Ranking:
    """Rank the unlabeled rows of ``X`` by a policy of :data:`POLICIES`.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Embeddings, one row per image (numpy array or CPU/CUDA torch tensor).
    labeled : boolean array of shape (n,), optional
        True for rows that already carry a label; None means nothing is labeled.
    labels : sequence of length n, optional
        Labels (any hashable: ints, strings …) of the labeled rows; entries of
        unlabeled rows are ignored, and a labeled row whose label is None is
        treated as labeled but unused by label-aware policies.
    policy : str
        One of :data:`POLICIES`.
    seed : int
        Seed of the k-means of ``clusters``; every policy is deterministic given
        ``X``, ``labeled``, ``labels`` and ``seed``.
    preprocess : str, optional
        One of :data:`PREPROCESSING`, applied to all rows before scoring; None:
        ``"none"`` for ``paper`` (the paper's score of the raw embeddings),
        :data:`DEFAULT_PREPROCESS` for the others.
    deflation_energy : float in (0, 1]
        ``deflation``: fraction of the labeled rows' energy whose directions are removed.
    deflation_greedy : int
        ``deflation``: the first this-many positions are picked one at a time,
        each pick deflated as if labeled before the next (1 = one-shot).
    probe_l2 : float
        ``class-aware``: L2 penalty of the linear probe.
    batch : int
        ``clusters``: images labeled before the next re-rank; the pool is cut
        into ``labeled + batch`` clusters, so each batch lands in new clusters.
    clusters : int, optional
        ``clusters``: a fixed number of clusters instead (the order Label Studio
        serves by itself when predictions carry their cluster).
    max_clusters : int
        ``clusters``: at most this many clusters.
    probe : examine.probe.Probe or examine.targets.TargetProbe, optional
        The label-aware policies' probe, already fitted on the labeled rows of ``X`` (the backend
        fits one per re-rank for its pre-annotations, over every question of the labeling config);
        None: fitted here from ``labels``.
    deferred : sequence of int, optional
        Unlabeled rows served after every other one, in this order (images that
        :func:`examine.screening.screen` flagged, most usable first).  They take no part in
        ranking the others; their value is the lowest of the others' and their cluster −1.
    dims : int, optional
        Dimensions of the rows the policy clusters and scores (:func:`examine.queue_space.queue_space`):
        None reduces pools of 20,000 rows or more to 256 principal directions, 0 never reduces.  The
        probe always reads the full embeddings.
    space_cache : examine.queue_space.SpaceCache, optional
        Keeps those rows between calls on the same (unchanged) ``X``: a caller that ranks one pool again
        and again (the backend, after each batch of labels) computes the PCA once.

    Returns
    -------
    Ranking

    Raises
    ------
    ValueError
        Unknown policy or preprocessing, shape mismatches, non-finite X.
    TypeError
        Non-numeric X or a non-boolean mask.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}")
    if not (0.0 < deflation_energy <= 1.0):
        raise ValueError(f"deflation_energy must be in (0, 1], got {deflation_energy}")
    X = as_matrix(X)
    n = X.shape[0]
    mask = as_mask(labeled, n)
    as_labels(labels, n)
    if preprocess is None:
        preprocess = "none" if policy == "paper" else DEFAULT_PREPROCESS
    if int(deflation_greedy) < 1:
        raise ValueError(f"deflation_greedy must be >= 1, got {deflation_greedy}")
    opts = {
        "deflation_energy": float(deflation_energy),
        "deflation_greedy": int(deflation_greedy),
        "probe_l2": float(probe_l2),
        "class_fallback": class_fallback,
        "batch": int(batch),
        "clusters": clusters,
        "max_clusters": int(max_clusters),
        "raw": X if X.dtype.kind == "f" else X.astype(np.float64),  # the probe works in float64 row blocks
        "probe": probe,
        "dims": dims,
        "space_cache": space_cache,
    }
    if class_fallback not in POLICIES or class_fallback == "class-aware":
        raise ValueError(
            f"class_fallback must be one of {sorted(set(POLICIES) - {'class-aware'})}, got {class_fallback!r}"
        )
    if deferred is not None and len(deferred):
        return _rank_deferring(X, mask, labels, deferred, policy, seed, preprocess, opts)
    return _rank_rows(X, None, mask, labels, policy, int(seed), preprocess, opts)


def _rank_rows(
    X: np.ndarray,
    rows: np.ndarray | None,
    mask: np.ndarray,
    labels: Sequence[Any] | None,
    policy: str,
    seed: int,
    preprocess: str,
    opts: dict[str, Any],
) -> Ranking:
    """The policy's ranking of the pool ``X[rows]`` (all of ``X`` when None; indices into ``rows``), without
    copying the rows: the queue space and the probe's margins read ``X`` where they are."""
    cache: SpaceCache | None = opts["space_cache"]
    dims = opts["dims"]
    Xp = (
        cache.get(X, preprocess, dims=dims, seed=seed, rows=rows)
        if cache is not None
        else queue_space(X, preprocess, dims=dims, seed=seed, rows=rows)
    )
    if rows is not None:
        mask = mask[rows]
        labels = None if labels is None else [labels[int(i)] for i in rows]
        opts = {**opts, "raw_rows": rows}
    out: tuple[np.ndarray, ...] = POLICIES[policy](Xp, mask, labels, seed, opts)
    value, order, rest = out[0], out[1], out[2:]
    value = np.asarray(value, dtype=np.float64)
    value[mask] = np.nan
    cluster = np.asarray(rest[0], dtype=np.int64) if rest else np.full(len(mask), -1, dtype=np.int64)
    return Ranking(order=np.asarray(order, dtype=np.int64), value=value, policy=policy, cluster=cluster)


def _rank_deferring(
    X: np.ndarray,
    mask: np.ndarray,
    labels: Sequence[Any] | None,
    deferred: Sequence[int] | np.ndarray,
    policy: str,
    seed: int,
    preprocess: str,
    opts: dict[str, Any],
) -> Ranking:
    """:func:`rank` of the rows that are not deferred, then the deferred rows in their given order."""
    n = len(X)
    later = np.asarray(deferred, dtype=np.int64).ravel()
    if later.size and (later.min() < 0 or later.max() >= n or len(np.unique(later)) != len(later)):
        raise ValueError(f"deferred must be distinct row indices in [0, {n}), got {later.tolist()[:10]}")
    later = later[~mask[later]]  # an annotation says the image is usable
    keep = np.ones(n, bool)
    keep[later] = False
    rows = np.flatnonzero(keep)
    if not (keep & ~mask).any() or not later.size:  # every unlabeled row deferred, or none: the policy's order
        return _rank_rows(X, None, mask, labels, policy, seed, preprocess, opts)
    sub = _rank_rows(X, rows, mask, labels, policy, seed, preprocess, opts)
    value = np.full(n, np.nan)
    value[rows] = sub.value
    finite = sub.value[np.isfinite(sub.value)]
    value[later] = finite.min() if finite.size else 0.0
    cluster = np.full(n, -1, dtype=np.int64)
    cluster[rows] = sub.cluster
    order = np.concatenate([rows[sub.order], later]).astype(np.int64)
    return Ranking(order=order, value=value, policy=policy, cluster=cluster)
