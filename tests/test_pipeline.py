"""The one pipeline (folder → encoder → store → queue) and `examine rank` on top of it."""

from __future__ import annotations

import csv

import pytest

from examine.cli import main
from examine.datasets import write_medical_tiles
from examine.encoder import EncoderConfig, create_encoder
from examine.images import list_images
from examine.pipeline import PipelineError, rank_folder
from examine.ranking import DEFAULT_POLICY, rank
from examine.ranking_csv import write_ranking_csv
from examine.scoring import value_order
from examine.workspace import Workspace


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    write_medical_tiles(root / "images", 30, size=48, seed=5)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(
        root / "model" / "encoder"
    )
    return root


def test_rank_folder_serves_the_default_queue(folder):
    result = rank_folder(folder / "images", folder / "model", device="cpu")
    assert result.policy == DEFAULT_POLICY and len(result.paths) == 30 and result.added == 30
    assert [p.name for p, _ in result.errors] == ["broken.jpg"]
    ws = Workspace(folder / "model")
    key = dict(zip(result.paths, result.keys))
    listed = [p for p in list_images(folder / "images") if p in key]  # the folder's order
    flagged = [p for p, r in zip(result.paths, result.reasons or []) if r]  # the screening closes the queue
    deferred = [listed.index(p) for p in flagged]
    again = rank(ws.store(ws.encoder()).get([key[p] for p in listed]), deferred=deferred)
    assert [listed[i] for i in again.order] == result.paths  # the queue is examine.ranking's default
    paper = rank_folder(folder / "images", folder / "model", policy="paper", device="cpu")
    assert paper.cached == 30 and paper.added == 0  # nothing re-embedded
    assert value_order(paper.marginal).tolist() == list(range(30))  # the paper's order: descending σ1 drop


def test_write_ranking_csv_and_errors(folder, tmp_path):
    result = rank_folder(folder / "images", folder / "model", device="cpu")
    err = write_ranking_csv(result, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:5] == ["path", "sha256", "queue_position", "examine_value", "examine_marginal"]
    assert [int(r["queue_position"]) for r in rows] == list(range(1, 31))
    assert all(0.0 <= float(r["quality"]) <= 1.0 for r in rows) and "reasons" in rows[0]
    assert err is not None and "broken.jpg" in err.read_text()
    result.errors.clear()
    assert write_ranking_csv(result, tmp_path / "r.csv") is None and not err.exists()


def test_cli_rank_policy_and_errors(folder, tmp_path, capsys):
    out = tmp_path / "q.csv"
    assert (
        main(
            [
                "rank",
                str(folder / "images"),
                "--model-dir",
                str(folder / "model"),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--policy",
                "paper",
            ]
        )
        == 0
    )
    text = capsys.readouterr()
    assert "policy paper" in text.out and "broken.jpg" in text.err
    assert main(["rank", str(tmp_path / "nothing"), "--model-dir", str(folder / "model")]) == 2
    with pytest.raises(PipelineError, match="no images"):
        (tmp_path / "empty").mkdir()
        rank_folder(tmp_path / "empty", folder / "model")
    with pytest.raises(SystemExit):
        main(["rank", str(folder / "images"), "--policy", "nope"])


def test_pretrained_name_skips_mae_pretraining(folder, tmp_path, hub_cache):
    """A named pretrained model is built through timm, not pretrained from scratch (no hub here: clear error)."""
    from examine.encoder import EncoderError

    with pytest.raises(EncoderError, match="Hugging Face cache"):
        rank_folder(
            folder / "images", tmp_path / "m", encoder_config=EncoderConfig("vit_tiny_patch16_224.augreg_in21k", 32)
        )
    assert not (tmp_path / "m" / "encoder").exists()


def test_cli_rank_with_labels_learns_and_predicts(folder, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    names = sorted(p.name for p in (folder / "images").iterdir() if p.name != "broken.jpg")
    rows = ["path,label"] + [f"{n},{'a' if i % 2 else 'b'}" for i, n in enumerate(names[:8])]
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "q.csv"
    args = ["rank", str(folder / "images"), "--model-dir", str(folder / "model"), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--labels", str(labels)]) == 0
    with open(out, newline="") as fh:
        queue = list(csv.DictReader(fh))
    assert len(queue) == 22 and not {r["path"].rsplit("/", 1)[-1] for r in queue} & set(names[:8])
    assert {r["predicted"] for r in queue} <= {"a", "b"} and all(0.5 <= float(r["probability"]) <= 1 for r in queue)
    assert "8 labeled image(s) left out of the queue" in capsys.readouterr().out

    labels.write_text("path,label\nmissing.png,a\n")
    assert main([*args, "--labels", str(labels)]) == 2
    assert "line 2" in capsys.readouterr().err
    labels.write_text("file,class\n")
    assert main([*args, "--labels", str(labels)]) == 2
    assert "header 'path,label'" in capsys.readouterr().err


def test_the_console_says_which_encoder_is_used_and_what_it_was_trained_on(tmp_path):
    """A reused encoder names its version, its folder and what it was pretrained on; a missing record says so."""
    import json

    from examine.encoder import EncoderConfig, create_encoder
    from examine.pipeline import PROVENANCE, prepare_encoder
    from examine.workspace import Workspace

    ws = Workspace(tmp_path / "model")
    enc = create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0)
    enc.save(ws.encoder_dir)
    lines: list[str] = []
    prepare_encoder([], ws, log=lines.append)
    assert enc.version in lines[0] and "not recorded" in lines[0]
    (ws.encoder_dir / PROVENANCE).write_text(json.dumps({"folder": "/data/a", "images": 120, "date": "2026-12-04"}))
    lines.clear()
    prepare_encoder([], ws, log=lines.append)
    assert "MAE-pretrained on 120 images of /data/a on 2026-12-04" in lines[0] and "--model-dir" in lines[0]
