"""On a CUDA machine: nvJPEG + GPU preprocessing give the CPU path's embeddings within bf16 tolerance.

Skipped without CUDA (CI). Run by benchmarks/gpu_check.sh on the GPU machine.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from examine.datasets import medical_tiles
from examine.embed import embed_sources
from examine.encoder import EncoderConfig, create_encoder
from examine.images import load_image
from examine.store import EmbeddingStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CFG = EncoderConfig("vit_small_patch16_224", img_size=112)


def encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_nvjpeg_decodes_like_pillow():
    from examine.gpu_decode import nvjpeg_decode

    tiles = medical_tiles(8, size=256, seed=5)
    datas = [encode(t, "JPEG", quality=90) for t in tiles] + [encode(tiles[0][:, :, 1], "JPEG")]
    out = nvjpeg_decode(datas, torch.device("cuda"))
    for d, img in zip(datas, out):
        ref = load_image(d)
        got = img.permute(1, 2, 0).cpu().numpy()
        assert got.shape == ref.shape
        assert np.abs(got.astype(int) - ref.astype(int)).mean() < 3.0  # IDCT / chroma upsampling differ slightly


def test_cuda_pipeline_matches_cpu_within_bf16(tmp_path):
    tiles = medical_tiles(40, size=256, seed=6)
    datas = [encode(t, "JPEG", quality=90) for t in tiles[:34]]
    datas += [
        encode(tiles[34], "PNG"),
        encode(tiles[35], "JPEG", progressive=True),
        encode(tiles[36][:, :, 0], "JPEG"),
        encode(np.ascontiguousarray(tiles[37][:, :200]), "JPEG"),
        encode((tiles[38].astype(np.uint16) * 257)[:, :, 0], "PNG"),
        datas[3],
        b"not an image",
        datas[4][:200],
    ]
    sources = [(f"item {i}", (lambda d=d: d)) for i, d in enumerate(datas)]
    enc = create_encoder(CFG)
    reports, vectors = {}, {}
    for dev in ("cpu", "cuda"):
        store = EmbeddingStore(tmp_path / dev, enc.version, enc.dim)
        rep = embed_sources(sources, enc, store, batch_size=16, device=dev, workers=2, progress=False)
        reports[dev], vectors[dev] = rep, store.get(list(dict.fromkeys(k for k in rep.keys if k is not None)))
        enc = enc.cpu()
    assert sorted(reports["cpu"].errors) == sorted(reports["cuda"].errors) == [len(datas) - 2, len(datas) - 1]
    assert reports["cpu"].keys == reports["cuda"].keys
    a, b = vectors["cpu"], vectors["cuda"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert cos.min() > 0.998, cos.min()
    assert rel.max() < 0.1, rel.max()
    # and the differences are far smaller than those between images: each GPU row is nearest its CPU row
    dist = np.linalg.norm(b[:, None, :] - a[None, :, :], axis=2)
    assert (dist.argmin(axis=1) == np.arange(len(a))).all()
