"""Tests of examine.baselines and examine.evaluate (benchmarks and the `evaluate` sub-command)."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from examine import evaluate as ev
from examine.baselines import kcenter_greedy, knn_shapley, leave_one_out, typiclust

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small fits are far faster on one thread on a shared 2-core machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1):
        yield


def _knn_utility(S, X, y, x_test, y_test, k):
    if not S:
        return 0.0
    S = sorted(S, key=lambda i: (np.sum((X[i] - x_test) ** 2), i))
    return sum(y[i] == y_test for i in S[:k]) / k


def _brute_shapley(X, y, x_test, y_test, k):
    n = len(X)
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for S in itertools.combinations(others, size):
                phi[i] += w * (_knn_utility(list(S) + [i], X, y, x_test, y_test, k) - _knn_utility(list(S), X, y, x_test, y_test, k))
    return phi


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_shapley_matches_brute_force(k):
    rng = np.random.default_rng(k)
    X, y = rng.normal(size=(7, 2)), rng.integers(0, 2, 7)
    T, yt = rng.normal(size=(3, 2)), rng.integers(0, 2, 3)
    brute = np.mean([_brute_shapley(X, y, T[t], yt[t], k) for t in range(3)], axis=0)
    np.testing.assert_allclose(knn_shapley(X, y, T, yt, k=k), brute, atol=1e-12)


def test_leave_one_out_simple_utility():
    X = np.arange(5.0)[:, None]
    vals = leave_one_out(X, np.zeros(5), lambda Xa, ya: float(Xa.sum()))
    np.testing.assert_allclose(vals, np.arange(5.0))


def test_kcenter_greedy_covers_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], float)
    X = np.vstack([c + rng.normal(0, 0.5, (25, 2)) for c in centers])
    picks = kcenter_greedy(X, np.zeros(100, bool), 4, seed=1)
    assert len(set(picks.tolist())) == 4 and sorted({int(i) // 25 for i in picks}) == [0, 1, 2, 3]
    labeled = np.zeros(100, bool)
    labeled[:25] = True
    picks = kcenter_greedy(X, labeled, 3)
    assert not labeled[picks].any() and sorted({int(i) // 25 for i in picks}) == [1, 2, 3]


def test_typiclust_picks_typical_points_of_each_cluster():
    rng = np.random.default_rng(1)
    centers = np.array([[0, 0], [30, 0], [0, 30]], float)
    X = np.vstack([c + rng.normal(0, 1, (40, 2)) for c in centers])
    picks = typiclust(X, np.zeros(120, bool), 3, seed=0)
    assert sorted({int(i) // 40 for i in picks}) == [0, 1, 2]
    for i in picks:  # typical: close to its cluster centre
        assert np.linalg.norm(X[i] - centers[int(i) // 40]) < 1.5
    labeled = np.zeros(120, bool)
    labeled[picks] = True
    more = typiclust(X, labeled, 5, seed=0)
    assert len(set(more.tolist())) == 5 and not labeled[more].any()


def test_auroc():
    assert ev.auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert ev.auroc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == 0.5


def test_simulation_selectors_are_valid():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(m, 1, (60, 5)) for m in (0, 4, 8)])
    y = np.repeat([0, 1, 2], 60)
    res = ev.simulate_annotation(X, y, X, y, methods=ev.selectors(("center",)), budgets=[10, 20], seeds=1)
    assert set(res.accuracy) >= {"random", "paper", "pool", "deflation", "class-aware", "kcenter", "typiclust"}
    for a in res.accuracy.values():
        assert a.shape == (1, 2) and ((0 <= a) & (a <= 1)).all()


def test_corruptions_and_tiles():
    tiles = ev.medical_tiles(8, 32, seed=0)
    assert tiles.shape[0] == 8 and tiles.shape[1:3] == (32, 32)
    rng = np.random.default_rng(0)
    for kind in ev.corruption_kinds():
        out = ev.corrupt(tiles[0], kind, rng)
        assert out.shape == tiles[0].shape and out.dtype == np.uint8 and not np.array_equal(out, tiles[0])
    imgs, bad, kinds = ev.plant_corruptions(tiles, 0.25, rng)
    assert bad.sum() == 2 and all(kinds[bad]) and not any(kinds[~bad])


def test_embedder_fallback_is_labelled():
    e = ev.pixel_pca_embedder(4)
    assert e.stand_in and "stand-in" in e.name
    Z = e(np.random.default_rng(0).integers(0, 255, (10, 6, 6), dtype=np.uint8))
    assert Z.shape == (10, 4)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="examine")
    ev.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.skipif(not FMNIST.is_file(), reason="Debian package dataset-fashion-mnist is not installed")
def test_evaluate_quick_end_to_end(tmp_path):
    args = _parse(["evaluate", "--quick", "--out", str(tmp_path), "--embedder", "pixel-pca", "--seeds", "1",
                   "--n-train", "200", "--n-test", "100", "--pool-size", "150", "--n-value", "40", "--n-tiles", "24"])
    args.func(args)
    for name in ("RESULTS.md", "simulation.png", "valuation.png", "quality.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "RESULTS.md").read_text()
    assert "stand-in" in md and "examine evaluate" in md and "--quick" in md and "CPUs" in md
    assert "| deflation |" in md and "| typiclust |" in md and "| knn-shapley |" in md


def test_evaluate_with_embeddings_and_errors(tmp_path):
    from examine.cli import CLIError

    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(m, 1, (150, 6)) for m in (0, 3)])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.repeat([0, 1], 150))
    args = _parse(["evaluate", "--quick", "--embeddings", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                   "--out", str(tmp_path / "o"), "--skip", "quality", "--seeds", "1", "--embedder", "pixel-pca"])
    args.func(args)
    assert "X.npy" in (tmp_path / "o" / "RESULTS.md").read_text()
    with pytest.raises(CLIError, match="go together"):
        a = _parse(["evaluate", "--embeddings", str(tmp_path / "X.npy")])
        a.func(a)
    with pytest.raises(CLIError, match="needs --medmnist"):
        a = _parse(["evaluate", "--dataset", "medmnist"])
        a.func(a)
    with pytest.raises(CLIError, match="--preprocess"):
        a = _parse(["evaluate", "--preprocess", "whiten"])
        a.func(a)
