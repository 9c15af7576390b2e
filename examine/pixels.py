"""Pixel arrays to 8-bit RGB: intensity windows, alpha, channel layouts, and the error every loader raises."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_PERCENTILES",
    "ImageLoadError",
    "window_to_uint8",
    "array_to_rgb",
    "check_pixels",
    "corrupt",
    "centre_box",
    "fit",
    "shrink",
]

#: Intensity percentiles that map to 0 and 255 when no window is given (16-bit and float data).
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
_PERCENTILE_SAMPLES = 1 << 20


class ImageLoadError(ValueError):
    """An image could not be loaded.

    Attributes
    ----------
    item : str
        What the caller called the image: path, task id or URL.
    reason : str
        What is wrong with it.
    hint : str
        What to do about it.
    """

    def __init__(self, item: str, reason: str, hint: str = "") -> None:
        self.item = item
        self.reason = reason
        self.hint = hint
        super().__init__(f"{item}: {reason}" + (f"; {hint}" if hint else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.item, self.reason, self.hint))


def window_to_uint8(
    array: np.ndarray,
    window: tuple[float, float] | None = None,
    *,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Map intensities linearly to uint8: ``lo`` → 0, ``hi`` → 255, clipped.

    ``window`` defaults to the given percentiles of the finite values (one window
    for all channels, so colour balance is kept).  NaN becomes 0.
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * np.uint8(255)
        if window is None:
            return a
    if window is None:
        lo, hi = percentile_window(a, percentiles)
    else:
        lo, hi = float(window[0]), float(window[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"window must be two finite numbers with lo < hi, got {window!r}")
    out = a.astype(np.float32, copy=True)
    out -= np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    np.clip(out, 0, 255, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return np.rint(out, out=out).astype(np.uint8)


def array_to_rgb(
    arr: np.ndarray,
    label: str,
    window: tuple[float, float] | None,
    *,
    inverted: bool = False,
) -> np.ndarray:
    """(H, W), (H, W, 1..4) of any dtype → (H, W, 3) uint8; alpha composited on white."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] > 4):
        channels = arr.shape[2] if arr.ndim == 3 else "?"
        raise ImageLoadError(
            label,
            f"unsupported pixel layout {arr.shape} ({channels} channels)",
            "save it as a grayscale, RGB or RGBA image",
        )
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], unit_alpha(arr[:, :, -1])
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    if window is not None or arr.dtype != np.uint8:
        out = window_to_uint8(arr, window)
    else:
        out = arr
    if inverted:
        out = 255 - out
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    if alpha is not None:
        out = np.rint(out * alpha[:, :, None] + 255.0 * (1.0 - alpha[:, :, None])).astype(np.uint8)
    return np.ascontiguousarray(out, dtype=np.uint8)


def unit_alpha(alpha: np.ndarray) -> np.ndarray:
    if np.issubdtype(alpha.dtype, np.integer):
        return alpha.astype(np.float32) / np.float32(np.iinfo(alpha.dtype).max)
    return np.clip(np.nan_to_num(alpha.astype(np.float32), nan=1.0), 0.0, 1.0)


def percentile_window(a: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    flat = a.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLES)]
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi > lo:
        return lo, hi
    lo, hi = float(sample.min()), float(sample.max())
    if hi > lo:
        return lo, hi
    # A constant image: place it within its type's natural range instead of an arbitrary grey.
    if a.dtype.kind in "ui":
        info = np.iinfo(a.dtype)
        return float(min(info.min, 0)), float(info.max)
    return (0.0, 1.0) if 0.0 <= lo <= 1.0 else (lo - 1.0, lo)


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def centre_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``side`` × ``side`` crop (smaller images: all of it), its
    corner on the 8-pixel grid so that JPEG blocks keep their place."""
    x0, y0 = max(0, (width - side) // 2) // 8 * 8, max(0, (height - side) // 2) // 8 * 8
    return x0, y0, min(width, x0 + side), min(height, y0 + side)


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    im = Image.fromarray(rgb)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im)


# ---------------------------------------------------------------- errors


def corrupt(label: str, exc: BaseException) -> ImageLoadError:
    """The error for image data that cannot be decoded (truncated or damaged)."""
    detail = str(exc) or type(exc).__name__
    return ImageLoadError(
        label,
        f"image data is truncated or corrupt ({detail})",
        "the file is incomplete or damaged; copy or export it again",
    )


def check_pixels(label: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image over ``max_pixels`` before it is decoded (decompression bombs)."""
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageLoadError(
            label,
            f"image has {pixels:,} pixels ({width} × {height}), over the limit of {max_pixels:,} "
            "(decompression-bomb protection)",
            f"if the file is trusted, pass max_pixels={pixels} or more; or tile the image first",
        )
