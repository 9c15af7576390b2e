"""The image encoder: a timm Vision Transformer, its weights, its version string.

One obvious entry point, like timm's ``create_model``::

    enc = create_encoder("vit_tiny_patch16_224", img_size=96, weights="encoder.safetensors")
    feats = enc(batch)            # (B, D) float32, mean of patch tokens after the final norm

Weights come from our own MAE pretraining (:mod:`examine.mae`), from a local file
(``.safetensors`` or an official MAE ``.pth`` holding ``{"model": state_dict}``;
decoder keys are ignored), or, only when a user names one, from a pretrained
model through timm's own loading: a timm name with a pretrained tag
(``vit_base_patch16_224.mae``, ``vit_small_patch14_dinov2.lvd142m``) or an
``hf-hub:`` id (pathology encoders such as ``hf-hub:MahmoodLab/UNI`` with their
extra arguments, e.g. ``init_values=1e-5, dynamic_img_size=True``).  Those are
read from the Hugging Face cache, downloaded into it the first time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from examine.file_index import file_stamp
from examine.hub import (
    hub_host,
    hub_offline,
    hub_reachable,
    in_hub_cache,
    is_pretrained_name,
    unavailable_message,
)

__all__ = [
    "EncoderConfig",
    "Encoder",
    "EncoderError",
    "POOLS",
    "GRID_CELLS",
    "create_encoder",
    "is_pretrained_name",
    "load_state_dict",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_NAME = "encoder.json"
WEIGHTS_NAME = "encoder.safetensors"
# Keys of an MAE checkpoint that belong to the decoder or to the masking objective.
_NON_ENCODER_PREFIXES = ("decoder", "mask_token")


class EncoderError(RuntimeError):
    """The encoder cannot be built as asked; the message says what to do."""


#: Read-outs of the final (normed) tokens: the mean of the patch tokens, the CLS token, or the
#: patch-token grid averaged into 2 × 2 quadrants (``grid``, 4 × dim: keeps the coarse layout) or
#: 4 × 4 cells (``grid4``, 16 × dim: the layout of a 32-px image's 4 × 4 tokens, all of them), concatenated.
POOLS: tuple[str, ...] = ("mean", "cls", "grid", "grid4")
#: Cells per side of each grid read-out.
GRID_CELLS = {"grid": 2, "grid4": 4}


@dataclass(frozen=True)
class EncoderConfig:
    """What defines an encoder apart from its weights."""

    model: str = "vit_tiny_patch16_224"
    img_size: int = 96
    patch_size: int | None = None  # None: the model's own
    pool: str = "mean"  # one of POOLS
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # extra timm.create_model arguments (e.g. init_values)

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.img_size < 16:
            raise ValueError(f"img_size must be at least 16, got {self.img_size}")


def build_vit(config: EncoderConfig, *, pretrained: bool = False, weights_file: str | Path | None = None) -> nn.Module:
    """A timm ViT with no classifier head: randomly initialised, or with the named pretrained weights.

    With ``pretrained`` the weights come through timm's own loading: from
    ``weights_file`` when given, else from the Hugging Face cache (downloaded
    into it when the hub can be reached).
    """
    import timm

    base = config.model.removeprefix("hf-hub:")
    if not config.model.startswith("hf-hub:") and not base.startswith(("vit_", "deit_")):
        raise EncoderError(f"model {config.model!r} is not a timm Vision Transformer (vit_*/deit_*) or an hf-hub: id")
    kwargs: dict[str, Any] = {"num_classes": 0, "img_size": config.img_size, **dict(config.model_kwargs)}
    if config.patch_size:
        kwargs["patch_size"] = config.patch_size
    name = config.model if config.model.startswith("hf-hub:") or pretrained else config.model.split(".")[0]
    if pretrained and weights_file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    offline = pretrained and weights_file is None and not hub_reachable()
    if offline and not _in_hub_cache(name):
        raise EncoderError(unavailable_message(config.model, f"{hub_host()} cannot be reached"))
    try:
        with hub_offline(offline):
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:  # unknown model name, or weights that do not fit
        raise EncoderError(f"timm cannot build {config.model!r}: {exc}") from exc
    except (OSError, ValueError) as exc:  # the hub or its cache: offline, missing files, gated models
        why = (
            f"{hub_host()} cannot be reached" if offline else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        )
        raise EncoderError(unavailable_message(config.model, why)) from exc


def _in_hub_cache(name: str) -> bool:
    """Whether the weights timm would fetch for ``name`` are in the Hugging Face cache (True when not on the hub)."""
    from timm.models import get_pretrained_cfg

    if name.startswith("hf-hub:"):
        return in_hub_cache(name.removeprefix("hf-hub:"))
    try:
        cfg = get_pretrained_cfg(name)  # timm's own answer, not the shipped list: timm is imported here anyway
    except RuntimeError:  # an unknown tag: timm.create_model says so below
        return True
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return in_hub_cache(repo) if repo else True  # not on the hub (a URL or a file): timm decides


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read encoder weights from a local ``.safetensors`` or ``.pth`` file (decoder keys dropped)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(
            f"weights file {path} does not exist; pass a local .safetensors/.pth file or run `examine pretrain`"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors vary by torch version
            raise EncoderError(f"{path}: not a readable PyTorch weights file ({exc})") from exc
        state = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise EncoderError(f"{path}: expected a state dict (or {{'model': state_dict}}), got {type(obj).__name__}")
        sd = state
    sd = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(_NON_ENCODER_PREFIXES)}


def _fit_pos_embed(sd: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Resample absolute position embeddings saved at another image size."""
    vit: Any = model  # a timm ViT: attributes the nn.Module stubs do not know
    pe = sd.get("pos_embed")
    if pe is None or pe.shape == vit.pos_embed.shape:
        return
    from timm.layers import resample_abs_pos_embed

    sd["pos_embed"] = resample_abs_pos_embed(
        pe, new_size=vit.patch_embed.grid_size, num_prefix_tokens=vit.num_prefix_tokens
    )


def weights_digest(model: nn.Module) -> str:
    """sha256 over the encoder's tensors in key order: identical weights, identical digest."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class Encoder(nn.Module):
    """A ViT encoder that maps normalised image batches to one embedding per image."""

    def __init__(self, config: EncoderConfig, vit: nn.Module):
        super().__init__()
        self.config = config
        self.vit: Any = vit  # a timm ViT: attributes the nn.Module stubs do not know
        self._version_key: str | None = None  # computed once; nn.Module._version is torch's state-dict format number

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return int(self.vit.embed_dim) * GRID_CELLS.get(self.config.pool, 1) ** 2

    @property
    def version(self) -> str:
        """Architecture + a hash of the weights: the key under which embeddings are stored."""
        if self._version_key is None:
            c = self.config
            patch = c.patch_size or self.vit.patch_embed.patch_size[0]
            arch = "".join(
                ch if ch.isalnum() or ch in "_-" else "-" for ch in c.model.removeprefix("hf-hub:").split(".")[0]
            )
            self._version_key = f"{arch}-p{patch}-{c.img_size}px-{c.pool}-{weights_digest(self.vit)[:16]}"
        return self._version_key

    def weights_changed(self) -> None:
        """Forget the cached version after the weights were modified in place (training)."""
        self._version_key = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)  # (B, prefix + N, D), after the final norm
        if self.config.pool == "cls":
            return tokens[:, 0]
        patches = tokens[:, self.vit.num_prefix_tokens :]
        cells = GRID_CELLS.get(self.config.pool)
        if cells:
            b, n, d = patches.shape
            h, w = self.vit.patch_embed.grid_size
            grid = patches.transpose(1, 2).reshape(b, d, h, w)
            return torch.nn.functional.adaptive_avg_pool2d(grid, cells).flatten(1)
        return patches.mean(dim=1)

    def save(self, folder: str | Path) -> Path:
        """Write ``encoder.json`` and ``encoder.safetensors`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.vit.state_dict().items()}
        tmp = folder / (WEIGHTS_NAME + ".tmp")
        save_file(sd, str(tmp), metadata={"config": json.dumps(asdict(self.config))})
        tmp.replace(folder / WEIGHTS_NAME)
        # The weights' stamp lets a re-run learn the version without building the model (saved_version).
        stamp = file_stamp(folder / WEIGHTS_NAME)
        record = {**asdict(self.config), "version": self.version, "dim": self.dim, "weights_stamp": stamp}
        tmp_json = folder / f"{CONFIG_NAME}.{os.getpid()}.tmp"  # readers never see a half-written file
        tmp_json.write_text(json.dumps(record, indent=2))
        tmp_json.replace(folder / CONFIG_NAME)
        return folder / WEIGHTS_NAME

    @classmethod
    def load(cls, folder: str | Path) -> Encoder:
        """Load an encoder saved by :meth:`save` (e.g. by ``examine pretrain``)."""
        folder = Path(folder)
        cfg_path = folder / CONFIG_NAME
        if not cfg_path.is_file():
            raise EncoderError(f"{folder} holds no {CONFIG_NAME}; run `examine pretrain IMAGES --out {folder}` first")
        raw = json.loads(cfg_path.read_text())
        fields = {k: raw[k] for k in ("model", "img_size", "patch_size", "pool") if k in raw}
        config = EncoderConfig(**fields, model_kwargs=tuple((k, v) for k, v in raw.get("model_kwargs", [])))
        return create_encoder(config, weights=folder / WEIGHTS_NAME)


def saved_version(folder: str | Path) -> tuple[str, int] | None:
    """(version, dim) of the encoder saved in ``folder`` without building it, when its weights file still has the
    stamp (size, mtime, ctime, inode) recorded when it was saved; None otherwise (then :meth:`Encoder.load` decides)."""
    folder = Path(folder)
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
        version, dim, stamp = str(raw["version"]), int(raw["dim"]), tuple(int(v) for v in raw["weights_stamp"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (version, dim) if file_stamp(folder / WEIGHTS_NAME) == stamp else None


def create_encoder(
    model: str | EncoderConfig = "vit_tiny_patch16_224",
    *,
    img_size: int = 96,
    patch_size: int | None = None,
    pool: str = "mean",
    weights: str | Path | None = None,
    pretrained: bool | None = None,
    seed: int = 0,
) -> Encoder:
    """Build an :class:`Encoder`.

    * ``weights``: a local file (``.safetensors``, or an MAE ``.pth``); loaded by us,
      decoder keys dropped and position embeddings resampled to ``img_size``.
    * a pretrained name (``vit_base_patch16_224.mae``, ``hf-hub:org/name``) or
      ``pretrained=True``: timm loads the weights from the Hugging Face cache,
      downloading them only then; offline, the error says how to use a local file.
    * otherwise a randomly initialised ViT (deterministic from ``seed``), ready
      for :func:`examine.mae.pretrain`.
    """
    config = model if isinstance(model, EncoderConfig) else EncoderConfig(model, img_size, patch_size, pool)
    if pretrained is None:
        pretrained = weights is None and is_pretrained_name(config.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = build_vit(config, pretrained=bool(pretrained) and weights is None)
    if weights is not None:
        sd = load_state_dict(weights)
        _fit_pos_embed(sd, vit)
        try:
            result = vit.load_state_dict(sd, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)[:200]
            raise EncoderError(
                f"{weights}: does not fit {config.model} ({first}); check --model and --patch-size"
            ) from None
        missing = [k for k in result.missing_keys if not k.startswith(("head", "fc_norm"))]
        if missing:
            raise EncoderError(
                f"{weights}: does not fit {config.model} (missing {len(missing)} keys, e.g. {missing[:3]}); "
                "check --model and --patch-size"
            )
    vit.eval()
    return Encoder(config, vit)


def preprocess(images: list[np.ndarray] | np.ndarray, img_size: int) -> torch.Tensor:
    """RGB uint8 images (H, W, 3) → a normalised float32 batch (B, 3, img_size, img_size).

    The shorter side is resized to ``img_size`` and the centre cropped, so tiles
    keep their aspect; antialiased bilinear resize.
    """
    out = torch.empty((len(images), 3, img_size, img_size), dtype=torch.float32)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, img in enumerate(images):
        out[i] = (to_square_tensor(img, img_size) - mean) / std
    return out


def to_square_tensor(img: np.ndarray, size: int) -> torch.Tensor:
    """One RGB uint8 image → float (3, size, size) in [0, 1], short side resized, centre crop."""
    import torch.nn.functional as F

    # np.require copies read-only arrays (bundled images, memory maps): torch warns on non-writable ones
    t = torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)
    h, w = t.shape[1:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        t = F.interpolate(t[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return t[:, top : top + size, left : left + size].clamp_(0.0, 1.0)
