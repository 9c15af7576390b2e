"""Planted unusable images for the screening evidence: nine kinds, a rare clean class, known truth.

Seven kinds come from :func:`examine.datasets.corrupt` (blank, blur, heavy JPEG, noise,
over- and under-exposure, marker strokes); two need the rest of the pool:

* ``foreign``: a crop of a photograph that is not from the pool's domain (the
  natural images scikit-image ships: an astronaut, a cat, coffee, coins, text, ...),
  made grey for a grey pool and resized to the pool's image size;
* ``duplicate``: a copy of another clean image of the pool, re-encoded as JPEG at
  quality 85–95 with faint noise (a re-scan or a slice saved twice).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image

from examine.datasets import corrupt
from examine.images import load_image

__all__ = ["DEFECTS", "PlantedPool", "plant_defects"]

#: Planted kinds, in the order they are dealt out.
DEFECTS: tuple[str, ...] = ("blank", "blur", "jpeg", "noise", "over", "under", "pen", "foreign", "duplicate")
_CORRUPT = {"over": "saturation", "under": "underexposure"}
_FOREIGN_FILES = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "horse.png",
    "moon.png",
    "page.png",
    "rocket.jpg",
    "text.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
)


@dataclass(frozen=True)
class PlantedPool:
    """A pool of images with planted defects and a rare clean class."""

    images: list[np.ndarray]
    kind: np.ndarray  #: (n,) object: '' for a clean image, else one of DEFECTS
    rare: np.ndarray  #: (n,) bool: a clean image of the rare class
    source: np.ndarray  #: (n,) the index into the original images each came from (−1: foreign)

    @property
    def bad(self) -> np.ndarray:
        return self.kind != ""


def _photographs() -> list[np.ndarray]:
    data = resources.files("skimage.data")
    out = []
    for name in _FOREIGN_FILES:
        entry = data.joinpath(name)
        if entry.is_file():
            with resources.as_file(entry) as path:
                out.append(load_image(path))
    if not out:
        raise RuntimeError("no bundled photographs found for foreign images: pip install scikit-image")
    return out


def _foreign(like: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize(like.shape[1::-1], Image.Resampling.BILINEAR)
    out = np.asarray(crop.convert("L") if like.ndim == 2 else crop.convert("RGB"))
    return out.copy()


def _duplicate(original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, format="JPEG", quality=int(rng.integers(85, 96)))
    copy = np.asarray(Image.open(buffer), np.float32) + rng.normal(0.0, 1.0, original.shape)
    return np.clip(np.rint(copy), 0, 255).astype(np.uint8)


def plant_defects(
    images: np.ndarray | list[np.ndarray],
    labels: np.ndarray,
    *,
    n: int,
    fraction: float = 0.10,
    rare_fraction: float = 0.01,
    rare_class: object | None = None,
    seed: int = 0,
    kinds: tuple[str, ...] = DEFECTS,
) -> PlantedPool:
    """A pool of ``n`` images: ``rare_fraction`` of them from ``rare_class`` (default: the last class),
    the rest from the other classes, then ``fraction`` of the pool replaced by defects dealt in turn from ``kinds``.

    Rare-class images are never made defective; duplicates copy a clean image that stays in the pool.
    A split too small for ``n`` images gives a smaller pool.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    rare_class = classes[-1] if rare_class is None else rare_class
    n_rare = max(1, int(round(rare_fraction * n))) if rare_fraction > 0 else 0
    rare_rows = rng.permutation(np.flatnonzero(labels == rare_class))[:n_rare]
    common = rng.permutation(np.flatnonzero(labels != rare_class))[: n - len(rare_rows)]
    n = len(common) + len(rare_rows)  # a small split gives a smaller pool
    if n < 2:
        raise ValueError(f"a pool needs at least 2 images, the split gives {n}")
    order = rng.permutation(np.concatenate([common, rare_rows]))
    pool = [np.asarray(images[i]).copy() for i in order]
    rare = np.isin(order, rare_rows)
    kind = np.full(n, "", dtype=object)
    source = order.copy()
    candidates = rng.permutation(np.flatnonzero(~rare))
    n_bad = int(round(fraction * n))
    targets, keep = candidates[:n_bad], candidates[n_bad:]
    photos = _photographs() if "foreign" in kinds else []
    for j, i in enumerate(targets):
        k = kinds[j % len(kinds)]
        if k == "foreign":
            pool[i], source[i] = _foreign(pool[i], photos, rng), -1
        elif k == "duplicate":
            original = int(keep[int(rng.integers(len(keep)))])
            pool[i], source[i] = _duplicate(pool[original], rng), source[original]
        else:
            pool[i] = np.asarray(corrupt(pool[i], _CORRUPT.get(k, k), rng)).reshape(pool[i].shape)
        kind[i] = k
    return PlantedPool(pool, kind, rare, source)
