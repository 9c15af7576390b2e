"""Which MAE recipe should examine pretrain on a GPU? Linear probes of candidate recipes, in one run.

    python benchmarks/bench_cuda_recipe.py [--device cuda] [--datasets fashion-mnist,medical-tiles]
                                           [--deadline-s 400] [--json FILE] [--quick]

For each data set and candidate recipe (model, resolution, patch, learning rate, samples):
pretrain on the set's 5,000 training images on the device, embed train and test images with
the ``mean`` and the ``grid`` read-out, and score the probe of ``examine evaluate``
(scikit-learn's LogisticRegression, C=1, on standardised embeddings, all training labels) on
2,000 test images. Pixel PCA-64 is the control. Candidates run in the order listed until
``--deadline-s`` would be passed (each is timed on the first set); figures are merged into
``--json`` after each, so a run cut short keeps what it measured.

A data set is ``fashion-mnist``, ``medical-tiles`` or a MedMNIST-style ``.npz`` (on a machine
without Debian's Fashion-MNIST, pass it as an ``.npz`` written by ``--write-npz``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tiles import device_name, save_json  # noqa: E402

from examine.device import resolve_device  # noqa: E402
from examine.embed import embed_arrays  # noqa: E402
from examine.encoder import Encoder, EncoderConfig  # noqa: E402
from examine.evaluate.data import LabeledSet, load_labeled_set  # noqa: E402
from examine.evaluate.embedders import _rgb, pixel_pca_embedder  # noqa: E402
from examine.evaluate.simulation import probe_accuracy, standardize  # noqa: E402
from examine.mae import (  # noqa: E402
    CPU_ENCODER,
    CPU_PRETRAIN,
    CUDA_ENCODER,
    CUDA_PRETRAIN,
    PretrainConfig,
    auto_epochs,
    pretrain,
)

N_TRAIN, N_TEST = 5000, 2000


def candidates(n_images: int) -> list[tuple[str, EncoderConfig, PretrainConfig]]:
    """The recipes compared, cheapest first; epochs from the CUDA sample budget (``auto_epochs``)."""
    epochs = auto_epochs(n_images, cuda=True)
    enc = CUDA_ENCODER
    cfg = replace(
        CUDA_PRETRAIN, epochs=epochs, compile=False
    )  # eager: the same speed in every candidate, no compilation minutes
    small64 = EncoderConfig("vit_small_patch16_224", img_size=64, patch_size=8, pool="grid")
    return [
        ("CPU recipe (vit_tiny 32px p8), CUDA budget", CPU_ENCODER, replace(CPU_PRETRAIN, epochs=epochs)),
        ("vit_small 64px p8, lr 1.5e-3", small64, replace(cfg, base_lr=1.5e-3, warmup_epochs=5)),
        ("CUDA default (vit_small 224px p16)", enc, cfg),
        ("CUDA default, 1/4 of the samples", enc, replace(cfg, epochs=max(5, epochs // 4))),
        ("CUDA default, lr 1.5e-3", enc, replace(cfg, base_lr=1.5e-3, warmup_epochs=5)),
    ]


def probe(X: np.ndarray, T: np.ndarray, data: LabeledSet) -> float:
    return probe_accuracy(standardize(X, X), data.y_train, standardize(T, X), data.y_test)


def pixel_pca(data: LabeledSet) -> float:
    """The control of ``examine evaluate``: its pixel-PCA-64 embedding, same probe."""
    X, T, _ = pixel_pca_embedder(64)(data)
    return probe(X, T, data)


def run_candidate(
    data: LabeledSet, enc_cfg: EncoderConfig, cfg: PretrainConfig, device: torch.device, folder: Path
) -> dict:
    train, test = _rgb(data.train), _rgb(data.test)
    t0 = time.perf_counter()
    encoder, losses = pretrain(train, folder, cfg, encoder_config=enc_cfg, device=device, progress=False, resume=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    out = {
        "model": enc_cfg.model,
        "img_size": enc_cfg.img_size,
        "patch_size": enc_cfg.patch_size,
        "epochs": cfg.epochs,
        "samples": cfg.epochs * len(train),
        "base_lr": cfg.base_lr,
        "batch_size": cfg.batch_size,
        "pretrain_s": round(seconds, 1),
        "pretrain_img_s": round(cfg.epochs * len(train) / seconds, 1),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }
    for pool in ("mean", "grid"):
        reader = Encoder(replace(encoder.config, pool=pool), encoder.vit)
        X = embed_arrays(train, reader, batch_size=256, device=device)
        T = embed_arrays(test, reader, batch_size=256, device=device)
        out[f"probe_{pool}"] = round(probe(X, T, data), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--datasets", default="fashion-mnist,medical-tiles")
    ap.add_argument("--deadline-s", type=float, default=400.0, help="start no candidate that would end after this")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated candidate numbers (0 = the first listed) to run")
    ap.add_argument("--quick", action="store_true", help="200/100 images, 2 epochs: to try the script on a CPU")
    ap.add_argument("--write-npz", default=None, help="write the first data set as a MedMNIST-style .npz and stop")
    args = ap.parse_args()
    n_train, n_test = (200, 100) if args.quick else (N_TRAIN, N_TEST)
    names = args.datasets.split(",")
    if args.write_npz:
        d = load_labeled_set(names[0], n_train, n_test)
        np.savez_compressed(
            args.write_npz, train_images=d.train, train_labels=d.y_train, test_images=d.test, test_labels=d.y_test
        )
        print(f"wrote {args.write_npz}: {len(d.train)} train, {len(d.test)} test images of {d.name}")
        return
    device = resolve_device(args.device)
    t_start = time.perf_counter()
    sets = [load_labeled_set(name, n_train, n_test) for name in names]
    print(
        f"device {device} ({device_name(device)}); sets: {', '.join(f'{d.name} {len(d.train)}/{len(d.test)}' for d in sets)}"
    )
    for d in sets if not args.only else []:
        acc = pixel_pca(d)
        print(f"{d.name}: pixel PCA-64 probe {acc:.4f}", flush=True)
        save_json(args.json, f"recipe/{d.name}/pixel-pca-64", {"probe": round(acc, 4)})
    with tempfile.TemporaryDirectory() as tmp:
        only = {int(k) for k in args.only.split(",")} if args.only else None
        for k, (label, enc_cfg, cfg) in enumerate(candidates(n_train)):
            if only is not None and k not in only:
                continue
            if args.quick:
                cfg = replace(cfg, epochs=2, warmup_epochs=1)
            per_set: list[float] = []
            for d in sets:
                elapsed = time.perf_counter() - t_start
                guess = per_set[0] if per_set else None
                if elapsed > args.deadline_s or (guess is not None and elapsed + guess > args.deadline_s):
                    print(
                        f"skipped {label} on {d.name}: {elapsed:.0f} s spent, deadline {args.deadline_s:.0f} s",
                        flush=True,
                    )
                    continue
                t0 = time.perf_counter()
                res = run_candidate(d, enc_cfg, cfg, device, Path(tmp) / f"{k}-{d.name}")
                per_set.append(time.perf_counter() - t0)
                res["device"] = device_name(device)
                print(
                    f"{d.name} | {label}: probe mean {res['probe_mean']:.4f}, grid {res['probe_grid']:.4f} | "
                    f"{res['samples']} samples in {res['pretrain_s']} s ({res['pretrain_img_s']} img/s), "
                    f"loss {res['loss_first_last']}",
                    flush=True,
                )
                save_json(args.json, f"recipe/{d.name}/{label}", res)
            if not per_set and time.perf_counter() - t_start > args.deadline_s:
                break


if __name__ == "__main__":
    main()
