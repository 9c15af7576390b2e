"""Benchmark the ranking policies and regenerate benchmarks/RESULTS.md (and its PNG plots).

    .venv/bin/python benchmarks/bench_ranking.py                 # full run (MAE if --model-dir, else stand-in)
    .venv/bin/python benchmarks/bench_ranking.py --quick         # smoke test
    .venv/bin/python benchmarks/bench_ranking.py --model-dir DIR # with the MAE encoder

Any ``examine evaluate`` option is accepted; ``--out`` defaults to this folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examine.cli import CLIError  # noqa: E402
from examine.evaluate import add_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ranking")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(Path(__file__).resolve().parent)]
    args = parser.parse_args(["evaluate", *argv])
    try:
        args.func(args)
    except CLIError as exc:
        print(f"bench_ranking: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
