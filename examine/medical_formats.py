"""The medical formats examine reads beside Pillow's: DICOM (pydicom) and TIFF, pyramids included (tifffile).

Each gives a pixel array in its own intensity range; :func:`examine.pixels.array_to_rgb` makes it 8-bit RGB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

from examine.pixels import ImageLoadError, array_to_rgb, check_pixels

__all__ = ["NotForTifffile", "load_dicom", "read_tiff"]


class NotForTifffile(Exception):
    """A TIFF that tifffile hands to Pillow (palette, CMYK, YCbCr, a missing codec)."""


def read_tiff(
    fh: IO[bytes], label: str, max_pixels: int, max_side: int | None, hold: Callable[[int], object]
) -> tuple[np.ndarray, bool]:
    """The pixels of a TIFF's first page (or the smallest pyramid level of at least ``max_side``) and whether
    they are inverted (MINISWHITE). ``hold(pixels)`` is called before decoding (a shared memory budget)."""
    import tifffile

    with tifffile.TiffFile(fh) as tif:
        page = _tiff_page(tif, max_side)
        check_pixels(label, page.imagewidth, page.imagelength, max_pixels)
        hold(int(page.imagewidth) * int(page.imagelength))
        if page.photometric not in (
            tifffile.PHOTOMETRIC.MINISBLACK,
            tifffile.PHOTOMETRIC.MINISWHITE,
            tifffile.PHOTOMETRIC.RGB,
        ):
            raise NotForTifffile(f"photometric {page.photometric.name}")
        try:
            arr = page.asarray()
        except (ValueError, KeyError, ImportError) as exc:
            raise NotForTifffile(str(exc)) from exc
        return _tiff_yxs(arr, page.axes), page.photometric == tifffile.PHOTOMETRIC.MINISWHITE


def _tiff_page(tif: Any, max_side: int | None) -> Any:
    """First page, or the smallest pyramid level whose longer side is ≥ max_side."""
    levels = [lvl.keyframe for lvl in tif.series[0].levels] if tif.series else [tif.pages[0]]
    chosen = levels[0]
    if max_side is not None:
        for page in levels[1:]:
            if max(page.imagewidth, page.imagelength) >= max_side:
                chosen = page
    return chosen


def _tiff_yxs(arr: np.ndarray, axes: str) -> np.ndarray:
    """Reduce a page's array to (Y, X) or (Y, X, S): first of any other axis."""
    if len(axes) != arr.ndim:
        return np.squeeze(arr)
    arr = arr[tuple(slice(None) if a in "YXS" else 0 for a in axes)]
    axes = "".join(a for a in axes if a in "YXS")
    return np.moveaxis(arr, 0, -1) if axes == "SYX" else arr


def load_dicom(
    fh: IO[bytes],
    label: str,
    has_preamble: bool,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:
        raise ImageLoadError(
            label,
            "DICOM needs pydicom, which is not installed",
            "pip install pydicom (or pip install 'examine-al[dicom]')",
        ) from exc
    try:
        ds = pydicom.dcmread(fh, force=not has_preamble)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, struct.error, ...
        raise ImageLoadError(
            label, f"not a readable DICOM file ({exc})", "export it again from the PACS or viewer"
        ) from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageLoadError(label, "DICOM file has no pixel data (e.g. a report)", "leave it out of the image set")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixels(label, cols, rows, max_pixels)
    if hasattr(ds, "pixel_array_options"):  # pydicom ≥ 3 decodes one frame only
        ds.pixel_array_options(index=0)
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise ImageLoadError(
            label,
            f"cannot decode DICOM pixel data ({name}): {exc}",
            "for compressed DICOM pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)",
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and arr.shape[0] == frames and arr.ndim >= 3 and not hasattr(ds, "pixel_array_options"):
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        arr = _dicom_modality_lut(arr, ds)
        if window is None:
            window = _dicom_window(ds)
        return array_to_rgb(arr, label, window, inverted=photometric == "MONOCHROME1")
    if photometric == "PALETTE COLOR":
        arr = _dicom_color_lut(arr, ds)
    return array_to_rgb(arr, label, window)


def _dicom_modality_lut(arr: np.ndarray, ds: Any) -> np.ndarray:
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut  # type: ignore[no-redef]  # same function, older path
    return apply_modality_lut(arr, ds)


def _dicom_color_lut(arr: np.ndarray, ds: Any) -> np.ndarray:
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_color_lut  # type: ignore[no-redef]  # same function, older path
    return apply_color_lut(arr, ds)


def _dicom_window(ds: Any) -> tuple[float, float] | None:
    """The first WindowCenter/Width pair as (lo, hi) (DICOM PS3.3 C.11.2.1.2.1), or None."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center)
        w = float(width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if not (math.isfinite(c) and math.isfinite(w)) or w <= 1:
        return None
    return c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
