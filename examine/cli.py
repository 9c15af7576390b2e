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


def _list_folder(folder: str) -> list[Path]:
    from examine.images import list_images

    try:
        paths = list_images(folder)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    if not paths:
        raise CLIError(f"{folder}: no images found (looked for {', '.join(sorted(_extensions()))})")
    return paths


def _extensions() -> set[str]:
    from examine.images import IMAGE_EXTENSIONS

    return set(IMAGE_EXTENSIONS)


def _report_errors(errors, out=sys.stderr) -> None:
    for err in errors:
        print(f"skipped {err}", file=out)


def _encoder_config(args: argparse.Namespace):
    from examine.encoder import EncoderConfig

    return EncoderConfig(args.model, img_size=args.img_size, patch_size=args.patch_size, pool=args.pool)


def _pretrain(paths: list[Path], model_dir: Path, args: argparse.Namespace):
    from examine.mae import auto_epochs, default_pretrain_config, pretrain
    from examine.workspace import load_training_images

    enc_cfg = _encoder_config(args)
    images, errors = load_training_images(paths, enc_cfg.img_size)
    _report_errors(errors)
    if len(images) < 2:
        raise CLIError(f"only {len(images)} readable image(s); MAE pretraining needs at least 2")
    _, base = default_pretrain_config(args.device)
    from dataclasses import replace

    cfg = replace(base, epochs=args.epochs or auto_epochs(len(images)), seed=args.seed,
                  batch_size=args.batch_size or base.batch_size)
    print(f"pretraining {enc_cfg.model} at {enc_cfg.img_size}px on {len(images)} images for {cfg.epochs} epochs")
    encoder, losses = pretrain(images, model_dir / "encoder", cfg, encoder_config=enc_cfg, device=args.device)
    print(f"MAE loss {losses[0]:.4f} → {losses[-1]:.4f}; encoder {encoder.version} saved in {model_dir / 'encoder'}")
    return encoder


def _embed(paths: list[Path], args: argparse.Namespace, *, pretrain_if_missing: bool):
    from examine.embed import embed_sources, path_sources
    from examine.encoder import EncoderError
    from examine.workspace import Workspace

    ws = Workspace(args.model_dir)
    try:
        if args.weights is None and not ws.has_encoder() and pretrain_if_missing:
            encoder = _pretrain(paths, ws.root, args)
        else:
            encoder = ws.encoder(weights=args.weights, config=_encoder_config(args))
    except EncoderError as exc:
        raise CLIError(str(exc)) from exc
    store = ws.store(encoder)
    report = embed_sources(path_sources(paths), encoder, store, device=args.device,
                           batch_size=args.batch_size or None)
    _report_errors(report.errors.values())
    print(f"embedded {report.added} new, {report.cached} already stored, {len(report.errors)} failed "
          f"(encoder {encoder.version}, store {store.folder})")
    return report, store


def cmd_pretrain(args: argparse.Namespace) -> None:
    _pretrain(_list_folder(args.images), Path(args.out), args)


def cmd_embed(args: argparse.Namespace) -> None:
    _embed(_list_folder(args.images), args, pretrain_if_missing=False)


def cmd_rank(args: argparse.Namespace) -> None:
    paths = _list_folder(args.images)
    report, store = _embed(paths, args, pretrain_if_missing=True)
    ok = np.flatnonzero(report.ok())
    if len(ok) < 2:
        raise CLIError(f"{args.images}: fewer than 2 readable images; nothing to rank")
    keys = [report.keys[i] for i in ok]
    m = marginal_singular_values(store.get(keys))
    s = scores_from_marginals(m)
    order = value_order(m)
    with open(args.output, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "sha256", "marginal", "score", "rank"])
        for r, j in enumerate(order, start=1):
            w.writerow([str(paths[ok[j]]), keys[j], repr(float(m[j])), repr(float(s[j])), r])
    if report.errors:
        err_path = Path(args.output).with_suffix(".errors.csv")
        with open(err_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            for i, err in sorted(report.errors.items()):
                w.writerow([str(paths[i]), err.reason])
        print(f"{len(report.errors)} unreadable image(s) listed in {err_path}")
    print(f"wrote the ranking of {len(ok)} images to {args.output}; most valuable first:")
    for j in order[: min(args.top, len(order))]:
        print(f"  {s[j]:.4f}  {paths[ok[j]]}")


def _add_model_args(p: argparse.ArgumentParser, *, model_dir: bool = True) -> None:
    if model_dir:
        p.add_argument("--model-dir", default="examine-model", help="encoder + embedding store (default ./examine-model)")
        p.add_argument("--weights", help="local encoder weights (.safetensors or an MAE .pth) instead of the model dir's")
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm ViT name (default vit_tiny_patch16_224)")
    p.add_argument("--img-size", type=int, default=96, help="input resolution (default 96)")
    p.add_argument("--patch-size", type=int, default=None, help="override the model's patch size")
    p.add_argument("--pool", choices=["mean", "cls"], default="mean", help="embedding token: mean of patches or CLS")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=0, help="batch size (default: 32 on CPU, 256 on CUDA)")


def _add_pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=0, help="epochs (default: about 40,000 samples in all, 5–100 epochs)")
    p.add_argument("--seed", type=int, default=0)


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

    p = sub.add_parser("pretrain", help="MAE-pretrain a ViT encoder on a folder of images")
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="model directory to write (encoder/ inside); resumes if present")
    _add_model_args(p, model_dir=False)
    _add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="embed a folder of images into the model directory's store")
    p.add_argument("images", help="folder of images (searched recursively)")
    _add_model_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("rank", help="pretrain if needed, embed and rank a folder of images")
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("-o", "--output", default="ranking.csv", help="CSV: path,sha256,marginal,score,rank")
    p.add_argument("--top", type=int, default=10, help="how many of the most valuable images to print")
    _add_model_args(p)
    _add_pretrain_args(p)
    p.set_defaults(func=cmd_rank)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    from examine.evaluate import add_parser

    add_parser(sub)


def _register_report(sub: argparse._SubParsersAction) -> None:
    from examine.report import add_parser

    add_parser(sub)


# Sub-commands that live in their own modules register their parsers here.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_evaluate, _register_report]


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
