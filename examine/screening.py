"""Screening unusable images without labels: a quality in [0, 1] and a reason per image.

Nearly every finding is measured against the pool itself, not against fixed
numbers: each image check (:mod:`examine.image_checks`) becomes a robust z-score
(median and MAD of the pool), one-sided in the direction of its defect, and the
embedding adds how isolated an image is (distance to its nearest neighbours) and
whether it nearly repeats another image.  The strongest finding is the image's
*evidence*; ``quality = 1 / (1 + exp(evidence - threshold))``, and images whose
evidence passes the threshold are *flagged*: the queue serves them after the clean
pool, never drops them.

Blank and near-empty images (empty glass, background tiles) are also found by what
they are, whatever the pool holds, since they can be common (a whole-slide tiling
may be mostly background, and then no longer stands out): an image whose grey
spread is within its noise (``structure`` below :data:`BLANK_STRUCTURE`), or whose
cells, but for at most :data:`NEAR_EMPTY_CONTENT` of them, are flat background at
noise level, is flagged as blank whatever the pool.

A rare but clean image is not junk: isolation counts only when an image is far
from even its few nearest neighbours, so a small group of similar rare images keeps
itself company.  Of a group of near-duplicates one image is kept (a labeled one if
there is one, else the best of the group) and the others are flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from examine.image_checks import CHECKS, COLOUR_BINS, COLOUR_LEVELS, N_VALUES, THUMB
from examine.queue_space import queue_space

__all__ = ["Screening", "screen", "THRESHOLD", "REASONS", "BLANK_STRUCTURE", "NEAR_EMPTY_CONTENT"]

#: Robust z-score above which a finding flags an image.
THRESHOLD = 6.0
#: Whatever the pool: an image whose log(grey spread / noise) is below this is blank (its spread is within
#: 1.4× its noise; planted blanks measure ≤ 0, the clean images of every evidence set ≥ 0.70).
BLANK_STRUCTURE = 0.35
#: Whatever the pool: an image whose share of cells holding more than flat background is at most this is
#: near-empty (2 of 64 cells; clean images of the evidence sets: ≥ 5 of 64).
NEAR_EMPTY_CONTENT = 2 / 64
#: Finding → the words of its reason.
REASONS: dict[str, str] = {
    "blank": "blank or nearly uniform",
    "blur": "out of focus",
    "noise": "noisy",
    "over": "over-exposed",
    "under": "under-exposed",
    "jpeg": "compression artefacts",
    "colour": "colours unseen in the pool (ink, stain, marker?)",
    "ink": "marks in one flat shade (pen, marker, burnt-in overlay?)",
    "size": "odd size or aspect",
    "isolated": "unlike the rest of the pool",
    "duplicate": "near-duplicate",
}
# finding → ((check, direction, smallest scale), ...): z = direction × (value − median) / scale.
_SIGNALS: dict[str, tuple[tuple[str, int, float], ...]] = {
    "blank": (("contrast", -1, 0.05), ("entropy", -1, 0.05), ("structure", -1, 0.05)),
    "blur": (("focus", -1, 0.05),),
    "noise": (("noise", +1, 0.05),),
    # exposure is a factor on the light: compared in log space (log light for under-, log headroom for over-exposure)
    "over": (("log_headroom", -1, 0.05), ("clip_high", +1, 0.02)),
    "under": (("log_light", -1, 0.05), ("clip_low", +1, 0.02)),
    "jpeg": (("blockiness", +1, 0.01),),
    "ink": (("one_shade", +1, 0.005),),
    "size": (("log_area", +1, 0.05), ("log_area", -1, 0.05), ("log_aspect", +1, 0.05), ("log_aspect", -1, 0.05)),
}
# Findings that name no cause of their own (over-exposed or blank images sit on one grey too): listed after the others
_SECONDARY = frozenset({"ink"})
# Findings that need all their parts: a bright image is over-exposed only if its whites are clipped too.
_ALL_OF = frozenset({"over"})
_WORDS = {
    "contrast": "contrast",
    "entropy": "detail",
    "structure": "structure above the noise",
    "focus": "focus",
    "noise": "noise",
    "brightness": "brightness",
    "log_light": "brightness (log)",
    "log_headroom": "headroom below white (log)",
    "clip_high": "white-clipped pixels",
    "clip_low": "black-clipped pixels",
    "blockiness": "JPEG blocking",
    "log_area": "size",
    "log_aspect": "aspect",
    "rare_colour": "pixels of rare colours",
    "one_shade": "pixels of one exact shade",
    "knn_distance": "distance to its nearest neighbours",
}
# Findings by what an image is, not against the pool: driver → the words of its reason.
_ABSOLUTE_WORDS = {
    "structure_floor": "grey spread within its noise (blank whatever the pool)",
    "content_floor": "at most 2 of its 64 parts hold more than flat background (near-empty whatever the pool)",
}
_RARE_BIN = 1e-3  # a colour bin holding less than this share of the pool's pixels is rare
_K_ISOLATION = 5
_K_LOCAL = 10  # neighbours an image's checks are compared with (fewer than a 1 % class of 1,000)
_DUPLICATE_DISTANCE = 0.005  # 1 − cosine of two grey thumbnails below this: near-duplicates (pixel level)
_DUPLICATE_SHARE = 0.2  # ... and their embedding distance under this share of the pool's median neighbour distance
_BLOCK = 2048
# blanks and copies are left out of the comparisons only when common: a few do not shift the pool's statistics,
# and as neighbours they widen a smooth clean image's local scale (measured: clean medical tiles flagged 0.6 % →
# 1.1 % as out of focus when 2 % blanks and copies were left out)
_LEFT_OUT_SHARE = 0.05
#: Pools larger than this compare each image with a fixed sample of this many images.
MAX_REFERENCE = 30_000


@dataclass(frozen=True)
class Screening:
    """The screening of one pool (arrays in pool order)."""

    quality: np.ndarray  #: (n,) in [0, 1]; 1: nothing unusual
    evidence: np.ndarray  #: (n,) robust z of the strongest finding
    flagged: np.ndarray  #: (n,) bool: served after the clean pool
    kinds: tuple[tuple[str, ...], ...]  #: findings past the threshold, strongest first, "ink" last (keys of REASONS)
    reasons: tuple[str, ...]  #: the findings in words ('' when none)
    duplicate_of: np.ndarray  #: (n,) index of the near-duplicate kept in its place, −1 if none

    def deferred(self) -> np.ndarray:
        """The flagged images, most usable first: what :func:`examine.ranking.rank` serves last (``deferred=``)."""
        rows = np.flatnonzero(self.flagged)
        return rows[np.argsort(-self.quality[rows], kind="stable")]

    def counts(self) -> dict[str, int]:
        """Flagged images by their first finding (the strongest, a more specific one before "ink")."""
        return dict(Counter(k[0] for k, f in zip(self.kinds, self.flagged) if f and k))


_MIN_MEASURED = 8  # a check that some images lack (NaN) finds nothing unless this many of the pool have it


def _robust_z(values: np.ndarray, direction: int, floor: float, ref: np.ndarray | None = None) -> np.ndarray:
    """z of each value against the pool's median and MAD (of the ``ref`` rows, a bool mask, when given);
    0 where the check was not measured (NaN)."""
    known = values[np.isfinite(values) & (True if ref is None else ref)]
    if len(known) < len(values) and len(known) < _MIN_MEASURED:
        return np.zeros(len(values))
    med = np.median(known)
    mad = 1.4826 * np.median(np.abs(known - med))
    return np.nan_to_num(direction * (values - med) / max(mad, floor), nan=0.0)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Centred rows scaled to unit length (cosine geometry). Pools of 20,000 rows or more are first reduced to
    the queue's 256 PCA dimensions (:func:`examine.queue_space.queue_space`): at 200,000 × 3,072 a float64
    copy is 4.9 GB and each neighbour search 12× the work."""
    X = np.asarray(X)
    U = queue_space(X, "center")
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    return U.astype(np.float32) if U.shape[1] < X.shape[1] else U  # reduced: float32 halves each search


def _neighbours(U: np.ndarray, k: int, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances and indices of each row's k nearest other rows (blocked brute force), sought
    among the rows ``among`` (sorted indices; default all).

    Above :data:`MAX_REFERENCE` rows the neighbours are sought among a fixed random sample of that
    many rows, so a 200,000-image pool costs what a 30,000-image one does.
    """
    import torch  # on first use, as scikit-learn (see examine.coverage)

    n = len(U)
    ref = np.arange(n) if among is None else np.asarray(among, np.int64)
    k = min(k, len(ref) - 1)
    if len(ref) > MAX_REFERENCE:
        ref = np.sort(np.random.default_rng(0).choice(ref, MAX_REFERENCE, replace=False))
    R = U[ref]
    m = len(ref)
    dist = np.zeros((n, k), np.float64)
    idx = np.zeros((n, k), np.int64)
    for s in range(0, n, _BLOCK):
        rows = np.arange(s, min(n, s + _BLOCK))
        sim = U[rows] @ R.T
        hit = np.searchsorted(ref, rows)
        own = (hit < m) & (ref[np.minimum(hit, m - 1)] == rows)
        sim[np.flatnonzero(own), hit[own]] = -np.inf  # an image is not its own neighbour
        # torch's top-k: ~9× numpy's argpartition on 2,048 × 25,000 similarities (the search's largest cost)
        top, part = torch.topk(torch.from_numpy(sim), k, dim=1, largest=True, sorted=True)
        idx[rows] = ref[part.numpy()]
        dist[rows] = 1.0 - top.numpy()
    return dist, idx


def _local_z(x: np.ndarray, idx: np.ndarray, direction: int, floor: float, ref: np.ndarray | None = None) -> np.ndarray:
    """z of each value against its neighbours' median, on a scale that widens with the neighbours' spread
    (the pool's part of the scale from the ``ref`` rows, a bool mask, when given).

    Where the check was not measured on some images (NaN), an image is compared only when it and at
    least half of its neighbours were measured; the others get 0.
    """
    if np.isfinite(x).all():
        m = np.median(x[idx], axis=1)
        r = x - m
        pool_scale = max(1.4826 * float(np.median(np.abs(r if ref is None else r[ref]))), floor)
        spread = 1.4826 * np.median(np.abs(x[idx] - m[:, None]), axis=1)
        return direction * r / np.sqrt(pool_scale**2 + spread**2)
    out = np.zeros(len(x))
    near = x[idx]
    ok = np.isfinite(x) & (2 * np.isfinite(near).sum(axis=1) >= idx.shape[1])
    if ok.sum() < _MIN_MEASURED:
        return out
    m = np.nanmedian(near[ok], axis=1)
    r = x[ok] - m
    pool_scale = max(1.4826 * float(np.median(np.abs(r))), floor)
    spread = 1.4826 * np.nanmedian(np.abs(near[ok] - m[:, None]), axis=1)
    out[ok] = direction * r / np.sqrt(pool_scale**2 + spread**2)
    return out


def _columns(checks: np.ndarray) -> dict[str, np.ndarray]:
    """The checks by name, with the derived ones (log light and headroom, structure)."""
    col = {name: checks[:, i].astype(np.float64) for i, name in enumerate(CHECKS)}
    col["one_shade"] = np.where(col["one_shade"] < 0, np.nan, col["one_shade"])  # −1: colour, not measured
    col["log_light"] = np.log1p(col["brightness"])
    col["log_headroom"] = np.log(256.0 - col["brightness"])
    # grey-level spread over the noise's: an image whose spread is its noise holds nothing else (blank, or drowned)
    col["structure"] = np.log(np.expm1(col["contrast"]) + 1e-3) - col["noise"]
    return col


def _absolute(col: dict[str, np.ndarray], threshold: float) -> list[tuple[np.ndarray, str]]:
    """Blank and near-empty by what they are: past the threshold whatever the pool, more so the emptier."""
    out = []
    for value, floor, scale, name in (
        (col["structure"], BLANK_STRUCTURE, 0.05, "structure_floor"),
        (col["content"], NEAR_EMPTY_CONTENT, 1 / 64, "content_floor"),
    ):
        hit = np.isfinite(value) & (value <= floor)
        out.append(
            (np.where(hit, threshold + 1.0 + np.minimum((floor - np.nan_to_num(value)) / scale, 20.0), 0.0), name)
        )
    return out


def _empty(checks: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """(n,) bool: blank or near-empty by what the image is (:data:`BLANK_STRUCTURE`, :data:`NEAR_EMPTY_CONTENT`)."""
    return np.max([a for a, _ in _absolute(_columns(checks), threshold)], axis=0) > 0


def _findings(
    checks: np.ndarray,
    embeddings: np.ndarray | None,
    threshold: float = THRESHOLD,
    copies: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Robust z per finding (n,) and, per finding, the check that drives it (for the reason's words).

    With embeddings, each check is also compared with the image's nearest neighbours (a blurred
    tile against sharp tiles of its own kind, not against a pool of mixed kinds); the larger
    of the pool's and the neighbours' verdicts counts.

    When common (over 5 % of the pool), blank and near-empty images and the ``copies`` (bool, n: all but
    one image of each group of near-duplicates) are left out of what the checks are compared with (the pool's median and scale,
    the neighbours): common blanks or copies would shift the median and be the nearest neighbours of
    smooth clean images. Colours and isolation are still judged among every image.
    """
    n = len(checks)
    col = _columns(checks)
    hist = checks[:, len(CHECKS) : len(CHECKS) + COLOUR_BINS].astype(np.float64)
    absolute = _absolute(col, threshold)
    left_out = np.max([a for a, _ in absolute], axis=0) > 0
    if copies is not None:
        left_out = left_out | np.asarray(copies, bool)
    ref: np.ndarray | None = None
    if left_out.mean() > _LEFT_OUT_SHARE and (~left_out).sum() > _K_LOCAL + 1:
        ref = ~left_out
    idx = dist = idx_all = dist_all = None
    if embeddings is not None and n > _K_LOCAL + 1:
        U = embeddings  # unit rows (screen)
        dist_all, idx_all = _neighbours(U, _K_LOCAL)  # for colours and isolation: among every image
        dist, idx = (dist_all, idx_all) if ref is None else _neighbours(U, _K_LOCAL, np.flatnonzero(ref))
    trust = np.ones(n)
    if dist is not None:
        # a comparison with neighbours means little for an image that is much farther from them than they
        # are from theirs (local outlier factor): its local verdicts are divided by that factor
        own = dist.mean(axis=1)
        trust = 1.0 / np.maximum(1.0, own / np.maximum(np.median(own[idx], axis=1), 1e-12))
    z: dict[str, np.ndarray] = {}
    driver: dict[str, np.ndarray] = {}
    for finding, parts in _SIGNALS.items():
        zs = []
        for c, d, floor in parts:
            zc = _robust_z(col[c], d, floor, ref)
            if idx is not None and finding != "size":
                zc = np.maximum(zc, trust * _local_z(col[c], idx, d, floor, ref))
            zs.append(zc)
        Zs = np.stack(zs)
        pick = Zs.argmax(axis=0)
        if finding in _ALL_OF:  # every part must point the same way (past 1σ), else the weakest speaks
            pick = np.where(Zs.min(axis=0) > 1.0, pick, Zs.argmin(axis=0))
        z[finding] = np.take_along_axis(Zs, pick[None], axis=0)[0]
        driver[finding] = np.asarray([parts[j][0] for j in pick], dtype=object)
    for strength, name in absolute:
        stronger = strength > z["blank"]
        z["blank"] = np.where(stronger, strength, z["blank"])
        driver["blank"] = np.where(stronger, name, driver["blank"])
    z["colour"] = _robust_z(_rare_colour(hist, idx_all), +1, 0.01)
    driver["colour"] = np.full(n, "rare_colour")
    if dist_all is not None:
        z["isolated"] = _robust_z(np.log(dist_all[:, :_K_ISOLATION].mean(axis=1) + 1e-9), +1, 0.05)
        driver["isolated"] = np.full(n, "knn_distance")
    return z, driver


def _rare_colour(hist: np.ndarray, idx_all: np.ndarray | None) -> np.ndarray:
    """Share of each image's pixels in colours that its neighbours (or, without embeddings, the pool) hardly show.

    A colour next to one the reference shows (one level per channel) is a shade of it, not unseen. In row blocks:
    at 200,000 images the whole-pool arrays (neighbours' histograms, 27 shifted copies) took 13 GB.
    """
    n, L = len(hist), COLOUR_LEVELS
    out = np.empty(n)
    pool_mean = hist.mean(axis=0)
    for s in range(0, n, _BLOCK):
        h = hist[s : s + _BLOCK]
        m = len(h)
        ref = hist[idx_all[s : s + m]].mean(axis=1) if idx_all is not None else np.broadcast_to(pool_mean, h.shape)
        padded = np.pad(ref.reshape(m, L, L, L), ((0, 0), (1, 1), (1, 1), (1, 1)))
        near = np.zeros((m, L, L, L))
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    np.maximum(near, padded[:, a : a + L, b : b + L, c : c + L], out=near)
        out[s : s + m] = (h * (near.reshape(m, -1) < _RARE_BIN)).sum(axis=1)
    return out


def _duplicates(
    checks: np.ndarray, embeddings: np.ndarray | None, empty: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of near-duplicates: grey thumbnails nearly equal (and embeddings close, when given).

    "Close" is against the typical distance to the nearest neighbour of the images that are neither in a
    thumbnail pair nor ``empty`` (blank), so that common duplicates and blanks do not shrink it.
    """
    thumbs = checks[:, N_VALUES - THUMB * THUMB :].astype(np.float64)
    live = np.linalg.norm(thumbs, axis=1) > 0.5  # flat images have no thumbnail shape to compare
    rows = np.flatnonzero(live)
    if len(rows) < 2:
        return []
    dist, idx = _neighbours(thumbs[rows], 3)
    pairs = {
        (min(rows[i], rows[idx[i, j]]), max(rows[i], rows[idx[i, j]]))
        for i, j in zip(*np.nonzero(dist < _DUPLICATE_DISTANCE))
    }
    if embeddings is not None and pairs:
        U = embeddings  # unit rows (screen)
        typical = 1.0
        if len(U) > 2:
            nearest = _neighbours(U, 1)[0][:, 0]
            plain = np.ones(len(U), bool) if empty is None else ~np.asarray(empty, bool)
            plain[[i for p in pairs for i in p]] = False
            typical = float(np.median(nearest[plain] if plain.sum() >= 3 else nearest))
        pairs = {(i, j) for i, j in pairs if 1.0 - float(U[i] @ U[j]) < _DUPLICATE_SHARE * typical}
    return sorted((int(i), int(j)) for i, j in pairs)


def _groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in sorted({i for p in pairs for i in p}):
        members.setdefault(root(i), []).append(i)
    return [m for m in members.values() if len(m) > 1]


def _describe(finding: str, check: str, z: float) -> str:
    if check in _ABSOLUTE_WORDS:
        return f"{REASONS[finding]}: {_ABSOLUTE_WORDS[check]}"
    side = (
        "below"
        if check in ("focus", "contrast", "entropy", "structure", "log_light", "log_headroom")
        or (finding == "under" and check == "brightness")
        else "above"
    )
    return f"{REASONS[finding]}: {_WORDS[check]} {abs(z):.0f}σ {side} the pool"


def screen(
    checks: np.ndarray,
    embeddings: np.ndarray | None = None,
    *,
    labeled: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    threshold: float = THRESHOLD,
) -> Screening:
    """Screen a pool: ``checks`` from :func:`examine.image_checks.pool_checks` (n, N_VALUES), optional ``embeddings`` (n, d).

    ``labeled`` (bool, n) marks images that already have an annotation: an
    annotation says the image is usable, so they are never flagged, and a labeled
    image is the one kept from its group of near-duplicates. ``names`` (n) name the
    images in the reasons (e.g. "near-duplicate: a copy of task 12"; default "#<row>").
    """
    checks = np.asarray(checks, np.float32)
    if checks.ndim != 2 or checks.shape[1] != N_VALUES:
        raise ValueError(f"checks must be (n, {N_VALUES}) from image_checks, got {checks.shape}")
    n = len(checks)
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    if embeddings is not None and len(embeddings) != n:
        raise ValueError(f"{len(embeddings)} embeddings for {n} images")
    usable = np.zeros(n, bool) if labeled is None else np.asarray(labeled, bool)
    if n == 0:
        return Screening(np.ones(0), np.zeros(0), np.zeros(0, bool), (), (), np.zeros(0, np.int64))
    empty = _empty(checks, threshold)
    if embeddings is not None:
        embeddings = _unit_rows(embeddings)  # once for the duplicates and the neighbours
    groups = _groups(n, _duplicates(checks, embeddings, empty))
    copies = np.zeros(n, bool)
    for group in groups:
        copies[group[1:]] = True
    z, driver = _findings(checks, embeddings, threshold, copies)
    found = list(z)
    Z = np.stack([z[f] for f in found], axis=1)
    evidence = Z.max(axis=1)
    kinds: list[list[str]] = [[] for _ in range(n)]
    words: list[list[str]] = [[] for _ in range(n)]
    for i in range(n):
        past = [j for j in np.argsort(-Z[i]) if Z[i, j] > threshold]
        for j in sorted(past, key=lambda j: found[j] in _SECONDARY):  # stable: strongest first within each
            kinds[i].append(found[j])
            words[i].append(_describe(found[j], str(driver[found[j]][i]), float(Z[i, j])))
    duplicate_of = np.full(n, -1, np.int64)
    for group in groups:
        # keep a labeled member, else the one with the least other evidence (then the first)
        keep = min(group, key=lambda i: (not usable[i], evidence[i], i))
        for i in group:
            if i != keep:
                duplicate_of[i] = keep
                evidence[i] = max(evidence[i], threshold + 3.0)
                kinds[i].insert(0, "duplicate")
                kept = names[keep] if names is not None else f"#{keep}"
                words[i].insert(0, f"{REASONS['duplicate']}: a copy of {kept}")
            else:  # a duplicated image is a little suspect, below the flag
                evidence[i] = max(evidence[i], 0.8 * threshold)
    flagged = (evidence > threshold) & ~usable
    quality = 1.0 / (1.0 + np.exp(np.clip(evidence - threshold, -50, 50)))
    return Screening(
        quality=quality,
        evidence=evidence,
        flagged=flagged,
        kinds=tuple(tuple(k) for k in kinds),
        reasons=tuple("; ".join(w) for w in words),
        duplicate_of=duplicate_of,
    )
