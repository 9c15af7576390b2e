"""`examine embed` as a user runs it, three times over the same folder, each a whole process:

1. first run: every file read, hashed, decoded and embedded;
2. re-run: every file unchanged and stored (the file index answers, no file is read);
3. re-run without the file index (``store/files.tsv`` moved aside): every file read and hashed again, as before
   the index existed;

and with ``--rank``, first of all ``examine rank`` from nothing (the device's MAE recipe pretrained on the folder,
then embedding and the queue) in its own model directory, with its phase table (``--json``).

    .venv/bin/python benchmarks/bench_rerun.py                          # CPU: 4,000 tiles, vit_tiny@32
    python benchmarks/bench_rerun.py --device cuda --images 32768 --model vit_base_patch16_224 --img-size 224

The encoder is built at random initialisation (no download) and saved into a fresh model directory; the folder holds
256-px JPEG tiles (``--tiles-dir`` reuses one). Prints the three wall times and the ratios; ``--json`` appends them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examine.datasets import write_medical_tiles  # noqa: E402
from examine.encoder import EncoderConfig, create_encoder  # noqa: E402
from examine.evaluate.results import machine  # noqa: E402


def _run(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds of the whole process, and what it said: its summary and its phase line."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    said = [ln for ln in lines if ln.startswith(("embedded", "phases", "ranked"))]
    return time.perf_counter() - t0, "\n    ".join(said)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rank", action="store_true", help="also time `examine rank` from nothing, with its phases")
    ap.add_argument("--rank-epochs", type=int, default=0, help="MAE epochs for --rank (default: the recipe's)")
    a = ap.parse_args(argv)
    print(machine(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    tiles = Path(a.tiles_dir) if a.tiles_dir else work / "tiles"
    have = len(list(tiles.glob("*.jpg"))) if tiles.is_dir() else 0
    if have < a.images:
        write_medical_tiles(tiles, a.images, size=256, fmt="jpg")
    ranked: dict = {}
    if a.rank:
        phases = work / "rank_phases.json"
        cmd = [sys.executable, "-m", "examine", "rank", str(tiles), "--model-dir", str(work / "rank-model")]
        cmd += ["-o", str(work / "ranking.csv"), "--device", a.device, "--json", str(phases)]
        secs, said = _run(cmd + (["--epochs", str(a.rank_epochs)] if a.rank_epochs else []))
        ranked = {"rank_from_nothing_s": round(secs, 2), "rank_phases": json.loads(phases.read_text())}
        print(f"rank from nothing {secs:7.2f} s\n    {said}", flush=True)
    patch = a.patch_size or (8 if a.img_size <= 64 else 16)
    model_dir = work / "model"
    create_encoder(EncoderConfig(a.model, img_size=a.img_size, patch_size=patch), seed=0).save(model_dir / "encoder")
    cmd = [sys.executable, "-m", "examine", "embed", str(tiles), "--model-dir", str(model_dir), "--device", a.device]
    first, said = _run(cmd)
    print(f"first run        {first:7.2f} s\n    {said}", flush=True)
    time.sleep(2.1)  # past the index's racy window for the newest files
    _run(cmd)  # the files written by the first run are now trusted
    again, said = _run(cmd)
    print(f"re-run           {again:7.2f} s\n    {said}", flush=True)
    index = model_dir / "store" / "files.tsv"
    shutil.move(index, work / "files.tsv")
    without, said = _run(cmd)
    shutil.move(work / "files.tsv", index)
    print(f"re-run, no index {without:7.2f} s\n    {said}", flush=True)
    print(f"re-run / first {again / first:.3f}; re-run with / without the index {again / without:.3f}")
    if a.json:
        path = Path(a.json)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["cli_rerun"] = {
            "images": a.images,
            "model": f"{a.model}@{a.img_size}",
            "device": a.device,
            "first_s": round(first, 2),
            "rerun_s": round(again, 2),
            "rerun_without_index_s": round(without, 2),
            **ranked,
        }
        path.write_text(json.dumps(data, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
