"""Per-project state on disk: which task shows which image, what is labeled, what was pushed.

Written atomically (temporary file + rename) so a crash never leaves half a file;
it lives in ``MODEL_DIR/projects/<id>/state.json`` and survives restarts.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskInfo:
    """What the backend knows of one task."""

    uri: str | None = None  # the image reference in task.data
    key: str | None = None  # sha256 of the image bytes once embedded
    labeled: bool = False
    label: str | None = None  # first class label of its latest annotation, for label-aware policies
    error: str | None = None  # why the task has no embedding (shown per task)


@dataclass
class ProjectState:
    """Everything the backend must remember about one Label Studio project."""

    pid: int
    image_key: str | None = None
    tasks: dict[int, TaskInfo] = field(default_factory=dict)
    annotation_task: dict[int, int] = field(default_factory=dict)  # annotation id → task id
    encoder_version: str | None = None
    published_version: str | None = None
    stale_versions: list[str] = field(default_factory=list)  # pushed, to delete in the background
    synced: bool = False
    full_due: bool = False  # only the head of the current ranking is in Label Studio
    pending: list[str] = field(default_factory=list)  # job kinds not yet done (survive restarts)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # ------------------------------------------------------------ queries

    def unlabeled_ready(self) -> list[int]:
        """Unlabeled tasks that have an embedding, in task id order."""
        return sorted(t for t, info in self.tasks.items() if info.key and not info.labeled)

    def counts(self) -> dict[str, int]:
        infos = self.tasks.values()
        return {
            "tasks": len(self.tasks),
            "embedded": sum(1 for i in infos if i.key),
            "labeled": sum(1 for i in infos if i.labeled),
            "failed": sum(1 for i in infos if i.error),
        }

    def errors(self) -> dict[int, str]:
        return {t: i.error for t, i in sorted(self.tasks.items()) if i.error}

    # ------------------------------------------------------------ storage

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "image_key": self.image_key,
            "tasks": {str(t): asdict(i) for t, i in self.tasks.items()},
            "annotation_task": {str(a): t for a, t in self.annotation_task.items()},
            "encoder_version": self.encoder_version,
            "published_version": self.published_version,
            "stale_versions": self.stale_versions,
            "synced": self.synced,
            "full_due": self.full_due,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ProjectState":
        return cls(
            pid=int(raw["pid"]),
            image_key=raw.get("image_key"),
            tasks={int(t): TaskInfo(**i) for t, i in raw.get("tasks", {}).items()},
            annotation_task={int(a): int(t) for a, t in raw.get("annotation_task", {}).items()},
            encoder_version=raw.get("encoder_version"),
            published_version=raw.get("published_version"),
            stale_versions=list(raw.get("stale_versions", [])),
            synced=bool(raw.get("synced", False)),
            full_due=bool(raw.get("full_due", False)),
        )


class StateStore:
    """Loads and saves :class:`ProjectState` objects under ``root/projects/<id>/``."""

    def __init__(self, root: Path):
        self.root = Path(root) / "projects"
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[int, ProjectState] = {}
        self._lock = threading.Lock()

    def folder(self, pid: int) -> Path:
        return self.root / str(int(pid))

    def get(self, pid: int) -> ProjectState:
        with self._lock:
            if pid not in self._cache:
                path = self.folder(pid) / "state.json"
                state = ProjectState.from_json(json.loads(path.read_text())) if path.is_file() else ProjectState(pid)
                pending = self.folder(pid) / "pending.json"
                if pending.is_file():
                    state.pending = list(json.loads(pending.read_text()))
                self._cache[pid] = state
            return self._cache[pid]

    def known_projects(self) -> list[int]:
        return sorted(
            int(p.name) for p in self.root.iterdir()
            if p.name.isdigit() and ((p / "state.json").is_file() or (p / "pending.json").is_file())
        )

    def save(self, state: ProjectState) -> None:
        """Write the whole state (tasks included: done by the background jobs)."""
        with state.lock:
            data = json.dumps(state.to_json())
        self._write(state.pid, "state.json", data)
        self.save_pending(state)

    def save_pending(self, state: ProjectState) -> None:
        """Write only the pending job kinds: small and fast, fit for the webhook path."""
        with state.lock:
            data = json.dumps(state.pending)
        self._write(state.pid, "pending.json", data)

    def _write(self, pid: int, name: str, data: str) -> None:
        folder = self.folder(pid)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(folder / name)
