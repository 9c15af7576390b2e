"""Speed and memory of the exact EXAMINE marginals, as ratios measured in one run.

    python benchmarks/bench_scoring.py [--n 200000] [--d 768] [--million]

Prints, for float32 embeddings of shape (n, d):
- time of ``marginal_singular_values`` and its ratio to one float64 ``XᵀX`` of the
  same matrix (with and without the float32 → float64 conversion);
- peak memory allocated beyond X (tracemalloc sees numpy's buffers);
- the speed-up over the naive leave-one-out (one SVD per row) at n=2,000 × d=128,
  timed on a sample of rows and scaled to all rows, with the largest difference
  between the two on that sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

from examine.scoring import marginal_singular_values


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_large(n: int, d: int, repeats: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # Embedding-like data: a common offset, a few strong directions, noise.
    X = (rng.standard_normal((n, d), dtype=np.float32) + 0.5).astype(np.float32)
    X[:, :8] *= np.linspace(4, 1.5, 8, dtype=np.float32)

    def gram64():
        X64 = X.astype(np.float64)
        return X64.T @ X64

    # Interleaved repeats, best of each: this machine is shared and noisy.
    t_gram = t_gram_only = t_score = np.inf
    peak = 0
    for _ in range(repeats):
        X64 = X.astype(np.float64)
        t_gram_only = min(t_gram_only, _timed(lambda X64=X64: X64.T @ X64)[1])
        del X64
        t_gram = min(t_gram, _timed(gram64)[1])
        tracemalloc.start()
        m, t = _timed(lambda: marginal_singular_values(X))
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        t_score = min(t_score, t)
    print(f"n={n:,} d={d} float32 (X = {X.nbytes / 2**20:,.0f} MiB), best of {repeats}")
    print(f"  float64 XᵀX incl. conversion : {t_gram:8.2f} s")
    print(f"  float64 XᵀX product only     : {t_gram_only:8.2f} s")
    print(f"  marginal_singular_values     : {t_score:8.2f} s")
    print(f"  ratio to XᵀX incl. conversion: {t_score / t_gram:8.2f}x")
    print(f"  ratio to XᵀX product only    : {t_score / t_gram_only:8.2f}x")
    print(f"  peak memory beyond X         : {peak / 2**20:8.0f} MiB")
    print(f"  marginals: min {m.min():.3e} max {m.max():.3e}")


def bench_naive(n: int = 2000, d: int = 128, sample: int = 40, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 0.3
    m, t_fast = _timed(lambda: marginal_singular_values(X))
    rows = rng.choice(n, size=sample, replace=False)
    s1 = np.linalg.svd(X, compute_uv=False)[0]

    def naive_rows():
        return np.array([s1 - np.linalg.svd(np.delete(X, i, axis=0), compute_uv=False)[0] for i in rows])

    ref, t_sample = _timed(naive_rows)
    t_naive = t_sample * n / sample
    print(f"naive leave-one-out, n={n:,} d={d} float64 ({sample} rows timed, scaled to {n:,})")
    print(f"  naive (estimated)            : {t_naive:8.2f} s")
    print(f"  marginal_singular_values     : {t_fast:8.4f} s")
    print(f"  speed-up                     : {t_naive / t_fast:8.0f}x")
    print(f"  max |fast − naive| / σ1      : {np.abs(m[rows] - ref).max() / s1:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--million", action="store_true", help="also run n=1,000,000 (needs ~12 GB RAM)")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    bench_large(args.n, args.d)
    if args.million:
        bench_large(1_000_000, args.d, repeats=1)
    bench_naive()


if __name__ == "__main__":
    main()
