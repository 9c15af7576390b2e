"""Off-the-shelf image-issue screeners to compare with the EXAMINE screening score.

* :func:`cleanvision_scores` — cleanvision's ``Imagelab`` on the pixels (blur, brightness, information,
  shape, size and duplicate checks);
* :func:`cleanlab_scores` — cleanlab's ``Datalab`` without labels on embeddings (outliers, near duplicates).

Both return one array of length n per issue type with **higher = more likely a defect**, plus ``"overall"`` (the
max over issue types) and ``"flagged"`` (the library's own any-issue decision), in the order of the input.
Neither library downloads anything here: images stay in memory and features are used as given.

Known limits of cleanvision's checks (as shipped, not corrected here): ``blurry`` is measured after a resize to at most
64 px, on PIL's ``FIND_EDGES`` whose one-pixel border keeps the raw intensities, plus a histogram-spread term, so on
small tiles it barely tracks blur and a blurred low-contrast tile can score *less* blurry than its source; a constant
image is ``low_information`` (``blurry`` scores it 0); a blurred copy is a ``near_duplicates`` match
(perceptual hash) of its source.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLEANLAB_ISSUES", "CLEANVISION_ISSUES", "cleanlab_scores", "cleanvision_scores"]

CLEANVISION_ISSUES: tuple[str, ...] = (
    "blurry",
    "dark",
    "light",
    "low_information",
    "odd_aspect_ratio",
    "odd_size",
    "near_duplicates",
    "exact_duplicates",
)
"""cleanvision issue types checked (not ``grayscale``: a grayscale pool is not defective)."""

CLEANLAB_ISSUES: tuple[str, ...] = ("outlier", "near_duplicate")
"""cleanlab Datalab issue types checked on features."""

_DUPLICATES = ("near_duplicates", "exact_duplicates")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the libraries' prints and tqdm bars (stdout and stderr)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class _InMemoryImages:
    """A torchvision-style dataset over uint8 arrays: item ``i`` is ``(PIL image,)``, converted on access."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> tuple[Any]:
        from PIL import Image

        a = np.asarray(self._images[i])
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
            raise ValueError(f"image {i}: expected uint8 HxW or HxWx3, got {a.dtype} {a.shape}")
        return (Image.fromarray(np.ascontiguousarray(a)),)


def _finish(scores: dict[str, np.ndarray], flagged: np.ndarray) -> dict[str, np.ndarray]:
    scores["overall"] = np.max(np.stack(list(scores.values())), axis=0)
    scores["flagged"] = flagged
    return scores


def cleanvision_scores(images: Sequence[np.ndarray], workdir: str | Path | None = None) -> dict[str, np.ndarray]:
    """cleanvision ``Imagelab`` issue scores of one pool of uint8 images (HxW grayscale or HxWx3 RGB).

    Returns, for each of :data:`CLEANVISION_ISSUES`, a float array of length n with higher = more likely a defect
    (``1 - score`` for the property checks; the 0/1 issue flag for the duplicate checks, where cleanvision's
    "score" is only ``1 / set size``; both members of a duplicate pair are flagged), ``"overall"`` (max over the
    issue types) and ``"flagged"`` (bool: cleanvision flags any of them).  Runs single-process on in-memory images,
    so it is deterministic and writes nothing; ``workdir`` is accepted for API symmetry and unused.
    """
    from cleanvision import Imagelab

    del workdir
    n = len(images)
    if n == 0:
        raise ValueError("no images")
    with _quiet():
        lab = Imagelab(torchvision_dataset=_InMemoryImages(images), verbose=False)  # type: ignore[arg-type]
        lab.find_issues({t: {} for t in CLEANVISION_ISSUES}, n_jobs=1, verbose=False)
    issues = lab.issues.sort_index()
    scores: dict[str, np.ndarray] = {}
    for t in CLEANVISION_ISSUES:
        flag = issues[f"is_{t}_issue"].to_numpy(dtype=bool)
        scores[t] = flag.astype(np.float64) if t in _DUPLICATES else 1.0 - issues[f"{t}_score"].to_numpy(np.float64)
    flagged = issues[[f"is_{t}_issue" for t in CLEANVISION_ISSUES]].to_numpy(dtype=bool).any(axis=1)
    return _finish(scores, flagged)


def cleanlab_scores(features: np.ndarray) -> dict[str, np.ndarray]:
    """cleanlab ``Datalab`` (no labels) issue scores of an ``(n, d)`` feature matrix.

    Returns, for each of :data:`CLEANLAB_ISSUES`, ``1 - quality score`` (higher = more likely a defect),
    ``"overall"`` (max over the issue types) and ``"flagged"`` (bool: any ``is_<type>_issue``).  Uses k = min(10,
    n - 1) neighbours and cleanlab's default metric (cosine for d > 3, else euclidean).  A pool of one image has no
    neighbours: all scores are 0 and nothing is flagged.
    """
    from cleanlab import Datalab

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (n, d) feature matrix, got shape {x.shape}")
    n = len(x)
    if n == 1:
        return _finish({t: np.zeros(1) for t in CLEANLAB_ISSUES}, np.zeros(1, dtype=bool))
    k = min(10, n - 1)
    with _quiet():
        lab = Datalab(data={"index": np.arange(n)}, verbosity=0)
        lab.find_issues(features=x, issue_types={t: {"k": k} for t in CLEANLAB_ISSUES})
    issues = lab.get_issues()
    missing = [t for t in CLEANLAB_ISSUES if f"{t}_score" not in issues]
    if missing:
        raise RuntimeError(f"cleanlab did not compute {missing} for {n} rows")
    scores = {t: 1.0 - issues[f"{t}_score"].to_numpy(np.float64) for t in CLEANLAB_ISSUES}
    flagged = issues[[f"is_{t}_issue" for t in CLEANLAB_ISSUES]].to_numpy(dtype=bool).any(axis=1)
    return _finish(scores, flagged)
