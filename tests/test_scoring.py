"""Exact marginals against a brute-force leave-one-out SVD, awkward inputs included."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from examine import examine_scores, marginal_singular_values, scores_from_marginals
from examine.scoring import value_order

TOL = 1e-9  # relative to σ1, as promised for float64 input
HYPOTHESIS_EXAMPLES = int(os.environ.get("EXAMINE_HYPOTHESIS_EXAMPLES", "60"))


def brute_force(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    s1 = np.linalg.svd(X, compute_uv=False)[0]
    return np.array([s1 - np.linalg.svd(np.delete(X, i, axis=0), compute_uv=False)[0] for i in range(len(X))])


def assert_matches_brute_force(X, **kw) -> np.ndarray:
    m = marginal_singular_values(X, **kw)
    ref = brute_force(X)
    s1 = np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)[0]
    assert m.dtype == np.float64 and m.shape == (len(ref),)
    assert np.all(m >= 0)
    np.testing.assert_allclose(m, ref, rtol=0, atol=TOL * max(s1, 1e-300))
    return m


def with_singular_values(rng, n, d, svals):
    U = np.linalg.qr(rng.standard_normal((n, len(svals))))[0]
    V = np.linalg.qr(rng.standard_normal((d, len(svals))))[0]
    return U @ np.diag(svals) @ V.T


rng0 = np.random.default_rng(12345)


@pytest.mark.parametrize("shape", [(2, 1), (2, 3), (3, 3), (5, 20), (20, 5), (64, 8), (9, 9), (40, 1), (7, 64)])
def test_random_shapes(shape):
    assert_matches_brute_force(rng0.standard_normal(shape) + 0.3)


def test_n_less_than_d():
    assert_matches_brute_force(rng0.standard_normal((6, 50)))


def test_duplicate_rows():
    base = rng0.standard_normal((8, 5)) + 1.0
    X = np.vstack([base, base[:3], base[:1]])
    m = assert_matches_brute_force(X)
    np.testing.assert_allclose(m[0], m[8], rtol=0, atol=1e-12 * m.max())


def test_zero_rows_score_zero():
    X = rng0.standard_normal((30, 6))
    X[[2, 17]] = 0.0
    m = assert_matches_brute_force(X)
    assert m[2] == 0.0 and m[17] == 0.0


def test_all_zero_matrix():
    assert np.all(marginal_singular_values(np.zeros((5, 3))) == 0.0)
    assert np.all(examine_scores(np.zeros((5, 3))) == 1.0)


def test_row_orthogonal_to_top_singular_vector_has_zero_marginal():
    X = np.zeros((12, 4))
    X[:11, :2] = rng0.standard_normal((11, 2)) * 10 + 5  # the top direction lives in the first two columns
    X[11, 2] = 1.0  # orthogonal to it
    m = assert_matches_brute_force(X)
    assert m[11] <= 1e-12 * np.linalg.svd(X, compute_uv=False)[0]


@pytest.mark.parametrize("rel_gap", [0.0, 1e-14, 1e-9, 1e-6, 1e-3])
def test_near_equal_top_singular_values(rel_gap):
    X = with_singular_values(rng0, 40, 7, [10.0 * (1 + rel_gap), 10.0, 3.0, 2.0, 1.0, 0.5])
    assert_matches_brute_force(X)


def test_near_equal_top_singular_values_small_chunks():
    X = with_singular_values(rng0, 50, 6, [5.0 * (1 + 1e-7), 5.0, 1.0])
    assert_matches_brute_force(X, chunk_rows=7)


def test_exactly_repeated_top_singular_value_gives_zero():
    X = np.vstack([np.eye(3) * 2.0, np.eye(3) * 2.0])  # σ1 = σ2 = σ3
    m = marginal_singular_values(X)
    assert np.all(m <= 1e-12)
    assert_matches_brute_force(X)


def test_large_common_offset():
    X = 1e4 + rng0.standard_normal((50, 6))
    assert_matches_brute_force(X)


def test_one_dominant_row():
    X = rng0.standard_normal((30, 5))
    X[4] *= 1e3  # its removal changes σ1 by a lot: the root is near the pole
    assert_matches_brute_force(X)


def test_float32_input_is_exact_for_its_values():
    X32 = (rng0.standard_normal((80, 12)) + 0.5).astype(np.float32)
    m = marginal_singular_values(X32)
    ref = brute_force(X32.astype(np.float64))
    s1 = np.linalg.svd(X32.astype(np.float64), compute_uv=False)[0]
    np.testing.assert_allclose(m, ref, rtol=0, atol=TOL * s1)


def test_integer_input():
    X = rng0.integers(0, 10, size=(20, 4))
    assert_matches_brute_force(X)


def test_chunking_does_not_change_result():
    X = rng0.standard_normal((103, 9)) + 0.2
    a = marginal_singular_values(X)
    b = marginal_singular_values(X, chunk_rows=10)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_scale_equivariance():
    X = rng0.standard_normal((25, 4)) + 1
    np.testing.assert_allclose(marginal_singular_values(3.0 * X), 3.0 * marginal_singular_values(X), rtol=1e-10)


def test_torch_cpu_tensor_matches_numpy():
    torch = pytest.importorskip("torch")
    X = rng0.standard_normal((30, 6)).astype(np.float32)
    np.testing.assert_array_equal(marginal_singular_values(torch.from_numpy(X)), marginal_singular_values(X))
    np.testing.assert_allclose(
        marginal_singular_values(torch.from_numpy(X).to(torch.bfloat16)),
        marginal_singular_values(torch.from_numpy(X).to(torch.bfloat16).float().numpy()),
    )


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_cuda_tensor_matches_numpy():
    import torch

    X = rng0.standard_normal((500, 16)) + 0.5
    m_gpu = marginal_singular_values(torch.from_numpy(X).cuda())
    np.testing.assert_allclose(m_gpu, brute_force(X), rtol=0, atol=TOL * np.linalg.svd(X, compute_uv=False)[0])


# Deterministic in CI; EXAMINE_HYPOTHESIS_RANDOM=1 EXAMINE_HYPOTHESIS_EXAMPLES=3000 for a wider random sweep.
@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, derandomize=not os.environ.get("EXAMINE_HYPOTHESIS_RANDOM"))
@given(
    st.integers(2, 9).flatmap(
        lambda n: st.integers(1, 6).flatmap(
            lambda d: arrays(
                np.float64,
                (n, d),
                elements=st.one_of(
                    st.just(0.0),
                    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False),
                ),
            )
        )
    )
)
def test_property_matches_brute_force(X):
    if not np.any(X):
        assert np.all(marginal_singular_values(X) == 0)
        return
    assert_matches_brute_force(X)


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e-133, 1e150, 1e200, 1e300])
@pytest.mark.parametrize("shape", [(12, 3), (3, 7)])
def test_extreme_magnitudes_are_rescaled_not_lost(scale, shape):
    X = (rng0.standard_normal(shape) + 0.5) * scale  # squares under- or overflow float64
    assert_matches_brute_force(X)


# ----------------------------------------------------------------- scores


def test_scores_are_in_unit_interval_with_max_one_and_same_order():
    X = rng0.standard_normal((40, 5)) + 0.5
    m = marginal_singular_values(X)
    s = examine_scores(X)
    assert np.all((s > 0) & (s <= 1)) and s.max() == 1.0
    assert np.argmax(s) == np.argmax(m)
    np.testing.assert_array_equal(value_order(s), value_order(m))
    np.testing.assert_allclose(s, np.exp((m - m.max()) / m.mean()))


def test_scores_from_zero_marginals_are_ones():
    assert np.all(scores_from_marginals(np.zeros(4)) == 1.0)


def test_value_order_breaks_ties_by_index():
    np.testing.assert_array_equal(value_order([1.0, 3.0, 3.0, 0.5]), [1, 2, 0, 3])


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, exc, words",
    [
        (np.ones(5), ValueError, "2-D"),
        (np.ones((2, 2, 2)), ValueError, "2-D"),
        (np.ones((1, 4)), ValueError, "at least 2 rows"),
        (np.ones((3, 0)), ValueError, "no columns"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "real numbers"),
        (np.ones((3, 2), dtype=complex), TypeError, "real numbers"),
        (np.array([[1, None], [2, 3]], dtype=object), TypeError, "real numbers"),
    ],
)
def test_bad_input_is_refused_clearly(X, exc, words):
    with pytest.raises(exc, match=words):
        marginal_singular_values(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(bad):
    X = rng0.standard_normal((50, 4))
    X[[7, 31], 2] = bad
    with pytest.raises(ValueError, match=r"rows \[7, 31\]"):
        marginal_singular_values(X, chunk_rows=8)
    with pytest.raises(ValueError, match=r"rows \[7, 31\]"):
        marginal_singular_values(X[:40])


def test_non_finite_rows_named_when_n_less_than_d():
    X = rng0.standard_normal((4, 10))
    X[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        marginal_singular_values(X)


def test_single_nonzero_row_keeps_full_precision():
    np.testing.assert_array_equal(marginal_singular_values(np.array([[1.0, 0.0], [0.0, 0.0]])), [1.0, 0.0])


def test_row_holding_nearly_all_energy_large_n():
    X = rng0.standard_normal((40, 3)) * 1e-5
    X[11] = [3.0, -4.0, 12.0]  # removing it leaves a tiny matrix: σ1 collapses
    assert_matches_brute_force(X)
    assert_matches_brute_force(X, chunk_rows=6)
