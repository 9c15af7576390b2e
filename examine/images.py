"""Bytes or path → RGB uint8 array: every image format and every failure in one place.

``load_image`` turns PNG, JPEG, TIFF (8/16-bit, float, multi-page, pyramids), BMP,
GIF, WebP, JPEG 2000 and DICOM into an ``(H, W, 3)`` uint8 array.  Choices:

* Transparency is composited on **white**: in brightfield microscopy and scanned
  documents "nothing there" is white, while the colour stored under fully
  transparent pixels is arbitrary (often black).
* 8-bit images are kept as they are.  Deeper data (16-bit, 32-bit, float) are
  windowed to 8 bits, by default between the 0.5th and 99.5th percentiles of the
  image (robust to a few hot pixels); DICOM uses its own WindowCenter/Width when
  present.  ``window=(lo, hi)`` overrides both, for any image.
* Multi-page files give their first page, animations their first frame.
* EXIF orientation is applied (camera photos, e.g. dermatology).

Every failure raises :class:`ImageLoadError` naming the item, the reason and what
to do.  The decompression-bomb limit is per call (``max_pixels``); Pillow's own
global limit is left as it is.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from examine.medical_formats import load_dicom, read_tiff
from examine.pixels import (
    DEFAULT_PERCENTILES,
    ImageLoadError,
    window_to_uint8,
)
from examine.pixels import array_to_rgb as _array_to_rgb
from examine.pixels import centre_box as _centre_box
from examine.pixels import check_pixels as _check_pixels
from examine.pixels import corrupt as _corrupt
from examine.pixels import fit as _fit
from examine.pixels import percentile_window as _percentile_window
from examine.pixels import shrink as _shrink

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PERCENTILES",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "ImageView",
    "list_images",
    "load_image",
    "load_image_view",
    "load_images",
    "read_bytes",
    "sha256_bytes",
    "window_to_uint8",
]

Source = Union[str, "os.PathLike[str]", bytes]

#: File name endings treated as images by :func:`list_images` (lowercase, with dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".tif",
        ".tiff",
        ".bmp",
        ".dib",
        ".gif",
        ".webp",
        ".jp2",
        ".j2k",
        ".pgm",
        ".ppm",
        ".pbm",
        ".pnm",
        ".dcm",
        ".dicom",
    }
)

#: 2**27 ≈ 11,585² pixels (400 MB as RGB uint8): mammograms and large microscopy
#: fields fit; whole-slide images must be tiled before they reach this loader.
DEFAULT_MAX_PIXELS: int = 2**27


_SUPPORTED = "PNG, JPEG, TIFF, BMP, GIF, WebP, JPEG 2000, PNM and DICOM"
_DICOM_SUFFIXES = (".dcm", ".dicom")
# Signatures of files people upload by mistake, so the error can name them.
_KNOWN_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"\x1f\x8b", "a gzip file (e.g. NIfTI .nii.gz)"),
    (0, b"NRRD", "an NRRD volume"),
    (344, b"n+1\x00", "a NIfTI volume"),
    (4, b"ftypheic", "a HEIC photo"),
    (4, b"ftypmif1", "a HEIF photo"),
    (0, b"8BPS", "a Photoshop document"),
)
# Starts of image formats Pillow reads: such a file that Pillow cannot identify is damaged.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"\x00\x00\x00\x0cjP", b"\xffO\xffQ")
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_PILLOW_LIMIT_LOCK = threading.Lock()


# ---------------------------------------------------------------- memory of large decodes

#: Images of at least this many pixels decode within :data:`DECODE_BUDGET` (smaller ones cost ≤ 16 MB each).
LARGE_PIXELS = 1 << 22
#: Pixels that decodes of large images may hold at once in this process, over all threads (one image over it
#: decodes alone): a few job threads each meeting a decompression-bomb-sized image wait for each other.
DECODE_BUDGET = DEFAULT_MAX_PIXELS
# A JPEG decoded with a native-pixel centre (load_image_view) over this many pixels is decoded at 1/2, 1/4 or 1/8.
_VIEW_DECODE_PIXELS = 1 << 24


class _PixelBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        if pixels < LARGE_PIXELS:
            yield
            return
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + pixels <= self.total)
            self.used += pixels
        try:
            yield
        finally:
            with self.cond:
                self.used -= pixels
                self.cond.notify_all()


_BUDGET = _PixelBudget(DECODE_BUDGET)


@dataclass(frozen=True)
class ImageView:
    """An image decoded within bounded memory (:func:`load_image_view`)."""

    image: np.ndarray  #: (h, w, 3) uint8, the whole image with its longer side at most ``max_side``
    centre: np.ndarray  #: (≤ crop, ≤ crop, 3) uint8: the centre at native pixels
    height: int  #: of the stored image (after EXIF orientation)
    width: int


class _Centre:
    """What :func:`load_image_view` asks of a loader besides the image: the native-pixel centre crop."""

    def __init__(self, side: int) -> None:
        self.side = side
        self.rgb: np.ndarray | None = None
        self.size = (0, 0)  # (height, width) native

    def take(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = _centre_box(w, h, self.side)
        self.rgb, self.size = np.ascontiguousarray(rgb[y0:y1, x0:x1]), (h, w)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the key under which embeddings are stored."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | os.PathLike[str], *, item: str | None = None) -> bytes:
    """Read a whole file, turning OS errors into :class:`ImageLoadError`."""
    label = item if item is not None else os.fspath(path)
    try:
        with _open_file(path, label) as fh:
            return fh.read()
    except OSError as exc:
        raise _os_error(label, exc) from exc


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """All image files under ``folder``, recursively, sorted.

    Hidden files and folders (name starting with ``.``) are skipped; a file counts
    as an image when its extension (any case) is in :data:`IMAGE_EXTENSIONS`.

    Raises
    ------
    ImageLoadError
        When ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.exists():
        raise ImageLoadError(str(root), "folder does not exist", f"check the path (current folder: {Path.cwd()})")
    if not root.is_dir():
        raise ImageLoadError(str(root), "is a file, not a folder", "pass the folder that holds the images")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath, name))
    return sorted(found)


def load_images(
    sources: Iterable[Source],
    *,
    items: Sequence[str] | None = None,
    **kwargs: Any,
) -> tuple[list[np.ndarray | None], list[ImageLoadError]]:
    """Load many images; a bad one never stops the batch.

    Parameters
    ----------
    sources : iterable of path, str or bytes
    items : sequence of str, optional
        Names for the error messages, one per source (default: the paths).
    **kwargs
        Passed to :func:`load_image`.

    Returns
    -------
    images : list
        Aligned with ``sources``: the array, or ``None`` where loading failed.
    errors : list of ImageLoadError
        One per ``None``, in input order; ``error.item`` names the image.
    """
    sources = list(sources)
    if items is not None and len(items) != len(sources):
        raise ValueError(f"got {len(items)} items for {len(sources)} sources")
    images: list[np.ndarray | None] = []
    errors: list[ImageLoadError] = []
    for i, source in enumerate(sources):
        try:
            images.append(load_image(source, item=None if items is None else items[i], **kwargs))
        except ImageLoadError as exc:
            images.append(None)
            errors.append(exc)
    return images, errors


def load_image(
    source: Source,
    *,
    item: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode one image to an RGB uint8 array of shape (H, W, 3).

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A local file path, or the file's bytes.
    item : str, optional
        Name used in error messages (path, task id or URL); default: the path.
    max_pixels : int
        Refuse images with more pixels (width × height of what gets decoded):
        protection against decompression bombs.
    max_side : int, optional
        Shrink so that the longer side is at most this (never enlarges).  JPEG is
        decoded at reduced scale and TIFF pyramids at the smallest sufficient level.
    window : (lo, hi), optional
        Intensity window in stored units (after DICOM rescale): ``lo`` → 0,
        ``hi`` → 255.  Default: see the module docstring.

    Raises
    ------
    ImageLoadError
        Missing, unreadable, empty, truncated or oversized file, or not an image.
    TypeError
        ``source`` is not a path or bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = item if item is not None else f"<{len(source)} bytes>"
        name_hint = item or ""
        return _load_stream(io.BytesIO(bytes(source)), label, name_hint, max_pixels, max_side, window)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_image takes a path or bytes, not {type(source).__name__}")
    path = os.fspath(source)
    label = item if item is not None else path
    if isinstance(path, str) and path.split("://", 1)[0] in ("http", "https", "s3", "gs", "azure-blob"):
        raise ImageLoadError(label, "is a URL, not a local file", "download it first and pass the file or its bytes")
    try:
        with _open_file(path, label) as fh:
            return _load_stream(fh, label, path, max_pixels, max_side, window)
    except OSError as exc:
        raise _os_error(label, exc) from exc


def load_image_view(
    source: Source,
    *,
    item: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int,
    crop: int,
    window: tuple[float, float] | None = None,
) -> ImageView:
    """Decode one image to a view of at most ``max_side`` pixels a side *and* its centred ``crop`` × ``crop``
    pixels at native resolution (corner on the 8-pixel JPEG grid), never holding an RGB copy of the
    full-size image: what the image checks (:mod:`examine.image_checks`) measure.

    Memory: PNG, BMP, GIF, WebP and the like are decoded at full size in their stored mode (a 1-bit
    11,000² PNG: 121 MB), then cropped and reduced band by band; a JPEG over 16.7 million pixels is
    decoded at 1/2, 1/4 or 1/8 scale (so its "native" centre is at that scale); TIFF and DICOM as
    :func:`load_image`. Large decodes share :data:`DECODE_BUDGET` across threads.
    Errors as :func:`load_image`.
    """
    if crop < 1 or max_side < 1:
        raise ValueError(f"max_side and crop must be ≥ 1, got {max_side}, {crop}")
    centre = _Centre(crop)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = item if item is not None else f"<{len(source)} bytes>"
        rgb = _load_stream(io.BytesIO(bytes(source)), label, item or "", max_pixels, max_side, window, centre)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = item if item is not None else path
        try:
            with _open_file(path, label) as fh:
                rgb = _load_stream(fh, label, path, max_pixels, max_side, window, centre)
        except OSError as exc:
            raise _os_error(label, exc) from exc
    else:
        raise TypeError(f"load_image_view takes a path or bytes, not {type(source).__name__}")
    assert centre.rgb is not None
    return ImageView(rgb, centre.rgb, *centre.size)


# ---------------------------------------------------------------- decoding


def _load_stream(
    fh: IO[bytes],
    label: str,
    name: str,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
    centre: _Centre | None = None,
) -> np.ndarray:
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be ≥ 1, got {max_side}")
    if window is not None and not (math.isfinite(window[0]) and math.isfinite(window[1]) and window[1] > window[0]):
        raise ValueError(f"window must be two finite numbers with lo < hi, got {window!r}")
    head = fh.read(512)
    fh.seek(0)
    if not head:
        raise ImageLoadError(
            label, "empty file (0 bytes)", "the copy or upload probably failed; export the image again"
        )
    is_dicom = head[128:132] == b"DICM" or name.lower().endswith(_DICOM_SUFFIXES)
    try:
        if is_dicom:
            rgb = load_dicom(fh, label, head[128:132] == b"DICM", max_pixels, max_side, window)
        elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            rgb = _load_tiff(fh, label, max_pixels, max_side, window, centre)
        else:
            rgb = _load_pillow(fh, label, head, max_pixels, max_side, window, centre)
        if centre is not None and centre.rgb is None:  # TIFF, DICOM: cut from the full-size RGB
            centre.take(rgb)
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError(
            label, "not enough memory to decode the image", "pass max_side or a lower max_pixels"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(label, f"refused as a decompression bomb ({exc})", "check the file's origin") from exc
    except (OSError, EOFError, SyntaxError, ValueError, IndexError, KeyError, TypeError, RuntimeError) as exc:
        # Decoders report damaged data with assorted exception types.
        raise _corrupt(label, exc) from exc
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb = _shrink(rgb, max_side)
    return rgb


def _load_pillow(
    fh: IO[bytes],
    label: str,
    head: bytes,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
    centre: _Centre | None = None,
) -> np.ndarray:
    try:
        im = _open_pillow(fh)
    except UnidentifiedImageError as exc:
        raise _not_an_image(label, head) from exc
    return _pillow_to_rgb(im, label, max_pixels, max_side, window, centre)


def _pillow_to_rgb(
    im: Image.Image,
    label: str,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
    centre: _Centre | None = None,
) -> np.ndarray:
    _check_pixels(label, im.size[0], im.size[1], max_pixels)
    native = im.size
    if centre is not None and im.format == "JPEG":
        # the centre should keep native pixels: a scaled decode only for a JPEG too large to hold whole
        scale = 1
        while scale < 8 and native[0] * native[1] > _VIEW_DECODE_PIXELS * scale * scale:
            scale *= 2
        if scale > 1:
            im.draft(None, (max(1, native[0] // scale), max(1, native[1] // scale)))
    elif max_side is not None and im.format == "JPEG":
        w, h = _fit(im.size[0], im.size[1], max_side)
        # Decode at 1/2, 1/4 or 1/8 scale, never below the target: libjpeg's scaled IDCT is itself a clean
        # downsample, and callers already ask for a margin over what they finally use (the embedder 4×).
        im.draft(None, (w, h))
    with _BUDGET.hold(im.size[0] * im.size[1]):
        im.load()
        loaded = im.size
        ImageOps.exif_transpose(im, in_place=True)
        centre_im = None
        if centre is not None:
            centre.size = (native[1], native[0]) if im.size == loaded else (native[0], native[1])
            centre_im = im.crop(_centre_box(im.size[0], im.size[1], centre.side))
        if max_side is not None:
            im = _reduce_in_bands(im, max_side)
        if centre_im is not None and centre is not None:
            if im.mode in _HIGH_DEPTH_MODES and window is None:  # the centre in the whole image's window
                window = _percentile_window(np.asarray(im), DEFAULT_PERCENTILES)
            centre.rgb = _pillow_array(centre_im, label, window)
        return _pillow_array(im, label, window)


def _pillow_array(im: Image.Image, label: str, window: tuple[float, float] | None) -> np.ndarray:
    if im.mode in _HIGH_DEPTH_MODES:
        return _array_to_rgb(np.asarray(im), label, window)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    else:
        rgb = np.asarray(im.convert("RGB"))
    return rgb if window is None else window_to_uint8(rgb, window)


# Modes Pillow's ``reduce`` accepts, and what the others are converted to (band by band) first.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr"})
_BAND_PIXELS = 1 << 22  # pixels converted at a time while reducing (~16 MB as RGBA)


def _reduce_in_bands(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink a decoded image by an integer factor (keeping ≥ 2× ``max_side``) before any mode
    conversion, a band of rows at a time: memory stays at the decoded size plus one small band.

    A 1-bit or palette image of 11,000² pixels decodes to 121 MB; converting it whole to RGB
    (4 bytes per pixel in Pillow) and then to an array would cost about 1.2 GB more.
    """
    factor = max(im.size) // (2 * max_side)
    if factor < 2:
        return im
    if im.mode in _REDUCIBLE_MODES:
        target = im.mode
    elif im.mode in _HIGH_DEPTH_MODES:
        target = "I"
    elif im.mode in _ALPHA_MODES or "transparency" in im.info:
        target = "RGBA"
    elif im.mode == "1":
        target = "L"
    else:
        target = "RGB"
    w, h = im.size
    out = Image.new(target, (max(1, w // factor), max(1, h // factor)))
    rows = max(1, _BAND_PIXELS // max(1, w) // factor) * factor
    for y in range(0, out.size[1] * factor, rows):
        band = im.crop((0, y, out.size[0] * factor, min(y + rows, out.size[1] * factor)))
        if band.mode != target:
            band = band.convert(target)
        out.paste(band.reduce(factor), (0, y // factor))
    return out


def _open_pillow(fh: IO[bytes]) -> Image.Image:
    """``Image.open`` without Pillow's global pixel limit; ``_check_pixels`` applies ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fh)
        except Image.DecompressionBombError:
            pass
    # Only the header is parsed while the global is lifted; it is restored at once.
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            fh.seek(0)
            return Image.open(fh)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _load_tiff(
    fh: IO[bytes],
    label: str,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
    centre: _Centre | None = None,
) -> np.ndarray:
    with ExitStack() as budget:
        return _load_tiff_within(fh, label, max_pixels, max_side, window, centre, budget)


def _load_tiff_within(
    fh: IO[bytes],
    label: str,
    max_pixels: int,
    max_side: int | None,
    window: tuple[float, float] | None,
    centre: _Centre | None,
    budget: ExitStack,
) -> np.ndarray:
    try:
        arr, inverted = read_tiff(fh, label, max_pixels, max_side, lambda px: budget.enter_context(_BUDGET.hold(px)))
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:  # tifffile raises many types on damaged files; Pillow gets a second try
        fh.seek(0)
        try:
            im = _open_pillow(fh)
        except Exception:
            if "imagecodecs" in str(exc):
                raise ImageLoadError(
                    label, f"cannot decode this TIFF ({exc})", "pip install imagecodecs, or save the TIFF uncompressed"
                ) from exc
            raise _corrupt(label, exc) from exc
        budget.close()  # Pillow holds its own share
        return _pillow_to_rgb(im, label, max_pixels, max_side, window, centre)
    return _array_to_rgb(arr, label, window, inverted=inverted)


# ---------------------------------------------------------------- arrays


def _open_file(path: str | os.PathLike[str], label: str) -> IO[bytes]:
    if os.fspath(path) in ("", b""):
        raise ImageLoadError(label, "empty path", "pass the path of an image file")
    return open(path, "rb")


def _os_error(label: str, exc: OSError) -> ImageLoadError:
    if isinstance(exc, FileNotFoundError):
        return ImageLoadError(label, "file not found", f"check the path (relative paths start at {Path.cwd()})")
    if isinstance(exc, PermissionError):
        return ImageLoadError(label, "permission denied", "make the file readable by the user running examine")
    if isinstance(exc, IsADirectoryError):
        return ImageLoadError(label, "is a folder, not a file", "pass the image files inside it (see list_images)")
    return _corrupt(label, exc)


def _not_an_image(label: str, head: bytes) -> ImageLoadError:
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return _corrupt(label, ValueError("the header cannot be read"))
    hint = f"convert it to PNG or TIFF (supported: {_SUPPORTED})"
    for offset, magic, name in _KNOWN_OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return ImageLoadError(label, f"unsupported format: {name}", hint)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        kind = "an SVG drawing" if "<svg" in text else "a text file"
        return ImageLoadError(label, f"not an image: {kind}", hint)
    return ImageLoadError(label, f"not an image in a known format (starts with {head[:8]!r})", hint)
