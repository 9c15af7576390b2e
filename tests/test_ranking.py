"""Tests of examine.ranking: the queue contract, every policy, input validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from examine.ranking import DEFAULT_POLICY, DEFAULT_PREPROCESS, POLICIES, PREPROCESSING, LinearProbe, Ranking, rank
from examine.scoring import examine_scores, value_order

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _blobs(n=120, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d)) + 5.0
    y = rng.integers(0, k, n)
    return centers[y] + rng.normal(0, 1, (n, d)), y


def _mask(n, idx):
    m = np.zeros(n, bool)
    m[list(idx)] = True
    return m


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("preprocess", PREPROCESSING)
def test_order_is_permutation_of_unlabeled(policy, preprocess):
    X, y = _blobs()
    labeled = _mask(len(X), range(0, 40, 3))
    r = rank(X, labeled=labeled, labels=y, policy=policy, preprocess=preprocess)
    assert isinstance(r, Ranking) and r.policy == policy
    assert r.order.dtype == np.int64 and r.value.dtype == np.float64 and r.value.shape == (len(X),)
    assert sorted(r.order.tolist()) == np.flatnonzero(~labeled).tolist()
    assert np.isnan(r.value[labeled]).all() and np.isfinite(r.value[~labeled]).all()


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_deterministic_and_no_labels(policy):
    X, y = _blobs(seed=1)
    a = rank(X, policy=policy, seed=3)
    b = rank(X, policy=policy, seed=3)
    np.testing.assert_array_equal(a.order, b.order)
    assert sorted(a.order.tolist()) == list(range(len(X)))


def test_paper_is_value_order_of_all_rows_minus_labeled():
    X, y = _blobs(seed=2)
    labeled = _mask(len(X), [0, 5, 7, 50])
    r = rank(X, labeled=labeled, labels=y, policy="paper", preprocess="none")
    full = value_order(examine_scores(X))
    np.testing.assert_array_equal(r.order, [i for i in full if not labeled[i]])
    np.testing.assert_allclose(r.value[~labeled], examine_scores(X)[~labeled])


def test_pool_scores_unlabeled_rows_only():
    X, _ = _blobs(seed=3)
    labeled = _mask(len(X), range(10))
    r = rank(X, labeled=labeled, policy="pool", preprocess="none")
    sub = np.flatnonzero(~labeled)
    np.testing.assert_array_equal(r.order, sub[value_order(examine_scores(X[sub]))])


def test_deflation_moves_away_from_labeled_directions():
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(0, 0.1, (50, 6)) + [10, 0, 0, 0, 0, 0], rng.normal(0, 0.1, (50, 6)) + [0, 6, 0, 0, 0, 0]])
    pool = rank(X, labeled=_mask(100, [0, 1]), policy="pool", preprocess="none")
    assert pool.order[0] < 50  # the dominant mode first
    defl = rank(X, labeled=_mask(100, [0, 1]), policy="deflation", preprocess="none", deflation_greedy=1)
    assert defl.order[0] >= 50  # its direction is covered by the labels: the other mode first


def test_deflation_greedy_spreads_a_batch():
    rng = np.random.default_rng(5)
    X = np.vstack([rng.normal(0, 0.1, (60, 6)) + [10, 0, 0, 0, 0, 0], rng.normal(0, 0.1, (40, 6)) + [0, 8, 0, 0, 0, 0]])
    r = rank(X, policy="deflation", preprocess="none", deflation_greedy=2)
    assert (r.order[:2] < 60).sum() == 1


@pytest.mark.parametrize(
    "labels",
    [None, [None] * 120, [0] * 120, ["cat" if i % 2 else "dog" for i in range(120)], [i % 3 for i in range(120)]],
    ids=["none", "all-none", "one-class", "strings", "ints"],
)
def test_class_aware_copes_with_labels(labels):
    X, _ = _blobs()
    labeled = _mask(120, range(0, 30))
    r = rank(X, labeled=labeled, labels=labels, policy="class-aware")
    assert sorted(r.order.tolist()) == list(range(30, 120))


def test_class_aware_falls_back_with_one_class():
    X, _ = _blobs()
    labeled = _mask(120, range(5))
    for fb in ("pool", "deflation"):
        a = rank(X, labeled=labeled, labels=["x"] * 120, policy="class-aware", class_fallback=fb)
        b = rank(X, labeled=labeled, policy=fb)
        np.testing.assert_array_equal(a.order, b.order)


def test_class_aware_favours_classes_with_few_labels():
    X, y = _blobs(n=300, k=2, seed=6)
    # Class 0 has many labels, class 1 one: the head of the queue is mostly predicted class 1.
    labeled = np.zeros(300, bool)
    labeled[np.flatnonzero(y == 0)[:40]] = True
    labeled[np.flatnonzero(y == 1)[:1]] = True
    r = rank(X, labeled=labeled, labels=y, policy="class-aware")
    assert (y[r.order[:21]] == 1).sum() >= 15


def test_linear_probe_separates_blobs():
    X, y = _blobs(n=200, k=3, seed=7)
    probe = LinearProbe().fit(X, y)
    assert (probe.predict(X) == y).mean() > 0.95
    with pytest.raises(ValueError, match="2 classes"):
        LinearProbe().fit(X, np.zeros(200, int))


def test_defaults_are_registered():
    assert DEFAULT_POLICY in POLICIES and DEFAULT_PREPROCESS in PREPROCESSING


def test_small_pools():
    X = np.arange(6, dtype=float).reshape(3, 2) + 1
    for p in POLICIES:
        assert rank(X, labeled=np.array([True, True, False]), labels=[0, 1, None], policy=p).order.tolist() == [2]
        assert rank(X, labeled=np.ones(3, bool), labels=[0, 1, 1], policy=p).order.size == 0
        assert sorted(rank(X[:1], policy=p).order.tolist()) == [0]


def test_torch_input():
    torch = pytest.importorskip("torch")
    X, _ = _blobs()
    np.testing.assert_array_equal(rank(torch.from_numpy(X)).order, rank(X).order)


def test_validation_errors():
    X, y = _blobs()
    with pytest.raises(ValueError, match="unknown policy 'nope'.*class-aware.*paper"):
        rank(X, policy="nope")
    with pytest.raises(ValueError, match="unknown preprocess"):
        rank(X, preprocess="whiten")
    with pytest.raises(ValueError, match="labeled has shape"):
        rank(X, labeled=np.zeros(5, bool))
    with pytest.raises(TypeError, match="boolean"):
        rank(X, labeled=np.zeros(len(X), int))
    with pytest.raises(ValueError, match="labels has 3 entries"):
        rank(X, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="2-D"):
        rank(X[0])
    with pytest.raises(TypeError, match="real numbers"):
        rank(np.array([["a", "b"], ["c", "d"]]))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[3\]"):
        rank(bad)
    with pytest.raises(ValueError, match="deflation_energy"):
        rank(X, deflation_energy=0)
    with pytest.raises(ValueError, match="class_fallback"):
        rank(X, class_fallback="class-aware")


@pytest.mark.skipif(not FMNIST.is_file(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_subset():
    with gzip.open(FMNIST, "rb") as fh:
        raw = fh.read(16 + 400 * 784)
    pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(400, 784).astype(np.float32) / 255
    X = pixels @ np.random.default_rng(0).normal(size=(784, 32))  # a small random-projection embedding
    labeled = _mask(400, range(0, 400, 7))
    labels = [f"c{i % 10}" if labeled[i] else None for i in range(400)]
    for p in POLICIES:
        r = rank(X, labeled=labeled, labels=labels, policy=p)
        assert sorted(r.order.tolist()) == np.flatnonzero(~labeled).tolist()


def test_adaptive_covers_first_then_asks_where_the_probe_is_unsure():
    from examine.ranking import switch_budget

    X, y = _blobs(n=400, k=2, seed=4)
    few = _mask(len(X), [int(np.flatnonzero(y == 0)[0]), int(np.flatnonzero(y == 1)[0])])
    cold = rank(X, labeled=few, labels=y, policy="adaptive")
    np.testing.assert_array_equal(cold.order, rank(X, labeled=few, labels=y, policy="clusters").order)

    many = _mask(len(X), range(switch_budget(2) + 10))
    warm = rank(X, labeled=many, labels=y, policy="adaptive", batch=5)
    margin = rank(X, labeled=many, labels=y, policy="margin")
    # the first batch is drawn from the most unsure rows, and spread over them
    candidates = set(margin.order[:50].tolist())
    assert set(warm.order[:5].tolist()) <= candidates
    assert warm.order[:5].tolist() != margin.order[:5].tolist() or len(candidates) <= 5
    assert np.all(np.diff(warm.value[warm.order[5:]]) <= 1e-12)  # the rest by falling uncertainty


def test_label_policies_ignore_rows_whose_label_is_unknown():
    X, y = _blobs(n=200, k=2, seed=5)
    labeled = _mask(len(X), range(40))
    labels = [None if i % 2 else int(v) for i, v in enumerate(y)]  # half the labeled rows have no class
    for p in ("adaptive", "margin", "tcm", "coverage-margin"):
        r = rank(X, labeled=labeled, labels=labels, policy=p)
        assert sorted(r.order.tolist()) == list(range(40, 200))


def test_non_finite_rows_are_named_past_the_first_block():
    X = np.random.default_rng(0).normal(size=(3000, 4))
    X[2500, 2] = np.inf
    X[2501, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[2500, 2501\]"):
        rank(X)
    big = X.astype(np.float32)
    big[2500:2502] = 3e38  # finite float32 rows whose float32 sum overflows are not refused
    assert len(rank(big, policy="pool").order) == 3000


def test_cold_start_fits_no_probe(monkeypatch):
    """Before the switch the adaptive and TCM queues are the coverage order: no probe is fitted to say so."""
    import examine.ranking as ranking

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 8))
    labeled = np.zeros(300, bool)
    labeled[:12] = True
    labels = [k % 3 if k < 12 else None for k in range(300)]  # 12 labels < switch_budget(3) = 15

    def no_fit(*args, **kwargs):
        raise AssertionError("a probe was fitted before the switch")

    want = rank(X, labeled=labeled, labels=labels, policy="clusters").order
    monkeypatch.setattr(ranking, "_margins", no_fit)
    for policy in ("adaptive", "tcm"):
        np.testing.assert_array_equal(rank(X, labeled=labeled, labels=labels, policy=policy).order, want)
