"""Every environment variable of the backend, typed and documented in one place."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from examine.encoder import EncoderConfig
from examine.mae import recipe_encoder_config

SAMPLING_MODES = ("uncertainty", "sequential", "keep")


@dataclass(frozen=True)
class Settings:
    """Backend configuration; :meth:`from_env` reads it from the environment.

    Each field's ``metadata["env"]`` names its variable and ``metadata["doc"]``
    says what it does (the README's configuration table lists the same).
    ``metadata["compose"] = False`` marks operational tunables that docker-compose.yml does not
    pass through yet (their defaults suit production; tests shorten them).
    """

    label_studio_url: str = field(
        default="",
        metadata={
            "env": "LABEL_STUDIO_URL",
            "doc": "Label Studio base URL as the backend reaches it; empty: the hostname Label Studio sends in /setup",
        },
    )
    label_studio_api_key: str = field(
        default="",
        repr=False,
        metadata={
            "env": "LABEL_STUDIO_API_KEY",
            "doc": "legacy token or personal access token; empty: the token Label Studio sends in /setup",
        },
    )
    model_dir: Path = field(
        default=Path("model-dir"),
        metadata={"env": "MODEL_DIR", "doc": "encoder weights, embedding store, per-project state and job queue"},
    )
    host: str = field(default="127.0.0.1", metadata={"env": "HOST", "doc": "bind address (0.0.0.0 inside a container)"})
    port: int = field(default=9090, metadata={"env": "PORT", "doc": "bind port"})
    workers: int = field(
        default=1, metadata={"env": "WORKERS", "doc": "gunicorn workers; keep 1 (the job queue is in-process)"}
    )
    threads: int = field(default=8, metadata={"env": "THREADS", "doc": "gunicorn threads"})
    job_threads: int = field(
        default=4,
        metadata={
            "env": "EXAMINE_JOB_THREADS",
            "doc": "projects whose jobs run at the same time (one thread each); a slow project delays only itself",
        },
    )
    basic_auth_user: str = field(
        default="",
        metadata={"env": "BASIC_AUTH_USER", "doc": "require HTTP basic auth with this user (and BASIC_AUTH_PASS)"},
    )
    basic_auth_pass: str = field(
        default="", repr=False, metadata={"env": "BASIC_AUTH_PASS", "doc": "password for BASIC_AUTH_USER"}
    )
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL", "doc": "DEBUG, INFO, WARNING or ERROR"})
    model: str = field(
        default="",
        metadata={
            "env": "EXAMINE_MODEL",
            "doc": "timm ViT used when MODEL_DIR has no encoder yet; a pretrained tag (vit_base_patch16_224.mae) or an hf-hub: id loads those weights; empty: our MAE recipe (vit_tiny on a CPU)",
        },
    )
    model_args: str = field(
        default="",
        metadata={
            "env": "EXAMINE_MODEL_ARGS",
            "doc": 'JSON object of extra timm.create_model arguments, e.g. {"init_values": 1e-5}',
        },
    )
    img_size: int = field(
        default=0,
        metadata={
            "env": "EXAMINE_IMG_SIZE",
            "doc": "encoder input resolution for a new encoder (0: the recipe's, 224 for a named model)",
        },
    )
    weights: str = field(
        default="",
        metadata={
            "env": "EXAMINE_WEIGHTS",
            "doc": "local encoder weights (.safetensors or MAE .pth); empty: pretrain our own MAE",
        },
    )
    device: str = field(
        default="auto", metadata={"env": "EXAMINE_DEVICE", "doc": "auto (CUDA when present), cpu or cuda"}
    )
    sampling: str = field(
        default="uncertainty",
        metadata={
            "env": "EXAMINE_SAMPLING",
            "doc": "uncertainty: set the project's sampling so /next serves the lowest score (= most valuable) first; sequential: Sequential sampling + the ordered view; keep: leave the project's sampling alone",
        },
    )
    policy: str = field(
        default="", metadata={"env": "EXAMINE_POLICY", "doc": "ranking policy of examine.ranking (empty: its default)"}
    )
    prelabel: bool = field(
        default=True,
        metadata={
            "env": "EXAMINE_PRELABEL",
            "doc": "1: every prediction carries the probes' proposal for each image-level question (Choices, Taxonomy) once 2 of its classes are labeled; 0: scores only",
        },
    )
    screening: bool = field(
        default=True,
        metadata={
            "env": "EXAMINE_SCREENING",
            "doc": "1: screen images for unusable ones (blank, blurred, noisy, over/under-exposed, compressed, marked, foreign, near-duplicates), serve them after the clean pool and list them in the flagged tab; 0: off",
        },
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "ALLOWED_HOSTS",
            "doc": "comma-separated extra hosts task images may be fetched from (never sent the token)",
        },
    )
    data_roots: tuple[Path, ...] = field(
        default=(),
        metadata={
            "env": "EXAMINE_DATA_ROOTS",
            "doc": "comma-separated local folders mirroring Label Studio's local-files root; images under them are read from disk",
        },
    )
    pretrain_epochs: int = field(
        default=0,
        metadata={
            "env": "EXAMINE_PRETRAIN_EPOCHS",
            "doc": "epochs of the first MAE pretraining on a project's images (0: automatic)",
        },
    )
    train_epochs: int = field(
        default=5, metadata={"env": "EXAMINE_TRAIN_EPOCHS", "doc": "epochs of continued MAE training on START_TRAINING"}
    )
    head_size: int = field(
        default=20,
        metadata={
            "env": "EXAMINE_HEAD_SIZE",
            "doc": "the head: tasks of the newest ranking whose predictions each re-rank updates in place (score below 0.1)",
        },
    )
    full_publish_idle_s: float = field(
        default=30.0,
        metadata={
            "env": "EXAMINE_FULL_PUBLISH_IDLE_S",
            "doc": (
                "a new version for the whole pool that a publish could not push (new encoder, lost predictions) "
                "is retried once the project has been quiet this long"
            ),
        },
    )
    cleanup_idle_s: float = field(
        default=300.0,
        metadata={
            "env": "EXAMINE_CLEANUP_IDLE_S",
            "doc": "superseded prediction versions are deleted once the project has been quiet this long (deleting locks Label Studio's SQLite database)",
        },
    )
    debounce_s: float = field(
        default=0.2,
        metadata={
            "env": "EXAMINE_DEBOUNCE_S",
            "doc": "events arriving within this many seconds are coalesced into one re-rank",
        },
    )
    view_title: str = field(
        default="examine queue (score: lowest = next)",
        metadata={"env": "EXAMINE_VIEW_TITLE", "doc": "Data Manager tab in queue order (prediction score ascending)"},
    )
    flagged_view_title: str = field(
        default="examine flagged: unusable? (served last)",
        metadata={
            "env": "EXAMINE_FLAGGED_VIEW",
            "doc": "Data Manager tab listing the unlabeled tasks the screening flagged (reasons at /projects/<id>/status)",
        },
    )
    max_wait_s: float = field(
        default=2.0,
        metadata={
            "env": "EXAMINE_MAX_WAIT_S",
            "doc": "a continuous stream of events still gets a re-rank at least this often",
        },
    )
    reconcile_s: float = field(
        default=300.0,
        metadata={
            "env": "EXAMINE_RECONCILE_S",
            "doc": "seconds between reconciliations of each project with Label Studio (tasks, annotations, model_version, webhook); at least 5× the last one's duration (a large project's listing takes minutes)",
        },
    )
    versions_check_s: float = field(
        default=30.0,
        metadata={
            "env": "EXAMINE_VERSIONS_CHECK_S",
            "doc": "seconds between checks that Label Studio still holds every prediction of the project's version (one small request; lost ones are published again)",
        },
    )
    setup_reconcile_s: float = field(
        default=30.0,
        metadata={
            "env": "EXAMINE_SETUP_RECONCILE_S",
            "doc": "a /setup reconciles the project unless it was reconciled this recently and nothing changed (Label Studio calls /setup whenever it lists its ML backends)",
        },
    )
    retry_base_s: float = field(
        default=1.0,
        metadata={"env": "EXAMINE_RETRY_BASE_S", "doc": "first retry delay of a failed job (doubles each time)"},
    )
    retry_max_s: float = field(
        default=60.0, metadata={"env": "EXAMINE_RETRY_MAX_S", "doc": "longest delay between retries of a failed job"}
    )
    image_connect_timeout_s: float = field(
        default=3.0, metadata={"env": "EXAMINE_IMAGE_CONNECT_TIMEOUT_S", "doc": "connect timeout of an image download"}
    )
    image_deadline_s: float = field(
        default=20.0,
        metadata={
            "env": "EXAMINE_IMAGE_DEADLINE_S",
            "doc": "an image download (all hops and bytes) must finish within this",
        },
    )
    image_retry_s: float = field(
        default=60.0,
        metadata={
            "env": "EXAMINE_IMAGE_RETRY_S",
            "doc": "an image that failed for a passing reason is fetched again after this, doubling per failure (≤ 1 h)",
        },
    )
    max_image_mb: int = field(
        default=64, metadata={"env": "EXAMINE_MAX_IMAGE_MB", "doc": "largest image file downloaded"}
    )
    max_decode_mb: int = field(
        default=256,
        metadata={"env": "EXAMINE_MAX_DECODE_MB", "doc": "largest decoded image (pixels x bytes per pixel) accepted"},
    )
    max_request_mb: int = field(
        default=100, metadata={"env": "EXAMINE_MAX_REQUEST_MB", "doc": "largest request body (413 above)"}
    )

    def __post_init__(self) -> None:
        if self.model_args:
            try:
                ok = isinstance(json.loads(self.model_args), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                raise ValueError(f"EXAMINE_MODEL_ARGS must be a JSON object, got {self.model_args!r}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"EXAMINE_SAMPLING must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ValueError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.workers != 1:
            raise ValueError("WORKERS must be 1: the job queue and per-project state live in one process")
        if self.head_size < 1:
            raise ValueError("EXAMINE_HEAD_SIZE must be at least 1")
        if self.job_threads < 1:
            raise ValueError("EXAMINE_JOB_THREADS must be at least 1")
        for name in ("max_image_mb", "max_decode_mb", "max_request_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; a malformed value raises ValueError naming the variable."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError as exc:
                raise ValueError(f"{f.metadata['env']}={raw!r}: {exc}") from None
        return cls(**values)

    def encoder_config(self) -> EncoderConfig:
        """The encoder a new MODEL_DIR gets: EXAMINE_MODEL/EXAMINE_IMG_SIZE/EXAMINE_MODEL_ARGS over the device's recipe."""
        return recipe_encoder_config(
            self.device,
            model=self.model or None,
            img_size=self.img_size or None,
            model_kwargs=json.loads(self.model_args) if self.model_args else None,
        )

    @property
    def auth_required(self) -> bool:
        """True when BASIC_AUTH_USER is set."""
        return bool(self.basic_auth_user)

    @property
    def label_studio_configured(self) -> bool:
        """True when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are both set."""
        return bool(self.label_studio_url and self.label_studio_api_key)


def _convert(kind: object, raw: str) -> object:
    kind = str(kind)
    if kind == "bool":
        value = raw.strip().lower()
        if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected 0 or 1, got {raw!r}")
        return value in ("1", "true", "yes", "on")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "Path":
        return Path(raw)
    if kind == "tuple[str, ...]":
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if kind == "tuple[Path, ...]":
        return tuple(Path(p.strip()) for p in raw.split(",") if p.strip())
    return raw.strip()
