"""Tests of examine.evaluate.screening_baselines (cleanvision and cleanlab adapters) on images shipped by scikit-image."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cleanvision")
pytest.importorskip("datasets")  # cleanlab's Datalab needs it (cleanlab[datalab])
skdata = pytest.importorskip("skimage.data")
filters = pytest.importorskip("skimage.filters")

from examine.evaluate.screening_baselines import (  # noqa: E402
    CLEANLAB_ISSUES,
    CLEANVISION_ISSUES,
    cleanlab_scores,
    cleanvision_scores,
)

CV_KEYS = set(CLEANVISION_ISSUES) | {"overall", "flagged"}
CL_KEYS = set(CLEANLAB_ISSUES) | {"overall", "flagged"}


def _check_shapes(s: dict[str, np.ndarray], keys: set[str], n: int) -> None:
    assert set(s) == keys
    for k, v in s.items():
        assert v.shape == (n,), k
        assert v.dtype == (bool if k == "flagged" else np.float64), k
    stacked = np.stack([s[k] for k in keys - {"overall", "flagged"}])
    np.testing.assert_array_equal(s["overall"], stacked.max(axis=0))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    out = filters.gaussian(img, sigma=sigma, preserve_range=True, channel_axis=-1 if img.ndim == 3 else None)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def test_cleanvision_grayscale_pool_blank_blurred_duplicate():
    # 16 clean 64x64 tiles of the brick texture, then: a blank tile, a heavily blurred brick tile (not in the pool),
    # and an exact copy of tile 3.  Brick is chosen on purpose: on smoother textures (gravel, grass, IHC) cleanvision's
    # blurry check at 64 px does not rank blurred tiles above sharp ones (see the module docs).
    brick = skdata.brick()
    tiles = [brick[i : i + 64, j : j + 64].copy() for i in range(0, 512, 128) for j in range(0, 512, 128)]
    blank = np.full((64, 64), 140, np.uint8)
    blurred = _blur(brick[448:, 448:], sigma=6)
    pool = tiles + [blank, blurred, tiles[3].copy()]
    s = cleanvision_scores(pool)
    _check_shapes(s, CV_KEYS, len(pool))
    clean = slice(0, 16)
    clean_not_dup = [i for i in range(16) if i != 3]
    assert s["low_information"][16] > s["low_information"][clean].max()
    assert s["overall"][16] == 1.0 > s["overall"][clean_not_dup].max()
    assert s["blurry"][17] > s["blurry"][clean].max()
    assert s["exact_duplicates"][[3, 18]].tolist() == [1.0, 1.0]  # both members of the pair
    assert s["exact_duplicates"].sum() == 2
    assert s["flagged"][[3, 16, 18]].all() and not s["flagged"][clean_not_dup].any()


def test_cleanvision_rgb_pool_keeps_order_and_is_deterministic():
    astro = skdata.astronaut()
    tiles = [astro[i : i + 64, j : j + 64].copy() for i in range(0, 512, 128) for j in range(0, 512, 128)]
    pool = tiles + [np.zeros((64, 64, 3), np.uint8), tiles[0].copy()]
    s = cleanvision_scores(pool)
    _check_shapes(s, CV_KEYS, len(pool))
    assert s["dark"][16] == 1.0 and s["dark"][16] > s["dark"][:16].max()
    assert s["flagged"][16] and s["exact_duplicates"][[0, 17]].all()
    rev = cleanvision_scores(pool[::-1])
    for k in CV_KEYS:
        np.testing.assert_array_equal(rev[k][::-1], s[k], err_msg=k)


def test_cleanvision_small_pools():
    img = skdata.immunohistochemistry()[:48, :48]
    for pool in ([img], [img, img[:, :, 0]], [img[:2, :3], img[5:7, :3], img[:40, :10]]):
        _check_shapes(cleanvision_scores(pool), CV_KEYS, len(pool))
    with pytest.raises(ValueError):
        cleanvision_scores([img.astype(np.float32)])


def test_cleanlab_flags_outlier_and_duplicate():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 32)) * 4
    x = centers[rng.integers(0, 3, size=200)] + rng.normal(size=(200, 32))
    x[50] = -4 * centers.sum(axis=0)  # far from every cluster, in distance and in angle
    x[120] = x[7]
    s = cleanlab_scores(x)
    _check_shapes(s, CL_KEYS, 200)
    assert s["outlier"].argmax() == 50 and s["flagged"][50]
    assert s["near_duplicate"][[7, 120]].min() > np.delete(s["near_duplicate"], [7, 120]).max()
    assert s["flagged"][[7, 120]].all()
    perm = rng.permutation(200)
    p = cleanlab_scores(x[perm])
    for k in CL_KEYS:
        np.testing.assert_allclose(p[k], s[k][perm], err_msg=k)


def test_cleanlab_small_pools():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 11):
        s = cleanlab_scores(rng.normal(size=(n, 5)))
        _check_shapes(s, CL_KEYS, n)
    assert not cleanlab_scores(np.ones((1, 4)))["flagged"].any()
    with pytest.raises(ValueError):
        cleanlab_scores(np.ones(4))
