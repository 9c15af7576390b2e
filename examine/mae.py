"""Masked Autoencoder pretraining of the timm ViT encoder on the project's own images.

He et al., "Masked Autoencoders Are Scalable Vision Learners" (2022): random 75 %
patch masking, the encoder sees only the visible patches, a light decoder
reconstructs the masked ones, loss = MSE on per-patch normalised pixels.
timm has the encoder but neither the decoder nor the objective; they are here.

    enc = pretrain(images, "model_dir", PretrainConfig(epochs=20))   # resumes if model_dir has a checkpoint
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from examine.device import autocast, resolve_device
from examine.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderConfig, create_encoder

__all__ = [
    "MAE",
    "PretrainConfig",
    "pretrain",
    "default_pretrain_config",
    "recipe_encoder_config",
    "auto_epochs",
    "auto_batch_size",
    "sized_config",
    "continue_config",
]

CHECKPOINT_NAME = "mae_checkpoint.safetensors"
#: With ``PretrainConfig.compile=None``, compile on CUDA when a run trains on at least this many samples.
COMPILE_MIN_SAMPLES = 2_000_000


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of MAE pretraining. Defaults finish in minutes on a 2-core CPU."""

    epochs: int = 30
    batch_size: int = 64
    base_lr: float = 1.5e-4  # scaled by batch_size / 256, as in the MAE paper
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    min_lr: float = 1e-6
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    crop_scale: tuple[float, float] = (0.35, 1.0)
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 1  # epochs
    # "auto": augment in batches on the device on CUDA (ImageBank), per image in DataLoader workers on the CPU;
    # "batched" or "per_image" force one path.
    augment: str = "auto"
    # torch.compile the MAE step: None = only on CUDA for runs long enough to repay the compilation.
    compile: bool | None = None

    def __post_init__(self) -> None:
        if self.augment not in ("auto", "batched", "per_image"):
            raise ValueError(f"augment must be 'auto', 'batched' or 'per_image', got {self.augment!r}")

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


def default_pretrain_config(
    device: str | torch.device = "auto", n_images: int | None = None
) -> tuple[EncoderConfig, PretrainConfig]:
    """The recipe ``examine rank`` and the backend use: a small model at low resolution on a CPU, a bigger one on CUDA.

    With ``n_images`` the number of epochs follows :func:`auto_epochs` (a fixed
    number of samples in all, so pretraining takes minutes whatever the folder size) and a small
    folder gets smaller batches (:func:`auto_batch_size`).
    """
    if resolve_device(device).type == "cuda":
        enc, cfg = CUDA_ENCODER, CUDA_PRETRAIN
    else:
        enc, cfg = CPU_ENCODER, CPU_PRETRAIN
    if n_images:
        cfg = sized_config(cfg, n_images, cuda=resolve_device(device).type == "cuda")
    return enc, cfg


#: The CPU recipe, chosen by linear probes (benchmarks/bench_probe.py; README, "Embeddings"): 32 px with
#: 8 px patches (16 tokens: ~200 img/s of MAE training on 2 cores), the 4 × 4 grid read-out (all 16 tokens
#: side by side: the layout that the mean of the tokens and the 2 × 2 grid average away; on 100 images it
#: lifted Fashion-MNIST's probe from 0.630 to 0.694, above pixel PCA), a learning rate for a short schedule.
CPU_ENCODER = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8, pool="grid4")
CPU_PRETRAIN = PretrainConfig(batch_size=128, base_lr=1.5e-3, warmup_epochs=1)
CPU_SAMPLES = 60_000
#: The CUDA recipe (benchmarks/bench_cuda_recipe.py compares it with other candidates by linear probe).
CUDA_ENCODER = EncoderConfig("vit_small_patch16_224", img_size=224, pool="grid")
CUDA_PRETRAIN = PretrainConfig(
    epochs=100,
    batch_size=256,
    num_workers=8,
    decoder_dim=256,
    decoder_depth=4,
    decoder_heads=8,
    checkpoint_every=5,  # an epoch of a few thousand images takes ~1 s on an H100/H200; a checkpoint ~1 s too
)


class MAE(nn.Module):
    """Encoder (a timm ViT) + masking + light transformer decoder + normalised-pixel loss."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        vit = encoder.vit
        self.mask_ratio = mask_ratio
        self.patch = vit.patch_embed.patch_size[0]
        n = vit.patch_embed.num_patches
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, n, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, N, p·p·3)."""
        p = self.patch
        b, c, h, w = imgs.shape
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def encode_visible(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ):
        vit = self.encoder.vit
        x = vit.patch_embed(imgs)  # (B, N, D)
        b, n, d = x.shape
        prefix = vit.num_prefix_tokens
        pos = vit.pos_embed
        x = x + pos[:, prefix:] if pos.shape[1] == n + prefix else x + pos
        keep = max(1, int(round(n * (1.0 - self.mask_ratio))))
        if noise is None:
            noise = torch.rand(b, n, device=x.device, generator=generator)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
        if prefix:
            cls = vit.cls_token + (pos[:, :prefix] if pos.shape[1] == n + prefix else 0)
            x = torch.cat([cls.expand(b, -1, -1), x], dim=1)
        x = vit.norm_pre(x)
        for blk in vit.blocks:
            x = blk(x)
        x = vit.norm(x)
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # 1 = masked, in patch order
        return x, mask, ids_restore

    def forward(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean reconstruction loss on the masked patches (normalised pixels).

        The mask keeps the patches with the smallest ``noise`` (B, N); default
        uniform noise from ``generator`` (or the global RNG).
        """
        latent, mask, ids_restore = self.encode_visible(imgs, generator, noise)
        prefix = self.encoder.vit.num_prefix_tokens
        x = self.decoder_embed(latent[:, prefix:])
        b, n = mask.shape
        tokens = torch.cat([x, self.mask_token.expand(b, n - x.shape[1], -1)], dim=1)
        x = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[2])) + self.decoder_pos
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))
        target = self.patchify(imgs)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


# ------------------------------------------------------------------ data


class _AugmentedImages(torch.utils.data.Dataset):
    """In-memory RGB uint8 images with augmentations suited to medical images.

    Random resized crops, horizontal/vertical flips and 90° rotations (tissue and
    cells have no canonical orientation), mild brightness/contrast jitter (stain
    and exposure vary); no hue shifts, which would change stain semantics.
    """

    def __init__(self, images: Sequence[np.ndarray], img_size: int, crop_scale: tuple[float, float]):
        from torchvision.transforms import v2

        self.images = images
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(img_size, scale=crop_scale, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.ColorJitter(brightness=0.15, contrast=0.15),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.transform(self.images[i])
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(x, k, dims=(1, 2)) if k else x


# ------------------------------------------------------------------ training


def _lr_at(step: int, total: int, warmup: int, cfg: PretrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _save_checkpoint(path: Path, mae: MAE, opt: torch.optim.Optimizer, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in mae.state_dict().items()}
    state = opt.state_dict()
    for idx, st in state["state"].items():
        for name, v in st.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    metadata = {"meta": json.dumps(meta), "param_groups": json.dumps(groups)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def _as_json(value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists), to compare with stored metadata."""
    return json.loads(json.dumps(value))


def _checkpoint_meta(path: Path) -> dict:
    """The run's metadata (epoch, losses, configs) stored in a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


def _load_checkpoint(path: Path, mae: MAE, opt: torch.optim.Optimizer) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    mae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    return json.loads(metadata["meta"])


class _Epochs:
    """What both epoch runners share: the model, optimiser, config and device, and the learning-rate schedule."""

    def __init__(self, mae: MAE, opt: torch.optim.Optimizer, cfg: PretrainConfig, dev: torch.device):
        self.mae, self.opt, self.cfg, self.dev = mae, opt, cfg, dev

    def schedule(self, steps_per_epoch: int) -> None:
        """Fix the schedule's length once the runner knows its steps per epoch."""
        self.steps_per_epoch = steps_per_epoch
        self.total, self.warmup = self.cfg.epochs * steps_per_epoch, self.cfg.warmup_epochs * steps_per_epoch

    def set_lr(self, step: int) -> None:
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(step, self.total, self.warmup, self.cfg)


class _PerImageEpochs(_Epochs):
    """One epoch at a time: torchvision augmentation per image in DataLoader workers (the CPU recipe)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        mae: MAE,
        opt: torch.optim.Optimizer,
        cfg: PretrainConfig,
        dev: torch.device,
        first_epoch: int,
    ):
        super().__init__(mae, opt, cfg, dev)
        bs = min(cfg.batch_size, len(images))
        data = _AugmentedImages(images, mae.encoder.config.img_size, cfg.crop_scale)
        gen = torch.Generator().manual_seed(cfg.seed + first_epoch)
        self.loader = torch.utils.data.DataLoader(
            data,
            batch_size=bs,
            shuffle=True,
            drop_last=len(images) >= 2 * bs,
            generator=gen,
            num_workers=cfg.num_workers,
            pin_memory=dev.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
        )
        self.schedule(len(self.loader))

    def __call__(self, epoch: int) -> tuple[float, int]:
        cfg, dev, mae, opt = self.cfg, self.dev, self.mae, self.opt
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # masks and augmentations per epoch, resumable
        running, count = 0.0, 0
        for i, batch in enumerate(self.loader):
            self.set_lr(epoch * self.steps_per_epoch + i)
            batch = batch.to(dev, non_blocking=True)
            with autocast(dev):
                loss = mae(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(batch)
            count += len(batch)
        return running / max(count, 1), count


def _should_compile(cfg: PretrainConfig, dev: torch.device, samples: int) -> bool:
    if cfg.compile is not None:
        return bool(cfg.compile) and hasattr(torch, "compile")
    # About a minute of compilation repays itself after a few million samples on a datacenter GPU.
    return dev.type == "cuda" and samples >= COMPILE_MIN_SAMPLES and hasattr(torch, "compile")


class _BatchedEpochs(_Epochs):
    """One epoch at a time from an :class:`ImageBank`: augmentation and masking in batches on the device.

    No host synchronisation inside an epoch: the loss is summed on the device and
    read once per epoch. Every random number comes from a generator seeded per
    epoch, so a run (and a resumed run) is reproducible on a given device.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        mae: MAE,
        opt: torch.optim.Optimizer,
        cfg: PretrainConfig,
        dev: torch.device,
        first_epoch: int,
    ):
        from examine.gpu_augment import ImageBank

        super().__init__(mae, opt, cfg, dev)
        self.bank = ImageBank(images, dev, mae.encoder.config.img_size)
        n = len(self.bank)
        self.bs = min(cfg.batch_size, n)
        self.drop_last = n >= 2 * self.bs
        self.schedule(n // self.bs if self.drop_last else -(-n // self.bs))
        self.step_fn: Callable[..., Any] = mae
        if _should_compile(cfg, dev, (cfg.epochs - first_epoch) * n):
            self.step_fn = torch.compile(mae)
        self.n_patches = mae.encoder.vit.patch_embed.num_patches

    def _loss(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.step_fn is not self.mae:
            try:
                with autocast(self.dev):
                    return self.step_fn(x, noise=noise)
            except Exception as exc:  # compilation failed: eager from here on
                import warnings

                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", stacklevel=2)
                self.step_fn = self.mae
        with autocast(self.dev):
            return self.mae(x, noise=noise)

    def __call__(self, epoch: int) -> tuple[float, int]:
        cfg, dev, opt = self.cfg, self.dev, self.opt
        seed = cfg.seed * 100_003 + epoch
        order = torch.randperm(len(self.bank), generator=torch.Generator().manual_seed(seed))
        order = order.to(self.bank.index_device)  # once per epoch: slicing it never waits for the device
        gen = torch.Generator(device=dev).manual_seed(seed)
        running = torch.zeros((), device=dev)
        count = 0
        for i in range(self.steps_per_epoch):
            idx = order[i * self.bs : (i + 1) * self.bs]
            self.set_lr(epoch * self.steps_per_epoch + i)
            x = self.bank.augment(idx, cfg.crop_scale, gen)
            noise = torch.rand(len(idx), self.n_patches, device=dev, generator=gen)
            loss = self._loss(x, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach() * len(idx)
            count += len(idx)
        return float(running) / max(count, 1), count


def pretrain(
    images: Sequence[np.ndarray],
    out_dir: str | Path,
    config: PretrainConfig | None = None,
    *,
    encoder: Encoder | None = None,
    encoder_config: EncoderConfig | None = None,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[Encoder, list[float]]:
    """Pretrain (or continue training) an encoder with the MAE objective; save it to ``out_dir``.

    ``images`` are RGB uint8 arrays (see :func:`examine.images.load_image`).
    Starts from ``encoder`` when given (continued self-supervised training),
    else from a fresh ``encoder_config`` model. A checkpoint written after each
    epoch lets an interrupted run resume where it stopped. Returns the encoder
    (saved as ``encoder.safetensors`` + ``encoder.json``) and the mean loss per epoch.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    default_enc, default_cfg = default_pretrain_config(dev)
    cfg = config or default_cfg
    if len(images) < 2:
        raise ValueError(f"MAE pretraining needs at least 2 images, got {len(images)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if encoder is None:
        encoder = create_encoder(encoder_config or default_enc, seed=cfg.seed)
    mae = MAE(
        encoder,
        decoder_dim=cfg.decoder_dim,
        decoder_depth=cfg.decoder_depth,
        decoder_heads=cfg.decoder_heads,
        mask_ratio=cfg.mask_ratio,
    ).to(dev)
    decay = [p for n, p in mae.named_parameters() if p.ndim > 1 and "pos" not in n and "token" not in n]
    no_decay = [p for n, p in mae.named_parameters() if not (p.ndim > 1 and "pos" not in n and "token" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        **({"fused": True} if dev.type == "cuda" else {}),
    )
    ckpt = out / CHECKPOINT_NAME
    meta: dict[str, Any] = {"epoch": 0, "losses": [], "config": asdict(cfg), "encoder": asdict(encoder.config)}
    if resume and ckpt.is_file():
        saved = _checkpoint_meta(ckpt)
        if saved.get("encoder") == _as_json(asdict(encoder.config)):
            _load_checkpoint(ckpt, mae, opt)
            meta.update(epoch=saved["epoch"], losses=saved["losses"])
        else:  # another model's checkpoint: start afresh, and say so
            import warnings

            warnings.warn(
                f"{ckpt} is for encoder {saved.get('encoder')}, not {asdict(encoder.config)}; "
                "starting a new run (it will be overwritten)",
                stacklevel=2,
            )
    batched = cfg.augment == "batched" or (cfg.augment == "auto" and dev.type == "cuda")
    run_epoch = (_BatchedEpochs if batched else _PerImageEpochs)(images, mae, opt, cfg, dev, meta["epoch"])
    mae.train()
    bar = tqdm(total=cfg.epochs, initial=meta["epoch"], desc="MAE pretraining", unit="epoch", disable=not progress)
    for epoch in range(meta["epoch"], cfg.epochs):
        t0 = time.perf_counter()
        epoch_loss, count = run_epoch(epoch)
        meta["losses"].append(epoch_loss)
        meta["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{epoch_loss:.4f}", img_s=f"{count / (time.perf_counter() - t0):.0f}")
        bar.update(1)
        if on_epoch:
            on_epoch(epoch + 1, epoch_loss)
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            _save_checkpoint(ckpt, mae, opt, meta)
    bar.close()
    mae.eval()
    encoder = mae.encoder.cpu().eval()
    encoder.weights_changed()
    encoder.save(out)
    return encoder, list(meta["losses"])


def recipe_encoder_config(
    device: str | torch.device = "auto",
    *,
    model: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    pool: str | None = None,
    model_kwargs: dict | None = None,
) -> EncoderConfig:
    """The encoder a user asked for, the device's recipe filling in what was not asked.

    The recipe's image size, patch size and read-out apply only to the recipe's own model; a
    named model (e.g. ``vit_base_patch16_224.mae``) keeps its own patch size and 224 px unless told.
    """
    base, _ = default_pretrain_config(device)
    chosen = model or base.model
    same = chosen == base.model
    return EncoderConfig(
        chosen,
        img_size=img_size or (base.img_size if same else 224),
        patch_size=patch_size if patch_size is not None else (base.patch_size if same else None),
        pool=pool or (base.pool if same else "mean"),
        model_kwargs=tuple(sorted((model_kwargs or {}).items())),
    )


def auto_epochs(n_images: int, *, cuda: bool = False) -> int:
    """Epochs for ``CPU_SAMPLES`` augmented samples in all (5–100): about 5 minutes on 2 cores, whatever the folder size.

    On CUDA the sample budget is ten times larger.
    """
    samples = CPU_SAMPLES * (10 if cuda else 1)
    return int(min(100, max(5, samples // max(n_images, 1))))


def auto_batch_size(n_images: int, batch_size: int) -> int:
    """The recipe's batch size, cut for a small folder to about a third of it (batches of at least 16).

    With 100 images and batches of 128 an epoch is a single step and 100 epochs are 100 steps: the MAE
    barely moves from its random start, and on 8 × 8 digits its embedding fell below pixel PCA (probe
    0.691 vs 0.760); batches of 32 gave 0.801 (README, "first ranking"; benchmarks/bench_probe.py).
    """
    return int(min(batch_size, max(16, n_images // 3)))


def sized_config(cfg: PretrainConfig, n_images: int, *, cuda: bool = False) -> PretrainConfig:
    """``cfg`` with the epochs (:func:`auto_epochs`) and batch size (:func:`auto_batch_size`) for ``n_images``.

    ``examine rank``/``pretrain`` and the backend keep the CPU sample budget on CUDA too (``cuda=False``):
    a first ranking in seconds there; "Start training" or ``--epochs`` pretrains further.
    """
    return replace(cfg, epochs=auto_epochs(n_images, cuda=cuda), batch_size=auto_batch_size(n_images, cfg.batch_size))


def continue_config(cfg: PretrainConfig, epochs: int) -> PretrainConfig:
    """The same hyper-parameters for a short continued run (e.g. Label Studio's "Start training")."""
    return replace(cfg, epochs=epochs, warmup_epochs=min(cfg.warmup_epochs, max(1, epochs // 5)))
