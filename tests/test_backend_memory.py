"""Memory bound of the backend's image path: a 15 KB PNG bomb (11,000² pixels, 1 bit, under the pixel
limit) goes through the backend's fetcher and the embedder in a subprocess; its peak RSS may grow by
less than 300 MB (it grew by ~1.27 GB when the image was converted to RGB at full size). The same bomb
imported into a real Label Studio project served by the real backend, screening on: the backend's
peak RSS may grow by at most 300 MiB (the image checks on int64 full-size copies took 5.3 GB)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest

from tests.lsserver import REPO_ROOT


def png_bomb(side: int) -> bytes:
    """A 1-bit greyscale PNG of side × side zeros (built row by row: the raw data is never in memory)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


CHILD = r"""
import json, sys
from pathlib import Path
from backend.fetch import ImageFetcher
from backend.settings import Settings
from examine.embed import embed_sources
from examine.encoder import EncoderConfig, create_encoder
from examine.store import EmbeddingStore
import tempfile
bomb = Path(sys.argv[1])
root = Path(tempfile.mkdtemp())
files = root / "files"; files.mkdir()
(files / "bomb.png").write_bytes(bomb.read_bytes())
enc = create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0)
store = EmbeddingStore(root / "store", enc.version, enc.dim)
fetcher = ImageFetcher(Settings(model_dir=root / "m", data_roots=(files,)), None)
# A real small image through the whole path first: torch's thread pools and the model's first forward pass
# are set up here, not charged to the bomb (with one OpenMP thread per core they grew with the machine).
import io
from PIL import Image
small = io.BytesIO(); Image.new("L", (64, 64), 128).save(small, "PNG")
warm = embed_sources([("warm", lambda: small.getvalue())], enc, store, device="cpu", progress=False)
assert warm.added == 1, warm.errors
def status_kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
# The peak is reset to the current RSS (Linux: 5 > clear_refs), so the peak after is the bomb's alone; the
# lifetime peak (ru_maxrss) also held whatever start-up freed, which counted up to ~175 MB on other machines.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status_kib("VmRSS")
report = embed_sources([fetcher.source(1, "/data/local-files/?d=bomb.png")], enc, store, device="cpu", progress=False)
after = status_kib("VmHWM")
print(json.dumps({"extra_mb": (after - before) / 1024, "added": report.added, "errors": [str(e) for e in report.errors.values()]}))
"""


def test_png_bomb_under_the_pixel_limit_stays_under_300_mb(tmp_path):
    data = png_bomb(11000)
    assert len(data) < 16_000 and 11000 * 11000 < 2**27
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"15 KB PNG bomb, 11,000² pixels: +{result['extra_mb']:.0f} MB peak RSS")
    assert result["added"] == 1 and not result["errors"]
    assert result["extra_mb"] < 300


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _processes(root: int) -> list[int]:
    """``root`` and its descendants (the gunicorn arbiter, its worker, any decoding processes)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


@pytest.mark.e2e
@pytest.mark.slow
def test_png_bomb_with_screening_on_adds_at_most_300_mib_to_the_real_backend(setup_factory):
    s = setup_factory()  # screening is on by default
    s.import_tiles(6)
    s.connect()
    s.converged()
    procs = _processes(s.backend.proc.pid)
    base = {}
    for pid in procs:  # peak RSS reset to the current RSS (Linux: 5 > clear_refs), so the peak after is the bomb's
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        base[pid] = _status_kib(pid, "VmRSS")
    t0 = time.monotonic()
    [bomb] = s.client.import_files(s.pid, {"bomb.png": png_bomb(11000)})
    s.converged(timeout=240, must_rank=(bomb,))
    end = time.monotonic() + 120
    while str(bomb) not in s.status()["flagged"]["tasks"]:  # screened: a 1-bit black image is blank
        assert time.monotonic() < end, s.status()["flagged"]
        time.sleep(0.5)
    took = time.monotonic() - t0
    extra = {}
    for pid in _processes(s.backend.proc.pid):
        if os.path.exists(f"/proc/{pid}/status"):
            extra[pid] = (_status_kib(pid, "VmHWM") - base.get(pid, 0)) / 1024
    reason = s.status()["flagged"]["tasks"][str(bomb)]
    print(f"PNG bomb 11,000² with screening on: +{max(extra.values()):.0f} MiB peak RSS, {took:.0f} s; {reason}")
    assert "blank" in reason
    assert max(extra.values()) <= 300, extra
