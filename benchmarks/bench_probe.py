"""Does our MAE pretraining learn anything? Linear probe: pretrained vs randomly initialised encoder.

    python benchmarks/bench_probe.py [--pretrain 3000] [--epochs 10] [--train 5000] [--test 2000]

Pretrains the default small ViT with the MAE objective on Fashion-MNIST training images (no
labels), embeds a labeled training and test split with the pretrained encoder and with the same
architecture at random initialisation, fits a logistic regression on each and prints both test
accuracies and the MAE loss curve. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from examine.datasets import load_fashion_mnist
    from examine.embed import embed_arrays
    from examine.encoder import EncoderConfig, create_encoder
    from examine.mae import PretrainConfig, pretrain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain", type=int, default=3000, help="unlabeled images for MAE pretraining")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train", type=int, default=5000, help="labeled images for the probe")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="keep the pretrained encoder in this folder (e.g. for `examine evaluate --model-dir`)")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs")

    def rgb(x: np.ndarray) -> list[np.ndarray]:
        return [np.repeat(im[:, :, None], 3, axis=2) for im in x]

    xtr, ytr = load_fashion_mnist("train", limit=max(args.train, args.pretrain))
    xte, yte = load_fashion_mnist("test", limit=args.test)
    cfg = EncoderConfig("vit_tiny_patch16_224", img_size=args.img_size, patch_size=args.patch_size)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        enc, losses = pretrain(rgb(xtr[: args.pretrain]), args.save or tmp,
                               PretrainConfig(epochs=args.epochs, seed=args.seed),
                               encoder_config=cfg, device="cpu", resume=False)
    t_pre = time.perf_counter() - t0
    print(f"MAE pretraining: {args.pretrain} images x {args.epochs} epochs in {t_pre:.0f} s; "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}: {[round(l, 4) for l in losses]}")
    results = {}
    for name, encoder in (("pretrained MAE", enc), ("random init", create_encoder(cfg, seed=args.seed))):
        ftr = embed_arrays(rgb(xtr[: args.train]), encoder, device="cpu")
        fte = embed_arrays(rgb(xte), encoder, device="cpu")
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(ftr, ytr[: args.train])
        results[name] = float(clf.score(fte, yte))
        print(f"linear probe, {name:15s}: test accuracy {results[name]:.4f} ({args.train} train / {args.test} test)")
    print(f"pretrained - random = {results['pretrained MAE'] - results['random init']:+.4f}")


if __name__ == "__main__":
    main()
