"""What makes the CPU MAE recipe's embedding good? Linear probe of recipe variants against pixel PCA.

    .venv/bin/python benchmarks/bench_probe.py                       # the default recipe on both sets
    .venv/bin/python benchmarks/bench_probe.py --variants 32/8/mean,32/8/grid,32/4/grid --epochs 12
    .venv/bin/python benchmarks/bench_probe.py --datasets fashion-mnist,digits,medical-tiles --n-train 100 --draws 5

A variant is ``IMG_SIZE/PATCH/POOL[/MASK_RATIO]`` of a vit_tiny.  Each is MAE-pretrained on the training
images of each set (no labels), then a standardised logistic regression is fitted on its embeddings of
the training set and scored on the test set; pixel PCA (64 components) and the same architecture at
random initialisation are printed beside it, with the pretraining time, all in one run.  ``--blocks``
also reads the pretrained encoder out after earlier blocks (timm's ``forward_intermediates``, final norm
applied), with the variant's pooling.  ``--draws K`` repeats all of it on K disjoint draws of
``--n-train`` training images and prints the means: at 100 images one draw's probe moves by ±0.02.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from examine.embed import embed_arrays  # noqa: E402
from examine.encoder import (  # noqa: E402
    GRID_CELLS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    create_encoder,
    to_square_tensor,
)
from examine.evaluate.data import LabeledSet, load_labeled_set  # noqa: E402
from examine.evaluate.embedders import _rgb, pixel_pca_embedder  # noqa: E402
from examine.evaluate.results import machine  # noqa: E402
from examine.evaluate.simulation import probe_accuracy, single_thread, standardize  # noqa: E402
from examine.mae import CPU_ENCODER, default_pretrain_config, pretrain  # noqa: E402


def _probe(X, T, data) -> float:
    with single_thread():
        return probe_accuracy(standardize(X, X), data.y_train, standardize(T, X), data.y_test)


@torch.inference_mode()
def block_embeddings(enc: Encoder, images: list[np.ndarray], block: int) -> np.ndarray:
    """The encoder's read-out (mean or grid) of the tokens after ``block`` blocks (1-based), final norm applied."""
    vit = enc.vit.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for s in range(0, len(images), 256):
        x = torch.stack([to_square_tensor(im, enc.config.img_size) for im in images[s : s + 256]])
        (feats,) = vit.forward_intermediates(
            (x - mean) / std, indices=[block - 1], norm=True, output_fmt="NCHW", intermediates_only=True
        )
        cells = GRID_CELLS.get(enc.config.pool)
        pooled = torch.nn.functional.adaptive_avg_pool2d(feats, cells).flatten(1) if cells else feats.mean((2, 3))
        out.append(pooled.float().numpy())
    return np.concatenate(out)


def _probe_draw(data: LabeledSet, a: argparse.Namespace) -> dict[str, float]:
    """Pixel PCA, then every variant (random init and pretrained) on one draw; returns the probes by name."""
    out: dict[str, float] = {}
    tr, te = _rgb(data.train), _rgb(data.test)  # once per draw: every encoder below embeds the same images
    X, T, _ = pixel_pca_embedder(64)(data)
    out["pixel PCA 64"] = _probe(X, T, data)
    print(f"\n{data.name}: {len(data.train)} train / {len(data.test)} test, {data.n_classes} classes")
    print(f"  {'pixel PCA 64':<22} probe {out['pixel PCA 64']:.3f}")
    for spec in a.variants.split(","):
        img, patch, pool, *mask = spec.split("/")
        enc_cfg = replace(CPU_ENCODER, img_size=int(img), patch_size=int(patch), pool=pool)
        _, cfg = default_pretrain_config("cpu", n_images=len(data.train))
        cfg = replace(
            cfg,
            epochs=a.epochs or cfg.epochs,
            batch_size=a.batch_size or cfg.batch_size,
            mask_ratio=float(mask[0]) if mask else cfg.mask_ratio,
        )
        rnd = create_encoder(enc_cfg)
        r = out[f"untrained {spec}"] = _probe(embed_arrays(tr, rnd), embed_arrays(te, rnd), data)
        probes = []
        for seed in range(max(1, a.seeds)):
            t0 = time.perf_counter()
            enc, losses = pretrain(
                tr,
                tempfile.mkdtemp(),
                replace(cfg, seed=seed),
                encoder_config=enc_cfg,
                device="cpu",
                progress=False,
            )
            secs = time.perf_counter() - t0
            m = _probe(embed_arrays(tr, enc), embed_arrays(te, enc), data)
            probes.append(m)
            print(
                f"  MAE {spec:<18} probe {m:.3f} (random init {r:.3f}); {cfg.epochs} epochs of batch "
                f"{cfg.batch_size}, seed {seed}, in {secs:.0f} s, "
                f"{cfg.epochs * len(data.train) / secs:.0f} img/s, loss {losses[0]:.3f} → {losses[-1]:.3f}",
                flush=True,
            )
        out[f"MAE {spec}"] = float(np.mean(probes))
        if a.seeds > 1:
            print(f"  MAE {spec:<18} mean probe over {a.seeds} seeds {np.mean(probes):.3f} ± {np.std(probes):.3f}")
        for block in [int(b) for b in a.blocks.split(",") if b]:
            mb = _probe(block_embeddings(enc, tr, block), block_embeddings(enc, te, block), data)
            print(f"    read out after block {block} of {len(enc.vit.blocks)}: probe {mb:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    default = f"{CPU_ENCODER.img_size}/{CPU_ENCODER.patch_size}/{CPU_ENCODER.pool}"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="fashion-mnist,medical-tiles")
    p.add_argument("--variants", default=default, help=f"comma-separated IMG/PATCH/POOL[/MASK] (default {default})")
    p.add_argument("--epochs", type=int, default=0, help="epochs (default: the recipe's for the set size)")
    p.add_argument("--batch-size", type=int, default=0, help="MAE batch size (default: the recipe's for the set size)")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument(
        "--seeds", type=int, default=1, help="MAE pretraining seeds per variant (the probe's mean is printed)"
    )
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="disjoint draws of --n-train training images (each pretrained and probed; the means are printed)",
    )
    p.add_argument("--blocks", default="", help="comma-separated earlier blocks to read out too, e.g. 8,10 (of 12)")
    a = p.parse_args(argv)
    print(machine())
    for name in a.datasets.split(","):
        full = load_labeled_set(name, a.n_train * a.draws, a.n_test)
        means: dict[str, list[float]] = {}
        for draw in range(a.draws):
            lo, hi = draw * a.n_train, (draw + 1) * a.n_train
            data = replace(full, train=full.train[lo:hi], y_train=full.y_train[lo:hi])
            if a.draws > 1:
                print(f"\n--- draw {draw + 1} of {a.draws}: training images {lo}–{hi - 1}")
            for key, value in _probe_draw(data, a).items():
                means.setdefault(key, []).append(value)
        if a.draws > 1:
            print(f"\n{full.name}: means over {a.draws} draws of {a.n_train} training images")
            pca = np.mean(means["pixel PCA 64"])
            for key, values in means.items():
                gap = "" if key == "pixel PCA 64" else f"  (vs pixel PCA {np.mean(values) - pca:+.3f})"
                print(f"  {key:<30} probe {np.mean(values):.3f} (draws {min(values):.3f}–{max(values):.3f}){gap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
