"""One validation layer for embeddings, masks and labels: the same exception types everywhere.

``TypeError`` when the kind of input is wrong (not numbers, not a boolean mask, a string
for labels); ``ValueError`` when its shape or values are (wrong length, NaN or inf).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["as_matrix", "as_mask", "as_labels"]

_Labels = TypeVar("_Labels", bound="Sequence[Any] | np.ndarray")


def as_matrix(X: Any) -> np.ndarray:
    """``X`` as a finite 2-D numeric numpy array (CPU or CUDA torch tensors are copied to the host)."""
    if type(X).__module__.startswith("torch"):
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"X must be a 2-D numeric array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"X must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (one row per image), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {arr.shape}")
    if arr.dtype.kind == "f":  # in row blocks: a (n, d) mask of a large pool costs more than the check
        for start in range(0, arr.shape[0], _FINITE_BLOCK):
            block = arr[start : start + _FINITE_BLOCK]
            with np.errstate(over="ignore", invalid="ignore"):
                sums = block.sum(axis=1)
            if not np.isfinite(sums).all():  # a sum is finite only if every term is (or it overflowed)
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    rows = (start + np.flatnonzero(bad))[:5].tolist()
                    raise ValueError(f"X holds NaN or inf in rows {rows} (first shown)")
    return arr


_FINITE_BLOCK = 1024


def as_mask(labeled: Any, n: int) -> np.ndarray:
    """A boolean mask of shape (n,); None means all False."""
    if labeled is None:
        return np.zeros(n, dtype=bool)
    mask = np.asarray(labeled)
    if mask.dtype != bool:
        raise TypeError(f"labeled must be a boolean mask of shape ({n},), got dtype {mask.dtype}")
    if mask.shape != (n,):
        raise ValueError(f"labeled has shape {mask.shape} but X has {n} rows")
    return mask


def as_labels(labels: _Labels | None, n: int) -> _Labels | None:
    """``labels`` unchanged after checking it has one entry per row (None passes)."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be a sequence with one entry per row, not a string")
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but X has {n} rows")
    return labels
