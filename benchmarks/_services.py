"""The backend the Label Studio benchmarks run against: a small random-init encoder, images read from disk."""

from __future__ import annotations

from pathlib import Path

from examine.encoder import EncoderConfig, create_encoder
from tests.backend_server import BackendServer
from tests.lsserver import LabelStudioServer


def start_backend(ls: LabelStudioServer, tmp: Path) -> BackendServer:
    """Start the backend on 127.0.0.1 for ``ls`` with a vit_tiny encoder (nothing pretrained) in ``tmp/model``."""
    model_dir = tmp / "model"
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)).save(model_dir / "encoder")
    return BackendServer(
        {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "MODEL_DIR": str(model_dir),
            "EXAMINE_DATA_ROOTS": str(ls.files_root),
            "EXAMINE_DEVICE": "auto",
            "LOG_LEVEL": "INFO",
        },
        tmp / "backend.log",
    ).start()
