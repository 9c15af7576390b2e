"""Exact EXAMINE scores: the leave-one-out drop of the largest singular value.

For an embedding matrix ``X`` (n × d) the marginal of row ``i`` is
``m_i = σ1(X) − σ1(X without row i)``.  Removing a row is a rank-one downdate of
``G = XᵀX``; in the eigenbasis of ``G`` the new top eigenvalue is ``λ1 − δ_i``
where ``δ_i`` is the unique root in ``[0, λ1 − λ2]`` of the secular equation

    F(δ) = z1² − δ (1 + Σ_{j≥2} z_j² / (g_j − δ)) = 0,   z = Vᵀ x_i,  g_j = λ1 − λ_j.

``F`` is concave and decreasing on the bracket, so a Newton iteration guarded by
bisection converges in a handful of steps.  The cost is two passes over ``X``
(forming ``G``, then projecting onto its eigenvectors) plus O(n·K) scalar work:
components whose gap ``g_j`` is far larger than the root enter the equation via
a short power series in ``δ / g_j`` whose coefficients are one small matrix
product, so the per-row root solve never touches all ``d`` columns.

Accepts numpy arrays and torch tensors; a CUDA tensor keeps the two big
matrix products on the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["marginal_singular_values", "examine_scores", "scores_from_marginals", "value_order"]

_EPS = np.finfo(np.float64).eps
# Far components satisfy δ ≤ g_j / _FAR_RATIO; the series in δ/g_j then needs
# _SERIES_TERMS terms for a truncation error below double rounding.
_FAR_RATIO = 4.0
_SERIES_TERMS = 28
_MAX_ITERATIONS = 300
_CHUNK_BYTES = 32 * 2**20
# Below this fraction of λ1 the remaining top eigenvalue λ1 − δ loses too many
# digits to cancellation (σ error ~ eps·λ1 / σ); such rows (at most a few: one
# row then holds nearly all the energy) are recomputed from X directly.
_COLLAPSE = 1e-6


def marginal_singular_values(X: Any, *, chunk_rows: int | None = None) -> np.ndarray:
    """Exact leave-one-out drops of the largest singular value, one per row.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Embeddings, one row per image: a numpy array (float32, float64 or
        integer) or a torch tensor (a CUDA tensor is processed on its GPU).
        Needs n ≥ 2 and d ≥ 1; n < d is fine.
    chunk_rows : int, optional
        Rows processed at once; extra memory is O(chunk_rows·d + d²).

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        ``m_i = σ1(X) − σ1(X without row i)``, each ≥ 0.

    Raises
    ------
    TypeError
        X is not numeric.
    ValueError
        X is not 2-D, has fewer than 2 rows or no columns, or holds NaN/inf
        (the message names the first bad rows).
    """
    ops = _Ops.for_input(X)
    X = ops.validate(X)
    if chunk_rows is None:
        chunk_rows = max(256, _CHUNK_BYTES // (8 * X.shape[1]))
    try:
        return _marginals(ops, X, chunk_rows)
    except _OutOfRange:
        # Squares under- or overflow float64. m is scale-equivariant, and a power of two scales exactly.
        X64 = ops.float64(X)
        peak = float(abs(X64).max())
        if peak == 0.0:
            return np.zeros(X.shape[0], dtype=np.float64)
        scale = 2.0 ** np.floor(np.log2(peak))
        return _marginals(ops, X64 / scale, chunk_rows) * scale


class _OutOfRange(Exception):
    """XᵀX under- or overflows float64 although X is finite: retry on a rescaled copy."""


# λ1 below this may have lost digits to underflow in the squares (|x| < 1.5e-154 squares to 0).
_TINY_LAMBDA = 1e-200


def _marginals(ops: _Ops, X: Any, chunk_rows: int) -> np.ndarray:
    n, d = X.shape
    if n <= d:
        lam, components = _spectrum_small_n(ops, X)
    else:
        lam, components = _spectrum_gram(ops, X, chunk_rows)
    lam1 = lam[0]
    out = np.zeros(n, dtype=np.float64)
    if lam1 < _TINY_LAMBDA and (lam1 > 0.0 or ops.any_nonzero(X)):
        raise _OutOfRange
    if lam1 <= 0.0:
        return out  # all rows are zero
    gaps = lam1 - lam[1:]
    if len(gaps) and gaps[0] <= 0.0:
        return out  # repeated top eigenvalue: σ1 survives every removal
    sigma1 = np.sqrt(lam1)
    collapsing: list[int] = []
    for start, z in components:
        delta = _solve_chunk(ops, z, gaps)
        rest = np.maximum(lam1 - delta, 0.0)
        out[start : start + len(delta)] = delta / (sigma1 + np.sqrt(rest))
        collapsing.extend(int(start + i) for i in np.flatnonzero(rest < _COLLAPSE * lam1))
    for i in collapsing:
        out[i] = sigma1 - _sigma1_without(ops, X, i, chunk_rows)
    return out


def scores_from_marginals(marginals: Any) -> np.ndarray:
    """Map marginals to EXAMINE scores ``exp((m_i − max m) / mean m)`` in (0, 1].

    All scores are 1 when every marginal is 0.  The order of the scores is the
    order of the marginals; the most valuable row scores exactly 1.
    """
    m = np.asarray(marginals, dtype=np.float64)
    if m.ndim != 1 or m.size == 0:
        raise ValueError(f"marginals must be a non-empty 1-D array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"marginals hold NaN or inf at positions {_first_indices(~np.isfinite(m))}")
    tau = float(m.mean())
    if tau <= 0.0:
        return np.ones_like(m)
    return np.exp((m - m.max()) / tau)


def examine_scores(X: Any, *, chunk_rows: int | None = None) -> np.ndarray:
    """EXAMINE scores of the rows of ``X`` (higher = more valuable), in (0, 1].

    ``s_i = exp((m_i − max_j m_j) / mean_j m_j)`` with ``m`` from
    :func:`marginal_singular_values`; see there for accepted inputs and errors.
    """
    return scores_from_marginals(marginal_singular_values(X, chunk_rows=chunk_rows))


def value_order(values: Any) -> np.ndarray:
    """Indices from most to least valuable (descending value, ties by index)."""
    v = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.arange(v.size), -v))


# --------------------------------------------------------------------------- spectrum


def _spectrum_gram(ops: _Ops, X: Any, chunk_rows: int):
    """Eigen-decomposition of G = XᵀX (float64, accumulated over row chunks)."""
    n, d = X.shape
    buf = ops.buffer((min(chunk_rows, n), d), like=X)  # reused: fresh pages cost
    G = _gram(ops, X, chunk_rows, buf)
    if not np.all(np.isfinite(G)):
        _raise_not_finite(ops, X, chunk_rows)
    lam, V = np.linalg.eigh(G)
    lam = np.maximum(lam[::-1], 0.0)
    V_dev = ops.from_numpy(np.ascontiguousarray(V[:, ::-1]), like=X)

    zbuf = ops.buffer((min(chunk_rows, n), d), like=X)

    def components():
        # Each chunk's projection is consumed (squared in place) before the next.
        for start in range(0, n, chunk_rows):
            xc = ops.float64_into(X[start : start + chunk_rows], buf)
            yield start, ops.matmul_into(xc, V_dev, zbuf)

    return lam, components()


def _spectrum_small_n(ops: _Ops, X: Any):
    """Thin SVD when n ≤ d: z_i = (σ_j U_ij)_j, no d × d matrix needed."""
    X64 = ops.to_numpy(ops.float64(X))
    if not np.all(np.isfinite(X64)):
        _raise_not_finite(ops, X, len(X64))
    try:
        U, s, _ = np.linalg.svd(X64, full_matrices=False)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - overflow in LAPACK
        raise ValueError(f"cannot decompose X: {exc}; rescale the embeddings") from exc
    Z = U * s
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(s**2)):
            raise _OutOfRange
    return s**2, iter([(0, Z)])


def _sigma1_without(ops: _Ops, X: Any, row: int, chunk_rows: int) -> float:
    """σ1 of X with one row removed, from a fresh Gram of the remaining rows."""
    n, d = X.shape
    if n <= d:
        rest = np.delete(ops.to_numpy(ops.float64(X)), row, axis=0)
        return float(np.linalg.svd(rest, compute_uv=False)[0])
    G = _gram(ops, X, chunk_rows, ops.buffer((min(chunk_rows, n), d), like=X), skip_row=row)
    return float(np.sqrt(max(np.linalg.eigvalsh(G)[-1], 0.0)))


def _gram(ops: _Ops, X: Any, chunk_rows: int, buf: Any, skip_row: int | None = None) -> np.ndarray:
    """XᵀX in float64, summed over row chunks (optionally leaving one row out)."""
    n, d = X.shape
    G = ops.zeros((d, d))
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite G is reported below
        for start in range(0, n, chunk_rows):
            xc = ops.float64_into(X[start : start + chunk_rows], buf)
            if skip_row is not None and start <= skip_row < start + len(xc):
                xc[skip_row - start] = 0.0
            G += xc.T @ xc
    return ops.to_numpy(G)


def _raise_not_finite(ops: _Ops, X: Any, chunk_rows: int) -> None:
    bad: list[int] = []
    for start in range(0, X.shape[0], chunk_rows):
        rows = ops.bad_rows(X[start : start + chunk_rows])
        bad.extend(int(start + r) for r in rows[: 5 - len(bad)])
        if len(bad) >= 5:
            break
    if bad:
        raise ValueError(f"X holds NaN or inf in rows {bad} (first shown); drop or re-embed those rows")
    raise _OutOfRange


# --------------------------------------------------------------------------- root solve


def _solve_chunk(ops: _Ops, z: Any, gaps: np.ndarray) -> np.ndarray:
    """Root δ of the secular equation for every row of a chunk of projections."""
    r = len(gaps)
    if r == 0:  # d == 1 or n == 1 component: removing the row removes all of it
        return ops.to_numpy(z[:, 0] ** 2)
    a = ops.to_numpy(z[:, 0] ** 2)
    W = ops.square_(z)[:, 1:]  # z is a fresh buffer: square it in place
    # One pass over W gives ψ(0) and the series moments for "all components far";
    # only when some gap is within _FAR_RATIO of the root bound is a second
    # pass needed, with those components kept explicit.
    k = np.arange(_SERIES_TERMS)
    coef = (gaps[0] / gaps[:, None]) ** k[None, :] / gaps[:, None]
    moments = ops.to_numpy(W @ ops.from_numpy(coef, like=z))
    psi0 = moments[:, 0]
    # Newton from δ = 0 overshoots a concave decreasing F: this bounds the root.
    hi = np.minimum(gaps[0], a / (1.0 + psi0))
    delta = np.zeros_like(a)
    active = (a > 0.0) & (hi > 0.0)
    if not active.any():
        return delta
    p = int(np.searchsorted(gaps, _FAR_RATIO * hi[active].max(), side="right"))
    g_p = gaps[min(p, r - 1)]
    near = ops.to_numpy(W[:, :p]) if p else np.zeros((len(a), 0))
    if p == r:
        moments = np.zeros((len(a), 0))
    elif p > 0:
        coef = (g_p / gaps[p:, None]) ** k[None, :] / gaps[p:, None]
        moments = ops.to_numpy(W[:, p:] @ ops.from_numpy(coef, like=z))
    idx = np.flatnonzero(active)
    delta[idx] = _newton_bisect(a[idx], hi[idx], gaps[0], near[idx], gaps[:p], moments[idx], g_p)
    return delta


def _newton_bisect(a, hi, g2, near, g_near, moments, g_p):
    """Guarded Newton on F(δ) = a − δ(1 + ψ(δ)) over [0, hi], vectorised over rows."""
    lo = np.zeros_like(a)
    hi = hi.copy()
    # Start at the upper bound when it is strictly inside the pole-free range.
    x = np.where(hi < g2, hi, 0.5 * hi)
    prev_step = np.full_like(a, np.inf)
    out = np.empty_like(a)
    todo = np.arange(len(a))
    for _ in range(_MAX_ITERATIONS):
        f, fp = _secular(x, a, near, g_near, moments, g_p)
        pos = f > 0.0
        lo = np.where(pos, x, lo)
        hi = np.where(pos, hi, x)
        step = f / fp
        newton = x - step
        # Bisect when Newton leaves the bracket or stops converging fast
        # (near a pole it creeps); either way the bracket or the step halves.
        use_newton = (newton > lo) & (newton < hi) & (np.abs(step) <= 0.5 * prev_step)
        x_new = np.where(use_newton, newton, 0.5 * (lo + hi))
        prev_step = np.where(use_newton, np.abs(step), np.inf)
        done = (f == 0.0) | (np.abs(x_new - x) <= 2.0 * _EPS * x_new) | (hi - lo <= 2.0 * _EPS * hi)
        x_new = np.where(f == 0.0, x, x_new)
        if done.any():
            out[todo[done]] = x_new[done]
            keep = ~done
            todo, x_new, lo, hi, a, prev_step = (v[keep] for v in (todo, x_new, lo, hi, a, prev_step))
            near, moments = near[keep], moments[keep]
            if not len(todo):
                return out
        x = x_new
    out[todo] = x  # pragma: no cover - the bracket or the step halves every iteration
    return out


def _secular(x, a, near, g_near, moments, g_p):
    """F(δ) = a − δ(1 + ψ(δ)) and F'(δ), with ψ split into near and series terms."""
    psi = np.zeros_like(x)
    dpsi = np.zeros_like(x)
    if near.shape[1]:
        inv = 1.0 / (g_near[None, :] - x[:, None])
        t = near * inv
        psi += t.sum(axis=1)
        dpsi += (t * inv).sum(axis=1)
    if moments.shape[1]:
        t = x / g_p
        s = moments[:, -1].copy()
        ds = np.zeros_like(x)
        for k in range(moments.shape[1] - 2, -1, -1):
            ds = ds * t + s
            s = s * t + moments[:, k]
        psi += s
        dpsi += ds / g_p
    f = a - x * (1.0 + psi)
    fp = -(1.0 + psi) - x * dpsi
    return f, fp


def _first_indices(mask: np.ndarray, k: int = 5) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:k]]


# --------------------------------------------------------------------------- array ops


class _Ops:
    """The few array operations that differ between numpy and torch inputs."""

    def __init__(self, torch_module: Any = None, device: Any = None):
        self.torch = torch_module
        self.device = device

    @classmethod
    def for_input(cls, X: Any) -> _Ops:
        mod = type(X).__module__
        if mod.startswith("torch"):
            import torch

            if isinstance(X, torch.Tensor):
                if X.device.type == "cuda":
                    return cls(torch, X.device)
                return cls()  # CPU tensors go through numpy
        return cls()

    def validate(self, X: Any) -> Any:
        if type(X).__module__.startswith("torch"):
            if X.dtype.is_complex or X.dtype == self._torch().bool:
                raise TypeError(f"X must hold real numbers, got a tensor of dtype {X.dtype}")
            _check_shape(tuple(X.shape))
            X = X.detach()
            if self.torch is not None:
                return X
            if X.dtype in (self._torch().float16, self._torch().bfloat16):
                X = X.float()
            return X.cpu().numpy()
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"X must be a 2-D numeric array: {exc}") from exc
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"X must hold real numbers (float32/float64 or integers), got dtype {arr.dtype}")
        _check_shape(arr.shape)
        return arr

    @staticmethod
    def _torch():
        import torch

        return torch

    def float64(self, x: Any) -> Any:
        if self.torch is not None:
            return x.to(dtype=self.torch.float64)
        return x.astype(np.float64, copy=False)

    def square_(self, x: Any) -> Any:
        if self.torch is not None:
            return x.square_()
        return np.square(x, out=x)

    def buffer(self, shape, like: Any) -> Any:
        if self.torch is not None:
            return self.torch.empty(shape, dtype=self.torch.float64, device=self.device)
        return np.empty(shape, dtype=np.float64)

    def float64_into(self, x: Any, buf: Any) -> Any:
        """``x`` as float64, written into the leading rows of ``buf``."""
        out = buf[: x.shape[0]]
        if self.torch is not None:
            out.copy_(x)
        else:
            np.copyto(out, x)
        return out

    def matmul_into(self, a: Any, b: Any, buf: Any) -> Any:
        out = buf[: a.shape[0]]
        if self.torch is not None:
            return self.torch.matmul(a, b, out=out)
        return np.matmul(a, b, out=out)

    def zeros(self, shape):
        if self.torch is not None:
            return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)
        return np.zeros(shape, dtype=np.float64)

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.torch is not None:
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def from_numpy(self, arr: np.ndarray, like: Any) -> Any:
        if self.torch is not None:
            return self.torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        return arr

    def any_nonzero(self, X: Any) -> bool:
        if self.torch is not None:
            return bool((X != 0).any())
        return bool(np.any(X))

    def bad_rows(self, chunk: Any) -> np.ndarray:
        if self.torch is not None:
            ok = self.torch.isfinite(chunk).all(dim=1)
            return np.flatnonzero(~ok.cpu().numpy())
        return np.flatnonzero(~np.isfinite(chunk).all(axis=1))


def _check_shape(shape: tuple) -> None:
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (one row per image), got shape {shape}")
    n, d = shape
    if n < 2:
        raise ValueError(f"X needs at least 2 rows to leave one out, got {n}")
    if d < 1:
        raise ValueError("X has no columns (d = 0)")
