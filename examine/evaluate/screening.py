"""Screening evidence: planted unusable images, our screening against EXAMINE alone, cleanvision and cleanlab.

On each set a pool of held-out images (never seen by the set's encoder) gets
:func:`examine.evaluate.defects.plant_defects`: 10 % defects of nine kinds and a 1 %
rare clean class.  Every method gives a per-image "likely unusable" score; the
figures are AUROC overall and per kind (that kind against the clean images), the
share of clean and of rare-class images flagged, and the share of unusable images
among the first 50 of the cold-start queue, with and without the screening; each
over several pools planted with different seeds (one pool's 50 hold too few
defects to tell 2 % from 4 %).

A second scenario asks whether the screening holds when defects are common
(:func:`common_defects_evidence`): pools where a quarter of the images are blank and a
quarter near-duplicates (whole-slide tilings are often mostly background), reporting
the share of each flagged, of clean images flagged, and the wasted among the first 50.
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

__all__ = ["screening_pool", "screening_evidence", "common_defects_evidence", "COMMON_KINDS", "FIRST"]

#: The head of the queue whose unusable share is reported.
FIRST = 50
_DIGIT_SIZE = 32  # scikit-learn's 8 × 8 digits are enlarged: blur and JPEG need more than 8 pixels
#: The common-defects scenario: half the pool planted, dealt in turn: a quarter blank, a quarter near-duplicates.
COMMON_KINDS: tuple[str, ...] = ("blank", "duplicate")
COMMON_FRACTION = 0.5


def screening_pool(
    data: LabeledSet, n: int = 1000, seed: int = 0, *, kinds: tuple[str, ...] = DEFECTS, fraction: float = 0.10
) -> PlantedPool:
    """The planted pool of one set, cut from its test images (the encoder never saw them)."""
    images = data.test
    if data.name == "digits":
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((_DIGIT_SIZE,) * 2, Image.Resampling.BILINEAR)) for im in images]
        )
    return plant_defects(
        images, data.y_test, n=min(n, int(0.9 * len(images))), seed=seed, kinds=kinds, fraction=fraction
    )


def _rgb(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images])


def _wasted(head: np.ndarray, pool: PlantedPool) -> int:
    """Unusable images in ``head`` (served rows): planted defects, except that of a near-duplicate
    pair only the second one served is wasted (one of the two is worth its label)."""
    wasted = int(np.sum(pool.bad[head] & (pool.kind[head] != "duplicate")))
    src = pool.source[head]
    for s in np.unique(src[pool.kind[head] == "duplicate"]):
        wasted += int(np.sum(src == s)) - 1
    return wasted


def _first_unusable(Z: np.ndarray, pool: PlantedPool, deferred: np.ndarray | None) -> float:
    order = rank(Z, policy=DEFAULT_POLICY, deferred=deferred).order
    return _wasted(order[:FIRST], pool) / FIRST


def _deferred(flagged: np.ndarray, badness: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(flagged)
    return rows[np.argsort(badness[rows], kind="stable")]


def _one_pool(
    pool: PlantedPool, embed: Callable[[np.ndarray], np.ndarray], baselines: bool, log: Callable[[str], None]
) -> dict[str, Any]:
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
    for name, sc in scores.items():
        row = {"all": auroc(sc, bad)}
        for k in DEFECTS:
            sel = (kind == k) | ~bad
            row[k] = auroc(sc[sel], bad[sel])
        table[name] = row
    counts = {
        name: {
            "clean": (int(f[~bad].sum()), int((~bad).sum())),
            "rare": (int(f[rare].sum()), int(rare.sum())),
            "unusable": (int(f[bad].sum()), int(bad.sum())),
        }
        for name, f in flags.items()
    }
    shuffles = np.random.default_rng(0)
    at_random = np.mean([_wasted(shuffles.permutation(len(bad))[:FIRST], pool) for _ in range(200)]) / FIRST
    first = {"random (200 orders)": float(at_random), "no screening": _first_unusable(Z, pool, None)}
    for name, f in flags.items():
        first[f"deferring {name}'s flags"] = _first_unusable(Z, pool, _deferred(f, scores[name]))
    return {
        "auroc": table,
        "counts": counts,
        "first": first,
        "findings": ours.counts(),
        "examples": [(int(i), ours.reasons[i]) for i in np.flatnonzero(ours.flagged)[:5]],
    }


def screening_evidence(
    pools: list[PlantedPool],
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    baselines: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scores, AUROC, flag shares and the queue's first 50 for every method, over planted pools of one set.

    AUROC is the mean over the pools; flag shares count every pool's images together; the
    queue's first 50 give the mean unusable share and the worst pool's.
    """
    if not pools:
        raise ValueError("screening evidence needs at least one planted pool")
    runs = []
    for j, pool in enumerate(pools):
        log(f"  pool {j + 1}/{len(pools)}")
        runs.append(_one_pool(pool, embed, baselines, log))
    methods = list(runs[0]["auroc"])
    columns = list(runs[0]["auroc"][methods[0]])

    def mean(values: list[float]) -> float:  # a kind missing from a pool (NaN) is left out
        known = [v for v in values if np.isfinite(v)]
        return float(np.mean(known)) if known else float("nan")

    table = {m: {c: mean([r["auroc"][m][c] for r in runs]) for c in columns} for m in methods}

    def share(m: str, group: str) -> float:
        flagged, total = (sum(r["counts"][m][group][j] for r in runs) for j in (0, 1))
        return flagged / total if total else float("nan")

    shares = {m: {g: share(m, g) for g in ("clean", "rare", "unusable")} for m in runs[0]["counts"]}
    first = {q: float(np.mean([r["first"][q] for r in runs])) for q in runs[0]["first"]}
    worst = {q: float(np.max([r["first"][q] for r in runs])) for q in runs[0]["first"]}
    return {
        "pools": len(pools),
        "n": len(pools[0].bad),
        "n_bad": int(pools[0].bad.sum()),
        "n_rare": int(pools[0].rare.sum()),
        "auroc": table,
        "auroc_min": {m: float(np.min([r["auroc"][m]["all"] for r in runs])) for m in methods},
        "flagged": shares,
        "first": first,
        "first_worst": worst,
        "counts": runs[0]["findings"],  # the first pool's
        "examples": runs[0]["examples"],  # the first pool's
    }


def common_defects_evidence(
    pools: list[PlantedPool], embed: Callable[[np.ndarray], np.ndarray], *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The screening on pools where defects are common (e.g. :data:`COMMON_KINDS` at :data:`COMMON_FRACTION`).

    Per pool: the share of each planted kind flagged except near-duplicates; for near-duplicates the share
    of groups (a clean image and its planted copies) left with exactly one image unflagged (which one is the
    screening's choice); the share of the other clean images flagged (rare class included); and the wasted
    among the first 50 served, with and without deferring the flags (mean and worst pool).
    """
    if not pools:
        raise ValueError("the common-defects evidence needs at least one planted pool")
    kinds = sorted({str(k) for p in pools for k in p.kind if k and k != "duplicate"})
    counts = {k: [0, 0] for k in ["clean", *kinds, "duplicate groups kept once"]}
    first: dict[str, list[float]] = {"no screening": [], "deferring examine screening's flags": []}
    for j, pool in enumerate(pools):
        log(f"  common defects: pool {j + 1}/{len(pools)}")
        Z = np.asarray(embed(_rgb(pool.images)), np.float64)
        ours = screen(pool_checks(pool.images), Z)
        copied = np.unique(pool.source[pool.kind == "duplicate"])
        in_group = np.isin(pool.source, copied) & (pool.source >= 0)
        for k in kinds:
            counts[k][0] += int(ours.flagged[pool.kind == k].sum())
            counts[k][1] += int(np.sum(pool.kind == k))
        clean = ~pool.bad & ~in_group
        counts["clean"][0] += int(ours.flagged[clean].sum())
        counts["clean"][1] += int(clean.sum())
        once = [int(np.sum(~ours.flagged[in_group & (pool.source == s)])) == 1 for s in copied]
        counts["duplicate groups kept once"][0] += int(np.sum(once))
        counts["duplicate groups kept once"][1] += len(once)
        first["no screening"].append(_first_unusable(Z, pool, None))
        first["deferring examine screening's flags"].append(_first_unusable(Z, pool, ours.deferred()))
    return {
        "pools": len(pools),
        "n": len(pools[0].bad),
        "planted": {str(k): int(np.sum(pools[0].kind == k)) for k in np.unique(pools[0].kind[pools[0].bad])},
        "flagged": {k: f / t if t else float("nan") for k, (f, t) in counts.items()},
        "first": {q: float(np.mean(v)) for q, v in first.items()},
        "first_worst": {q: float(np.max(v)) for q, v in first.items()},
    }
