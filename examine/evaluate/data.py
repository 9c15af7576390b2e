"""Labeled image sets for the evidence, all available offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from examine.datasets import load_fashion_mnist, load_medmnist, medical_tiles_with_sources

__all__ = ["LabeledSet", "load_labeled_set", "DATASETS"]

#: Names accepted by :func:`load_labeled_set` besides a path to a MedMNIST ``.npz`` file.
DATASETS: tuple[str, ...] = ("fashion-mnist", "medical-tiles", "digits", "shirts", "fashion-mosaics")


@dataclass(frozen=True)
class LabeledSet:
    """Train and test images (RGB or grayscale uint8) with their labels: one class per image, or (multi-label)
    an ``(n, classes)`` boolean matrix of the classes each image holds."""

    name: str
    train: np.ndarray
    y_train: np.ndarray
    test: np.ndarray
    y_test: np.ndarray

    @property
    def multi_label(self) -> bool:
        """Several classes per image (``y`` is a boolean matrix)."""
        return self.y_train.ndim == 2

    @property
    def n_classes(self) -> int:
        return int(self.y_train.shape[1]) if self.multi_label else len(np.unique(self.y_train))


def load_labeled_set(name: str, n_train: int, n_test: int, *, tile_size: int = 64) -> LabeledSet:
    """Load ``fashion-mnist``, ``medical-tiles`` (labeled by source image), ``digits`` or a MedMNIST ``.npz`` path.

    Shirts: Fashion-MNIST's T-shirt/top against shirt, a hard binary task (a check set).
    Digits: scikit-learn's 1,797 handwritten digits (8 × 8, shipped with it), a check set that no
    choice of examine's was made on; one fixed shuffle, its first third for testing.
    Medical tiles: real microscopy and fundus images shipped with scikit-image,
    cut into ``tile_size`` tiles; the label is the source image.  Train and test
    tiles come from independent draws (seeds 0 and 1).
    """
    if name == "fashion-mnist":
        tr, ytr = load_fashion_mnist("train", n_train)
        te, yte = load_fashion_mnist("test", n_test)
        return LabeledSet("Fashion-MNIST", tr, ytr, te, yte)
    if name == "shirts":
        return _shirts(n_train, n_test)
    if name == "medical-tiles":
        tiles_tr, src_tr = medical_tiles_with_sources(n_train, tile_size, seed=0)
        tiles_te, src_te = medical_tiles_with_sources(n_test, tile_size, seed=1)
        return LabeledSet(
            "medical tiles by source", np.stack(tiles_tr), np.asarray(src_tr), np.stack(tiles_te), np.asarray(src_te)
        )
    if name == "digits":
        return _digits(n_train, n_test)
    if name == "fashion-mosaics":
        return _mosaics(n_train, n_test)
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such MedMNIST file; pass the path of a downloaded .npz")
        tr, ytr = load_medmnist(path, "train")
        te, yte = load_medmnist(path, "test")
        return LabeledSet(path.stem, tr[:n_train], ytr[:n_train], te[:n_test], yte[:n_test])
    raise ValueError(f"unknown dataset {name!r}; choose {', '.join(DATASETS)} or a MedMNIST .npz path")


def _shirts(n_train: int, n_test: int) -> LabeledSet:
    """A hard two-class set, like the normal/abnormal tasks of medical imaging: Fashion-MNIST's
    T-shirt/top (0) against shirt (6), the pair its classifiers confuse most."""
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = load_fashion_mnist(split, None if split == "test" else min(60_000, 6 * n))
        keep = np.flatnonzero(np.isin(labels, (0, 6)))[:n]
        out += [images[keep], (labels[keep] == 6).astype(np.int64)]
    return LabeledSet("T-shirt vs shirt", out[0], out[1], out[2], out[3])


def _digits(n_train: int, n_test: int) -> LabeledSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.asarray(bunch.images) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    cut = len(images) // 3  # a third for testing, the same third whatever the sizes asked
    test, train = order[:cut][:n_test], order[cut:][:n_train]
    y = np.asarray(bunch.target)
    return LabeledSet("digits", images[train], y[train], images[test], y[test])


def _mosaics(n_train: int, n_test: int) -> LabeledSet:
    """A multi-label set, like findings in a scan: 2 × 2 mosaics (56 × 56) of Fashion-MNIST images; the labels
    are the classes present. Each mosaic draws 1-3 classes and fills its four quarters from them, so one class
    may fill a mosaic or share it; the quarters' images are distinct draws of their class."""
    out = []
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = load_fashion_mnist(split, None if split == "test" else min(60_000, 8 * n))
        rng = np.random.default_rng(500 + seed)
        by_class = [np.flatnonzero(labels == c) for c in range(10)]
        mosaics = np.zeros((n, 56, 56), np.uint8)
        y = np.zeros((n, 10), bool)
        for i in range(n):
            present = rng.choice(10, size=int(rng.integers(1, 4)), replace=False)
            quarters = rng.choice(present, size=4)
            quarters[: len(present)] = present  # every drawn class is in the mosaic
            rng.shuffle(quarters)
            for q, c in enumerate(quarters):
                r, col = divmod(q, 2)
                mosaics[i, 28 * r : 28 * r + 28, 28 * col : 28 * col + 28] = images[rng.choice(by_class[c])]
            y[i, present] = True
        out += [mosaics, y]
    return LabeledSet("Fashion-MNIST 2×2 mosaics (multi-label; mAP)", out[0], out[1], out[2], out[3])
