"""Where a command's time went: the phase timer and the commands' phase line and --json."""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

from examine.cli import main
from examine.encoder import EncoderConfig, create_encoder
from examine.phases import Phases, process_age


def test_phases_add_up_and_repeat_phases_accumulate():
    ph = Phases()
    for _ in range(2):
        with ph.phase("a"):
            time.sleep(0.02)
    with ph.phase("b"):
        time.sleep(0.01)
    d = ph.as_dict()
    assert list(d) == ["start-up", "a", "b", "other", "total"]
    assert d["a"] >= 0.04 and d["b"] >= 0.01 and d["other"] >= 0
    assert abs(d["total"] - (d["start-up"] + d["a"] + d["b"] + d["other"])) < 0.01
    assert ph.line().startswith("phases: start-up ") and ph.line().endswith(" s")
    assert process_age() > 0  # this process started before now (Linux)


def test_end_startup_moves_the_time_so_far_into_start_up(monkeypatch):
    ph = Phases()
    time.sleep(0.03)
    ph.end_startup()
    d = ph.as_dict()
    assert d["other"] < 0.02 and d["start-up"] >= 0.03 and abs(d["total"] - d["start-up"] - d["other"]) < 0.01
    monkeypatch.setattr("examine.phases.process_age", lambda: 0.0)  # a system that does not say: add it up
    ph = Phases()
    time.sleep(0.03)
    ph.end_startup()
    assert ph.as_dict()["start-up"] >= 0.03


def test_embed_prints_its_phases_and_writes_them_as_json(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        img = np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(
        tmp_path / "model" / "encoder"
    )
    out = tmp_path / "embed.json"
    argv = ["embed", str(folder), "--model-dir", str(tmp_path / "model"), "--device", "cpu", "--json", str(out)]
    assert main(argv) == 0
    assert "phases: start-up" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["command"] == "embed" and data["added"] == 3 and data["images"] == 3
    assert {"start-up", "listing", "encoder", "embedding", "other", "total"} <= set(data["phases"])
