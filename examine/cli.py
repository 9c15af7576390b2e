"""The ``examine`` command line: one sub-command per job of the library."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from examine.cli_args import (
    CLIError,
    add_model_args,
    add_pretrain_args,
    check_named_model,
    encoder_config_from_args,
    pretrain_config_from_args,
    rank_folder_from_args,
)
from examine.ranking import DEFAULT_POLICY, POLICIES
from examine.ranking_csv import columns_help
from examine.scoring import marginal_singular_values, scores_from_marginals, value_order


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
            raise CLIError(
                f"{path}: holds Python objects, not numbers; save a float32/float64 array with numpy.save"
            ) from exc
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
            w.writerow(["index", "examine_marginal", "examine_value", "value_rank"])
            for i in order:
                w.writerow([int(i), repr(float(m[i])), repr(float(s[i])), int(rank[i])])
        print(f"wrote {len(m)} scores to {args.output}")
    k = min(args.top, len(m))
    if k:
        print(f"top {k} of {len(m)} (value rank, index, EXAMINE marginal, EXAMINE value):")
        for i in order[:k]:
            print(f"{rank[i]:>6}  {i:>8}  {m[i]:.6e}  {s[i]:.6f}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from examine.encoder import EncoderError
    from examine.pipeline import PipelineError, list_folder, pretrain_on

    ph = args.phases
    try:
        with ph.phase("listing"):
            paths = list_folder(args.images)
        with ph.phase("pretraining"):  # reading the images, then the MAE epochs
            pretrain_on(
                paths,
                Path(args.out) / "encoder",
                encoder_config=encoder_config_from_args(args),
                pretrain_config=pretrain_config_from_args(args, len(paths)),
                device=args.device,
                log=print,
            )
    except (PipelineError, EncoderError) as exc:
        raise CLIError(str(exc)) from exc
    args.result.update(images=len(paths))


def cmd_embed(args: argparse.Namespace) -> None:
    from examine.encoder import EncoderError
    from examine.pipeline import PipelineError, embed_listed, list_folder
    from examine.workspace import Workspace

    try:
        with args.phases.phase("listing"):
            paths = list_folder(args.images)
        report, store = embed_listed(
            paths,
            Workspace(args.model_dir),
            encoder_config=encoder_config_from_args(args),
            weights=args.weights,
            device=args.device,
            batch_size=args.batch_size or None,
            pretrain_if_missing=False,
            phases=args.phases,
        )
    except (PipelineError, EncoderError) as exc:
        raise CLIError(str(exc)) from exc
    version = store.version
    for err in report.errors.values():
        print(f"skipped {err}", file=sys.stderr)
    print(
        f"embedded {report.added} new, {report.cached} already stored, {len(report.errors)} failed (encoder {version})"
    )
    args.result.update(images=len(paths), added=report.added, cached=report.cached, failed=len(report.errors))


def cmd_rank(args: argparse.Namespace) -> None:
    from examine.ranking_csv import write_ranking_csv

    result = rank_folder_from_args(args, policy=args.policy, phases=args.phases)
    for path, reason in result.errors:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"embedded {result.added} new, {result.cached} already stored, {len(result.errors)} failed "
        f"(encoder {result.encoder_version})"
    )
    with args.phases.phase("writing"):
        err_path = write_ranking_csv(result, args.output)
    args.result.update(
        images=len(result.paths) + len(result.errors) + result.labeled,
        added=result.added,
        cached=result.cached,
        failed=len(result.errors),
    )
    if err_path is not None:
        print(f"{len(result.errors)} unreadable image(s) listed in {err_path}")
    print(f"wrote the queue of {len(result.paths)} images to {args.output} (policy {result.policy}); label first:")
    for i, p in enumerate(result.paths[: min(args.top, len(result.paths))]):
        guess = f"   (probe: {result.predicted[i] or 'none'})" if result.predicted is not None else ""
        print(f"  {p}{guess}")
    flagged = [(p, r) for p, r in zip(result.paths, result.reasons or []) if r]
    if flagged:
        print(f"{len(flagged)} image(s) flagged as unusable close the queue (column 'reasons' of {args.output}), e.g.:")
        for p, r in flagged[:3]:
            print(f"  {p}: {r}")
    if result.labeled:
        cv = result.probe_cv_accuracy
        print(
            f"{result.labeled} labeled image(s) left out of the queue"
            + (f"; the probe's cross-validated accuracy on them: {cv:.3f}" if cv is not None else "")
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="examine",
        description="Rank unlabeled medical images by the EXAMINE score of their embeddings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score", help="EXAMINE scores of an embedding matrix (.npy, n × d)")
    p.add_argument("embeddings", help="an .npy file holding an n × d float array, one row per image")
    p.add_argument(
        "-o",
        "--output",
        help="CSV to write: index,examine_marginal,examine_value,value_rank (value rank 1 = highest EXAMINE value)",
    )
    p.add_argument("--top", type=int, default=10, help="how many of the most valuable rows to print (default 10)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("pretrain", help="MAE-pretrain a ViT encoder on a folder of images")
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="model directory to write (encoder/ inside); resumes if present")
    add_model_args(p, model_dir=False)
    add_pretrain_args(p)
    _add_json(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="embed a folder of images into the model directory's store")
    p.add_argument("images", help="folder of images (searched recursively)")
    add_model_args(p)
    _add_json(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("rank", help="pretrain if needed, embed and rank a folder of images")
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument(
        "-o",
        "--output",
        default="ranking.csv",
        help=f"CSV to write: {columns_help()}",
    )
    p.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        choices=sorted(POLICIES),
        help=f"queue policy of examine.ranking (default {DEFAULT_POLICY}; paper: the static EXAMINE order)",
    )
    p.add_argument("--top", type=int, default=10, help="how many of the most valuable images to print")
    p.add_argument(
        "--labels",
        metavar="CSV",
        help="labels given so far (header 'path,label'; paths relative to IMAGES or as ranking.csv writes them; "
        "several labels of one image "
        "separated by ';' or on several rows): those images leave the queue, the queue learns from them, and "
        "ranking.csv gets the probe's 'predicted' class (multi-label: every class above 0.5, ';'-separated) "
        "and its 'probability'",
    )
    add_model_args(p)
    add_pretrain_args(p)
    _add_json(p)
    p.set_defaults(func=cmd_rank)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        metavar="FILE",
        help="also write what was done and where the time went (phases, seconds) to FILE as JSON",
    )


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    from examine.evaluate.command import add_parser

    add_parser(sub)


def _register_report(sub: argparse._SubParsersAction) -> None:
    from examine.report import add_parser

    add_parser(sub)


# Sub-commands that live in their own modules register their parsers here.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_evaluate, _register_report]


def main(argv: Sequence[str] | None = None) -> int:
    from examine.phases import Phases

    phases = Phases()  # start-up: from the process's start to here
    parser = build_parser()
    args = parser.parse_args(argv)
    args.phases, args.result = phases, {}
    try:
        check_named_model(args)  # before torch and timm are imported: offline, a missing model fails at once
        if hasattr(args, "json"):  # embed, rank, pretrain
            import examine.pipeline  # noqa: F401  torch and timm, counted as start-up

            phases.end_startup()
        args.func(args)
        if hasattr(args, "json"):  # embed, rank, pretrain: where the time went
            print(phases.line())
            if args.json:
                out = {"command": args.command, **args.result, "phases": phases.as_dict()}
                Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    except CLIError as exc:
        print(f"examine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("examine: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
