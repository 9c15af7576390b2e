"""Offline data: bundled medical tiles, Fashion-MNIST, MedMNIST files, planted corruptions."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import examine.datasets as datasets
from examine.datasets import (
    CORRUPTIONS,
    corrupt,
    load_fashion_mnist,
    load_medmnist,
    medical_tiles,
    medical_tiles_with_sources,
    tile_sources,
    write_medical_tiles,
)
from examine.images import load_image

FASHION = Path(datasets.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not in {FASHION}: apt-get install dataset-fashion-mnist (make system-deps)",
)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return medical_tiles(6, size=64, seed=1)


# ---------------------------------------------------------------- medical tiles


def test_sources_are_the_bundled_files():
    sources = tile_sources()
    assert {"ihc", "retina", "cell"} <= set(sources)
    assert all(path.is_file() and "skimage" in path.parts for path in sources.values())


def test_tiles_load_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    datasets._source_image.cache_clear()
    assert len(medical_tiles(4, size=32, seed=9)) == 4


def test_tiles_are_deterministic_balanced_rgb():
    tiles, sources = medical_tiles_with_sources(12, size=128, seed=5)
    again, sources_again = medical_tiles_with_sources(12, size=128, seed=5)
    assert sources == sources_again
    assert all(np.array_equal(a, b) for a, b in zip(tiles, again))
    assert all(t.shape == (128, 128, 3) and t.dtype == np.uint8 and t.flags.c_contiguous for t in tiles)
    counts = [sources.count(name) for name in set(sources)]
    assert set(sources) == {"ihc", "retina", "cell"}  # microaneurysms.png is only 102 px wide
    assert max(counts) - min(counts) <= 1
    other = medical_tiles(12, size=128, seed=6)
    assert not all(np.array_equal(a, b) for a, b in zip(tiles, other))


def test_tiles_avoid_the_dark_fundus_surround():
    tiles, sources = medical_tiles_with_sources(30, size=64, seed=2)
    for tile, source in zip(tiles, sources):
        if source == "retina":
            assert (tile.max(axis=2) < 20).mean() <= 0.02


def test_tile_size_limits():
    assert "microaneurysms" in medical_tiles_with_sources(8, size=64)[1]
    with pytest.raises(ValueError, match="larger than every source"):
        medical_tiles(1, size=5000)
    assert medical_tiles(0) == []


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_write_medical_tiles(tmp_path, fmt):
    paths = write_medical_tiles(tmp_path / "tiles", 3, size=48, seed=4, fmt=fmt)
    assert [p.name.split("_")[1] for p in paths] == ["00000", "00001", "00002"]
    expected = medical_tiles(3, size=48, seed=4)
    for path, tile in zip(paths, expected):
        image = load_image(path)
        assert image.shape == (48, 48, 3)
        assert np.abs(image.astype(int) - tile).mean() <= (0 if fmt != "jpg" else 4)
    with pytest.raises(ValueError, match="unsupported tile format"):
        write_medical_tiles(tmp_path, 1, fmt="svg")


# ---------------------------------------------------------------- Fashion-MNIST


@needs_fashion
def test_fashion_mnist_from_debian_package():
    images, labels = load_fashion_mnist("test", limit=500)
    assert images.shape == (500, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (500,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    assert 50 < images.mean() < 120  # dark background, bright garments
    full_labels = load_fashion_mnist("test")[1]
    assert len(full_labels) == 10_000 and np.array_equal(full_labels[:500], labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_folder_override_and_errors(tmp_path, monkeypatch, tiles):
    gray = np.stack([np.asarray(Image.fromarray(t).convert("L").resize((28, 28))) for t in tiles])
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", gray)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(len(gray)))
    monkeypatch.setenv("EXAMINE_FASHION_MNIST_DIR", str(tmp_path))
    images, labels = load_fashion_mnist("train")
    np.testing.assert_array_equal(images, gray)
    assert labels.tolist() == list(range(len(gray)))
    assert len(load_fashion_mnist(limit=2)[0]) == 2
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(3))
    with pytest.raises(ValueError, match="labels"):
        load_fashion_mnist("train")


# ---------------------------------------------------------------- MedMNIST


def test_load_medmnist(tmp_path, tiles):
    images = np.stack([np.asarray(Image.fromarray(t).resize((28, 28))) for t in tiles])
    path = tmp_path / "pathmnist.npz"
    np.savez(
        path,
        train_images=images,
        train_labels=np.arange(6).reshape(6, 1),
        test_images=images[:2],
        test_labels=np.zeros((2, 1), np.uint8),
    )
    loaded, labels = load_medmnist(path)
    np.testing.assert_array_equal(loaded, images)
    assert labels.dtype == np.int64 and labels.tolist() == list(range(6))
    assert load_medmnist(path, "test")[0].shape == (2, 28, 28, 3)
    with pytest.raises(ValueError, match="no val_images, val_labels in it"):
        load_medmnist(path, "val")
    multilabel = tmp_path / "chestmnist.npz"
    np.savez(multilabel, train_images=images[..., 0], train_labels=np.ones((6, 14), np.uint8))
    assert load_medmnist(multilabel)[1].shape == (6, 14)


def test_load_medmnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        load_medmnist(tmp_path / "absent.npz")
    not_npz = tmp_path / "fake.npz"
    not_npz.write_text("not a zip")
    with pytest.raises(ValueError):
        load_medmnist(not_npz)


# ---------------------------------------------------------------- corruptions


def sharpness(image: np.ndarray) -> float:
    gray = image.astype(np.float64).mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions_change_images_and_keep_shape(tiles, kind):
    small_grey = np.asarray(Image.fromarray(tiles[0]).convert("L").resize((28, 28)))  # shaped like Fashion-MNIST
    for image in [*tiles, small_grey]:
        out = corrupt(image, kind, np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - image).mean() > 0.5
        np.testing.assert_array_equal(out, corrupt(image, kind, np.random.default_rng(0)))


def test_corruptions_do_what_they_say(tiles):
    rng = np.random.default_rng(1)
    ihc = medical_tiles_with_sources(10, size=64, seed=1)
    tile = next(t for t, s in zip(*ihc) if s == "ihc")
    assert sharpness(corrupt(tile, "blur", rng)) < 0.5 * sharpness(tile)
    assert sharpness(corrupt(tile, "noise", rng)) > 2 * sharpness(tile)
    assert corrupt(tile, "blank", rng).std(axis=(0, 1)).max() < 5
    assert corrupt(tile, "saturation", rng).mean() > tile.mean() + 40
    assert (corrupt(tile, "saturation", rng) == 255).mean() > 0.5


def test_corrupt_rejects_bad_input(tiles):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(tiles[0], "rain")
    with pytest.raises(ValueError, match="uint8"):
        corrupt(tiles[0].astype(np.float32), "blur")
