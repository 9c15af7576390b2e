"""Embedding throughput: the bare encoder forward beside the end-to-end rate from JPEG files, in one run.

    python benchmarks/bench_embed.py [--device auto|cpu|cuda] [--images N] [--models vit_base_patch16_224@224,...]
                                     [--tiles-dir DIR] [--json FILE]

For each model: images/s of the bare forward (a ready normalised batch on the device; bf16
autocast on CUDA, float32 on the CPU), of decoding alone (nvJPEG + GPU resize on CUDA;
worker processes on the CPU), and of ``examine.embed.embed_sources`` from distinct 256-px
JPEG files into a fresh store (fetch, sha256, decode, resize, forward, store), after a short
warm-up run; then end-to-end / bare. ``--json`` merges the figures into FILE.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tiles import device_name, jpeg_tiles, save_json  # noqa: E402

from examine.device import autocast, default_workers, resolve_device  # noqa: E402
from examine.embed import default_batch_size, embed_sources, path_sources  # noqa: E402
from examine.encoder import EncoderConfig, create_encoder  # noqa: E402
from examine.mae import recipe_encoder_config  # noqa: E402
from examine.store import EmbeddingStore  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def bare_forward(enc, device: torch.device, bs: int, n: int) -> float:
    """Images/s of the encoder alone on a ready normalised batch."""
    x = torch.randn(bs, 3, enc.config.img_size, enc.config.img_size, device=device)
    enc = enc.to(device).eval()
    steps = max(1, n // bs)
    for _ in range(2 if device.type == "cuda" else 1):
        with autocast(device):
            enc(x)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(device):
            out = enc(x)
    out.float().sum().item()
    return steps * bs / (time.perf_counter() - t0)


def decode_only(paths: list[Path], size: int, device: torch.device, workers: int, bs: int) -> tuple[str, float]:
    """Images/s of decoding 256-px JPEG bytes (already in RAM) to the encoder's input."""
    datas = [p.read_bytes() for p in paths]
    if device.type == "cuda":
        from examine.gpu_decode import nvjpeg_decode, square_images

        square_images(nvjpeg_decode(datas[:bs], device), size)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, len(datas), bs):
            square_images(nvjpeg_decode(datas[s : s + bs], device), size)
        sync(device)
        return "nvJPEG batched + GPU resize", len(datas) / (time.perf_counter() - t0)
    from examine.decode_pool import DecodePool, decode_square

    pool = DecodePool(workers)
    pool.submit(decode_square, [(str(i), d) for i, d in enumerate(datas[:8])], size)()  # start the workers
    t0 = time.perf_counter()
    pool.submit(decode_square, [(str(i), d) for i, d in enumerate(datas)], size)()
    return f"Pillow in {workers} processes", len(datas) / (time.perf_counter() - t0)


def warm_up(enc, paths: list[Path], device: torch.device, bs: int, workers: int, tmp: Path) -> float:
    """Seconds of a first small embed_sources run (worker processes, CUDA/nvJPEG initialisation)."""
    warm = paths[-min(len(paths), 2 * bs) :]
    t0 = time.perf_counter()
    embed_sources(
        path_sources(warm),
        enc,
        EmbeddingStore(tmp / "warm", enc.version, enc.dim),
        batch_size=bs,
        device=device,
        workers=workers,
        progress=False,
    )
    return time.perf_counter() - t0


def end_to_end(
    enc, paths: list[Path], device: torch.device, bs: int, workers: int, tmp: Path, in_ram: bool = False
) -> float:
    """Images/s of embed_sources from files (or from their bytes already in RAM) into a fresh store."""
    store = EmbeddingStore(tmp, enc.version, enc.dim)
    if in_ram:
        sources = [(str(p), (lambda d=p.read_bytes(): d)) for p in paths]
    else:
        sources = path_sources(paths)
    t0 = time.perf_counter()
    rep = embed_sources(sources, enc, store, batch_size=bs, device=device, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    assert not rep.errors, list(rep.errors.values())[:3]
    return len(paths) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=None, help="JPEG files (default 8192 on CUDA, 512 on the CPU)")
    ap.add_argument(
        "--models",
        default=None,
        help="model@size or 'recipe' (the device's pretraining recipe),... (default vit_base_patch16_224@224 on "
        "CUDA; the recipe, vit_tiny@96 and vit_base@224 on the CPU)",
    )
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternate bare/end-to-end measurements this often, keep the best of each "
        "(default 1 on CUDA, 3 on a shared CPU)",
    )
    ap.add_argument("--tiles-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    n = args.images or (8192 if cuda else 512)
    models = args.models or (
        "vit_base_patch16_224@224" if cuda else "recipe,vit_tiny_patch16_224@96,vit_base_patch16_224@224"
    )
    bs = args.batch_size or default_batch_size(device)
    workers = default_workers(device) if args.workers is None else args.workers
    name = device_name(device)
    print(
        f"device: {device} ({name}), {len(os.sched_getaffinity(0))} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, batch {bs}, {workers} decode processes",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        t0 = time.perf_counter()
        paths = jpeg_tiles(Path(args.tiles_dir) if args.tiles_dir else tmp / "tiles", n, size=256)
        print(f"{n} distinct 256-px JPEG files ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for spec in models.split(","):
            if spec == "recipe":  # the encoder examine rank and the backend pretrain on this device
                cfg = recipe_encoder_config(device)
                model, size = cfg.model, str(cfg.img_size)
            else:
                model, size = spec.split("@")
                cfg = EncoderConfig(model, img_size=int(size))
            enc = create_encoder(cfg)
            m_n = n if cuda or model.startswith("vit_tiny") else min(n, 64)  # ViT-B on 2 cores: ~1 img/s
            m_paths = paths[:m_n]
            repeats = args.repeats or (1 if cuda else 3)
            warm_s = warm_up(enc, m_paths, device, bs, workers, tmp / model)
            how, dec = decode_only(m_paths, int(size), device, workers, bs)
            bares, e2es = [], []
            for r in range(repeats):
                bares.append(bare_forward(enc, device, bs, max(m_n // 2, bs)))
                e2es.append(end_to_end(enc, m_paths, device, bs, workers, tmp / model / f"store{r}"))
            ram = end_to_end(enc, m_paths, device, bs, workers, tmp / model / "ram", in_ram=True)
            bare, e2e = max(bares), max(e2es)
            ratio = e2e / bare
            print(
                f"{model} @ {size}px on {name}: bare forward {bare:9.1f} img/s | decode only ({how}) {dec:9.1f} img/s | "
                f"end to end from {m_n} JPEG files {e2e:9.1f} img/s (warm-up {warm_s:.1f} s; from bytes in RAM {ram:.1f}) | "
                f"ratio {ratio:6.1%}"
                + (
                    f" (best of {repeats}: bare {[round(b, 1) for b in bares]}, e2e {[round(e, 1) for e in e2es]})"
                    if repeats > 1
                    else ""
                ),
                flush=True,
            )
            save_json(
                args.json,
                f"embed/{device.type}/{model}@{size}",
                {
                    "device": name,
                    "batch_size": bs,
                    "workers": workers,
                    "images": m_n,
                    "bare_forward_img_s": round(bare, 1),
                    "decode_only_img_s": round(dec, 1),
                    "decode_how": how,
                    "end_to_end_img_s": round(e2e, 1),
                    "end_to_end_from_ram_img_s": round(ram, 1),
                    "ratio": round(ratio, 4),
                    "warmup_s": round(warm_s, 2),
                    "bare_all": [round(b, 1) for b in bares],
                    "end_to_end_all": [round(e, 1) for e in e2es],
                },
            )
            enc.cpu()
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
