"""Embedding functions for the evidence: the default CPU MAE recipe and a pixel-PCA control."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from examine.evaluate.data import LabeledSet

__all__ = ["Embedder", "mae_embedder", "pixel_pca_embedder", "EMBEDDERS"]

#: Names accepted by ``examine evaluate --embedders``.
EMBEDDERS: tuple[str, ...] = ("mae", "pixel-pca")


EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Embedder:
    """``fit(labeled_set)`` learns from the set's training images and returns ``embed(images) -> (n, d)``."""

    name: str
    fit: Callable[[LabeledSet], EmbedFn]

    def __call__(self, data: LabeledSet) -> tuple[np.ndarray, np.ndarray, EmbedFn]:
        """Train and test embeddings of ``data``, and the fitted embedding function."""
        embed = self.fit(data)
        X, T = np.asarray(embed(data.train), np.float64), np.asarray(embed(data.test), np.float64)
        if X.shape[0] != len(data.train) or T.shape[0] != len(data.test) or X.ndim != 2 or X.shape[1] != T.shape[1]:
            raise ValueError(
                f"embedder {self.name!r} returned shapes {X.shape}, {T.shape} for "
                f"{len(data.train)} + {len(data.test)} images"
            )
        return X, T, embed


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32).reshape(len(images), -1) / 255.0


def pixel_pca_embedder(n_components: int = 64, seed: int = 0) -> Embedder:
    """Control embedding: pixels in [0, 1] projected on the top ``n_components`` principal axes of the training images."""

    def fn(data: LabeledSet) -> EmbedFn:
        from sklearn.decomposition import PCA

        tr = _flat(data.train)
        k = min(n_components, tr.shape[0] - 1, tr.shape[1])
        pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(tr)
        return lambda images: pca.transform(_flat(images))

    return Embedder(f"pixel-pca-{n_components}", fn)


def _rgb(images: np.ndarray) -> list[np.ndarray]:
    return [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]


def mae_embedder(
    cache_dir: str | Path, *, model_dir: str | Path | None = None, epochs: int | None = None, progress: bool = False
) -> Embedder:
    """The default CPU MAE recipe, pretrained on each set's training images (never on its test images).

    The encoder is what ``examine rank`` and the backend build on a CPU
    (:func:`examine.mae.default_pretrain_config`, :func:`examine.mae.auto_epochs`).
    It is cached in ``cache_dir`` per set and image content, so a second run
    reuses it.  With ``model_dir`` an existing encoder is used instead.
    """
    from examine.embed import embed_arrays
    from examine.encoder import Encoder
    from examine.mae import default_pretrain_config, pretrain

    def fn(data: LabeledSet) -> EmbedFn:
        if model_dir is not None:
            encoder = Encoder.load(model_dir)
        else:
            enc_cfg, cfg = default_pretrain_config("cpu", n_images=len(data.train))
            if epochs is not None:
                cfg = replace(cfg, epochs=epochs, warmup_epochs=min(cfg.warmup_epochs, epochs))
            digest = hashlib.sha256(np.ascontiguousarray(data.train).tobytes()).hexdigest()[:12]
            # The read-out (pool) plays no part in pretraining: one cached encoder serves every read-out.
            trained = {k: v for k, v in enc_cfg.__dict__.items() if k != "pool"}
            key = json.dumps([trained, cfg.__dict__], sort_keys=True, default=str)
            folder = (
                Path(cache_dir)
                / f"{data.name.replace(' ', '-')}-{digest}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            )
            if (folder / "encoder.json").is_file():
                encoder = Encoder.load(folder)
                if encoder.config.pool != enc_cfg.pool:
                    encoder = Encoder(replace(encoder.config, pool=enc_cfg.pool), encoder.vit)
            else:
                encoder, _ = pretrain(
                    _rgb(data.train), folder, cfg, encoder_config=enc_cfg, device="cpu", progress=progress
                )
        return lambda images: embed_arrays(_rgb(images), encoder)

    return Embedder("MAE (default CPU recipe)" if model_dir is None else f"MAE encoder {model_dir}", fn)
