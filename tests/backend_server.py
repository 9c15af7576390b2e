"""The backend as a real gunicorn process for the end-to-end tests (the launcher is the demo's: scripts/services.py)."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from examine.encoder import EncoderConfig, create_encoder
from scripts.services import BackendServer

__all__ = ["BackendServer", "LABEL_CONFIG", "png", "save_tiny_encoder", "start_backend"]


def png(img: np.ndarray) -> bytes:
    """An image as PNG bytes (what a user uploads)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def save_tiny_encoder(folder: Path) -> None:
    """A small real encoder (random init) in ``folder``: it keeps the end-to-end tests fast (MAE has its own tests)."""
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(folder)


def start_backend(label_studio, tmp_path_factory, auth: tuple[str, str], **settings: str) -> BackendServer:
    """The real backend for one test module: the session's Label Studio configured, basic auth on, the tiny
    encoder in a fresh MODEL_DIR, CPU, and ``settings`` (environment variables) on top."""
    model_dir = tmp_path_factory.mktemp("model")
    save_tiny_encoder(model_dir / "encoder")
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": str(model_dir),
        "BASIC_AUTH_USER": auth[0],
        "BASIC_AUTH_PASS": auth[1],
        "EXAMINE_DEVICE": "cpu",
        **settings,
    }
    return BackendServer(env, tmp_path_factory.mktemp("logs") / "backend.log").start()


#: The labeling config of the end-to-end and fault-test projects: one image, one choice.
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tissue" toName="image"><Choice value="stained"/><Choice value="background"/></Choices>
</View>"""
