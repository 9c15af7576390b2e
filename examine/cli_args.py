"""Arguments shared by the sub-commands that build an encoder (rank, embed, pretrain, report)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from examine.encoder import EncoderConfig
    from examine.mae import PretrainConfig
    from examine.phases import Phases
    from examine.pipeline import FolderRanking

__all__ = [
    "CLIError",
    "add_model_args",
    "add_pretrain_args",
    "check_named_model",
    "encoder_config_from_args",
    "pretrain_config_from_args",
    "rank_folder_from_args",
]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def add_model_args(p: argparse.ArgumentParser, *, model_dir: bool = True) -> None:
    """--model-dir/--weights (optional), --model, --img-size, --patch-size, --pool, --device, --batch-size."""
    if model_dir:
        p.add_argument(
            "--model-dir", default="examine-model", help="encoder + embedding store (default ./examine-model)"
        )
        p.add_argument(
            "--weights", help="local encoder weights (.safetensors or an MAE .pth) instead of the model dir's"
        )
    p.add_argument(
        "--model",
        default=None,
        help="timm ViT name; with a pretrained tag (vit_base_patch16_224.mae) or an hf-hub: id the "
        "pretrained weights are loaded (downloaded once into the Hugging Face cache). "
        "Default: the recipe of this device (vit_tiny on a CPU)",
    )
    p.add_argument(
        "--model-args",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='extra timm.create_model arguments, e.g. \'{"init_values": 1e-5, "dynamic_img_size": true}\'',
    )
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the recipe's)")
    p.add_argument("--patch-size", type=int, default=None, help="override the model's patch size")
    p.add_argument("--pool", default=None, help="embedding read-out (default: the recipe's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=0, help="batch size (default: 32 on CPU, 256 on CUDA)")


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"init_values\": 1e-5}'")
    return value


def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=0, help="epochs (default: the recipe's, by the number of images)")
    p.add_argument("--seed", type=int, default=0)


def check_named_model(args: argparse.Namespace) -> None:
    """Fail at once when ``--model`` names pretrained weights that are neither cached nor downloadable.

    Runs before torch and timm are imported (seconds on a small machine); :mod:`examine.hub` says how it knows.
    """
    from examine.hub import WeightsUnavailable, check_named_weights

    model = getattr(args, "model", None)
    if model and not getattr(args, "weights", None):
        try:
            check_named_weights(model)
        except WeightsUnavailable as exc:
            raise CLIError(str(exc)) from exc


def encoder_config_from_args(args: argparse.Namespace) -> EncoderConfig | None:
    """The encoder asked for on the command line, filled in from the device's recipe; None if nothing was asked."""
    from examine.mae import recipe_encoder_config

    model_args = getattr(args, "model_args", None)
    if (
        args.model is None
        and args.img_size is None
        and args.patch_size is None
        and args.pool is None
        and not model_args
    ):
        return None
    return recipe_encoder_config(
        args.device,
        model=args.model,
        img_size=args.img_size,
        patch_size=args.patch_size,
        pool=args.pool,
        model_kwargs=model_args,
    )


def pretrain_config_from_args(args: argparse.Namespace, n_images: int | None) -> PretrainConfig | None:
    """The recipe's pretraining config with --epochs/--seed/--batch-size applied; None when none was given."""
    if not (args.epochs or args.seed or args.batch_size):
        return None
    from examine.mae import default_pretrain_config, sized_config

    _, base = default_pretrain_config(args.device)
    if n_images:
        base = sized_config(base, n_images)  # the CPU sample budget, as examine/pipeline.py's pretrain_on
    return replace(
        base, epochs=args.epochs or base.epochs, seed=args.seed, batch_size=args.batch_size or base.batch_size
    )


def rank_folder_from_args(
    args: argparse.Namespace, *, policy: str | None = None, phases: Phases | None = None
) -> FolderRanking:
    """:func:`examine.pipeline.rank_folder` with the encoder and pretraining options of the command line.

    Raises :class:`CLIError` for what the user can fix (no images, an encoder that cannot be built,
    a labels file that cannot be used).
    """
    from examine.encoder import EncoderError
    from examine.pipeline import PipelineError, rank_folder, read_labels_csv

    kwargs: dict = {} if policy is None else {"policy": policy}
    try:
        if getattr(args, "labels", None):
            kwargs["labels"] = read_labels_csv(args.labels, args.images)
        return rank_folder(
            args.images,
            args.model_dir,
            encoder_config=encoder_config_from_args(args),
            weights=args.weights,
            device=args.device,
            batch_size=args.batch_size or None,
            pretrain_config=pretrain_config_from_args(args, None),
            log=print,
            phases=phases,
            **kwargs,
        )
    except (PipelineError, EncoderError) as exc:
        raise CLIError(str(exc)) from exc
