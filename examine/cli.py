"""The ``examine`` command line: one sub-command per job of the library."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from examine.scoring import marginal_singular_values, scores_from_marginals, value_order


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def load_embeddings(path: str | Path) -> np.ndarray:
    """Load an (n, d) numeric embedding matrix from a ``.npy`` file, memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file (expected an .npy file holding an n × d array)")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise CLIError(f"{path}: not a readable .npy file (no NumPy header); save the array with numpy.save")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CLIError(f"{path}: holds Python objects, not numbers; save a float32/float64 array with numpy.save") from exc
        raise CLIError(f"{path}: not a readable .npy file ({exc})") from exc
    except OSError as exc:
        raise CLIError(f"{path}: not a readable .npy file ({exc})") from exc
    if X.dtype.kind not in "fiu":
        raise CLIError(f"{path}: dtype {X.dtype} is not numeric; expected float32 or float64")
    if X.ndim != 2:
        raise CLIError(f"{path}: shape {X.shape} is not 2-D; expected (n images, d features)")
    if X.shape[0] < 2:
        raise CLIError(f"{path}: has {X.shape[0]} row(s); scoring needs at least 2")
    return X


def cmd_score(args: argparse.Namespace) -> None:
    X = load_embeddings(args.embeddings)
    try:
        m = marginal_singular_values(X)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{args.embeddings}: {exc}") from exc
    s = scores_from_marginals(m)
    order = value_order(m)
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    if args.output:
        with open(args.output, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "marginal", "score", "rank"])
            for i in order:
                w.writerow([int(i), repr(float(m[i])), repr(float(s[i])), int(rank[i])])
        print(f"wrote {len(m)} scores to {args.output}")
    k = min(args.top, len(m))
    if k:
        print(f"top {k} of {len(m)} (rank, index, marginal, score):")
        for i in order[:k]:
            print(f"{rank[i]:>6}  {i:>8}  {m[i]:.6e}  {s[i]:.6f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="examine",
        description="Rank unlabeled medical images by the EXAMINE score of their embeddings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score", help="EXAMINE scores of an embedding matrix (.npy, n × d)")
    p.add_argument("embeddings", help="an .npy file holding an n × d float array, one row per image")
    p.add_argument("-o", "--output", help="CSV to write: index,marginal,score,rank (rank 1 = most valuable)")
    p.add_argument("--top", type=int, default=10, help="how many of the most valuable rows to print (default 10)")
    p.set_defaults(func=cmd_score)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Sub-commands that live in their own modules add themselves here.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except CLIError as exc:
        print(f"examine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("examine: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
