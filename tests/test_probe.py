"""The linear probe: what it learns from labels, its margins, its cross-validation, its classes."""

from __future__ import annotations

import numpy as np
import pytest

from examine.probe import Probe, ProbeError, labeled_rows


def blobs(n=300, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(size=(n, d)), y


def test_probe_learns_separable_classes_and_its_cross_validation_says_so():
    X, y = blobs()
    probe = Probe(cv=True).fit(X[:60], [f"c{v}" for v in y[:60]], reference=X)
    assert probe.predict(X[60:]) == [f"c{v}" for v in y[60:]]
    assert probe.cv_accuracy_ == pytest.approx(1.0)
    P = probe.predict_proba(X)
    assert P.shape == (len(X), 3) and np.allclose(P.sum(axis=1), 1.0)


def test_classes_named_in_advance_keep_their_order_and_unseen_ones_get_zero():
    X, y = blobs(k=2)
    probe = Probe().fit(X[:40], ["b" if v else "a" for v in y[:40]], classes=["z", "a", "b"])
    assert probe.classes_ == ["z", "a", "b"]
    assert probe.counts_["z"] == 0 and probe.counts_["a"] + probe.counts_["b"] == 40
    assert np.all(probe.predict_proba(X)[:, 0] == 0.0)


def test_margin_is_top_minus_second_probability():
    X, y = blobs()
    probe = Probe().fit(X[:60], y[:60])
    P = np.sort(probe.predict_proba(X), axis=1)
    assert np.allclose(probe.margin(X), P[:, -1] - P[:, -2])
    # the point half-way between two class means is less certain than a class mean
    mid = X[y == 0].mean(axis=0) / 2 + X[y == 1].mean(axis=0) / 2
    far = X[y == 0].mean(axis=0)
    assert probe.margin(mid[None])[0] < probe.margin(far[None])[0]


def test_standardised_with_the_reference_pool():
    X, y = blobs()
    X = X * np.array([1e4] + [1.0] * 7)  # one feature on a huge scale must not dominate
    probe = Probe().fit(X[:60], y[:60], reference=X)
    assert np.allclose(probe.mean_, X.mean(axis=0)) and np.allclose(probe.scale_, X.std(axis=0))


def test_cross_validation_needs_two_labels_per_class():
    X, y = blobs(k=2)
    labels = [0, 1] + [0] * 8
    assert Probe(cv=True).fit(X[:10], labels).cv_accuracy_ is None


@pytest.mark.parametrize("labels", [[1] * 10, []])
def test_fewer_than_two_classes_is_a_clear_error(labels):
    X, _ = blobs()
    with pytest.raises(ProbeError, match="at least 2 classes"):
        Probe().fit(X[: len(labels)], labels)


def test_labeled_rows_skips_missing_labels():
    rows, vals = labeled_rows([None, "a", float("nan"), np.int64(3)], np.arange(4))
    assert rows.tolist() == [1, 3] and vals == ["a", 3]


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("n_rows", [1, 7, 512 * 3 + 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_prediction_equals_scikit_learn_on_the_standardised_rows(n_classes, n_rows, dtype):
    """predict_proba folds the standardisation into the weights and works in row blocks; the reference is
    scikit-learn's own predict_proba of the explicitly standardised rows (a constant column, a column far
    from zero). float32 pools are predicted in float32 arithmetic: agreement to 1e-6, not 1e-9."""
    rng = np.random.default_rng(n_classes)
    pool = (rng.normal(size=(n_rows + 40, 6)) * [1, 10, 0.1, 1, 1, 0] + [0, 5, -3, 100, 0, 2]).astype(dtype)
    y = [f"c{k % n_classes}" for k in range(40)]
    probe = Probe().fit(pool[:40], y, reference=pool)
    Z = (pool[40:].astype(np.float64) - pool.astype(np.float64).mean(0)) / np.where(
        pool.astype(np.float64).std(0) == 0, 1.0, pool.astype(np.float64).std(0)
    )
    want = probe.model_.predict_proba(Z)
    tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-7}
    np.testing.assert_allclose(probe.predict_proba(pool[40:]), want, **tol)


def test_column_moments_match_numpy_in_float64():
    from examine.probe import column_moments

    X = (np.random.default_rng(1).normal(size=(20000, 3)) * [1e-3, 1, 1e3] + [1e4, 0, -5]).astype(np.float32)
    mean, sd = column_moments(X)
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sd, X.astype(np.float64).std(0), rtol=1e-9)
    empty_mean, empty_sd = column_moments(np.zeros((0, 2)))
    assert empty_mean.tolist() == [0.0, 0.0] and empty_sd.tolist() == [0.0, 0.0]


def test_kept_moments_give_the_probe_of_the_reference():
    from examine.probe import ProbeError, column_moments

    rng = np.random.default_rng(4)
    pool = (rng.normal(size=(500, 5)) * [1, 3, 0.2, 1, 0] + [0, 10, 0, -4, 1]).astype(np.float32)
    y = [k % 3 for k in range(30)]
    by_reference = Probe().fit(pool[:30], y, reference=pool)
    by_moments = Probe().fit(pool[:30], y, moments=column_moments(pool))
    np.testing.assert_array_equal(by_moments.predict_proba(pool), by_reference.predict_proba(pool))
    with pytest.raises(ProbeError, match="not both"):
        Probe().fit(pool[:30], y, reference=pool, moments=column_moments(pool))
    with pytest.raises(ProbeError, match="two vectors of 5"):
        Probe().fit(pool[:30], y, moments=(np.zeros(4), np.ones(4)))
