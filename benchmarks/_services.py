"""The backend the Label Studio benchmarks run against: a small random-init encoder, images read from disk."""

from __future__ import annotations

import argparse
from pathlib import Path

from examine.encoder import EncoderConfig, create_encoder
from scripts.services import LS_DATABASES, ls_db_from_env
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


def add_ls_db_argument(ap: argparse.ArgumentParser) -> None:
    """``--ls-db``: the database the benchmark's Label Studio runs on."""
    ap.add_argument(
        "--ls-db",
        choices=LS_DATABASES,
        default=ls_db_from_env(),
        help="Label Studio's database: SQLite, or a throw-away PostgreSQL cluster (fsync on, as deployed) "
        "(default: $EXAMINE_TEST_LS_DB or sqlite)",
    )
