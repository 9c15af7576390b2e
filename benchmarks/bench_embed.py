"""Embedding throughput and achieved FLOP/s, as ratios measured in one run.

    python benchmarks/bench_embed.py [--device auto|cpu|cuda] [--images 256]

For the default CPU encoder (vit_tiny_patch16_224 at 96 px) and vit_base_patch16_224 at 224 px:
images per second of ``embed_arrays`` on real medical tiles, the model's forward FLOPs per image
(counted with torch.utils.flop_counter), and the achieved FLOP/s as a fraction of a large float32
matrix product measured in the same run on the same device (bf16 on CUDA, as the embedder uses).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from examine.datasets import medical_tiles
from examine.device import resolve_device
from examine.embed import embed_arrays
from examine.encoder import EncoderConfig, create_encoder


def matmul_flops(device: torch.device, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of a large square matrix product (float32 on CPU, bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_flops(encoder, img_size: int) -> float:
    x = torch.zeros(1, 3, img_size, img_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        encoder(x)
    return float(counter.get_total_flops())


def bench(cfg: EncoderConfig, tiles, device: torch.device, peak: float) -> None:
    enc = create_encoder(cfg)
    flops = model_flops(enc, cfg.img_size)
    bs = 256 if device.type == "cuda" else 32
    embed_arrays(tiles[:bs], enc, batch_size=bs, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    embed_arrays(tiles, enc, batch_size=bs, device=device)
    dt = time.perf_counter() - t0
    ips = len(tiles) / dt
    print(f"{cfg.model} @ {cfg.img_size}px: {ips:8.1f} img/s, {flops / 1e9:6.2f} GFLOP/img, "
          f"{ips * flops / 1e9:8.1f} GFLOP/s = {ips * flops / peak:5.1%} of the matmul peak")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=256)
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_flops(device)
    print(f"matmul reference: {peak / 1e9:.1f} GFLOP/s ({'bf16' if device.type == 'cuda' else 'float32'})")
    tiles = medical_tiles(args.images, size=256, seed=0)
    bench(EncoderConfig("vit_tiny_patch16_224", img_size=96), tiles, device, peak)
    bench(EncoderConfig("vit_base_patch16_224", img_size=224), tiles[: max(32, args.images // 4)] if device.type == "cpu" else tiles, device, peak)


if __name__ == "__main__":
    main()
