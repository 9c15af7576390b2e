"""Label Studio's ML backend protocol: ``setup``, ``predict`` and ``fit`` (events) → job kinds.

Nothing here waits for Label Studio or for an image: a call validates its payload
(BadRequest → 400), updates what the event itself proves, and queues work through
:meth:`backend.runtime.Backend.submit`. Which event queues which work is the
explicit :data:`EVENT_JOBS` table. Events for projects this backend was never set up
for, or naming tasks it does not know, change nothing (an unknown task at most
queues a reconciliation, which reads Label Studio itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backend.jobs import KINDS
from backend.label_config import annotation_answers, controls_from_config
from backend.payload import (
    PENDING_VERSION,
    BadRequest,
    image_key_from_config,
    parse_id,
    task_ref,
)
from backend.prelabel import result_for
from backend.state import ProjectState

if TYPE_CHECKING:
    from backend.runtime import Backend

log = logging.getLogger(__name__)

#: What a /setup asks for. No "rank": the reconciliation asks for one when it finds a change (new or labeled
#: tasks, a lost or switched version, new embeddings), so a /setup with nothing new publishes nothing.
SETUP_JOBS = ["sync", "pretrain", "embed"]


class ProjectProtocol:
    """One project's side of Label Studio's calls."""

    def __init__(self, backend: Backend, pid: int):
        self.backend = backend
        self.pid = pid
        self.state: ProjectState = backend.states.get(pid)

    def setup(self, payload: dict) -> str:
        """``/setup`` (already verified with Label Studio): remember credentials, reconcile; answer a model_version."""
        schema = payload.get("schema", payload.get("label_config"))
        key = image_key_from_config(schema)
        new_creds = self.backend.remember_setup(self.pid, payload.get("hostname"), payload.get("access_token"))
        with self.state.lock:
            changed = schema is not None and key != self.state.image_key
            if schema is not None:
                self.state.image_key = key
        # Reconcile: events may have been missed, auth or the webhook may have changed. Label Studio
        # calls /setup whenever its ML backends are listed (our own reconciliation lists them), so a
        # project reconciled in the last EXAMINE_SETUP_RECONCILE_S with nothing new is left alone.
        last = self.backend.last_reconcile.get(self.pid)
        recent = last is not None and time.monotonic() - last < self.backend.settings.setup_reconcile_s
        # Our own reconciliation lists the ML backends, which makes Label Studio call /setup while it runs: on a
        # large project (listing 20,000 tasks takes longer than EXAMINE_SETUP_RECONCILE_S) that call must not
        # queue the next reconciliation, or they follow each other for ever.
        running = "running" in self.backend.jobs.pending(self.pid)
        if changed or new_creds or not self.state.synced or not (recent or running):
            log.info("project %s: /setup, reconciling with Label Studio", self.pid)
            self.backend.submit(self.pid, [k for k in KINDS if k in {*SETUP_JOBS, *self.state.pending}], event=False)
        return self.state.published_version or PENDING_VERSION

    def predict(self, tasks: list[dict]) -> list[dict]:
        """One result per task, same order: the task's published queue score and the probe's choice (if any).

        Never fetches an image.

        Tasks the backend does not know yet queue a reconciliation (it lists them from Label Studio,
        embeds them and re-ranks); a task whose image failed is not retried here.
        """
        ids = [task_ref(t, "task id") for t in tasks]
        with self.state.lock:
            unknown = [t for t in ids if t not in self.state.tasks]
        if unknown:
            self.backend.submit(self.pid, SETUP_JOBS)
        scores = self.state.scores()
        version = self.state.published_version or PENDING_VERSION
        out = []
        for tid in ids:
            with self.state.lock:
                result = result_for(self.state, tid)
            # A task not published yet is answered under the pending version: Label Studio stores what /predict
            # answers, and a prediction of the current version here would be a second one once it is published.
            item: dict[str, Any] = {"result": result, "model_version": version if tid in scores else PENDING_VERSION}
            if tid in scores:
                item["score"] = scores[tid]
            out.append(item)
        return out

    def fit(self, event: str, data: dict) -> str:
        """Apply a Label Studio event (see :data:`EVENT_JOBS`); returns "ok" or "ignored"."""
        entry = EVENT_JOBS.get(event)
        if entry is None:
            log.debug("project %s: event %s needs no work", self.pid, event)
            return "ignored"
        handler, kinds = entry
        jobs = handler(self, data)
        jobs = kinds if jobs is None else jobs
        if jobs:
            self.backend.submit(self.pid, list(jobs))
        return "ok"

    # -------------------------------------------------------------- event handlers
    # Each returns the job kinds to queue (None: the table's default, []: nothing).

    def _on_annotation(self, data: dict) -> list[str] | None:
        ann = _obj(data, "annotation")
        task = _obj(data, "task")
        ref = ann.get("task", task.get("id"))
        if ref is None:
            raise BadRequest("annotation event names no task ('annotation.task' or 'task.id')")
        tid = task_ref(ref, "annotation.task")
        self._version_switched(data)
        aid = parse_id(ann["id"], "annotation.id") if ann.get("id") is not None else None
        with self.state.lock:
            info = self.state.tasks.get(tid)
            if info is None:
                return ["sync"]  # a task we do not know: Label Studio is asked, the event changes nothing
            info.labeled = True
            self.state.labeled_at[tid] = time.monotonic()
            info.take_answers(annotation_answers(ann))
            if aid is not None:
                self.state.annotation_task[aid] = tid
            who = ann.get("completed_by")
            who = who.get("id") if isinstance(who, dict) else who
            if isinstance(who, int) and not isinstance(who, bool):
                self.state.annotated_by[who] = time.monotonic()
                if len(self.state.annotated_by) > 1000:  # a forged stream of ids cannot grow it without bound
                    del self.state.annotated_by[min(self.state.annotated_by, key=self.state.annotated_by.__getitem__)]
        return None

    def _on_annotations_deleted(self, data: dict) -> list[str] | None:
        # The payload names annotations only, and anyone who reaches the port could send it: nothing changes
        # until the reconciliation has re-read their tasks from Label Studio (in the background, never inside
        # Label Studio's 1-second webhook call).
        ids = [task_ref(a, "annotations[].id") for a in _list(data, "annotations")]
        with self.state.lock:
            self.state.recheck |= {self.state.annotation_task[a] for a in ids if a in self.state.annotation_task}
        return None

    def _on_tasks_created(self, data: dict) -> list[str] | None:
        for t in _list(data, "tasks"):
            task_ref(t, "tasks[].id")
        return None  # new tasks are listed from Label Studio (not trusted from the event), embedded, ranked

    def _on_tasks_deleted(self, data: dict) -> list[str] | None:
        # Confirmed against Label Studio before anything changes: the reconciliation drops the tasks it no
        # longer lists (a forged event deletes nothing).
        ids = [task_ref(t, "tasks[].id") for t in _list(data, "tasks")]
        with self.state.lock:
            known = [t for t in ids if t in self.state.tasks]
        return ["sync", "rank"] if known or not ids else []

    def _version_switched(self, data: dict) -> bool:
        """The event's project serves another model version than ours: the reconciliation switches it back.

        The payload is not trusted for more than asking: the reconciliation reads the project itself.
        """
        project = data.get("project")
        live = project.get("model_version") if isinstance(project, dict) else None
        with self.state.lock:
            ours = {self.state.published_version, self.state.switching}
            switched = isinstance(live, str) and self.state.published_version is not None and live not in ours
            if switched:
                self.state.versions_due = True  # checked by the next re-rank (no listing of the tasks)
        return switched

    def _on_project_updated(self, data: dict) -> list[str] | None:
        project = _obj(data, "project")
        config = project.get("label_config")
        switched = ["rank"] if self._version_switched(data) else []
        if config is None:
            return switched
        key = image_key_from_config(config)
        if key != self.state.image_key or self.state.config_problem:  # a refused config may have been mended
            return ["sync", "embed", "rank"]
        controls = [t.as_dict() for t in controls_from_config(config)]
        with self.state.lock:
            same = controls == self.state.controls
        return switched if same else ["sync", "rank"]

    def _on_other(self, data: dict) -> list[str] | None:
        return None  # the table's jobs; Label Studio itself is read, the payload is not trusted

    def _on_start_training(self, data: dict) -> list[str] | None:
        self.backend.start_training(self.pid)
        return []


#: Event → (handler, job kinds it queues unless the handler says otherwise).
EVENT_JOBS: dict[str, tuple[Callable[[ProjectProtocol, dict], list[str] | None], list[str]]] = {
    "ANNOTATION_CREATED": (ProjectProtocol._on_annotation, ["rank"]),
    "ANNOTATION_UPDATED": (ProjectProtocol._on_annotation, ["rank"]),
    "ANNOTATIONS_CREATED": (ProjectProtocol._on_other, ["sync", "rank"]),
    "ANNOTATIONS_DELETED": (ProjectProtocol._on_annotations_deleted, ["sync", "rank"]),
    "TASKS_CREATED": (ProjectProtocol._on_tasks_created, ["sync", "pretrain", "embed", "rank"]),
    "TASKS_DELETED": (ProjectProtocol._on_tasks_deleted, ["sync", "rank"]),
    "PROJECT_UPDATED": (ProjectProtocol._on_project_updated, ["sync", "embed", "rank"]),
    "START_TRAINING": (ProjectProtocol._on_start_training, []),
}


def _obj(data: dict, name: str) -> dict:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object, got {type(value).__name__}")
    return value


def _list(data: dict, name: str) -> list:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"'{name}' must be a list, got {type(value).__name__}")
    return value
