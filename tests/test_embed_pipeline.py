"""The overlapped embedding pipeline: the CPU path gives exactly the former serial results.

No timing here (performance lives in benchmarks/); the CUDA comparison is in
tests/test_embed_cuda.py and is skipped without a GPU.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from examine.datasets import medical_tiles
from examine.embed import _Embedder, embed_sources, path_sources
from examine.encoder import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig, create_encoder, to_square_tensor
from examine.gpu_decode import jpeg_size, square_batch, square_images
from examine.images import load_image
from examine.store import EmbeddingStore

CFG = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)


def encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def serial_reference(datas: list[bytes], enc, batch_size: int) -> dict[str, np.ndarray]:
    """The former embed_sources arithmetic: per chunk of sources, new images stacked and embedded."""
    import hashlib

    emb = _Embedder(enc, torch.device("cpu"))
    size = enc.config.img_size
    out: dict[str, np.ndarray] = {}
    for s in range(0, len(datas), batch_size):
        keys, tensors = [], []
        for d in datas[s : s + batch_size]:
            k = hashlib.sha256(d).hexdigest()
            if k in out or k in keys:
                continue
            keys.append(k)
            tensors.append(to_square_tensor(load_image(d, max_side=4 * size), size))
        if tensors:
            out.update(zip(keys, emb(torch.stack(tensors))))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_cpu_pipeline_is_bit_identical_to_the_serial_loop(tmp_path, workers, monkeypatch):
    monkeypatch.setattr("examine.embed_pipeline._INLINE_DECODE", 0)  # workers=2: files read and decoded by processes
    tiles = medical_tiles(11, size=48, seed=3)
    datas = [encode(t, "JPEG", quality=90) if i % 2 else encode(t, "PNG") for i, t in enumerate(tiles)]
    datas.insert(5, datas[1])  # a duplicate across positions
    datas.append(encode(np.ascontiguousarray(tiles[0][:, :40]), "PNG"))  # not square
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, d in enumerate(datas):
        paths.append(folder / f"{i:02d}.img")
        paths[-1].write_bytes(d)
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path / "store", enc.version, enc.dim)
    rep = embed_sources(path_sources(paths), enc, store, batch_size=4, device="cpu", workers=workers, progress=False)
    assert not rep.errors and rep.added == len(datas) - 1 and rep.keys[5] == rep.keys[1]
    ref = serial_reference(datas, enc, 4)
    got = store.get(list(ref))
    np.testing.assert_array_equal(got, np.stack(list(ref.values())))


def test_errors_name_items_with_worker_processes(tmp_path):
    tiles = medical_tiles(6, size=40, seed=1)
    good = [encode(t, "PNG") for t in tiles]
    sources = [(f"task {i}", (lambda d=d: d)) for i, d in enumerate(good)]
    sources.append(("task bad", lambda: b"\xff\xd8\xff\xe0 not really a jpeg"))
    sources.append(("task trunc", lambda: good[2][:100]))
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path, enc.version, enc.dim)
    rep = embed_sources(sources, enc, store, batch_size=3, device="cpu", workers=2, progress=False)
    assert sorted(rep.errors) == [6, 7]
    assert rep.errors[6].item == "task bad" and rep.errors[7].item == "task trunc"
    assert rep.added == 6


@pytest.mark.parametrize("workers", [0, 2])
def test_identical_broken_images_each_name_their_own_item(tmp_path, workers):
    broken = b"\xff\xd8\xff\xe0 not really a jpeg"
    sources = [(f"task {i}", (lambda: broken)) for i in (11, 12, 13)]
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path, enc.version, enc.dim)
    rep = embed_sources(sources, enc, store, batch_size=8, device="cpu", workers=workers, progress=False)
    assert [rep.errors[i].item for i in range(3)] == ["task 11", "task 12", "task 13"]
    assert all(str(rep.errors[i]).startswith(f"task {11 + i}:") for i in range(3))


def test_file_read_errors_name_the_file_when_processes_read_them(tmp_path, monkeypatch):
    from examine import embed_pipeline

    monkeypatch.setattr(embed_pipeline, "_INLINE_DECODE", 0)
    tiles = medical_tiles(4, size=40, seed=2)
    paths = []
    for i, t in enumerate(tiles):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(t, "PNG"))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "a-folder.png").mkdir()
    paths[2:2] = [tmp_path / "missing.png", tmp_path / "empty.png", tmp_path / "a-folder.png", paths[0]]
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path / "store", enc.version, enc.dim)
    rep = embed_sources(path_sources(paths), enc, store, batch_size=3, device="cpu", workers=2, progress=False)
    assert sorted(rep.errors) == [2, 3, 4], rep.errors
    assert rep.errors[2].item.endswith("missing.png") and "FileNotFoundError" in str(rep.errors[2])
    assert rep.errors[3].item.endswith("empty.png") and "empty" in str(rep.errors[3])
    assert rep.errors[4].item.endswith("a-folder.png")
    assert rep.added == 4 and rep.keys[5] == rep.keys[0]
    # the same bytes read in this process give the same keys
    fetched = embed_pipeline._fetch_many(path_sources(paths[:2]), True)
    assert [f[1] for f in fetched] == rep.keys[:2] and [f[3] for f in fetched] == [False, False]


def test_jpeg_size_sends_only_plain_jpegs_to_nvjpeg():
    img = medical_tiles(1, size=40, seed=0)[0]
    assert jpeg_size(encode(img, "JPEG")) == (40, 40)
    assert jpeg_size(encode(img[:, :, 0], "JPEG")) == (40, 40)  # greyscale
    assert jpeg_size(encode(img, "JPEG", progressive=True)) is None
    assert jpeg_size(encode(img, "PNG")) is None
    assert jpeg_size(Image.fromarray(img).convert("CMYK").tobytes()) is None
    cmyk = io.BytesIO()
    Image.fromarray(img).convert("CMYK").save(cmyk, format="JPEG")
    assert jpeg_size(cmyk.getvalue()) is None
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow applies it, nvJPEG would not
    assert jpeg_size(encode(img, "JPEG", exif=exif.tobytes())) is None
    assert jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"") is None


def test_square_batch_matches_to_square_tensor():
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    imgs = [medical_tiles(1, size=40, seed=s)[0] for s in range(3)] + [np.zeros((20, 50, 3), np.uint8) + 77]
    chw = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in imgs]
    got = square_images(chw, 32)
    for g, im in zip(got, imgs):
        torch.testing.assert_close(g, (to_square_tensor(im, 32) - mean) / std, rtol=0, atol=0)
    same = square_batch(torch.stack(chw[:3]), 32, normalise=False)
    torch.testing.assert_close(same[1], to_square_tensor(imgs[1], 32), rtol=0, atol=0)


def test_a_store_failure_stops_the_run_and_is_raised(tmp_path, monkeypatch):
    from examine.store import StoreError

    tiles = medical_tiles(6, size=40, seed=4)
    sources = [(f"t{i}", (lambda d=encode(t, "PNG"): d)) for i, t in enumerate(tiles)]
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path, enc.version, enc.dim)
    calls = []

    def failing_add(keys, vectors):
        calls.append(len(keys))
        raise StoreError("disk full")

    monkeypatch.setattr(store, "add", failing_add)
    with pytest.raises(StoreError, match="disk full"):
        embed_sources(sources, enc, store, batch_size=2, device="cpu", workers=0, progress=False)
    assert calls and len(calls) <= 2  # it stopped at the first failure (the next batch may be under way)
