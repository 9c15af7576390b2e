"""`examine score`: CSV output and clear errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from examine import marginal_singular_values
from examine.cli import main


def test_score_writes_ranked_csv(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32) + 1
    np.save(tmp_path / "emb.npy", X)
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "emb.npy"), "-o", str(out), "--top", "3"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["index", "examine_marginal", "examine_value", "value_rank"]
    assert [int(r["value_rank"]) for r in rows] == list(range(1, 31))
    m = marginal_singular_values(X)
    assert int(rows[0]["index"]) == int(np.argmax(m))
    assert float(rows[0]["examine_value"]) == 1.0
    np.testing.assert_allclose([float(r["examine_marginal"]) for r in rows], np.sort(m)[::-1])
    printed = capsys.readouterr().out
    assert "top 3 of 30" in printed


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "no such file"),
        (np.ones(4), "not 2-D"),
        (np.ones((1, 4)), "at least 2"),
        (np.array([[1, 2]], dtype=object), "Python objects"),
        (np.array([["a", "b"], ["c", "d"]]), "not numeric"),
        (b"not an npy file", "not a readable .npy"),
    ],
)
def test_score_errors_name_the_file(tmp_path, capsys, content, words):
    path = tmp_path / "emb.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content, allow_pickle=True)
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and words in err


def test_score_reports_nan_rows(tmp_path, capsys):
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    np.save(tmp_path / "e.npy", X)
    assert main(["score", str(tmp_path / "e.npy")]) == 2
    assert "rows [3]" in capsys.readouterr().err
