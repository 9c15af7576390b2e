"""A model directory: the encoder weights and the embedding store, in one place.

    MODEL_DIR/encoder/   encoder.json + encoder.safetensors (+ MAE checkpoint)
    MODEL_DIR/store/     <encoder version>/vectors.f32, keys.tsv, meta.json

The CLI and the Label Studio backend both work through this object, so a model
directory made by ``examine pretrain`` serves the backend unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from examine.encoder import Encoder, EncoderConfig, EncoderError, create_encoder
from examine.images import ImageLoadError, load_image
from examine.store import EmbeddingStore

__all__ = ["Workspace", "load_training_images"]


class Workspace:
    """Encoder + store under one model directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.encoder_dir = self.root / "encoder"
        self.store_root = self.root / "store"

    def has_encoder(self) -> bool:
        return (self.encoder_dir / "encoder.json").is_file()

    def encoder(self, *, weights: str | Path | None = None, config: EncoderConfig | None = None) -> Encoder:
        """The encoder to use: explicit local weights, else the one pretrained into this directory."""
        if weights is not None:
            return create_encoder(config or EncoderConfig(), weights=weights)
        if self.has_encoder():
            return Encoder.load(self.encoder_dir)
        raise EncoderError(
            f"{self.root} has no encoder yet: pretrain one with `examine pretrain IMAGES_DIR --out {self.root}` "
            "or pass local weights with --weights"
        )

    def store(self, encoder: Encoder) -> EmbeddingStore:
        return EmbeddingStore(self.store_root, encoder.version, encoder.dim)


def load_training_images(
    paths: Sequence[str | Path], img_size: int, *, progress: bool = True
) -> tuple[list[np.ndarray], list[ImageLoadError]]:
    """Decode images for pretraining (downscaled to at most 2× the model's size); bad ones are reported."""
    from tqdm.auto import tqdm

    images, errors = [], []
    for p in tqdm(paths, desc="reading images", unit="img", disable=not progress):
        try:
            images.append(load_image(p, item=str(p), max_side=2 * img_size))
        except ImageLoadError as exc:
            errors.append(exc)
    return images, errors
