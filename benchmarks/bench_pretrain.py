"""MAE pretraining throughput: the bare training step beside ``examine.mae.pretrain`` from JPEG files, in one run.

    python benchmarks/bench_pretrain.py [--device auto|cpu|cuda] [--images N] [--epochs E] [--compile]
                                        [--tiles-dir DIR] [--json FILE]

With the device's default pretraining recipe (``default_pretrain_config``: vit_small @ 224 px
on CUDA, vit_tiny @ 96 px on the CPU): images/s of the training step alone (a ready normalised
batch on the device, forward + backward + AdamW — fused on CUDA), of decoding the JPEG files
(``load_training_images``, worker processes), and of ``pretrain`` itself on those images
(epochs after the first, which holds the warm-up), then pretrain / step. ``--compile`` also
measures both with torch.compile (compilation time printed apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tiles import device_name, jpeg_tiles, save_json  # noqa: E402

from examine.device import autocast, resolve_device  # noqa: E402
from examine.encoder import create_encoder  # noqa: E402
from examine.mae import MAE, default_pretrain_config, pretrain  # noqa: E402
from examine.workspace import load_training_images  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_rate(enc_cfg, cfg, device: torch.device, steps: int, compile_: bool) -> tuple[float, float]:
    """(first-steps seconds, images/s) of the MAE training step on a ready batch."""
    mae = (
        MAE(
            create_encoder(enc_cfg),
            decoder_dim=cfg.decoder_dim,
            decoder_depth=cfg.decoder_depth,
            decoder_heads=cfg.decoder_heads,
            mask_ratio=cfg.mask_ratio,
        )
        .to(device)
        .train()
    )
    opt = torch.optim.AdamW(
        mae.parameters(),
        lr=cfg.lr,
        betas=(0.9, 0.95),
        weight_decay=cfg.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    fn = torch.compile(mae) if compile_ else mae
    s, bs = enc_cfg.img_size, cfg.batch_size
    x = torch.randn(bs, 3, s, s, device=device)
    n_patches = mae.encoder.vit.patch_embed.num_patches

    def step() -> None:
        noise = torch.rand(bs, n_patches, device=device)
        with autocast(device):
            loss = fn(x, noise=noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return first, steps * bs / (time.perf_counter() - t0)


def pretrain_rate(images, enc_cfg, cfg, device: torch.device, out: Path) -> tuple[float, float, list[float]]:
    """(total seconds, images/s over the epochs after the first, losses) of pretrain()."""
    marks: list[float] = []
    t0 = time.perf_counter()
    _, losses = pretrain(
        images,
        out,
        cfg,
        encoder_config=enc_cfg,
        device=device,
        progress=False,
        on_epoch=lambda epoch, loss: marks.append(time.perf_counter()),
    )
    total = time.perf_counter() - t0
    steps_per_epoch = (
        len(images) // cfg.batch_size if len(images) >= 2 * cfg.batch_size else -(-len(images) // cfg.batch_size)
    )
    per_epoch = steps_per_epoch * min(cfg.batch_size, len(images))
    rate = per_epoch * (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else per_epoch / total
    return total, rate, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=None, help="JPEG files (default 8192 on CUDA, 256 on the CPU)")
    ap.add_argument("--epochs", type=int, default=None, help="pretrain epochs (default 5 on CUDA, 3 on the CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed bare training steps")
    ap.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    ap.add_argument("--only-compiled", action="store_true", help="measure only with torch.compile")
    ap.add_argument("--tiles-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    n = args.images or (8192 if cuda else 256)
    epochs = args.epochs or (5 if cuda else 3)
    enc_cfg, cfg = default_pretrain_config(device)
    cfg = replace(cfg, epochs=epochs, warmup_epochs=1, checkpoint_every=epochs)
    name = device_name(device)
    print(
        f"device: {device} ({name}), {len(os.sched_getaffinity(0))} CPUs, torch {torch.__version__}; "
        f"{enc_cfg.model} @ {enc_cfg.img_size}px, batch {cfg.batch_size}, decoder {cfg.decoder_dim}x{cfg.decoder_depth}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        paths = jpeg_tiles(Path(args.tiles_dir) if args.tiles_dir else tmp / "tiles", n, size=256)
        t0 = time.perf_counter()
        images, errors = load_training_images(
            paths, enc_cfg.img_size, progress=False, decode_device="cuda" if cuda else None
        )
        decode_s = time.perf_counter() - t0
        assert not errors and len(images) == n
        how = "nvJPEG in batches" if cuda else "worker processes"
        print(f"decoded {n} 256-px JPEG files in {decode_s:.2f} s ({n / decode_s:.0f} img/s, {how})", flush=True)
        variants = [True] if args.only_compiled else ([False, True] if args.compile else [False])
        for compiled in variants:
            tag = "compiled" if compiled else "eager"
            first, ceiling = train_step_rate(enc_cfg, cfg, device, args.steps or (30 if cuda else 4), compiled)
            total, rate, losses = pretrain_rate(images, enc_cfg, replace(cfg, compile=compiled), device, tmp / tag)
            ratio = rate / ceiling
            print(
                f"MAE {enc_cfg.model} @ {enc_cfg.img_size}px on {name} ({tag}): train step alone {ceiling:8.1f} img/s "
                f"(first 3 steps {first:.1f} s) | pretrain() on {n} images {rate:8.1f} img/s over epochs 2-{epochs} "
                f"(whole call {total:.1f} s incl. set-up and checkpoint) | ratio {ratio:6.1%} | "
                f"with decoding: {epochs * n / (total + decode_s):.0f} img/s | loss {losses[0]:.3f} -> {losses[-1]:.3f}",
                flush=True,
            )
            save_json(
                args.json,
                f"pretrain/{device.type}/{enc_cfg.model}@{enc_cfg.img_size}/{tag}",
                {
                    "device": name,
                    "batch_size": cfg.batch_size,
                    "images": n,
                    "epochs": epochs,
                    "train_step_img_s": round(ceiling, 1),
                    "first_steps_s": round(first, 2),
                    "pretrain_img_s": round(rate, 1),
                    "ratio": round(ratio, 4),
                    "pretrain_call_s": round(total, 2),
                    "decode_s": round(decode_s, 2),
                    "losses": [round(v, 4) for v in losses],
                },
            )
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
