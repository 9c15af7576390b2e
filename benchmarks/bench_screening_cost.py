"""What the screening costs a clean pool: the default queue with and without serving flagged images last.

On a clean pool nothing is unusable, so every flag is a false alarm and deferring it can only
move the queue away from where it would have gone. For each set, pools of up to 5,000 training
images (per seed), the default queue is run to each budget twice, plain and with the screening's
flags served last, and the linear probe's accuracy on the set's test images is compared (paired
by seed). Embeddings come from the encoders `examine evaluate` cached (default runs/evaluate;
pretrained there when missing).

    .venv/bin/python benchmarks/bench_screening_cost.py --seeds 2
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from examine.evaluate.data import load_labeled_set
from examine.evaluate.embedders import mae_embedder
from examine.evaluate.simulation import probe_accuracy, single_thread, standardize
from examine.image_checks import pool_checks
from examine.ranking import DEFAULT_POLICY, rank
from examine.screening import screen

BATCH = 10


def _run(X: np.ndarray, y: np.ndarray, budgets: list[int], seed: int, deferred: np.ndarray | None) -> list[int]:
    """Rows labeled at each budget, in order (the queue asked again after every batch)."""
    labeled = np.zeros(len(X), bool)
    out = []
    for b in budgets:
        while labeled.sum() < b:
            lab = [y[i] if labeled[i] else None for i in range(len(X))]
            with single_thread():
                order = rank(
                    X, labeled=labeled, labels=lab, policy=DEFAULT_POLICY, seed=seed, batch=BATCH, deferred=deferred
                ).order
            labeled[order[:BATCH]] = True
        out.append(np.flatnonzero(labeled))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="fashion-mnist,digits,shirts,medical-tiles")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--budgets", default="20,50,100,200,500")
    p.add_argument("--pool", type=int, default=5000)
    p.add_argument("--cache", default="runs/evaluate")
    args = p.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"machine: {platform.machine()} {platform.processor() or ''}; policy {DEFAULT_POLICY}; batches of {BATCH}")
    print("set | seed | pool | flagged | accuracy plain → with flags last, per budget")
    summary = {}
    for ds in args.datasets.split(","):
        t0 = time.perf_counter()
        data = load_labeled_set(ds, 6000, 2000)
        embed = mae_embedder(args.cache).fit(data)
        X = np.asarray(embed(data.train), np.float64)
        T = np.asarray(embed(data.test), np.float64)
        Xs, Ts = standardize(X, X), standardize(T, X)
        diffs = []
        for seed in range(args.seeds):
            rows = np.sort(
                np.random.default_rng(1000 + seed).choice(len(X), size=min(args.pool, len(X)), replace=False)
            )
            Xp, Xc, y = X[rows], Xs[rows], data.y_train[rows]
            s = screen(pool_checks(list(data.train[rows])), Xp)
            bs = [b for b in budgets if b <= len(rows) // 3]
            acc = {}
            for name, deferred in (("plain", None), ("flags last", s.deferred())):
                with single_thread():
                    acc[name] = np.array(
                        [probe_accuracy(Xc[lab], y[lab], Ts, data.y_test) for lab in _run(Xp, y, bs, seed, deferred)]
                    )
            d = acc["flags last"] - acc["plain"]
            diffs.append(d)
            cells = " ".join(f"{b}: {a:.3f}→{a + e:.3f}" for b, a, e in zip(bs, acc["plain"], d))
            print(f"{data.name} | {seed} | {len(rows)} | {int(s.flagged.sum())} | {cells}", flush=True)
        D = np.array(diffs)
        summary[data.name] = (bs, D.mean(axis=0), float(D.mean()), time.perf_counter() - t0)
    print("\nset | mean accuracy change from serving flags last, per budget | over all budgets | seconds")
    for name, (bs, per, mean, sec) in summary.items():
        print(f"{name} | " + " ".join(f"{b}: {v:+.3f}" for b, v in zip(bs, per)) + f" | {mean:+.3f} | {sec:.0f}")


if __name__ == "__main__":
    main()
