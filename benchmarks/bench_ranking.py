"""How long one re-rank takes: each policy on an n × d pool, against one exact EXAMINE pass over it.

    .venv/bin/python benchmarks/bench_ranking.py                  # 20,000 × 768 (a large project), 50 labels
    .venv/bin/python benchmarks/bench_ranking.py --n 200000 --d 3072 --labels 30 --repeat 1 --policies adaptive

Prints seconds per call (best of --repeat) and the ratio to ``marginal_singular_values`` on the same
matrix, measured in one run (``--no-base`` skips that pass: at 200,000 × 3,072 it alone takes minutes).
The backend re-ranks at a batch boundary, so ``rank`` is its cost there; pools of 20,000 rows or more
are ranked in 256 PCA dimensions (``examine.queue_space``), and ``--dims 0`` times the unreduced queue.
The quality of the order is measured by ``examine evaluate`` (benchmarks/RESULTS.md), not here.
The last line is what a label within a batch costs instead: the probe's refit on the pool's kept column
moments and its prediction of every unlabeled row (the pre-annotations).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examine.probe import Probe, column_moments  # noqa: E402
from examine.queue_space import SpaceCache  # noqa: E402
from examine.ranking import POLICIES, rank  # noqa: E402
from examine.scoring import marginal_singular_values  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def synthetic_pool(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10 Gaussian clusters in float32, built in blocks (no float64 copy of the pool)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (10, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 8192):
        stop = min(n, start + 8192)
        X[start:stop] = centres[y[start:stop]] + rng.standard_normal((stop - start, d), dtype=np.float32)
    return X, y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--labels", type=int, default=50, help="labeled rows (10 classes)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--dims", type=int, default=None, help="rank(dims=...): 0 = never reduce (default: automatic)")
    p.add_argument("--no-base", action="store_true", help="skip the exact EXAMINE pass over the whole pool")
    a = p.parse_args(argv)
    X, y = synthetic_pool(a.n, a.d)
    rng = np.random.default_rng(1)
    labeled = np.zeros(a.n, bool)
    labeled[rng.choice(a.n, a.labels, replace=False)] = True
    labels = [int(v) if m else None for v, m in zip(y, labeled)]
    print(
        f"{platform.machine()}, {platform.python_version()}, numpy {np.__version__}; X {a.n} × {a.d} float32, "
        f"{a.labels} labels, dims={a.dims}"
    )
    base = float("nan")
    if not a.no_base:
        base = _best(lambda: marginal_singular_values(X), a.repeat)
        print(f"{'marginal_singular_values':<26} {base:8.3f} s   1.00×")
    for policy in a.policies.split(","):
        t = _best(lambda policy=policy: rank(X, labeled=labeled, labels=labels, policy=policy, dims=a.dims), a.repeat)
        print(f"{'rank(policy=' + policy + ')':<26} {t:8.3f} s  {t / base:5.2f}×   (a batch boundary)")
        cache = SpaceCache()  # the backend keeps the pool's queue space: its later batch boundaries skip the PCA
        rank(X, labeled=labeled, labels=labels, policy=policy, dims=a.dims, space_cache=cache)
        kept = _best(
            lambda policy=policy, cache=cache: rank(
                X, labeled=labeled, labels=labels, policy=policy, dims=a.dims, space_cache=cache
            ),
            a.repeat,
        )
        print(f"{'  queue space kept':<26} {kept:8.3f} s  {kept / base:5.2f}×   (the backend's next batch boundary)")
    have = np.flatnonzero(labeled)
    t0 = time.perf_counter()
    moments = column_moments(X)
    print(f"{'column moments of the pool':<26} {time.perf_counter() - t0:8.3f} s   (once per pool, kept)")

    def within_batch() -> None:
        probe = Probe(cv=False).fit(X[have], [labels[i] for i in have], moments=moments)
        probe.predict_proba(X)[~labeled]  # the whole pool in blocks: a gather of 2.4 GB costs more

    t = _best(within_batch, a.repeat)
    print(f"{'probe refit + predictions':<26} {t:8.3f} s  {t / base:5.2f}×   (a label within a batch)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
