"""examine.targets: several questions per image, against one Probe per question fitted by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examine.probe import Probe, ProbeError, column_moments
from examine.targets import Target, TargetProbe


def pool(n=120, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.random(n) < 0.4, rng.random(n) < 0.5
    kind = rng.integers(0, 3, n)
    X = np.column_stack([a * 3.0, b * 3.0, np.eye(3)[kind] * 3.0]) + rng.normal(size=(n, 5))
    return X.astype(np.float32), a, b, kind


def test_one_class_target_is_exactly_its_probe():
    X, _, _, kind = pool()
    names = ["x", "y", "z"]
    answers = [{"q": names[k]} for k in kind[:40]]
    moments = column_moments(X)
    tp = TargetProbe([Target("q", ("x", "y", "z"))]).fit(X[:40], answers, moments=moments)
    ref = Probe().fit(X[:40], [names[k] for k in kind[:40]], classes=names, moments=moments)
    np.testing.assert_allclose(tp.margin(X), ref.margin(X), atol=1e-12)
    np.testing.assert_allclose(tp.predict_proba(X)["q"], ref.predict_proba(X), atol=1e-12)
    assert tp.counts_[("q", "x")] == int((kind[:40] == 0).sum()) and tp.n_labels_ == 40


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_presence_heads_equal_one_yes_no_probe_per_class(dtype):
    X, a, b, _ = pool()
    X = X.astype(dtype)
    moments = column_moments(X)
    boxes = [[c for c, on in (("nodule", a[j]), ("mass", b[j])) if on] for j in range(60)]
    target = Target("box", ("nodule", "mass", "calcification"), "presence")
    tp = TargetProbe([target]).fit(X[:60], [{"box": v} if v else {} for v in boxes], moments=moments)
    P = tp.predict_proba(X)["box"]
    for k, c in enumerate(["nodule", "mass"]):
        ref = Probe().fit(X[:60], [c in v for v in boxes], classes=[False, True], moments=moments)
        np.testing.assert_allclose(P[:, k], ref.predict_proba(X)[:, 1], atol=1e-5)
    assert np.all(P[:, 2] == 0.0)  # never drawn: absent everywhere, and not a learning head
    want = np.abs(2 * P[:, :2] - 1).min(axis=1)
    np.testing.assert_allclose(tp.margin(X), want, atol=1e-12)
    assert tp.counts_[("box", "calcification")] == 0 and tp.per_target_["box"]["labels"] == 60


def test_several_targets_average_their_margins_and_skip_those_that_cannot_learn():
    X, a, _, kind = pool()
    names = ["x", "y", "z"]
    answers = [{"q": names[kind[j]], "finding": ["a"] if a[j] else ["b"] if j % 2 else []} for j in range(50)]
    answers += [{"finding": ["a", "b"]}]  # answers one question only
    targets = [Target("q", tuple(names)), Target("finding", ("a", "b"), "multi"), Target("never", ("u", "v"))]
    tp = TargetProbe(targets, cv=True).fit(X[:51], answers, moments=column_moments(X))
    assert set(tp.heads_) == {"q", "finding"} and not tp.per_target_["never"]["learns"]
    answered = sum(1 for j in range(50) if a[j] or j % 2) + 1  # an empty multi-choice answer says nothing
    assert tp.per_target_["finding"]["labels"] == answered and tp.n_labels_ == 51
    single = [TargetProbe([t]).fit(X[:51], answers, moments=column_moments(X)).margin(X) for t in targets[:2]]
    np.testing.assert_allclose(tp.margin(X), (single[0] + single[1]) / 2, atol=1e-12)
    assert tp.cv_accuracy_ is not None and 0 <= tp.cv_accuracy_ <= 1


def test_no_target_to_learn_is_a_clear_error():
    X, *_ = pool(10)
    with pytest.raises(ProbeError, match="no target has labels of 2 classes"):
        TargetProbe([Target("q", ("x", "y"))]).fit(X[:3], [{"q": "x"}] * 3)
    with pytest.raises(ValueError, match="distinct names"):
        TargetProbe([Target("q", ("x",)), Target("q", ("y",))])
    with pytest.raises(ValueError, match="kind must be one of"):
        Target("q", ("x",), "boxes")


def test_rank_learns_from_multi_label_rows():
    """Several labels per row (a multi-label project): the margin policy orders by the yes/no probes' margin."""
    from examine.ranking import rank

    X, a, b, _ = pool(n=150)
    X = X.astype(np.float64)
    labels = [None] * len(X)
    for j in range(40):
        labels[j] = frozenset(c for c, on in (("a", a[j]), ("b", b[j])) if on) or frozenset({"none"})
    labeled = np.array([v is not None for v in labels])
    got = rank(X, labeled=labeled, labels=labels, policy="margin", preprocess="none")
    answers = [{"labels": list(v)} for v in labels[:40]]
    ref = TargetProbe([Target("labels", ("a", "b", "none"), "multi")]).fit(X[:40], answers, moments=column_moments(X))
    m = ref.margin(X)
    rows = np.arange(40, len(X))
    np.testing.assert_array_equal(got.order, rows[np.lexsort((rows, m[rows]))])


def test_labels_file_takes_several_labels_per_image(tmp_path):
    from examine.pipeline import PipelineError, read_labels_csv

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    f = tmp_path / "labels.csv"
    f.write_text("path,label\na.png,nodule; effusion\nb.png,mass\na.png,nodule\nb.png,calcification\n")
    assert read_labels_csv(f, tmp_path) == {
        tmp_path / "a.png": ("nodule", "effusion"),
        tmp_path / "b.png": ("mass", "calcification"),
    }
    f.write_text("path,label\na.png, ; \n")
    with pytest.raises(PipelineError, match="line 2: no label"):
        read_labels_csv(f, tmp_path)


def test_probe_map_is_the_mean_average_precision_of_one_probe_per_class():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    from examine.evaluate.simulation import probe_map

    rng = np.random.default_rng(3)
    Y = rng.random((200, 3)) < [0.5, 0.3, 0.0]  # the third class never present
    X = Y[:, :2] * 2.0 + rng.normal(size=(200, 2))
    got = probe_map(X[:100], Y[:100], [(X[100:], Y[100:])])[0]
    want = []
    for c in range(2):
        clf = LogisticRegression(C=1.0, max_iter=500, tol=1e-3).fit(X[:100], Y[:100, c])
        want.append(average_precision_score(Y[100:, c], clf.decision_function(X[100:])))
    assert got == pytest.approx(np.mean(want), abs=1e-12)
    only_one = probe_map(X[:3], np.ones((3, 3), bool), [(X[100:], Y[100:])])[0]  # constant scores: frequency
    assert only_one == pytest.approx(np.mean([Y[100:, c].mean() for c in range(2)]), abs=1e-12)


def test_the_simulation_runs_a_multi_label_pool_with_the_default_queue():
    from examine.evaluate.selectors import selectors
    from examine.evaluate.simulation import simulate_annotation

    rng = np.random.default_rng(4)
    Y = rng.random((400, 3)) < 0.4
    X = Y * 3.0 + rng.normal(size=(400, 3))
    methods = selectors(3, policies=(), baselines=("typiclust",))
    res = simulate_annotation(X[:300], Y[:300], X[300:], Y[300:], methods, budgets=[10, 30, 60], seeds=1)
    assert set(res.accuracy) == {"random", "adaptive", "typiclust"}
    assert all(0.3 < a <= 1.0 for m in res.accuracy.values() for a in m[0])


def test_the_switch_counts_the_target_with_the_most_classes_not_their_sum():
    X, a, _, kind = pool()
    names = ["x", "y", "z"]
    answers = [{"q": names[kind[j]], "box": ["a"] if a[j] else []} for j in range(40)]
    tp = TargetProbe([Target("q", tuple(names)), Target("box", ("a",), "presence")]).fit(X[:40], answers)
    assert tp.classes_seen == 3  # q: x, y, z; box: a yes/no probe, 2


def test_multi_label_rows_switch_to_uncertainty_after_ten_labels():
    """A multi-label pool's probes are yes/no: two classes each, so the switch comes at 5 × 2 labels."""
    from examine.ranking import _before_switch

    labels = [frozenset({"a"}) if j % 2 else frozenset({"a", "b"}) for j in range(10)] + [None] * 20
    labeled = np.array([v is not None for v in labels])
    assert not _before_switch(labeled, labels, {"probe": None})
    labeled[9], labels[9] = False, None
    assert _before_switch(labeled, labels, {"probe": None})
    same = [frozenset({"a"})] * 10 + [None] * 20  # every image holds the same: nothing to tell apart yet
    assert _before_switch(np.array([v is not None for v in same]), same, {"probe": None})


def test_labels_file_takes_paths_as_ranking_csv_writes_them(tmp_path, monkeypatch):
    """ranking.csv names images with the folder as given on the command line; --labels accepts them as they are."""
    from examine.pipeline import read_labels_csv

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "labels.csv"
    f.write_text("path,label\nimages/a.png,nodule\n")
    assert read_labels_csv(f, "images") == {Path("images/a.png"): ("nodule",)}
    f.write_text("path,label\na.png,nodule\n")
    assert read_labels_csv(f, "images") == {Path("images") / "a.png": ("nodule",)}
