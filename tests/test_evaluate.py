"""Tests of examine.baselines and examine.evaluate (benchmarks and the `evaluate` sub-command)."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from examine import evaluate as ev
from examine.baselines import knn_shapley, leave_one_out
from examine.evaluate.command import add_parser
from examine.evaluate.selectors import SIMULATED_POLICIES
from examine.ranking import DEFAULT_POLICY

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
                phi[i] += w * (
                    _knn_utility(list(S) + [i], X, y, x_test, y_test, k)
                    - _knn_utility(list(S), X, y, x_test, y_test, k)
                )
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


def test_auroc():
    assert ev.auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert ev.auroc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == 0.5


def test_simulation_selectors_are_valid():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(m, 1, (60, 5)) for m in (0, 4, 8)])
    y = np.repeat([0, 1, 2], 60)
    methods = ev.selectors(
        3,
        policies=(*SIMULATED_POLICIES, "class-aware", "clusters[fixed k=20]"),
        baselines=("typiclust", "margin", "entropy", "tcm", "kcenter", "probcover"),
    )
    res = ev.simulate_annotation(X, y, X, y, methods, budgets=[10, 20, 30], seeds=1, limits={"paper": 20})
    again = ev.simulate_annotation(X, y, X, y, methods, budgets=[10, 20, 30], seeds=1, limits={"paper": 20}, jobs=2)
    for m in methods:  # forked workers give the same results
        np.testing.assert_array_equal(again.accuracy[m], res.accuracy[m])
    assert set(res.accuracy) >= {
        "random",
        "clusters",
        "coverage-margin",
        "paper",
        "class-aware",
        "kcenter",
        "typiclust",
        "probcover",
        "margin",
        "entropy",
        "tcm",
        "clusters[fixed k=20]",
    }
    for m, a in res.accuracy.items():
        ran = a[:, :2] if m == "paper" else a
        assert a.shape == (1, 3) and ((0 <= ran) & (ran <= 1)).all()
        assert ((0 <= res.prelabel[m][:, :2]) & (res.prelabel[m][:, :2] <= 1)).all()
    assert np.isnan(res.accuracy["paper"][0, 2]) and res.ran_to("paper") == 20
    assert np.isnan(res.delta("paper", (20, 30))[0]) and not np.isnan(res.delta("paper", (20, 20))[0])
    d, sd = res.delta("random")
    assert d == 0 and sd == 0


def test_labels_to_reach_interpolates_the_mean_curve():
    res = ev.SimulationResult([10, 20, 50], {"random": np.array([[0.5, 0.6, 0.9], [0.5, 0.6, 0.7]])})
    assert res.labels_to_reach("random", 0.5) == 10
    assert res.labels_to_reach("random", 0.7) == pytest.approx(35.0)
    assert res.labels_to_reach("random", 0.81) is None


def test_coverage_beats_random_on_separated_blobs():
    """Eight well-separated blobs of unequal size: ten labels from the queue cover every blob."""
    rng = np.random.default_rng(4)
    sizes = [200, 150, 120, 100, 80, 60, 50, 40]
    X = np.vstack([rng.normal(0, 1, (s, 8)) + 12 * np.eye(8)[c] for c, s in enumerate(sizes)])
    y = np.repeat(np.arange(8), sizes)
    picks = ev.selectors(8)["clusters"](X, np.zeros(len(X), bool), np.full(len(X), None, object), 10, 0)
    assert set(y[picks]) == set(range(8))


def test_corruptions():
    from examine.datasets import CORRUPTIONS, medical_tiles

    tiles = np.stack(medical_tiles(8, 32, seed=0))
    rng = np.random.default_rng(0)
    imgs, bad, kinds = ev.valuation.plant_corruptions(tiles, 0.25, rng)
    assert bad.sum() == 2 and all(kinds[bad]) and not any(kinds[~bad]) and imgs.shape == tiles.shape
    assert set(kinds[bad]) <= set(CORRUPTIONS)


def test_planted_pool_deals_every_kind_and_keeps_the_rare_class_clean():
    from examine.evaluate.defects import DEFECTS, plant_defects

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 24, 24), dtype=np.uint8)
    labels = np.arange(300) % 5
    pool = plant_defects(images, labels, n=200, fraction=0.1, rare_fraction=0.02, seed=3)
    assert len(pool.images) == 200 and pool.bad.sum() == 20 and pool.rare.sum() == 4
    assert set(pool.kind[pool.bad]) == set(DEFECTS) and not pool.bad[pool.rare].any()
    for i in np.flatnonzero(pool.kind == "duplicate"):  # the copied clean image stays in the pool
        assert ((pool.source == pool.source[i]) & ~pool.bad).sum() == 1


def test_only_the_second_of_a_duplicate_pair_served_is_wasted():
    from examine.evaluate.defects import PlantedPool
    from examine.evaluate.screening import _wasted

    kind = np.array(["", "", "duplicate", "blur", "", "duplicate", ""], dtype=object)
    source = np.array([10, 11, 10, 13, 14, 14, 16])
    pool = PlantedPool([np.zeros((2, 2), np.uint8)] * 7, kind, np.zeros(7, bool), source)
    assert _wasted(np.array([2, 1, 4]), pool) == 0  # a copy served without its original is worth its label
    assert _wasted(np.array([0, 2]), pool) == 1  # both of a pair: one wasted
    assert _wasted(np.array([0, 2, 3, 4, 5, 6]), pool) == 3  # two pairs and a blurred image


def test_pixel_pca_embedder():
    from examine.evaluate.data import LabeledSet

    rng = np.random.default_rng(0)
    data = LabeledSet(
        "toy",
        rng.integers(0, 255, (30, 6, 6), dtype=np.uint8),
        np.arange(30) % 2,
        rng.integers(0, 255, (10, 6, 6), dtype=np.uint8),
        np.arange(10) % 2,
    )
    X, T, embed = ev.pixel_pca_embedder(4)(data)
    assert X.shape == (30, 4) and T.shape == (10, 4)
    np.testing.assert_allclose(embed(data.test), T)


def test_medical_tiles_are_labeled_by_source():
    data = ev.load_labeled_set("medical-tiles", 12, 8, tile_size=32)
    assert data.train.shape == (12, 32, 32, 3) and data.n_classes >= 2
    assert set(data.y_test) <= set(data.y_train) | {"ihc", "retina", "cell", "microaneurysms"}
    with pytest.raises(ValueError, match="unknown dataset"):
        ev.load_labeled_set("cifar", 1, 1)
    with pytest.raises(FileNotFoundError, match="MedMNIST"):
        ev.load_labeled_set("/nonexistent/pathmnist.npz", 1, 1)


def test_digits_check_set_is_split_once_and_fully():
    data = ev.load_labeled_set("digits", 5000, 2000)
    assert data.train.shape[1:] == (8, 8) and data.train.dtype == np.uint8 and data.n_classes == 10
    assert len(data.train) + len(data.test) == 1797 and data.train.max() == 255
    again = ev.load_labeled_set("digits", 100, 50)
    np.testing.assert_array_equal(again.test, data.test[:50])  # the same split whatever the sizes asked
    np.testing.assert_array_equal(again.train, data.train[:100])


def test_fashion_mosaics_are_multi_label_and_each_class_drawn_is_in_its_mosaic():
    data = ev.load_labeled_set("fashion-mosaics", 60, 20)
    assert data.multi_label and data.n_classes == 10 and data.train.shape == (60, 56, 56)
    assert data.y_train.dtype == bool and set(data.y_train.sum(axis=1)) <= {1, 2, 3}
    quarters = data.train.reshape(60, 2, 28, 2, 28).any(axis=(2, 4))
    assert quarters.all()  # four images in every mosaic
    again = ev.load_labeled_set("fashion-mosaics", 60, 20)
    np.testing.assert_array_equal(again.train, data.train)


def test_headroom_is_the_all_label_probe_minus_random():
    from examine.evaluate.results import SetResult, headroom
    from examine.evaluate.simulation import SimulationResult

    acc = np.array([[0.5, 0.6, 0.7], [0.7, 0.8, 0.9]])  # 2 seeds × budgets 10, 20, 50
    sim = SimulationResult(budgets=[10, 20, 50], accuracy={"random": acc}, seconds={"random": 0.0})
    r = SetResult("d", "e", 10, 5, 2, 10, 0.9)
    r.simulation = sim
    head, sd = headroom(r)
    assert head == pytest.approx(0.9 - np.mean([0.65, 0.85])) and sd == pytest.approx(0.1)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="examine")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.skipif(not FMNIST.is_file(), reason="Debian package dataset-fashion-mnist is not installed")
def test_evaluate_quick_end_to_end(tmp_path):
    """Two data sets, the MAE recipe (tiny epochs) and pixel PCA, every part of the report."""
    args = _parse(
        [
            "evaluate",
            "--datasets",
            "fashion-mnist,medical-tiles",
            "--quick",
            "--out",
            str(tmp_path),
            "--cache",
            str(tmp_path / "cache"),
            "--seeds",
            "1",
            "--n-train",
            "120",
            "--n-test",
            "60",
            "--pool-size",
            "100",
            "--n-value",
            "40",
            "--n-screen",
            "60",
            "--budgets",
            "10,20",
            "--jobs",
            "2",
        ]
    )
    args.func(args)
    for name in (
        "RESULTS.md",
        "simulation-fashion-mnist.png",
        "simulation-medical-tiles-by-source.png",
        "valuation.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "RESULTS.md").read_text()
    assert "examine evaluate" in md and "CPUs" in md and "linear probe" in md
    assert f"| **{DEFAULT_POLICY}** (default) |" in md and "| typiclust |" in md and "| margin |" in md
    assert "labels to 95 %" in md and "Pre-annotation accuracy" in md
    assert "## Screening unusable images" in md and "| examine screening | **" in md
    assert "unusable among the first 50" in md
    assert "| knn-shapley |" in md and "pixel-pca-64" in md and "MAE (default CPU recipe)" in md
    assert any((tmp_path / "cache").iterdir())  # the encoders are cached for the next run


def test_evaluate_argument_errors(capsys):
    with pytest.raises(SystemExit):
        _parse(["evaluate", "--datasets", "cifar"])
    assert "unknown ['cifar']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["evaluate", "--seeds", "0"])
    with pytest.raises(SystemExit, match="no such MedMNIST file"):
        a = _parse(["evaluate", "--datasets", "/nonexistent/x.npz"])
        a.func(a)


def test_methods_option_keeps_the_named_queues_in_order_and_names_unknown_ones():
    from examine.evaluate.command import _chosen

    methods = ev.selectors(3)
    kept = _chosen(methods, ["adaptive[pca256]", "random"])
    assert list(kept) == ["random", "adaptive[pca256]"]
    assert list(_chosen(methods, [])) == list(methods)
    with pytest.raises(SystemExit, match="unknown methods \\['typiclus'\\]"):
        _chosen(methods, ["typiclus"])
