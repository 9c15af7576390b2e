"""Per-image measurements for screening unusable images: focus, noise, exposure, compression, colour, size.

Each image gives one fixed-length float vector (:data:`CHECKS` scalars, then a
coarse colour histogram), computed from pixels alone, the same for every pool; a
check that does not apply to an image (``one_shade`` of a colour image) is −1.
What counts as unusual is decided later, against the pool (:mod:`examine.screening`).
The vectors are cheap (a few milliseconds per image) and stored like embeddings,
keyed by the image's sha256 (version :data:`VERSION`).

Memory is bounded whatever the image's size: focus, noise and JPEG blocking look at
the centred :data:`CROP` × :data:`CROP` native pixels, everything else at a view of
at most :data:`VIEW_SIDE` pixels a side (the whole image when it is no larger).
:func:`source_checks` decodes a file or bytes straight to those two
(:func:`examine.images.load_image_view`), never to a full-size RGB array.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from examine.pixels import centre_box

__all__ = [
    "CHECKS",
    "COLOUR_BINS",
    "CROP",
    "N_VALUES",
    "VERSION",
    "VIEW_SIDE",
    "image_checks",
    "pool_checks",
    "source_checks",
    "thumbnail",
]

#: Scalar measurements, in vector order.
CHECKS: tuple[str, ...] = (
    "focus",  # log variance of the Laplacian (blur: low)
    "noise",  # log of Immerkær's noise sigma estimate (noise: high)
    "contrast",  # log(1 + grey standard deviation) (blank: low)
    "entropy",  # bits of the 64-bin grey histogram (blank, low information: low)
    "brightness",  # mean grey in [0, 255] (over- and under-exposure)
    "clip_high",  # fraction of pixels at ≥ 250 (over-exposure)
    "clip_low",  # fraction of pixels at ≤ 5 (under-exposure)
    "blockiness",  # log ratio of grey steps across 8-pixel JPEG block edges to steps elsewhere
    "log_area",  # log of width × height (odd size)
    "log_aspect",  # log of width / height (odd aspect)
    "one_shade",  # grey images: largest share of pixels at one exact mid grey (6–249): drawn ink, overlays
    "content",  # share of the image's 8 × 8 cells holding more than flat background at noise level (near-empty: low)
)
#: Levels per channel of the colour histogram (levels³ bins).
COLOUR_LEVELS = 6
COLOUR_BINS = COLOUR_LEVELS**3
#: Length of one vector: the scalars, the colour histogram and a 16 × 16 grey thumbnail (for near-duplicates).
THUMB = 16
N_VALUES = len(CHECKS) + COLOUR_BINS + THUMB * THUMB
#: Store version of these vectors; change it whenever a measurement changes.
VERSION = "image-checks-v3"

#: Focus, noise and blockiness look at most at a centred CROP × CROP crop (native pixels).
CROP = 512
#: Every other check looks at a view of at most this many pixels a side.
VIEW_SIDE = 1024
#: content: the view is cut into CELLS × CELLS cells; a cell is flat background when its grey spread is
#: within its noise (2σ + 0.5 grey levels) and its mean within twice that of the median cell's.
CELLS = 8
_LAPLACE = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    """Grey levels in float32 (only ever of a bounded view or crop)."""
    if image.ndim == 2:
        return image.astype(np.float32)
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _filter3(g: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Valid 3 × 3 correlation (no padding), in float32."""
    h, w = g.shape
    out = np.zeros((h - 2, w - 2), np.float32)
    for dy in range(3):
        for dx in range(3):
            if k[dy, dx]:
                out += k[dy, dx] * g[dy : dy + h - 2, dx : dx + w - 2]
    return out


def _blockiness(g: np.ndarray) -> float:
    """Mean grey step across the 8-pixel grid, over the mean step elsewhere, both directions (log)."""
    ratios = []
    for a in (g, g.T):
        if a.shape[1] < 17:
            continue
        d = np.abs(np.diff(a, axis=1))  # d[:, j] = step between columns j and j + 1
        edge = np.zeros(d.shape[1], bool)
        edge[7::8] = True
        ratios.append((float(d[:, edge].mean()) + 1.0) / (float(d[:, ~edge].mean()) + 1.0))
    return float(np.log(np.mean(ratios))) if ratios else 0.0


def _one_shade(image: np.ndarray) -> float:
    """Largest share of pixels at one exact mid grey level (6–249), for grey images (also grey ones
    stored as RGB); −1 (not measured) for colour images, where ink shows as a colour the pool lacks.

    Scanned or photographed grey pixels spread over neighbouring levels; ink drawn in software,
    overlays and burnt-in marks sit on one.  (Colour images are left out because flat glass
    backgrounds often sit on one exact RGB value; −1 keeps them out of the grey images' statistics.)
    """
    if image.ndim == 3:
        rgb = image[..., :3].astype(np.int16)
        if np.abs(rgb[..., 0] - rgb[..., 1]).max() > 2 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 2:
            return -1.0
        image = image[..., 1]  # the exact grey levels (the weighted grey of R = G = B rounds some down)
    levels = np.bincount(image.ravel(), minlength=256) / image.size
    return float(levels[6:250].max(initial=0.0))


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """A THUMB × THUMB block-mean of the grey image, zero mean and unit norm (flat images: zeros)."""
    h, w = grey.shape
    ys = np.linspace(0, h, THUMB + 1).astype(int)
    xs = np.linspace(0, w, THUMB + 1).astype(int)
    if h < THUMB or w < THUMB:  # tiny images: nearest-neighbour upsampling
        t = grey[np.minimum(ys[:-1], h - 1)][:, np.minimum(xs[:-1], w - 1)]
    else:
        rows = np.add.reduceat(grey, ys[:-1], axis=0) / np.diff(ys)[:, None]
        t = np.add.reduceat(rows, xs[:-1], axis=1) / np.diff(xs)[None, :]
    t = t.astype(np.float64).ravel()
    t -= t.mean()
    norm = np.linalg.norm(t)
    return (t / norm if norm > 1e-6 else np.zeros_like(t)).astype(np.float32)


def _content(grey: np.ndarray, sigma: float) -> float:
    """Share of the CELLS × CELLS cells that hold more than flat background: a grey spread past the
    image's noise ``sigma`` (2σ + 0.5), or a mean off the median cell's by more than twice that."""
    h, w = grey.shape
    limit = 2.0 * sigma + 0.5
    if h < CELLS or w < CELLS:
        return 1.0 if float(grey.std()) > limit else 0.0
    ys = np.linspace(0, h, CELLS + 1).astype(int)
    xs = np.linspace(0, w, CELLS + 1).astype(int)
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    g = grey.astype(np.float64)
    mean = np.add.reduceat(np.add.reduceat(g, ys[:-1], axis=0), xs[:-1], axis=1) / area
    square = np.add.reduceat(np.add.reduceat(g * g, ys[:-1], axis=0), xs[:-1], axis=1) / area
    std = np.sqrt(np.maximum(square - mean * mean, 0.0))
    busy = (std > limit) | (np.abs(mean - np.median(mean)) > 2.0 * limit)
    return float(busy.mean())


def _view(image: np.ndarray) -> np.ndarray:
    """The image itself when its longer side is at most VIEW_SIDE, else shrunk to it (integer box reduction, then Lanczos)."""
    if max(image.shape[:2]) <= VIEW_SIDE:
        return image
    im = Image.fromarray(image)
    factor = max(im.size) // (2 * VIEW_SIDE)
    if factor >= 2:
        im = im.reduce(factor)
    im.thumbnail((VIEW_SIDE, VIEW_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(im)


def _measure(view: np.ndarray, crop: np.ndarray, h: int, w: int) -> np.ndarray:
    """The vector from the bounded view, the native-pixel centre crop and the native size."""
    g = _grey(view)  # float32, at most VIEW_SIDE² pixels
    c = _grey(crop)
    if min(c.shape) >= 3:
        focus = float(np.log(_filter3(c, _LAPLACE).var() + 1e-3))
        sigma = np.sqrt(np.pi / 2) / 6 * float(np.abs(_filter3(c, _IMMERKAER)).mean())
    else:
        focus, sigma = float(np.log(1e-3)), 0.0
    hist = np.bincount((np.clip(g, 0, 255).astype(np.uint8) >> 2).ravel(), minlength=64) / g.size
    nz = hist[hist > 0]
    rgb = view[..., :3] if view.ndim == 3 else view[..., None]
    q = (rgb.astype(np.uint16) * COLOUR_LEVELS) >> 8
    if q.shape[2] == 1:
        q = np.repeat(q, 3, axis=2)
    colour = np.bincount(
        ((q[..., 0] * COLOUR_LEVELS + q[..., 1]) * COLOUR_LEVELS + q[..., 2]).ravel(), minlength=COLOUR_BINS
    )
    scalars = [
        focus,
        float(np.log(sigma + 0.1)),
        float(np.log1p(g.std())),
        float(-(nz * np.log2(nz)).sum()),
        float(g.mean()),
        float((g >= 250).mean()),
        float((g <= 5).mean()),
        _blockiness(c),
        float(np.log(h * w)),
        float(np.log(w / h)),
        _one_shade(view),
        _content(g, sigma),
    ]
    return np.concatenate([np.asarray(scalars, np.float32), colour / g.size, thumbnail(g)]).astype(np.float32)


def image_checks(image: np.ndarray) -> np.ndarray:
    """The measurement vector (length :data:`N_VALUES`) of one uint8 image, (H, W) or (H, W, 3).

    Raises ValueError for an image that is not 2-D grey or 3-channel uint8.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"image checks take a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = centre_box(w, h, CROP)
    return _measure(
        _view(np.ascontiguousarray(image[..., :3]) if image.ndim == 3 else image), image[y0:y1, x0:x1], h, w
    )


def source_checks(
    source: str | os.PathLike[str] | bytes, *, item: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """:func:`image_checks` of an image file or its bytes, decoded within bounded memory
    (:func:`examine.images.load_image_view`); raises :class:`examine.images.ImageLoadError` as ``load_image``."""
    from examine.images import DEFAULT_MAX_PIXELS, load_image_view

    v = load_image_view(source, item=item, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, max_side=VIEW_SIDE, crop=CROP)
    return _measure(v.image, v.centre, v.height, v.width)


def pool_checks(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """:func:`image_checks` of every image, stacked: (n, N_VALUES) float32."""
    if len(images) == 0:
        return np.zeros((0, N_VALUES), np.float32)
    return np.stack([image_checks(im) for im in images])
