"""How long one re-rank takes: each policy on an n × d pool, against one exact EXAMINE pass over it.

    .venv/bin/python benchmarks/bench_ranking.py                  # 20,000 × 768 (a large project), 50 labels
    .venv/bin/python benchmarks/bench_ranking.py --n 5000 --d 192 --labels 200

Prints seconds per call (best of --repeat) and the ratio to ``marginal_singular_values`` on the same
matrix, measured in one run.  The backend re-ranks after every annotation, so this is its floor.
The quality of the order is measured by ``examine evaluate`` (benchmarks/RESULTS.md), not here.
The last line is what a label within a batch costs the backend instead of a re-rank: the probe's refit
and its prediction of every unlabeled row (the pre-annotations).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examine.probe import Probe  # noqa: E402
from examine.ranking import POLICIES, rank  # noqa: E402
from examine.scoring import marginal_singular_values  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--labels", type=int, default=50, help="labeled rows (10 classes)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--policies", default=",".join(POLICIES))
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (10, a.d))
    y = rng.integers(0, 10, a.n)
    X = (centres[y] + rng.normal(size=(a.n, a.d))).astype(np.float32)
    labeled = np.zeros(a.n, bool)
    labeled[rng.choice(a.n, a.labels, replace=False)] = True
    labels = [int(v) if m else None for v, m in zip(y, labeled)]
    base = _best(lambda: marginal_singular_values(X), a.repeat)
    print(
        f"{platform.machine()}, {platform.python_version()}, numpy {np.__version__}; X {a.n} × {a.d} float32, "
        f"{a.labels} labels"
    )
    print(f"{'marginal_singular_values':<26} {base:8.3f} s   1.00×")
    for policy in a.policies.split(","):
        t = _best(lambda policy=policy: rank(X, labeled=labeled, labels=labels, policy=policy), a.repeat)
        print(f"{'rank(policy=' + policy + ')':<26} {t:8.3f} s  {t / base:5.2f}×")
    have = np.flatnonzero(labeled)

    def within_batch() -> None:
        Probe(cv=False).fit(X[have], [labels[i] for i in have], reference=X).predict_proba(X[~labeled])

    t = _best(within_batch, a.repeat)
    print(f"{'probe refit + predictions':<26} {t:8.3f} s  {t / base:5.2f}×   (a label within a batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
