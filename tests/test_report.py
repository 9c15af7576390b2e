"""Tests of ``examine report``: the static HTML report built from real medical tiles."""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examine.cli import CLIError, build_parser, main
from examine.datasets import write_medical_tiles
from examine.encoder import EncoderConfig, create_encoder
from examine.report import _map_subset, _sections, map_coordinates, read_ranking

N_TILES = 36


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict[str, Path]:
    """Real tiles (plus one broken file), a small random-init encoder, and `examine rank`'s CSV."""
    root = tmp_path_factory.mktemp("report")
    images = root / "images"
    write_medical_tiles(images, N_TILES, size=48, seed=3)
    (images / "broken.png").write_bytes(b"not an image at all")
    model_dir = root / "model"
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(model_dir / "encoder")
    ranking = root / "ranking.csv"
    assert main(["rank", str(images), "--model-dir", str(model_dir), "-o", str(ranking), "--device", "cpu"]) == 0
    return {"root": root, "images": images, "model_dir": model_dir, "ranking": ranking}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _thumbs(top: int, batch: int):
    """How many thumbnails a report holds: the first ``top`` in the queue, the ``top`` lowest EXAMINE values, the
    next batch and the images the screening flagged, an image counted once."""

    def count(rows: list[dict]) -> int:
        rows = sorted(rows, key=lambda r: int(r["queue_position"]))
        bottom = min(top, len(rows) - top)
        lowest = sorted(range(len(rows)), key=lambda i: float(rows[i]["examine_value"]))[:bottom]
        flagged = {i for i, r in enumerate(rows) if r.get("reasons")}
        return len(set(range(top)) | set(lowest) | set(range(batch)) | flagged)

    return count


def _check_report(out: Path, ranking_rows: list[dict], n_thumbs) -> str:
    """Files present, links relative and resolvable, thumbnails valid, rank 1 first; returns the page."""
    page = (out / "index.html").read_text()
    for name in ("index.html", "scores.png", "map.png", "ranking.csv"):
        assert (out / name).is_file(), name
    assert not re.search(r"https?://", page)
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all(not link.startswith(("/", "file:")) and ":" not in link for link in links)
    assert all((out / link).is_file() for link in links)
    assert 'src="scores.png"' in page and 'src="map.png"' in page
    thumbs = sorted((out / "thumbs").iterdir())
    assert len(thumbs) == n_thumbs(ranking_rows)
    for thumb in thumbs:
        assert f'src="thumbs/{thumb.name}"' in page
        with Image.open(thumb) as im:
            im.verify()
        with Image.open(thumb) as im:
            assert max(im.size) <= 160
    first = re.search(r'<figure data-rank="(\d+)" data-sha256="([0-9a-f]{64})"', page)
    rank1 = next(r for r in ranking_rows if r["queue_position"] == "1")
    assert first.group(1) == "1" and first.group(2) == rank1["sha256"]
    assert Path(rank1["path"]).name in page
    return page


def test_report_from_ranking_csv(pool, tmp_path, capsys):
    out = tmp_path / "report"
    argv = [
        "report",
        "--ranking",
        str(pool["ranking"]),
        "--model-dir",
        str(pool["model_dir"]),
        "--out",
        str(out),
        "--top",
        "8",
        "--batch",
        "5",
        "--map",
        "pca",
    ]
    assert main(argv) == 0
    page = _check_report(out, _csv_rows(pool["ranking"]), n_thumbs=_thumbs(8, 5))
    assert f"{N_TILES}</td>" in page  # images ranked
    assert "broken.png" in page and (out / "ranking.errors.csv").is_file()  # the failed image, listed
    assert "PCA of" in page and "vit_tiny_patch16_224" in page
    rows = _csv_rows(pool["ranking"])
    flagged = [r for r in rows if r["reasons"]]
    assert page.count('<figure data-rank="') == 16 + len(flagged)
    assert page.index('id="most"') < page.index('data-rank="8"') < page.index('id="least"')
    assert (out / "ranking.csv").read_text() == pool["ranking"].read_text()
    with Image.open(out / "map.png") as im:
        assert im.size[0] > 400
    # the page's figures are ranking.csv's: value range, the lowest-value gallery, each card's value
    values = {r["sha256"]: float(r["examine_value"]) for r in rows}
    lo, hi = min(values.values()), max(values.values())
    assert f"highest {hi:.4f}" in page and f"lowest {lo:.4f}" in page
    end = page.index('id="flagged"') if flagged else len(page)
    least = page[page.index('id="least"') : end]
    shown = re.findall(r'data-sha256="([0-9a-f]{64})"', least)
    assert [values[k] for k in shown] == sorted(values.values())[:8]
    # the flagged gallery: exactly the rows ranking.csv flags, in queue order, each with its reasons
    gallery = page[end:]
    assert re.findall(r'data-sha256="([0-9a-f]{64})"', gallery) == [r["sha256"] for r in flagged]
    for r in flagged:
        assert html.escape(r["reasons"], quote=True) in gallery
    for key, value in re.findall(r'data-sha256="([0-9a-f]{64})".*?class="value">([0-9.]+)<', page):
        assert float(value) == pytest.approx(values[key], abs=5e-5)


def test_report_from_folder_uses_rank(pool, tmp_path, monkeypatch):
    monkeypatch.chdir(pool["root"])  # relative paths in the CSV, as a user would type them
    out = tmp_path / "report"
    argv = ["report", "images", "--model-dir", "model", "--out", str(out), "--top", "6", "--map", "tsne"]
    assert main(argv) == 0
    rows = _csv_rows(out / "ranking.csv")
    assert len(rows) == N_TILES
    assert [r["sha256"] for r in rows] == [r["sha256"] for r in _csv_rows(pool["ranking"])]
    page = _check_report(out, rows, n_thumbs=_thumbs(6, 10))
    assert "t-SNE" in page


@pytest.mark.parametrize("case", ["missing-csv", "missing-model-dir", "bad-columns", "bad-number", "both", "neither"])
def test_report_user_errors(pool, tmp_path, capsys, case):
    csv_path, model_dir, images = str(pool["ranking"]), str(pool["model_dir"]), []
    if case == "missing-csv":
        csv_path = str(tmp_path / "nope.csv")
    elif case == "missing-model-dir":
        model_dir = str(tmp_path / "no-model")
    elif case == "bad-columns":
        csv_path = str(tmp_path / "bad.csv")
        Path(csv_path).write_text("index,marginal,score,rank\n0,0.5,1.0,1\n")
    elif case == "bad-number":
        csv_path = str(tmp_path / "bad.csv")
        Path(csv_path).write_text("path,sha256,marginal,score,rank\na.png," + "0" * 64 + ",x,1.0,1\n")
    elif case == "both":
        images = [str(pool["images"])]
    argv = ["report", *images, "--model-dir", model_dir, "--out", str(tmp_path / "out")]
    if case != "neither":
        argv += ["--ranking", csv_path]
    assert main(argv) == 2
    err = capsys.readouterr().err
    expected = {
        "missing-csv": "no such ranking CSV",
        "missing-model-dir": "no such model directory",
        "bad-columns": "missing column(s) path, sha256",
        "bad-number": "line 2",
        "both": "not both",
        "neither": "not both",
    }[case]
    assert err.startswith("examine: error:") and expected in err
    args = build_parser().parse_args(argv)
    with pytest.raises(CLIError):
        args.func(args)


def test_report_refuses_a_model_dir_without_these_embeddings(pool, tmp_path):
    other = tmp_path / "other-model"
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=1).save(other / "encoder")
    with pytest.raises(CLIError, match="no embeddings stored"):
        args = build_parser().parse_args(
            ["report", "--ranking", str(pool["ranking"]), "--model-dir", str(other), "--out", str(tmp_path / "out")]
        )
        args.func(args)


def test_read_ranking_sorts_by_rank(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "path,sha256,queue_position,examine_value,examine_marginal\nb.png,bb,2,0.5,0.1\na.png,aa,1,1.0,0.3\n"
    )
    ranked = read_ranking(path)
    assert ranked.paths == ["a.png", "b.png"] and ranked.rank.tolist() == [1, 2]
    np.testing.assert_allclose(ranked.score, [1.0, 0.5])
    path.write_text("path,sha256,marginal,score,rank\nb.png,bb,0.1,0.5,2\na.png,aa,0.3,1.0,1\n")  # older names
    assert read_ranking(path).rank.tolist() == [1, 2]


def test_map_helpers():
    X = np.random.default_rng(0).normal(size=(40, 16))
    xy, desc = map_coordinates(X, "pca")
    assert xy.shape == (40, 2) and desc.startswith("PCA")
    xy, desc = map_coordinates(X[:3, :1], "auto")
    assert xy.shape == (3, 2) and np.all(xy[:, 1] == 0)
    keep = np.arange(5)
    subset = _map_subset(100, keep, 20, seed=0)
    assert len(subset) == 20 and set(keep) <= set(subset) and np.all(np.diff(subset) > 0)
    assert _sections(10, 24) == (10, 0) and _sections(30, 24) == (24, 6) and _sections(100, 24) == (24, 24)


def test_the_flagged_gallery_shows_the_reasons_of_the_csv(pool, tmp_path):
    rows = _csv_rows(pool["ranking"])
    for r in rows:
        r["reasons"] = ""
    rows[-1]["reasons"] = "out of focus: focus 9σ below the pool"
    rows[-2]["reasons"] = "near-duplicate: a copy of #3 <b>"
    edited = tmp_path / "ranking.csv"
    with open(edited, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ranked = read_ranking(edited)
    assert ranked.flagged() == [len(rows) - 2, len(rows) - 1]
    out = tmp_path / "report"
    argv = ["report", "--ranking", str(edited), "--model-dir", str(pool["model_dir"]), "--out", str(out)]
    argv += ["--top", "4", "--batch", "3", "--map", "pca"]
    assert main(argv) == 0
    page = (out / "index.html").read_text()
    gallery = page[page.index('id="flagged"') :]
    assert "Flagged as unusable (2)" in page
    assert "out of focus: focus 9σ below the pool" in gallery and "near-duplicate: a copy of #3 &lt;b&gt;" in gallery
    assert gallery.count('<figure data-rank="') == 2
    without = tmp_path / "plain.csv"
    with open(without, "w", newline="") as fh:
        fields = [f for f in rows[0] if f not in ("quality", "reasons")]
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    assert read_ranking(without).reasons is None and read_ranking(without).flagged() == []
