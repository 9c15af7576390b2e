"""load_image on real medical tiles written in every format, and every way a file can be bad."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

import examine.images as images
from examine.datasets import medical_tiles
from examine.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    list_images,
    load_image,
    load_images,
    read_bytes,
    sha256_bytes,
    window_to_uint8,
)


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    """A real immunohistochemistry-or-fundus tile, 96 × 128 so rows and columns cannot be swapped."""
    return medical_tiles(1, size=128, seed=3, augment=False)[0][:96]


@pytest.fixture(scope="module")
def gray16(tile) -> np.ndarray:
    """16-bit data using only 1,021 of 65,536 levels, as detector exports often do."""
    return tile[:, :, 1].astype(np.uint16) * 4 + 1000


def encode(array: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tiff_bytes(*pages: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for page in pages:
            writer.write(page, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels: the shape of a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def dicom_bytes(array: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> bytes:
    pydicom = pytest.importorskip("pydicom", minversion="3.0")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    ds.set_pixel_data(array, photometric_interpretation=photometric, bits_stored=array.dtype.itemsize * 8)
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_rgb(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.uint8 and image.shape == (*shape, 3) and image.flags.c_contiguous


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("PPM", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("JPEG", {"quality": 95}, 4),
        ("WEBP", {"quality": 95}, 5),
        ("TIFF", {"compression": "jpeg"}, 5),
    ],
    ids=["png", "bmp", "ppm", "tiff", "tiff-lzw", "jpeg", "webp", "tiff-jpeg"],
)
def test_rgb_formats_round_trip(tile, tmp_path, fmt, options, tolerance):
    path = tmp_path / f"tile.{fmt.lower()}"
    path.write_bytes(encode(tile, fmt, **options))
    image = load_image(path)
    assert_rgb(image, tile.shape[:2])
    assert mean_abs(image, tile) <= tolerance
    np.testing.assert_array_equal(load_image(path.read_bytes()), image)


def test_grayscale_gives_three_equal_channels(tile):
    gray = np.asarray(Image.fromarray(tile).convert("L"))
    image = load_image(encode(gray, "PNG"))
    assert_rgb(image, gray.shape)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], gray)


def test_palette_png_and_gif_match_their_palette(tile):
    palette = Image.fromarray(tile).quantize(64)
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(load_image(encode(palette, "PNG")), expected)
    np.testing.assert_array_equal(load_image(encode(palette, "GIF")), expected)


def test_animated_gif_gives_first_frame(tile):
    frames = [Image.fromarray(tile).quantize(32), Image.fromarray(255 - tile).quantize(32)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(load_image(data), np.asarray(frames[0].convert("RGB")))


def test_alpha_is_composited_on_white(tile):
    alpha = np.zeros(tile.shape[:2], np.uint8)
    alpha[:, 32:64] = 128
    alpha[:, 64:] = 255
    image = load_image(encode(np.dstack([tile, alpha]), "PNG"))
    assert_rgb(image, tile.shape[:2])
    assert (image[:, :32] == 255).all()
    np.testing.assert_array_equal(image[:, 64:], tile[:, 64:])
    half = np.rint(tile[:, 32:64] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(image[:, 32:64] - half).max() <= 1


def test_transparent_palette_entry_becomes_white(tile):
    palette = Image.fromarray(tile).quantize(16)
    index = np.asarray(palette)[0, 0]
    palette.info["transparency"] = int(index)
    image = load_image(encode(palette, "PNG", transparency=int(index)))
    assert (image[np.asarray(palette) == index] == 255).all()


def test_exif_orientation_is_applied(tile):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to display
    image = load_image(encode(tile, "JPEG", quality=95, exif=exif))
    assert image.shape == (128, 96, 3)
    assert mean_abs(image, np.rot90(tile, -1)) < 4


# ---------------------------------------------------------------- TIFF and deep data


def test_16bit_tiff_is_windowed_to_full_contrast(gray16):
    image = load_image(tiff_bytes(gray16))
    assert_rgb(image, gray16.shape)
    assert image.min() == 0 and image.max() == 255
    assert len(np.unique(image)) > 150  # a plain >> 8 would leave 4 grey levels
    assert np.corrcoef(image[:, :, 0].ravel(), gray16.ravel())[0, 1] > 0.99


def test_16bit_png_is_windowed_too(gray16):
    assert Image.open(io.BytesIO(encode(gray16, "PNG"))).mode == "I;16"
    np.testing.assert_array_equal(load_image(encode(gray16, "PNG")), load_image(tiff_bytes(gray16)))


def test_explicit_window_is_exact(gray16):
    image = load_image(tiff_bytes(gray16), window=(1000.0, 2020.0))
    expected = np.clip(np.rint((gray16 - 1000.0) * 255 / 1020), 0, 255)
    np.testing.assert_array_equal(image[:, :, 0], expected)


def test_percentile_window_ignores_hot_pixels(gray16):
    hot = gray16.copy()
    hot[0, :5] = 65535
    image = load_image(tiff_bytes(hot))
    assert len(np.unique(image[1:])) > 150


def test_16bit_rgb_and_float_tiff_keep_the_picture(tile):
    rgb16 = tile.astype(np.uint16) * 257
    image = load_image(tiff_bytes(rgb16))
    np.testing.assert_array_equal(image, window_to_uint8(rgb16))  # one window for all channels
    for c in range(3):
        assert np.corrcoef(image[:, :, c].ravel(), tile[:, :, c].ravel())[0, 1] > 0.99
    values = tile[:, :, 0].astype(np.float32) / 255
    values[0, 0] = np.nan
    image = load_image(tiff_bytes(values))
    assert image[0, 0, 0] == 0
    assert np.corrcoef(image[1:, :, 0].ravel(), tile[1:, :, 0].ravel())[0, 1] > 0.99


def test_multipage_tiff_gives_first_page(tile):
    data = tiff_bytes(tile, 255 - tile[:50])
    np.testing.assert_array_equal(load_image(data), tile)


def test_miniswhite_tiff_is_inverted(tile):
    gray = tile[:, :, 2]
    data = tiff_bytes(gray, photometric="miniswhite")
    np.testing.assert_array_equal(load_image(data)[:, :, 0], 255 - gray)


def test_tiff_pyramid_decodes_the_smallest_sufficient_level(tile):
    big = np.kron(tile, np.ones((2, 2, 1), np.uint8))  # 192 × 256
    marker = np.full((96, 128, 3), 7, np.uint8)  # level 1 holds something recognisable
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(big, subifds=2)
        writer.write(marker, subfiletype=1)
        writer.write(tile[::2, ::2], subfiletype=1)
    assert load_image(buffer.getvalue()).shape == (192, 256, 3)
    small = load_image(buffer.getvalue(), max_side=100)
    assert small.shape == (75, 100, 3) and (small == 7).all()


# ---------------------------------------------------------------- DICOM


def test_dicom_rescale_and_window_from_tags(gray16):
    stored = gray16 + 24  # Hounsfield = stored − 1024
    data = dicom_bytes(stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=500, WindowWidth=1001)
    image = load_image(data)
    assert_rgb(image, stored.shape)
    hounsfield = stored.astype(np.float64) - 1024
    lo, hi = 500 - 0.5 - 500, 500 - 0.5 + 500  # DICOM's linear window for centre 500, width 1001
    expected = np.clip(np.rint((hounsfield - lo) * 255 / (hi - lo)), 0, 255)
    np.testing.assert_array_equal(image[:, :, 0], expected)


def test_dicom_without_window_uses_percentiles_and_monochrome1_inverts(gray16):
    plain = load_image(dicom_bytes(gray16))
    assert plain.min() == 0 and plain.max() == 255
    np.testing.assert_array_equal(plain, load_image(tiff_bytes(gray16)))
    np.testing.assert_array_equal(load_image(dicom_bytes(gray16, "MONOCHROME1")), 255 - plain)


def test_dicom_rgb_and_multiframe(tile, gray16, tmp_path):
    np.testing.assert_array_equal(load_image(dicom_bytes(tile, "RGB")), tile)
    path = tmp_path / "cine.dcm"
    path.write_bytes(dicom_bytes(np.stack([gray16, gray16[::-1]])))
    np.testing.assert_array_equal(load_image(path), load_image(dicom_bytes(gray16)))


def test_dicom_without_pydicom_says_how_to_install(gray16, monkeypatch):
    data = dicom_bytes(gray16)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImageLoadError, match="pip install pydicom") as info:
        load_image(data, item="scan.dcm")
    assert info.value.item == "scan.dcm"


def test_dicom_without_pixels_is_refused():
    pydicom = pytest.importorskip("pydicom", minversion="3.0")
    data = dicom_bytes(np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(ImageLoadError, match="no pixel data"):
        load_image(buffer.getvalue())


# ---------------------------------------------------------------- max_side


def test_max_side_shrinks_keeping_aspect(tile):
    data = encode(tile, "PNG")
    assert load_image(data, max_side=64).shape == (48, 64, 3)
    assert load_image(data, max_side=1000).shape == tile.shape
    assert load_image(tiff_bytes(tile), max_side=32).shape == (24, 32, 3)


def test_max_side_on_large_jpeg_matches_full_decode():
    retina = medical_tiles(1, size=1024, seed=0, augment=False)[0]
    data = encode(retina, "JPEG", quality=95)
    small = load_image(data, max_side=200)
    assert small.shape == (200, 200, 3)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((200, 200), Image.Resampling.LANCZOS))
    assert mean_abs(small, reference) < 3


# ---------------------------------------------------------------- failures


def assert_fails(source, reason: str, *, item: str | None = None, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, item=item, **kwargs)
    error = info.value
    expected_item = item if item is not None else str(source)
    assert error.item == expected_item
    assert reason in error.reason
    assert str(error).startswith(f"{expected_item}: {error.reason}; ") and error.hint
    return error


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    assert_fails(path, "empty file")
    assert_fails(b"", "empty file", item="task 7")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tile, tmp_path, fmt):
    data = encode(tile, fmt)
    for cut in (len(data) // 2, 40):
        path = tmp_path / f"cut{cut}.{fmt.lower()}"
        path.write_bytes(data[:cut])
        assert_fails(path, "truncated or corrupt")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("patient 12, left eye\n")
    assert "text file" in assert_fails(path, "not an image").reason


@pytest.mark.parametrize(
    ("data", "name"),
    [(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"), (b"PK\x03\x04\x14\x00\x00\x00", "ZIP"), (b"\x00\x01\x02\xff" * 64, "")],
)
def test_unsupported_format(data, name):
    error = assert_fails(data, "", item="upload")
    assert name in error.reason and "PNG" in error.hint


def test_bomb_over_max_pixels(tile, gray16):
    error = assert_fails(encode(tile, "PNG"), "12,288 pixels", item="tile.png", max_pixels=10_000)
    assert "10,000" in error.reason and "max_pixels=12288" in error.hint
    assert_fails(tiff_bytes(tile), "over the limit", item="t.tif", max_pixels=10_000)
    assert_fails(dicom_bytes(gray16), "over the limit", item="s.dcm", max_pixels=10_000)
    assert load_image(encode(tile, "PNG"), max_pixels=12_288).shape == tile.shape


def test_header_only_bomb_is_refused_before_decoding():
    limit = Image.MAX_IMAGE_PIXELS
    error = assert_fails(png_header_only(50_000, 50_000), "2,500,000,000 pixels", item="bomb.png")
    assert f"{DEFAULT_MAX_PIXELS:,}" in error.reason
    assert Image.MAX_IMAGE_PIXELS == limit


def test_pillow_global_limit_is_neither_used_nor_changed(tile, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    np.testing.assert_array_equal(load_image(encode(tile, "PNG")), tile)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_missing_file_folder_and_url(tmp_path):
    assert_fails(tmp_path / "nope.png", "file not found")
    assert_fails(tmp_path, "is a folder")
    assert_fails("https://example.org/x.png", "is a URL")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes(b"x")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images, "open", denied, raising=False)  # root ignores chmod, so fake the OS answer
    assert_fails(path, "permission denied")
    with pytest.raises(ImageLoadError, match="permission denied"):
        read_bytes(path)


def test_wrong_argument_types_are_programming_errors(tile):
    with pytest.raises(TypeError):
        load_image(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        load_image(encode(tile, "PNG"), window=(5, 5))
    with pytest.raises(ValueError, match="max_side"):
        load_image(encode(tile, "PNG"), max_side=0)


def test_error_survives_pickling():
    error = ImageLoadError("task 3", "file not found", "check the path")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.item, copy.reason, copy.hint, str(copy)) == (error.item, error.reason, error.hint, str(error))
    assert isinstance(copy, ValueError)


# ---------------------------------------------------------------- batch and helpers


def test_batch_continues_past_bad_images(tile, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(tile, "PNG"))
    sources = [good, tmp_path / "missing.png", b"", encode(tile, "JPEG"), b"%PDF-1.4"]
    loaded, errors = load_images(sources, items=["a", "b", "c", "d", "e"], max_side=64)
    assert [x is None for x in loaded] == [False, True, True, False, True]
    assert [e.item for e in errors] == ["b", "c", "e"]
    assert loaded[0].shape == loaded[3].shape == (48, 64, 3)
    with pytest.raises(ValueError, match="items"):
        load_images(sources, items=["a"])


def test_list_images(tmp_path):
    for name in [
        "b.png",
        "a.JPG",
        "sub/c.tif",
        "sub/deeper/d.dcm",
        ".hidden.png",
        ".cache/e.png",
        "notes.txt",
        "f.PNG",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "f.PNG", "sub/c.tif", "sub/deeper/d.dcm"]
    with pytest.raises(ImageLoadError, match="does not exist"):
        list_images(tmp_path / "absent")
    with pytest.raises(ImageLoadError, match="not a folder"):
        list_images(tmp_path / "b.png")
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm"} <= IMAGE_EXTENSIONS


def test_read_bytes_and_sha256(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert read_bytes(path) == b"abc"
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(ImageLoadError, match="file not found"):
        read_bytes(tmp_path / "absent.bin", item="task 9")


def test_window_to_uint8_edge_cases():
    assert (window_to_uint8(np.full((4, 4), 300, np.uint16)) == round(300 * 255 / 65535)).all()
    assert (window_to_uint8(np.full((2, 2), np.nan, np.float32)) == 0).all()
    assert window_to_uint8(np.array([[True, False]])).tolist() == [[255, 0]]
    ramp = np.linspace(-1000, 3000, 10_000).reshape(100, 100)
    out = window_to_uint8(ramp)
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_load_image_view_gives_the_shrunk_image_and_the_native_centre(fmt):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    full = images.load_image(buf.getvalue())
    view = images.load_image_view(buf.getvalue(), max_side=300, crop=256)
    assert (view.height, view.width) == (700, 900) and max(view.image.shape[:2]) <= 300
    x0, y0 = (900 - 256) // 2 // 8 * 8, (700 - 256) // 2 // 8 * 8
    assert np.array_equal(view.centre, full[y0 : y0 + 256, x0 : x0 + 256])
    shrunk = images.load_image(buf.getvalue(), max_side=300)  # a JPEG there: decoded at reduced scale
    assert view.image.shape == shrunk.shape
    assert np.array_equal(view.image, shrunk) or np.abs(view.image.astype(int) - shrunk).mean() < 8


def test_load_image_view_of_a_1_bit_bomb_never_holds_a_full_size_rgb_copy():
    from tests.test_backend_memory import png_bomb

    view = images.load_image_view(png_bomb(4000), max_side=1024, crop=512)
    assert (view.height, view.width) == (4000, 4000) and view.centre.shape == (512, 512, 3)
    assert view.image.shape == (1024, 1024, 3) and not view.image.any()


def test_large_decodes_share_a_pixel_budget_across_threads():
    import threading
    import time

    budget = images._PixelBudget(total=10 * images.LARGE_PIXELS)
    inside, peak, lock = [0], [0], threading.Lock()

    def decode(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                inside[0] += pixels
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= pixels

    threads = [threading.Thread(target=decode, args=(4 * images.LARGE_PIXELS,)) for _ in range(6)]
    threads += [threading.Thread(target=decode, args=(20 * images.LARGE_PIXELS,))]  # over the budget: alone
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 20 * images.LARGE_PIXELS and budget.used == 0
    small = images._PixelBudget(total=1)
    with small.hold(images.LARGE_PIXELS - 1), small.hold(images.LARGE_PIXELS - 1):  # small images never wait
        pass
