"""Training images for the MAE: decoded in worker processes, or JPEGs in batches on a device (nvJPEG on CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examine.datasets import write_medical_tiles
from examine.gpu_decode import fit_within
from examine.workspace import load_training_images


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """JPEG and PNG tiles, a truncated JPEG and a missing file, interleaved."""
    root = tmp_path_factory.mktemp("training")
    jpegs = write_medical_tiles(root / "jpeg", 12, size=200, seed=1, fmt="jpg")
    pngs = write_medical_tiles(root / "png", 4, size=150, seed=2)
    bad = root / "truncated.jpg"
    bad.write_bytes(jpegs[0].read_bytes()[:300])
    paths = jpegs[:5] + [bad] + pngs[:2] + [root / "missing.jpg"] + jpegs[5:] + pngs[2:]
    return paths


def test_fit_within_shrinks_the_longer_side_and_keeps_the_aspect():
    img = torch.arange(3 * 100 * 40, dtype=torch.float32).reshape(3, 100, 40).remainder(256).to(torch.uint8)
    out = fit_within(img, 50)
    assert out.shape == (3, 50, 20) and out.dtype == torch.uint8
    assert fit_within(img, 100) is img  # already fits
    flat = torch.full((3, 9, 301), 77, dtype=torch.uint8)
    assert fit_within(flat, 30).shape == (3, 1, 30) and (fit_within(flat, 30) == 77).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_device_decode_gives_the_same_images_in_the_same_order(mixed, workers):
    ref, ref_err = load_training_images(mixed, 32, progress=False, workers=workers)
    got, got_err = load_training_images(mixed, 32, progress=False, workers=workers, decode_device="cpu")
    assert [str(e) for e in got_err] == [str(e) for e in ref_err] and len(ref_err) == 2
    assert "truncated.jpg" in str(got_err[0]) and "missing.jpg" in str(got_err[1])
    assert len(got) == len(ref) == 16
    for a, b in zip(ref, got):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape and max(a.shape[:2]) == 64
        # Pillow shrinks JPEGs in the DCT (draft mode) first; the device resizes the full decode
        assert np.abs(a.astype(float) - b.astype(float)).mean() < 4.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_nvjpeg_training_images_match_the_cpu_decode(mixed):
    ref, ref_err = load_training_images(mixed, 32, progress=False, workers=2)
    got, got_err = load_training_images(mixed, 32, progress=False, workers=2, decode_device="cuda")
    assert [str(e) for e in got_err] == [str(e) for e in ref_err]
    assert [a.shape for a in got] == [a.shape for a in ref]
    assert max(np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(ref, got)) < 4.0
