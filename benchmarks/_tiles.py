"""Distinct JPEG tiles on disk for the benchmarks, made offline from scikit-image's bundled images."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from examine.datasets import medical_tiles


def _write(args: tuple[str, np.ndarray, int, int]) -> int:
    path, tile, k, quality = args  # the file name goes into a JPEG comment: every file is distinct
    img = np.rot90(tile, k % 4)
    if k >= 4:
        img = img[:, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=quality, comment=Path(path).name)
    Path(path).write_bytes(buf.getvalue())
    return len(buf.getvalue())


def jpeg_tiles(folder: str | Path, n: int, size: int = 256, seed: int = 0) -> list[Path]:
    """``n`` distinct baseline JPEG files (``size`` px): up to 512 tiles × 8 symmetries × JPEG qualities.

    Reuses ``folder`` when it already holds the same set.
    """
    folder = Path(folder)
    stamp = folder / "tiles.json"
    want = {"n": n, "size": size, "seed": seed}
    paths = [folder / f"tile_{i:05d}.jpg" for i in range(n)]
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    base = medical_tiles(min(n, 512), size=size, seed=seed)
    jobs = []
    for i, path in enumerate(paths):
        tile = base[i % len(base)]
        variant = i // len(base)
        jobs.append((str(path), tile, variant % 8, 90 - (variant // 8) % 20))
    workers = min(16, os.cpu_count() or 1)
    if workers > 1 and n > 256:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write, jobs, chunksize=64))
    else:
        for job in jobs:
            _write(job)
    stamp.write_text(json.dumps(want))
    return paths


def device_name(device) -> str:
    """GPU name, or the CPU model."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_json(path: str | None, key: str, value: dict) -> None:
    """Merge ``{key: value}`` into the JSON file at ``path`` (no-op without a path)."""
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.is_file() else {}
    data[key] = value
    p.write_text(json.dumps(data, indent=2))
