"""What makes the CPU MAE recipe's embedding good? Linear probe of recipe variants against pixel PCA.

    .venv/bin/python benchmarks/bench_probe.py                       # the default recipe on both sets
    .venv/bin/python benchmarks/bench_probe.py --variants 32/8/mean,32/8/grid,32/4/grid --epochs 12

A variant is ``IMG_SIZE/PATCH/POOL[/MASK_RATIO]`` of a vit_tiny.  Each is MAE-pretrained on the training
images of each set (no labels), then a standardised logistic regression is fitted on its embeddings of
the training set and scored on the test set; pixel PCA (64 components) and the same architecture at
random initialisation are printed beside it, with the pretraining time, all in one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examine.embed import embed_arrays  # noqa: E402
from examine.encoder import create_encoder  # noqa: E402
from examine.evaluate.data import load_labeled_set  # noqa: E402
from examine.evaluate.embedders import _rgb, pixel_pca_embedder  # noqa: E402
from examine.evaluate.results import machine  # noqa: E402
from examine.evaluate.simulation import probe_accuracy, single_thread, standardize  # noqa: E402
from examine.mae import CPU_ENCODER, default_pretrain_config, pretrain  # noqa: E402


def _probe(X, T, data) -> float:
    with single_thread():
        return probe_accuracy(standardize(X, X), data.y_train, standardize(T, X), data.y_test)


def main(argv: list[str] | None = None) -> int:
    default = f"{CPU_ENCODER.img_size}/{CPU_ENCODER.patch_size}/{CPU_ENCODER.pool}"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="fashion-mnist,medical-tiles")
    p.add_argument("--variants", default=default, help=f"comma-separated IMG/PATCH/POOL[/MASK] (default {default})")
    p.add_argument("--epochs", type=int, default=0, help="epochs (default: the recipe's for the set size)")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=2000)
    a = p.parse_args(argv)
    print(machine())
    for name in a.datasets.split(","):
        data = load_labeled_set(name, a.n_train, a.n_test)
        X, T, _ = pixel_pca_embedder(64)(data)
        print(f"\n{data.name}: {len(data.train)} train / {len(data.test)} test, {data.n_classes} classes")
        print(f"  {'pixel PCA 64':<22} probe {_probe(X, T, data):.3f}")
        for spec in a.variants.split(","):
            img, patch, pool, *mask = spec.split("/")
            enc_cfg = replace(CPU_ENCODER, img_size=int(img), patch_size=int(patch), pool=pool)
            _, cfg = default_pretrain_config("cpu", n_images=len(data.train))
            cfg = replace(cfg, epochs=a.epochs or cfg.epochs, mask_ratio=float(mask[0]) if mask else cfg.mask_ratio)
            rnd = create_encoder(enc_cfg)
            r = _probe(embed_arrays(_rgb(data.train), rnd), embed_arrays(_rgb(data.test), rnd), data)
            t0 = time.perf_counter()
            enc, losses = pretrain(
                _rgb(data.train), tempfile.mkdtemp(), cfg, encoder_config=enc_cfg, device="cpu", progress=False
            )
            secs = time.perf_counter() - t0
            m = _probe(embed_arrays(_rgb(data.train), enc), embed_arrays(_rgb(data.test), enc), data)
            print(
                f"  MAE {spec:<18} probe {m:.3f} (random init {r:.3f}); {cfg.epochs} epochs in {secs:.0f} s, "
                f"{cfg.epochs * len(data.train) / secs:.0f} img/s, loss {losses[0]:.3f} → {losses[-1]:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
