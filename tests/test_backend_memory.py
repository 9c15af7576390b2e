"""Memory bound of the backend's image path: a 15 KB PNG bomb (11,000² pixels, 1 bit, under the pixel
limit) goes through the backend's fetcher and the embedder in a subprocess; its peak RSS may grow by
less than 300 MB (it grew by ~1.27 GB when the image was converted to RGB at full size)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

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
import json, resource, sys
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
warm = embed_sources([("warm", lambda: (files / "bomb.png").read_bytes()[:0] or b"x")], enc, store, device="cpu", progress=False)
# Current RSS (not the earlier peak) as the baseline: the extra is counted from where the process stands.
before = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
report = embed_sources([fetcher.source(1, "/data/local-files/?d=bomb.png")], enc, store, device="cpu", progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
