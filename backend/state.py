"""Per-project state on disk: which task shows which image, what is labeled, what was pushed.

Written atomically so a crash never leaves half a file: the small fields in
``MODEL_DIR/projects/<id>/state.json`` (temporary file + fsync + rename), the tasks,
their predictions and the annotation index in ``tasks.db`` beside it, where a save
writes only the rows that changed (:mod:`backend.task_rows`; a 200,000-task project
is not rewritten whole for every label), the pending work in ``pending.json``. It
survives restarts. A damaged file affects its project only:
it is moved aside (``state.json.damaged``), the problem is reported at
``/projects/<id>/status`` naming the file, and the state is rebuilt from Label
Studio by the next reconciliation; nothing is published before that.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.pool_matrix import PoolMatrix
from backend.publish import Published
from backend.task_info import TaskInfo, TaskTable
from backend.task_rows import FILE as ROWS_FILE
from backend.task_rows import RowPlan, RowSnapshot, load_rows, write_rows

log = logging.getLogger(__name__)


def _controls(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The saved control tags; a state saved when only the first Choices tag was kept gives that one."""
    if isinstance(raw.get("controls"), list):
        return [c for c in raw["controls"] if isinstance(c, dict)]
    old = raw.get("choices")
    if isinstance(old, dict) and {"name", "to_name", "choices"} <= old.keys():
        kind = "multi" if old.get("multiple") else "class"
        return [
            {"name": old["name"], "to_name": old["to_name"], "tag": "Choices", "labels": old["choices"], "kind": kind}
        ]
    return []


@dataclass
class ProjectState:
    """Everything the backend must remember about one Label Studio project."""

    pid: int
    image_key: str | None = None
    controls: list[dict[str, Any]] = field(default_factory=list)  # the config's tags on the image (ControlTag.as_dict)
    tasks: TaskTable = field(default_factory=TaskTable)  # a plain dict given is made one
    annotation_task: dict[int, int] = field(default_factory=dict)  # annotation id → task id
    encoder_version: str | None = None
    published_version: str | None = None  # the version the project was last switched to
    complete_version: str | None = None  # the last version pushed for the whole pool
    queue: list[int] = field(default_factory=list)  # task ids of the ranking in force, best first
    queue_groups: list[int] = field(default_factory=list)  # the group of each queue entry (−1: none)
    queue_labels: int = 0  # labeled tasks the ranking in force knew of
    batch: list[list[int]] = field(default_factory=list)  # [task id, group] of the batch being served
    predictions: dict[int, Published] = field(default_factory=dict)  # task id → its prediction of published_version
    next_cluster: int = 1  # the next unused prediction cluster id
    stale_versions: list[str] = field(default_factory=list)  # pushed or aborted, to delete in the background
    synced: bool = False  # reconciled with Label Studio since this state was created
    full_due: bool = False  # the next publish pushes a new version for the whole pool (new encoder, lost predictions)
    filling: bool = False  # a version pushed head first: the rest of the pool's predictions are being added
    last_publish: float | None = None  # unix time of the last successful publish
    last_publish_s: float | None = None  # its duration
    publishes: int = 0  # publishes so far
    probe: dict[str, Any] = field(default_factory=dict)  # what the labels taught: classes, counts, accuracy, why off
    proposals: Any = field(default=None, repr=False, compare=False)  # backend.prelabel.Proposals (not saved)
    pending: list[str] = field(default_factory=list)  # job kinds not yet done (pending.json)
    problems: list[str] = field(default_factory=list)  # damaged files etc. (not saved; shown at /status)
    flagged_view: bool = False  # the flagged tab was made since start (not saved: checked again after a restart)
    screened: str | None = None  # fingerprint of the images last screened (not saved: a restart screens again)
    # Not saved either: tasks a deletion event named, re-read from Label Studio at the next reconciliation (an
    # event never deletes by itself), and when a webhook last reported a task labeled (a reconciliation that
    # listed the task before that keeps the label).
    recheck: set[int] = field(default_factory=set)
    config_problem: str | None = None  # why the project's labeling config cannot be ranked (not saved either)
    labeled_at: dict[int, float] = field(default_factory=dict)
    annotated_by: dict[int, float] = field(default_factory=dict)  # user id → when their last label arrived (not saved)
    switching: str | None = None  # the version a publish is switching the project to (its own event is no change)
    versions_due: bool = False  # an event showed the project serving another version: checked at the next re-rank
    pool: PoolMatrix = field(default_factory=PoolMatrix, repr=False, compare=False)  # kept embeddings (not saved)
    rows_kept: Any = field(default=None, repr=False, compare=False)  # backend.pool_rows.PoolRows (not saved)
    reconcile_took: float = 0.0  # seconds the last reconciliation took (not saved): spaces the next one
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tasks" and not isinstance(value, TaskTable):
            value = TaskTable(value)  # its revision tells the re-rank's cached rows when tasks came or went
        object.__setattr__(self, name, value)

    def annotators(self, window_s: float = 600.0) -> int:
        """How many people labeled in the last ``window_s`` seconds (at least 1): tasks Label Studio serves at once."""
        now = time.monotonic()
        with self.lock:
            return max(1, sum(1 for at in self.annotated_by.values() if now - at <= window_s))

    def counts(self) -> dict[str, int]:
        """How many tasks, embedded, labeled and failed."""
        with self.lock:
            infos = list(self.tasks.values())
        embedded = labeled = failed = flagged = 0
        for i in infos:  # one pass: /status is polled, and a project may hold 200,000 tasks
            embedded += bool(i.key)
            labeled += i.labeled
            failed += bool(i.error)
            flagged += bool(i.flag) and not i.labeled
        return {"tasks": len(infos), "embedded": embedded, "labeled": labeled, "failed": failed, "flagged": flagged}

    def errors(self) -> dict[int, str]:
        """Per-task errors, by task id."""
        with self.lock:
            return dict(sorted((t, i.error) for t, i in self.tasks.items() if i.error))  # few: sorted after the filter

    def scores(self) -> dict[int, float]:
        """Each unlabeled task's published score, its queue order (lowest = served first)."""
        with self.lock:
            return {t: p.score for t, p in self.predictions.items() if t in self.tasks and not self.tasks[t].labeled}

    # ------------------------------------------------------------ storage

    def to_json(self) -> dict[str, Any]:
        """The saved form of the small fields (no tasks, predictions nor annotations: see :mod:`backend.task_rows`;
        no pending work, no problems, no lock)."""
        return {
            "pid": self.pid,
            "image_key": self.image_key,
            "controls": self.controls,
            "probe": self.probe,
            "encoder_version": self.encoder_version,
            "published_version": self.published_version,
            "complete_version": self.complete_version,
            "queue": self.queue,
            "queue_groups": self.queue_groups,
            "queue_labels": self.queue_labels,
            "batch": self.batch,
            "next_cluster": self.next_cluster,
            "stale_versions": self.stale_versions,
            "synced": self.synced,
            "full_due": self.full_due,
            "filling": self.filling,
            "last_publish": self.last_publish,
            "last_publish_s": self.last_publish_s,
            "publishes": self.publishes,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProjectState:
        """Inverse of :meth:`to_json` (a state.json written before ``tasks.db`` holds the tasks too); raises
        ValueError/TypeError/KeyError on a malformed dict."""
        return cls(
            pid=int(raw["pid"]),
            image_key=raw.get("image_key"),
            controls=_controls(raw),
            probe=dict(raw.get("probe") or {}),
            tasks=TaskTable({int(t): TaskInfo.from_json(i) for t, i in raw.get("tasks", {}).items()}),
            annotation_task={int(a): int(t) for a, t in raw.get("annotation_task", {}).items()},
            encoder_version=raw.get("encoder_version"),
            published_version=raw.get("published_version"),
            complete_version=raw.get("complete_version"),
            queue=[int(t) for t in raw.get("queue", [])],
            queue_groups=[int(g) for g in raw.get("queue_groups", [])],
            queue_labels=int(raw.get("queue_labels") or 0),
            batch=[[int(t), int(g)] for t, g in raw.get("batch") or []],
            predictions={int(t): Published.from_json(p) for t, p in (raw.get("predictions") or {}).items()},
            next_cluster=int(raw.get("next_cluster") or 1),
            stale_versions=list(raw.get("stale_versions", [])),
            synced=bool(raw.get("synced", False)),
            full_due=bool(raw.get("full_due", False)),
            filling=bool(raw.get("filling", False)),
            last_publish=raw.get("last_publish"),
            last_publish_s=raw.get("last_publish_s"),
            publishes=int(raw.get("publishes") or 0),
        )


class StateStore:
    """Loads and saves :class:`ProjectState` objects under ``root/projects/<id>/``."""

    def __init__(self, root: Path):
        self.root = Path(root) / "projects"
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[int, ProjectState] = {}
        self._rows: dict[int, RowSnapshot] = {}  # what tasks.db holds, per project
        self._saving: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def folder(self, pid: int) -> Path:
        """``MODEL_DIR/projects/<pid>``."""
        return self.root / str(int(pid))

    def exists(self, pid: int) -> bool:
        """True for a project this backend was set up for (its state is on disk or in memory)."""
        with self._lock:
            if pid in self._cache:
                return True
        folder = self.folder(pid)
        if folder.exists() and not folder.is_dir():
            return True  # a project folder replaced by a file: loaded (and repaired, reported) like a damaged state
        return any((folder / n).exists() for n in ("state.json", "pending.json", "state.json.damaged"))

    def get(self, pid: int) -> ProjectState:
        """The project's state: loaded once, then shared; a damaged file is set aside and reported."""
        with self._lock:
            if pid not in self._cache:
                self._cache[pid] = self._load(pid)
            return self._cache[pid]

    def _set_aside(self, path: Path, what: str, then: str = "the state is rebuilt from Label Studio") -> str:
        """Move a file or folder that is not what it should be out of the way; returns the problem to report."""
        aside = path.with_name(f"{path.name}.damaged.{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            return f"{what} is not what it should be and cannot be moved aside ({exc}); move it away by hand"
        rel = aside.relative_to(self.root.parent)
        return f"{what} was replaced by something else; it was moved to {rel} and {then}"

    def _load(self, pid: int) -> ProjectState:
        folder = self.folder(pid)
        path, problems = folder / "state.json", []
        state = ProjectState(pid)
        if folder.exists() and not folder.is_dir():
            problems.append(self._set_aside(folder, f"projects/{pid} (the project's folder)"))
        if path.exists() and not path.is_file():
            problems.append(self._set_aside(path, f"projects/{pid}/state.json"))
        rows, loaded = folder / ROWS_FILE, False
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                state = ProjectState.from_json(raw)
                if state.pid != pid:
                    raise ValueError(f"it belongs to project {state.pid}")
                loaded = "tasks" not in raw  # a state.json from before tasks.db holds the tasks itself
            except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
                try:
                    os.replace(path, path.with_name("state.json.damaged"))
                except OSError as move:
                    log.error("project %s: cannot move the damaged state.json aside: %s", pid, move)
                state = ProjectState(pid)
                problems.append(
                    f"projects/{pid}/state.json was unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
                    f"it was moved to projects/{pid}/state.json.damaged and the state is being rebuilt from "
                    "Label Studio (cached embeddings are reused); delete the .damaged file once the project is healthy"
                )
        elif (folder / "state.json.damaged").exists():
            problems.append(f"projects/{pid}/state.json.damaged is an earlier damaged state; the state was rebuilt")
        snapshot = RowSnapshot()
        if loaded:
            try:
                tasks, state.predictions, state.annotation_task, snapshot = load_rows(rows)
                state.tasks = TaskTable(tasks)
            except ValueError as exc:
                problems.append(
                    f"projects/{pid}/{exc}; "
                    + self._set_aside(
                        rows, f"projects/{pid}/{ROWS_FILE}", "its tasks are listed again from Label Studio"
                    )
                )
        elif rows.exists():  # rows without the state they belong to (or an older state.json holding its own)
            rows.unlink()
        self._rows[pid] = snapshot
        pending = folder / "pending.json"
        if pending.is_file():
            try:
                raw = json.loads(pending.read_text())
                if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
                    raise ValueError("not a list of job names")
                state.pending = list(raw)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                state.pending = ["sync"]
                problems.append(
                    f"projects/{pid}/pending.json was unreadable ({str(exc)[:80]}); ignored: a full "
                    "reconciliation with Label Studio replaces it"
                )
        for p in problems:
            log.error("project %s: %s", pid, p)
        state.problems = problems
        if problems:
            state.synced = False
        return state

    def known_projects(self) -> list[int]:
        """Projects with a state on disk or in memory, in id order."""
        on_disk = {int(p.name) for p in self.root.iterdir() if p.name.isdigit() and self.exists(int(p.name))}
        with self._lock:
            return sorted(on_disk | set(self._cache))

    def save(self, state: ProjectState) -> None:
        """Write the whole state (tasks included: done by the background jobs)."""
        folder, pid = self.folder(state.pid), state.pid
        found = []
        if folder.exists() and not folder.is_dir():
            found.append(self._set_aside(folder, f"projects/{pid} (the project's folder)", "the state is written anew"))
        if (folder / "state.json").is_dir():
            found.append(self._set_aside(folder / "state.json", f"projects/{pid}/state.json", "it is written anew"))
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            saving = self._saving.setdefault(pid, threading.Lock())
        with saving:  # one save of a project at a time: each writes its difference to the last
            with self._lock:
                snapshot = self._rows.setdefault(pid, RowSnapshot())
            if not (folder / ROWS_FILE).exists():
                snapshot = self._rows[pid] = RowSnapshot()  # every row is written
            with state.lock:
                for p in found:
                    log.error("project %s: %s", pid, p)
                    state.problems = [*state.problems, p][-20:]
                plan = RowPlan(snapshot, state.tasks, state.predictions, state.annotation_task)
                data = json.dumps(state.to_json())
            # The rows first, then the small fields: a crash between them leaves a state.json that is older than
            # its rows, which the reconciliation repairs like a state restored from a backup.
            write_rows(folder / ROWS_FILE, snapshot, plan)
            self._write(state.pid, "state.json", data)
        self.save_pending(state)

    def save_pending(self, state: ProjectState) -> None:
        """Write only the pending job kinds: small and fast, fit for the webhook path.

        Not fsynced (an fsync took up to 200 ms on a busy disk, inside Label Studio's 1 s webhook call):
        it survives the process being killed; work lost to an OS crash is found by the reconciliation.
        """
        with state.lock:
            data = json.dumps(state.pending)
        self._write(state.pid, "pending.json", data, sync=False)

    def _write(self, pid: int, name: str, data: str, *, sync: bool = True) -> None:
        folder = self.folder(pid)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(folder / name)
