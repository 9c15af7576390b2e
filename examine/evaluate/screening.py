"""Screening evidence: planted unusable images, our screening against EXAMINE alone, cleanvision and cleanlab.

On each set a pool of held-out images (never seen by the set's encoder) gets
:func:`examine.evaluate.defects.plant_defects`: 10 % defects of nine kinds and a 1 %
rare clean class.  Every method gives a per-image "likely unusable" score; the
figures are AUROC overall and per kind (that kind against the clean images), the
share of clean and of rare-class images flagged, and the share of unusable images
among the first 50 of the cold-start queue, with and without the screening.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from examine.evaluate.data import LabeledSet
from examine.evaluate.defects import DEFECTS, PlantedPool, plant_defects
from examine.evaluate.valuation import auroc
from examine.image_checks import pool_checks
from examine.ranking import DEFAULT_POLICY, rank
from examine.screening import screen

__all__ = ["screening_pool", "screening_evidence", "FIRST"]

#: The head of the queue whose unusable share is reported.
FIRST = 50
_DIGIT_SIZE = 32  # scikit-learn's 8 × 8 digits are enlarged: blur and JPEG need more than 8 pixels


def screening_pool(data: LabeledSet, n: int = 1000, seed: int = 0) -> PlantedPool:
    """The planted pool of one set, cut from its test images (the encoder never saw them)."""
    images = data.test
    if data.name == "digits":
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((_DIGIT_SIZE,) * 2, Image.Resampling.BILINEAR)) for im in images]
        )
    return plant_defects(images, data.y_test, n=min(n, int(0.9 * len(images))), seed=seed)


def _rgb(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images])


def _first_unusable(Z: np.ndarray, bad: np.ndarray, deferred: np.ndarray | None) -> float:
    order = rank(Z, policy=DEFAULT_POLICY, deferred=deferred).order
    return float(bad[order[:FIRST]].mean())


def _deferred(flagged: np.ndarray, badness: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(flagged)
    return rows[np.argsort(badness[rows], kind="stable")]


def screening_evidence(
    pool: PlantedPool,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    baselines: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scores, AUROC, flag shares and the queue's first 50 for every method on one planted pool."""
    bad, kind, rare = pool.bad, pool.kind, pool.rare
    Z = np.asarray(embed(_rgb(pool.images)), np.float64)
    checks = pool_checks(pool.images)
    ours = screen(checks, Z)
    pixels_only = screen(checks)
    scores: dict[str, np.ndarray] = {
        "examine screening": ours.evidence,
        "examine screening, pixel checks only": pixels_only.evidence,
        "EXAMINE value alone (low = unusable)": -rank(Z, policy="paper").value,
    }
    flags: dict[str, np.ndarray] = {
        "examine screening": ours.flagged,
        "examine screening, pixel checks only": pixels_only.flagged,
    }
    if baselines:
        from examine.evaluate.screening_baselines import cleanlab_scores, cleanvision_scores

        log("  cleanvision on the same images")
        cv = cleanvision_scores(pool.images)
        log("  cleanlab (Datalab, outliers and near-duplicates) on the same embeddings")
        cl = cleanlab_scores(Z)
        scores["cleanvision"], flags["cleanvision"] = cv["overall"], cv["flagged"]
        scores["cleanlab"], flags["cleanlab"] = cl["overall"], cl["flagged"]
    table: dict[str, dict[str, float]] = {}
    for name, s in scores.items():
        row = {"all": auroc(s, bad)}
        for k in DEFECTS:
            sel = (kind == k) | ~bad
            row[k] = auroc(s[sel], bad[sel])
        table[name] = row
    shares = {
        name: {
            "clean": float(f[~bad].mean()),
            "rare": float(f[rare].mean()) if rare.any() else float("nan"),
            "unusable": float(f[bad].mean()),
        }
        for name, f in flags.items()
    }
    first = {"random (expected)": float(bad.mean()), "no screening": _first_unusable(Z, bad, None)}
    for name, f in flags.items():
        first[f"deferring {name}'s flags"] = _first_unusable(Z, bad, _deferred(f, scores[name]))
    return {
        "n": len(bad),
        "n_bad": int(bad.sum()),
        "n_rare": int(rare.sum()),
        "auroc": table,
        "flagged": shares,
        "first": first,
        "counts": ours.counts(),
        "examples": [(i, ours.reasons[i]) for i in np.flatnonzero(ours.flagged)[:5]],
    }
