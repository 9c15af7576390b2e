"""The demo's configuration: where `.demo/` keeps its files, the ports, the admin's credentials, the project's names."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_TITLE = "EXAMINE demo"
BACKEND_TITLE = "examine"
STORAGE_TITLE = "demo tiles"
ADMIN_EMAIL = "admin@example.com"
DEFAULT_EPOCHS = 10  # about 1.5-2 min of MAE pretraining on 200 tiles, 2 CPU cores
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <Choices name="modality" toName="image" choice="single" showInLine="true">
    <Choice value="Histology (IHC)"/>
    <Choice value="Fundus photograph"/>
    <Choice value="Light microscopy"/>
    <Choice value="Unusable"/>
  </Choices>
</View>"""


class DemoError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo keeps its files and how it runs its two servers."""

    root: Path = REPO_ROOT / ".demo"
    host: str = "127.0.0.1"
    ls_port: int = 8080
    backend_port: int = 9090
    tiles: int = 200
    tile_size: int = 256
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    basic_auth: tuple[str, str] | None = None
    task_lock_ttl: int | None = None  # Label Studio's default (a day) when None
    label_studio_bin: Path = Path(os.environ.get("LABEL_STUDIO_BIN") or REPO_ROOT / ".venv-ls" / "bin" / "label-studio")
    ready_timeout_s: float = 1800.0

    @property
    def ls_url(self) -> str:
        return f"http://{self.host}:{self.ls_port}"

    @property
    def backend_url(self) -> str:
        return f"http://{self.host}:{self.backend_port}"

    @property
    def ls_data_dir(self) -> Path:
        return self.root / "label-studio"

    @property
    def files_root(self) -> Path:
        """Label Studio's LOCAL_FILES_DOCUMENT_ROOT (and the backend's EXAMINE_DATA_ROOTS)."""
        return self.root / "files"

    @property
    def tiles_dir(self) -> Path:
        return self.files_root / "tiles"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    """The Label Studio admin: login for the browser, legacy token for the API and the backend."""

    email: str
    password: str
    token: str


def load_or_create_credentials(path: Path) -> Credentials:
    """Read ``credentials.json``, or create it (mode 0600) with a fresh password and token."""
    if path.is_file():
        return Credentials(**json.loads(path.read_text()))
    creds = Credentials(ADMIN_EMAIL, secrets.token_urlsafe(12), secrets.token_hex(20))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f, indent=2)
    return creds
