"""Embedding a batch of real images into the store: errors per item, nothing re-embedded."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from examine.datasets import medical_tiles
from examine.embed import embed_arrays, embed_sources, path_sources
from examine.encoder import EncoderConfig, create_encoder
from examine.store import EmbeddingStore

CFG = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_images_are_reported_and_the_batch_goes_on(tmp_path):
    tiles = medical_tiles(6, size=40, seed=1)
    good = [png(t) for t in tiles]

    def boom():
        raise ConnectionError("host unreachable")

    sources = [
        ("task 1", lambda: good[0]),
        ("task 2", lambda: b""),
        ("task 3", lambda: b"this is not an image"),
        ("task 4", boom),
        ("task 5", lambda: good[1]),
        ("task 6", lambda: good[0][: len(good[0]) // 2]),  # truncated
        ("task 7", lambda: good[0]),  # duplicate of task 1
    ]
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path, enc.version, enc.dim)
    rep = embed_sources(sources, enc, store, batch_size=3, device="cpu", progress=False)
    assert sorted(rep.errors) == [1, 2, 3, 5]
    for i, err in rep.errors.items():
        assert err.item == f"task {i + 1}"
    assert "unreachable" in str(rep.errors[3])
    assert rep.keys[0] == rep.keys[6] and rep.keys[0] is not None and rep.keys[4] is not None
    assert rep.added == 2 and len(store) == 2
    np.testing.assert_allclose(store.get([rep.keys[0]])[0], embed_arrays([tiles[0]], enc, device="cpu")[0], atol=1e-5)


def test_rerun_embeds_only_what_is_new(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tiles = medical_tiles(5, size=40, seed=2)
    paths = []
    for i, t in enumerate(tiles[:3]):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(png(t))
    enc = create_encoder(CFG)
    store = EmbeddingStore(tmp_path / "store", enc.version, enc.dim)
    first = embed_sources(path_sources(paths), enc, store, device="cpu", progress=False)
    assert (first.added, first.cached) == (3, 0)
    for i, t in enumerate(tiles[3:], start=3):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(png(t))
    restarted = EmbeddingStore(tmp_path / "store", enc.version, enc.dim)
    second = embed_sources(path_sources(paths), enc, restarted, device="cpu", progress=False)
    assert (second.added, second.cached) == (2, 3)
