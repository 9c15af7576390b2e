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


def test_help_texts_name_every_column_that_ranking_csv_holds(tmp_path):
    """`examine rank -o` and `examine report --ranking` describe the file the writer writes (columns included
    only with labels or the screening too)."""
    import csv

    import numpy as np

    from examine.cli import build_parser
    from examine.pipeline import FolderRanking
    from examine.ranking_csv import LABEL_COLUMNS, RANKING_COLUMNS, SCREENING_COLUMNS, write_ranking_csv

    result = FolderRanking(
        paths=[tmp_path / "a.png", tmp_path / "b.png"],
        keys=["0" * 64, "1" * 64],
        marginal=np.array([0.2, 0.1]),
        score=np.array([1.0, 0.5]),
        policy="adaptive",
        encoder_version="enc",
        predicted=["x", "y"],
        probability=np.array([0.9, 0.6]),
        quality=np.array([1.0, 0.2]),
        reasons=["", "blur"],
    )
    write_ranking_csv(result, tmp_path / "ranking.csv")
    with open(tmp_path / "ranking.csv") as fh:
        header = next(csv.reader(fh))
    assert header == [*RANKING_COLUMNS, *LABEL_COLUMNS, *SCREENING_COLUMNS]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    rank_help = next(a.help for a in sub["rank"]._actions if a.dest == "output")
    report_help = next(a.help for a in sub["report"]._actions if a.dest == "ranking")
    for column in header:
        assert column in rank_help, column
    for column in RANKING_COLUMNS:
        assert column in report_help, column
