"""What the worker side needs from the running backend: a small interface, so workers never import the runtime.

``backend.runtime.Backend`` provides it; ``backend.worker`` and ``backend.janitor`` depend only on this.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from backend.jobs import JobQueue
from backend.labelstudio import LabelStudio
from backend.settings import Settings
from backend.state import StateStore
from examine.encoder import Encoder
from examine.workspace import Workspace


class BackendContext(Protocol):
    """Shared services and counters of one backend process."""

    settings: Settings
    workspace: Workspace
    states: StateStore
    jobs: JobQueue
    problems: list[str]  # backend-wide problems shown at /status
    publishes: int
    publish_failures: int
    last_reconcile: dict[int, float]
    pretrain_lock: threading.Lock  # projects run in parallel; the shared encoder is pretrained once
    own_urls: set[str]  # this backend's base URLs as Label Studio calls them (seen at /setup)

    def submit(self, pid: int, kinds: list[str], *, event: bool = True) -> None:
        """Queue jobs of ``kinds`` for project ``pid``."""

    def add_problem(self, msg: str) -> None:
        """Record a backend-wide problem shown at /status."""

    def quiet_for(self, pid: int) -> float:
        """Seconds since the project's last event."""

    def has_credentials(self, pid: int) -> bool:
        """True when the backend can talk to Label Studio for this project."""

    def client(self, pid: int) -> LabelStudio:
        """The REST client for the project's Label Studio."""

    def image_client(self, pid: int) -> LabelStudio:
        """The client used to download the project's images."""

    def encoder(self, pid: int) -> Encoder | None:
        """The encoder that embeds this project's images, or None before the first pretraining."""

    def project_encoder_dir(self, pid: int) -> Path:
        """Where the project's continued-training encoder lives."""
