"""Real image data that works offline, for tests, the demo and the evaluation.

* Medical tiles cut from the microscopy and fundus photographs that scikit-image
  ships inside its wheel (read from the installed files, never downloaded).
* Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.
* MedMNIST ``.npz`` files that a user already has.
* Planted corruptions (blur, noise, blank, overexposure, heavy JPEG, pen marks)
  for the quality-screening benchmark.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from examine.images import load_image

__all__ = [
    "CORRUPTIONS",
    "FASHION_MNIST_CLASSES",
    "corrupt",
    "load_fashion_mnist",
    "load_medmnist",
    "medical_tiles",
    "medical_tiles_with_sources",
    "tile_sources",
    "write_medical_tiles",
]

# name → file in skimage/data/ that scikit-image installs with its wheel.
_SKIMAGE_FILES = {
    "ihc": "ihc.png",  # immunohistochemistry, colon tissue (skimage.data.immunohistochemistry)
    "retina": "retina.jpg",  # fundus photograph (skimage.data.retina)
    "cell": "cell.png",  # cell under a light microscope (skimage.data.cell)
    "microaneurysms": "microaneurysms.png",  # retinal microaneurysms (skimage.data.microaneurysms)
}
# Tiles with more near-black pixels than this (the retina's surround) are redrawn.
_MAX_DARK_FRACTION = 0.02
_TILE_ATTEMPTS = 50

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Names accepted by :func:`corrupt`.
CORRUPTIONS: tuple[str, ...] = ("blur", "noise", "blank", "saturation", "jpeg", "pen", "underexposure")
_PEN_COLOURS = ((20, 110, 40), (30, 50, 150), (25, 25, 25), (160, 30, 40))  # green, blue, black, red marker


# ---------------------------------------------------------------- medical tiles


def tile_sources() -> dict[str, Path]:
    """The bundled medical source images found on this machine: name → file.

    Empty when scikit-image is not installed (``pip install scikit-image``).
    """
    try:
        data = resources.files("skimage.data")
    except ModuleNotFoundError:
        return {}
    found = {}
    for name, filename in _SKIMAGE_FILES.items():
        entry = data.joinpath(filename)
        if entry.is_file():
            found[name] = Path(str(entry))
    return found


@functools.cache
def _source_image(name: str) -> np.ndarray:
    with resources.as_file(resources.files("skimage.data").joinpath(_SKIMAGE_FILES[name])) as path:
        image = load_image(path)
    image.setflags(write=False)
    return image


def medical_tiles_with_sources(
    n: int,
    size: int = 128,
    seed: int = 0,
    *,
    augment: bool = True,
) -> tuple[list[np.ndarray], list[str]]:
    """``n`` RGB uint8 tiles (size × size × 3) and the source name of each.

    Sources (see :func:`tile_sources`) take turns, in a seeded random order, so
    the counts per source differ by at most one; sources smaller than ``size`` are
    left out.  Positions are random but avoid the dark surround of the fundus
    photograph; with ``augment`` each tile is also rotated by a multiple of 90°
    and possibly mirrored.  The same ``(n, size, seed, augment)`` gives the same tiles.

    Raises
    ------
    RuntimeError
        When no source image is available (scikit-image missing).
    ValueError
        When ``size`` is larger than every source image.
    """
    if n < 0 or size < 1:
        raise ValueError(f"need n ≥ 0 and size ≥ 1, got n={n}, size={size}")
    available = tile_sources()
    if not available:
        raise RuntimeError("no bundled medical images found: pip install scikit-image (it ships them)")
    names = [name for name in available if min(_source_image(name).shape[:2]) >= size]
    if not names:
        raise ValueError(f"size {size} is larger than every source image; use size ≤ {_largest_tile(available)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.arange(n) % len(names))
    tiles, sources = [], []
    for k in order:
        name = names[k]
        tile = _random_tile(_source_image(name), size, rng)
        if augment:
            tile = np.rot90(tile, int(rng.integers(4)))
            if rng.integers(2):
                tile = tile[:, ::-1]
        tiles.append(np.ascontiguousarray(tile))
        sources.append(name)
    return tiles, sources


def medical_tiles(n: int, size: int = 128, seed: int = 0, *, augment: bool = True) -> list[np.ndarray]:
    """``n`` RGB uint8 tiles from real medical images; see :func:`medical_tiles_with_sources`."""
    return medical_tiles_with_sources(n, size, seed, augment=augment)[0]


def write_medical_tiles(
    folder: str | os.PathLike[str],
    n: int,
    size: int = 128,
    seed: int = 0,
    fmt: str = "png",
) -> list[Path]:
    """Write :func:`medical_tiles` to ``folder`` (created if needed) as ``tile_00000_<source>.<fmt>``.

    ``fmt`` is a Pillow-writable extension: png, jpg, jpeg, tif, tiff, bmp or webp.
    Returns the paths in tile order.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"):
        raise ValueError(f"unsupported tile format {fmt!r}; use png, jpg, tif, bmp or webp")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tiles, sources = medical_tiles_with_sources(n, size, seed)
    options: dict[str, Any] = {"quality": 95} if fmt in ("jpg", "jpeg", "webp") else {}
    paths = []
    for i, (tile, source) in enumerate(zip(tiles, sources)):
        path = out / f"tile_{i:05d}_{source}.{fmt}"
        Image.fromarray(tile).save(path, **options)
        paths.append(path)
    return paths


def _random_tile(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    best, best_dark = None, 2.0
    for _ in range(_TILE_ATTEMPTS):
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        tile = image[y : y + size, x : x + size]
        dark = float((tile.max(axis=2) < 20).mean())
        if dark <= _MAX_DARK_FRACTION:
            return tile
        if dark < best_dark:
            best, best_dark = tile, dark
    assert best is not None  # dark <= 1 < 2.0 = best_dark: the first attempt sets it
    return best


def _largest_tile(available: dict[str, Path]) -> int:
    return max(min(_source_image(name).shape[:2]) for name in available)


# ---------------------------------------------------------------- Fashion-MNIST


def load_fashion_mnist(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

    Parameters
    ----------
    split : "train" (60,000 images) or "test" (10,000)
    limit : int, optional
        Read only the first ``limit`` images (fast).

    Returns
    -------
    images : uint8 array (N, 28, 28)
    labels : int64 array (N,), class indices into :data:`FASHION_MNIST_CLASSES`

    The folder is ``$EXAMINE_FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``.

    Raises
    ------
    FileNotFoundError
        When the files are missing (``apt-get install dataset-fashion-mnist``).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    folder = Path(os.environ.get("EXAMINE_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    images_file = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images_file, labels_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: Fashion-MNIST file not found; install it with `apt-get install dataset-fashion-mnist` "
                "or point EXAMINE_FASHION_MNIST_DIR at a folder holding the idx .gz files"
            )
    images = _read_idx(images_file, limit)
    labels = _read_idx(labels_file, limit).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _read_idx(path: Path, limit: int | None) -> np.ndarray:
    """Read an idx file of unsigned bytes (the MNIST format), at most ``limit`` items."""
    with gzip.open(path, "rb") as fh:
        header = fh.read(4)
        if len(header) != 4 or header[:3] != b"\x00\x00\x08":
            raise ValueError(f"{path}: not an idx file of unsigned bytes (header {header!r})")
        ndim = header[3]
        dims = np.frombuffer(fh.read(4 * ndim), dtype=">u4").astype(int)
        count = int(dims[0]) if limit is None else min(int(dims[0]), limit)
        item = int(np.prod(dims[1:], dtype=np.int64))
        data = fh.read(count * item)
    if len(data) != count * item:
        raise ValueError(f"{path}: file is truncated ({len(data)} of {count * item} bytes)")
    return np.frombuffer(data, dtype=np.uint8).reshape((count, *dims[1:])).copy()


# ---------------------------------------------------------------- MedMNIST


def load_medmnist(npz_path: str | os.PathLike[str], split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of a MedMNIST ``.npz`` (e.g. ``pathmnist.npz``).

    Returns
    -------
    images : uint8 array (N, H, W) or (N, H, W, 3), as stored
    labels : int64 array (N,) for single-label sets, (N, K) for multi-label ones (ChestMNIST)

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, not an ``.npz``, or no ``{split}_images`` / ``{split}_labels`` in it.
    """
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MedMNIST file not found (it cannot be downloaded here; copy it in)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            wanted = (f"{split}_images", f"{split}_labels")
            missing = [key for key in wanted if key not in keys]
            if missing:
                raise ValueError(f"{path}: no {', '.join(missing)} in it (has {', '.join(sorted(keys))})")
            images, labels = npz[wanted[0]], npz[wanted[1]]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"{path}: {split}_images should be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} {split} images but {len(labels)} labels")
    labels = labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return images, labels


# ---------------------------------------------------------------- corruptions


def corrupt(image: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """A copy of ``image`` with a planted defect, for quality-screening benchmarks.

    Parameters
    ----------
    image : uint8 array (H, W) or (H, W, 3)
    kind : one of :data:`CORRUPTIONS`
        ``blur`` out of focus; ``noise`` strong Gaussian noise; ``blank`` empty
        glass (near-uniform bright background); ``saturation`` overexposed and
        clipped; ``jpeg`` JPEG at quality 2–6; ``pen`` thick marker strokes;
        ``underexposure`` dark (5–20 % of the light) with a little sensor noise.
    rng : numpy Generator, optional
        Source of the defect's random strength and placement.

    Returns
    -------
    uint8 array of the same shape.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"corrupt takes a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    rng = rng if rng is not None else np.random.default_rng()
    h, w = image.shape[:2]
    if kind == "blur":
        radius = max(1.5, rng.uniform(0.03, 0.06) * min(h, w))
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    if kind == "noise":
        noisy = image + rng.normal(0.0, rng.uniform(40, 70), image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "blank":
        # Empty glass: bright, faintly tinted, with a little sensor noise.
        level = rng.uniform(220, 248) + rng.uniform(-6, 6, size=image.shape[2:])
        blank = level + rng.normal(0.0, 2.0, image.shape)
        return np.clip(np.rint(blank), 0, 255).astype(np.uint8)
    if kind == "saturation":
        bright = image.astype(np.float32) * rng.uniform(2.5, 4.0) + rng.uniform(40, 80)
        return np.clip(np.rint(bright), 0, 255).astype(np.uint8)
    if kind == "underexposure":
        dark = image.astype(np.float32) * rng.uniform(0.05, 0.2) + rng.normal(0.0, 1.5, image.shape)
        return np.clip(np.rint(dark), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(2, 7)))
        return np.asarray(Image.open(buffer)).copy()
    return _pen_marks(image, rng)


def _pen_marks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    colour = _PEN_COLOURS[int(rng.integers(len(_PEN_COLOURS)))]
    # On grey images (X-ray, Fashion-MNIST) ink shows as a stroke that contrasts with the picture.
    fill = colour if image.ndim == 3 else (25 if image.mean() >= 128 else 230)
    width = max(2, round(min(h, w) * rng.uniform(0.06, 0.10)))
    for _ in range(int(rng.integers(1, 4))):
        # A stroke: a random walk of a few points across the tile, drawn with round joints.
        start = rng.uniform(0, 1, 2) * (w, h)
        steps = rng.normal(0, 0.35, (int(rng.integers(3, 6)), 2)) * (w, h)
        points = np.vstack([start, start + np.cumsum(steps, axis=0)])
        draw.line([tuple(p) for p in points.tolist()], fill=fill, width=width, joint="curve")
    return np.asarray(canvas).copy()
