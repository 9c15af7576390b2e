"""The per-project model: what Label Studio's calls and events mean for the queue.

Keeps the familiar shape of Label Studio ML backends — ``predict(tasks, context)``
and ``fit(event, data)`` — on top of the ``examine`` library:

- ``/setup`` and ``TASKS_CREATED``: learn the tasks, embed the new images (in the
  background), rank, publish;
- ``ANNOTATION_*``, ``ANNOTATIONS_DELETED``, ``TASKS_DELETED``: update the labeled
  set from the event itself (no full re-listing: 20,000 tasks take ~18 s to list)
  and re-rank from stored embeddings;
- ``START_TRAINING``: continue the MAE on the project's images, re-embed, re-rank.

Publishing pushes the ranking as predictions (empty ``result``; ``score`` = queue
position / pool size, so the LOWEST score is the most valuable) under a new
model_version: the head of the queue first, then the project's ``model_version``
switches to it (``/next`` follows at once), then the rest. Old versions are
deleted by a janitor thread, never on the hot path. Annotations are only read.
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings
from backend.state import ProjectState, StateStore, TaskInfo
from examine.embed import Source, embed_sources
from examine.encoder import Encoder, EncoderConfig, create_encoder
from examine.images import ImageLoadError, load_image
from examine.ranking import DEFAULT_POLICY, rank
from examine.workspace import Workspace

log = logging.getLogger(__name__)

VERSION_PREFIX = "examine-"
SAMPLING_LS = {"uncertainty": "Uncertainty sampling", "sequential": "Sequential sampling"}
_EMBED_CHUNK = 2048  # tasks per embed_sources call: several 512-image CUDA batches, so its pipeline overlaps
_BULK_BATCH = 20000


# ------------------------------------------------------------------ payload helpers


def project_id(value: Any) -> int:
    """Label Studio sends projects as ``1``, ``"1"`` or ``"1.1795638417"`` (id.timestamp)."""
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(str(value).split(".")[0])
    except (TypeError, ValueError):
        raise ValueError(f"cannot read a project id from {value!r}") from None


def image_key_from_config(label_config: str | None) -> str | None:
    """The task data key the labeling config shows as an image (``<Image value="$image"/>``)."""
    if not label_config:
        return None
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return None
    for el in root.iter():
        value = el.attrib.get("value", "")
        if el.tag == "Image" and value.startswith("$"):
            return value[1:]
    return None


def annotation_label(annotation: dict) -> str | None:
    """The first class label in an annotation's result (choices, labels, rectanglelabels, …)."""
    if annotation.get("was_cancelled"):
        return None
    for item in annotation.get("result") or []:
        value = item.get("value") or {}
        for key, v in value.items():
            if key in ("choices", "labels") or key.endswith("labels"):
                if isinstance(v, list) and v:
                    return str(v[0])
    return None


def new_version() -> str:
    return VERSION_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")


# ------------------------------------------------------------------ the backend


class Backend:
    """All projects of one backend process: settings, encoder, store, state, jobs."""

    def __init__(self, settings: Settings):
        from backend.jobs import JobQueue

        from examine.ranking import POLICIES

        if settings.policy and settings.policy not in POLICIES:
            raise ValueError(f"EXAMINE_POLICY={settings.policy!r} is not a policy; choose one of {sorted(POLICIES)}")
        self.settings = settings
        self.workspace = Workspace(settings.model_dir)
        self.states = StateStore(settings.model_dir)
        self.jobs = JobQueue(self._run_jobs, debounce_s=settings.debounce_s)
        self._clients: dict[int, LabelStudio] = {}
        self._setup_creds: dict[int, tuple[str, str]] = {}
        self._encoders: dict[str, Encoder] = {}
        self._lock = threading.RLock()
        self._train_threads: dict[int, threading.Thread] = {}
        self._last_event: dict[int, float] = {}
        self.janitor = _Janitor(self)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.jobs.start()
        self.janitor.start()
        for pid in self.states.known_projects():  # resume work cut short by a restart
            state = self.states.get(pid)
            if state.pending:
                # Events applied in memory only (labeled flags) may be lost: re-list the tasks first.
                log.info("project %s: resuming %s after restart", pid, state.pending)
                self.jobs.submit(pid, sorted(set(state.pending) | {"sync"}))

    def stop(self) -> None:
        self.jobs.stop()
        self.janitor.stop()

    def submit(self, pid: int, kinds: list[str]) -> None:
        """Record work durably, then queue it."""
        state = self.states.get(pid)
        with state.lock:
            state.pending = sorted(set(state.pending) | set(kinds))
        self.states.save_pending(state)
        if kinds != ["full"]:
            self._last_event[pid] = time.monotonic()
        self.jobs.submit(pid, kinds)

    def quiet_for(self, pid: int) -> float:
        """Seconds since the last event or request that asked for work on the project."""
        return time.monotonic() - self._last_event.get(pid, 0.0)

    # -------------------------------------------------------------- clients

    def remember_setup(self, pid: int, hostname: str | None, token: str | None) -> None:
        if hostname and token:
            self._setup_creds[pid] = (hostname, token)

    def has_credentials(self, pid: int) -> bool:
        s = self.settings
        return bool(s.label_studio_url and s.label_studio_api_key) or pid in self._setup_creds

    def client(self, pid: int) -> LabelStudio:
        """The REST client for a project: the configured Label Studio, else the one that called /setup."""
        with self._lock:
            if pid in self._clients:
                return self._clients[pid]
            s = self.settings
            if s.label_studio_url and s.label_studio_api_key:
                url, key = s.label_studio_url, s.label_studio_api_key
            elif pid in self._setup_creds:
                url, key = self._setup_creds[pid]
                url = s.label_studio_url or url
            else:
                raise LabelStudioError(
                    f"project {pid}: no Label Studio credentials yet; set LABEL_STUDIO_URL and "
                    "LABEL_STUDIO_API_KEY, or reconnect the backend in the project settings (/setup sends them)"
                )
            client = LabelStudio(url, key, allowed_hosts=s.allowed_hosts)
            self._clients[pid] = client
            return client

    # -------------------------------------------------------------- encoder

    def encoder(self, pid: int) -> Encoder | None:
        """The project's own continued-training encoder, else the shared one; None before pretraining."""
        folder = self.project_encoder_dir(pid)
        if (folder / "encoder.json").is_file():
            return self._cached_encoder(folder)
        if self.settings.weights:
            return self._cached_encoder(Path(self.settings.weights))
        if self.workspace.has_encoder():
            return self._cached_encoder(self.workspace.encoder_dir)
        return None

    def _cached_encoder(self, path: Path) -> Encoder:
        key = f"{path}:{path.stat().st_mtime_ns if path.exists() else 0}"
        with self._lock:
            if key not in self._encoders:
                if path.is_dir():
                    enc = Encoder.load(path)
                else:
                    cfg = EncoderConfig(self.settings.model, img_size=self.settings.img_size)
                    enc = create_encoder(cfg, weights=path)
                self._encoders[key] = enc
            return self._encoders[key]

    def project_encoder_dir(self, pid: int) -> Path:
        return self.states.folder(pid) / "encoder"

    # -------------------------------------------------------------- jobs

    def _run_jobs(self, pid: int, kinds: list[str]) -> None:
        project = ProjectModel(self, pid)
        t0 = time.perf_counter()
        for kind in kinds:
            getattr(project, f"job_{kind}")()
            state = self.states.get(pid)
            with state.lock:
                state.pending = [k for k in state.pending if k != kind]
            self.states.save(state)
        log.info("project %s: %s done in %.2f s", pid, "+".join(kinds), time.perf_counter() - t0)

    def start_training(self, pid: int) -> None:
        with self._lock:
            running = self._train_threads.get(pid)
            if running and running.is_alive():
                log.info("project %s: training already running; request ignored", pid)
                return
            t = threading.Thread(target=self._train, args=(pid,), name=f"examine-train-{pid}", daemon=True)
            self._train_threads[pid] = t
            t.start()

    def _train(self, pid: int) -> None:
        try:
            ProjectModel(self, pid).train()
            self.submit(pid, ["embed", "rank"])
        except Exception:
            log.exception("project %s: training failed; the previous encoder stays in use", pid)


class _Janitor(threading.Thread):
    """Housekeeping that must never compete with annotators.

    Label Studio on SQLite holds its write lock while it deletes a version
    (~70 s for 20,000 predictions) or imports a batch, and ``/next`` waits for
    it. So after a re-rank only the head of the queue is pushed; the full
    ranking is pushed once the project has been quiet for
    ``EXAMINE_FULL_PUBLISH_IDLE_S``, and superseded versions are deleted one at a
    time only after ``EXAMINE_CLEANUP_IDLE_S`` without events.
    """

    def __init__(self, backend: Backend, tick: float = 1.0):
        super().__init__(name="examine-janitor", daemon=True)
        self.backend = backend
        self.tick = tick
        self._stop_event = threading.Event()

    def put(self, pid: int, version: str) -> None:
        """Mark a version for deletion (persisted in the project's state)."""
        state = self.backend.states.get(pid)
        with state.lock:
            if version not in state.stale_versions:
                state.stale_versions.append(version)
        self.backend.states.save(state)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.tick):
            for pid in self.backend.states.known_projects():
                try:
                    self._housekeep(pid)
                except Exception:  # keep the janitor alive; retry on the next tick
                    log.exception("project %s: housekeeping failed", pid)

    def _housekeep(self, pid: int) -> None:
        backend, s = self.backend, self.backend.settings
        if not backend.has_credentials(pid):
            return  # after a restart without LABEL_STUDIO_* variables: wait for the next /setup
        quiet = backend.quiet_for(pid)
        state = backend.states.get(pid)
        if state.full_due and quiet >= s.full_publish_idle_s and backend.jobs.idle():
            state.full_due = False
            backend.submit(pid, ["full"])
            return
        stale = [v for v in state.stale_versions if v != state.published_version]
        if not stale or quiet < s.cleanup_idle_s or not backend.jobs.idle():
            return
        version = stale[0]
        try:
            n = backend.client(pid).delete_model_version(pid, version)
            log.info("project %s: deleted %d predictions of superseded version %s", pid, n, version)
        except LabelStudioError as exc:
            log.warning("project %s: could not delete version %s yet (%s); will retry", pid, version, exc)
            return
        with state.lock:
            state.stale_versions = [v for v in state.stale_versions if v != version]
        backend.states.save(state)


class ProjectModel:
    """One Label Studio project as the backend sees it."""

    def __init__(self, backend: Backend, pid: int):
        self.backend = backend
        self.settings = backend.settings
        self.pid = pid
        self.state: ProjectState = backend.states.get(pid)

    def save(self) -> None:
        self.backend.states.save(self.state)

    # -------------------------------------------------------------- protocol

    def setup(self, payload: dict) -> str:
        """Handle ``/setup``: remember credentials and config, start the first sync; answer a model_version."""
        self.backend.remember_setup(self.pid, payload.get("hostname"), payload.get("access_token"))
        key = image_key_from_config(payload.get("schema") or payload.get("label_config"))
        with self.state.lock:
            changed = key != self.state.image_key
            self.state.image_key = key
        if changed or not self.state.synced:
            self.backend.submit(self.pid, ["sync", "pretrain", "embed", "rank"])
        else:
            self.save()
        return self.state.published_version or "examine-pending"

    def predict(self, tasks: list[dict], context: dict | None = None) -> list[dict]:
        """One result per task, same order: the task's current queue score (tasks not embedded are embedded now)."""
        new = [t for t in tasks if int(t["id"]) not in self.state.tasks or not self.state.tasks[int(t["id"])].key]
        if new:
            self._learn_tasks(new)
            if self.backend.encoder(self.pid) is not None:
                self._embed([int(t["id"]) for t in new])
            self.backend.submit(self.pid, ["pretrain", "embed", "rank"])
        scores = self._scores()
        version = self.state.published_version or "examine-pending"
        out = []
        for t in tasks:
            s = scores.get(int(t["id"]))
            item: dict[str, Any] = {"result": [], "model_version": version}
            if s is not None:
                item["score"] = s
            out.append(item)
        return out

    def fit(self, event: str, data: dict) -> None:
        """Translate a Label Studio event into background work (never blocks for long)."""
        if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            ann = data.get("annotation") or {}
            task = data.get("task") or {}
            tid = ann.get("task") or task.get("id")
            if tid is None:
                return
            if isinstance(tid, dict):
                tid = tid.get("id")
            with self.state.lock:
                info = self.state.tasks.setdefault(int(tid), TaskInfo())
                info.labeled = True
                info.label = annotation_label(ann) or info.label
                if ann.get("id") is not None:
                    self.state.annotation_task[int(ann["id"])] = int(tid)
            if task.get("data") and info.uri is None:
                self._learn_tasks([task])
            self.backend.submit(self.pid, ["rank"])
        elif event == "ANNOTATIONS_DELETED":
            # The payload names annotations only; whether their tasks are still labeled is learnt
            # by re-listing in the background (never inside Label Studio's 1-second webhook call).
            ids = [a.get("id") for a in data.get("annotations") or [] if isinstance(a, dict)]
            with self.state.lock:
                for a in ids:
                    tid = self.state.annotation_task.pop(int(a), None) if a is not None else None
                    if tid in self.state.tasks:
                        self.state.tasks[tid].label = None  # re-read by the sync if still labeled
            self.backend.submit(self.pid, ["sync", "rank"])
        elif event == "TASKS_CREATED":
            tasks = data.get("tasks") or []
            if tasks and all(isinstance(t, dict) and t.get("data") for t in tasks):
                self._learn_tasks(tasks)
                self.backend.submit(self.pid, ["pretrain", "embed", "rank"])
            else:
                self.backend.submit(self.pid, ["sync", "pretrain", "embed", "rank"])
        elif event == "TASKS_DELETED":
            ids = [t.get("id") if isinstance(t, dict) else t for t in data.get("tasks") or []]
            with self.state.lock:
                for tid in ids:
                    if tid is not None:
                        self.state.tasks.pop(int(tid), None)
            self.backend.submit(self.pid, ["rank"] if ids else ["sync", "rank"])
        elif event == "START_TRAINING":
            self.backend.start_training(self.pid)
        elif event in ("PROJECT_UPDATED",):
            config = (data.get("project") or {}).get("label_config")
            if config and image_key_from_config(config) != self.state.image_key:
                self.state.image_key = image_key_from_config(config)
                self.backend.submit(self.pid, ["sync", "embed", "rank"])
        else:
            log.debug("project %s: event %s needs no work", self.pid, event)

    # -------------------------------------------------------------- jobs

    def job_sync(self) -> None:
        """Re-list the project's tasks: new tasks, deleted tasks, labeled flags, labels."""
        client = self.backend.client(self.pid)
        if self.state.image_key is None:
            self.state.image_key = image_key_from_config(client.get_project(self.pid).get("label_config"))
        seen: set[int] = set()
        tasks = list(client.iter_tasks(self.pid, page_size=5000))
        self._learn_tasks(tasks)
        need_labels = []
        with self.state.lock:
            for t in tasks:
                tid = int(t["id"])
                seen.add(tid)
                info = self.state.tasks[tid]
                labeled = bool(t.get("is_labeled")) or int(t.get("total_annotations") or 0) > 0
                if labeled and (not info.labeled or info.label is None):
                    need_labels.append(tid)
                info.labeled = labeled
            for tid in set(self.state.tasks) - seen:
                del self.state.tasks[tid]
            self.state.synced = True
        self._ensure_webhook_auth(client)
        if need_labels and self._policy_uses_labels():
            self._recheck_tasks(need_labels)
        self.save()
        log.info("project %s: synced %d tasks (%s)", self.pid, len(tasks), self.state.counts())

    def job_pretrain(self) -> None:
        """Pretrain the shared MAE encoder on this project's images when no encoder exists yet."""
        if self.backend.encoder(self.pid) is not None:
            return
        from examine.mae import auto_epochs, default_pretrain_config, pretrain

        images = self._decoded_images()
        if len(images) < 2:
            log.warning("project %s: %d readable images; MAE pretraining waits for more", self.pid, len(images))
            return
        enc_cfg = EncoderConfig(self.settings.model, img_size=self.settings.img_size)
        _, cfg = default_pretrain_config(self.settings.device)
        cfg = replace(cfg, epochs=self.settings.pretrain_epochs or auto_epochs(len(images)))
        log.info("project %s: pretraining the MAE on %d images for %d epochs", self.pid, len(images), cfg.epochs)
        pretrain(images, self.backend.workspace.encoder_dir, cfg, encoder_config=enc_cfg,
                 device=self.settings.device, progress=False)

    def job_embed(self) -> None:
        """Embed every task whose image is not in the store for the current encoder."""
        encoder = self.backend.encoder(self.pid)
        if encoder is None:
            return
        with self.state.lock:
            if self.state.encoder_version != encoder.version:
                for info in self.state.tasks.values():
                    info.key = None  # keys stay valid, but must be checked against the new store
                self.state.encoder_version = encoder.version
            todo = [t for t, i in sorted(self.state.tasks.items()) if i.key is None and i.uri is not None]
        for start in range(0, len(todo), _EMBED_CHUNK):
            self._embed(todo[start : start + _EMBED_CHUNK])
            self.save()

    def job_train(self) -> None:
        self.backend.start_training(self.pid)

    def job_rank(self) -> None:
        """Re-rank and publish the head of the queue (all of it the first time); the rest follows when quiet."""
        self._rank_and_publish(full=self.state.published_version is None)

    def job_full(self) -> None:
        """Publish the whole ranking (scheduled by the janitor once the project is quiet)."""
        self._rank_and_publish(full=True)

    def _rank_and_publish(self, *, full: bool) -> None:
        ranked = self._rank()
        if ranked is None:
            return
        task_ids, _ = ranked
        self._publish(task_ids, full=full or len(task_ids) <= self.settings.head_size)

    def train(self) -> None:
        """Continue the MAE's self-supervised training on this project's images (a new encoder version)."""
        from examine.mae import continue_config, default_pretrain_config, pretrain

        encoder = self.backend.encoder(self.pid)
        images = self._decoded_images()
        if len(images) < 2:
            raise RuntimeError(f"project {self.pid}: fewer than 2 readable images to train on")
        if encoder is None:  # no encoder yet: training is the first pretraining
            enc_cfg = EncoderConfig(self.settings.model, img_size=self.settings.img_size)
        else:  # train a copy: the live encoder keeps serving rankings meanwhile
            enc_cfg, encoder = encoder.config, _copy(encoder)
        _, base = default_pretrain_config(self.settings.device)
        cfg = continue_config(base, self.settings.train_epochs)
        out = self.project_encoder_dir_tmp()
        log.info("project %s: continuing MAE training on %d images for %d epochs", self.pid, len(images), cfg.epochs)
        trained, losses = pretrain(images, out, cfg, encoder=encoder, encoder_config=enc_cfg,
                                   device=self.settings.device, resume=False, progress=False)
        final = self.backend.project_encoder_dir(self.pid)
        if final.exists():
            import shutil

            shutil.rmtree(final)
        out.replace(final)
        log.info("project %s: training done (loss %.4f → %.4f), encoder %s", self.pid, losses[0], losses[-1], trained.version)

    def project_encoder_dir_tmp(self) -> Path:
        import shutil

        tmp = self.backend.project_encoder_dir(self.pid).with_name("encoder.training")
        if tmp.exists():
            shutil.rmtree(tmp)
        return tmp

    # -------------------------------------------------------------- internals

    def _policy(self) -> str:
        return self.settings.policy or DEFAULT_POLICY

    def _policy_uses_labels(self) -> bool:
        return self._policy() == "class-aware"

    def _learn_tasks(self, tasks: list[dict]) -> None:
        """Record tasks' image references; a task without an image is reported, not fatal."""
        with self.state.lock:
            for t in tasks:
                tid = int(t["id"])
                info = self.state.tasks.setdefault(tid, TaskInfo())
                data = t.get("data") or {}
                key = self.state.image_key or _guess_image_key(data)
                uri = data.get(key) if key else None
                if not isinstance(uri, str) or not uri:
                    info.uri = None
                    info.error = (
                        f"task {tid}: no image under data key {key!r} (task data keys: {sorted(data)}); "
                        "the labeling config's <Image value=\"$…\"> must name the key that holds the image URL"
                    )
                    continue
                if uri != info.uri:
                    info.uri, info.key, info.error = uri, None, None
                if t.get("is_labeled") or int(t.get("total_annotations") or 0) > 0:
                    info.labeled = True
                for ann in t.get("annotations") or []:
                    if isinstance(ann, dict) and ann.get("id") is not None:
                        self.state.annotation_task[int(ann["id"])] = tid
                        info.label = annotation_label(ann) or info.label

    def _ensure_webhook_auth(self, client: LabelStudio) -> None:
        """Give Label Studio's auto-created ``{backend}/webhook`` our basic-auth header.

        Label Studio creates that webhook when the backend is connected but sends
        it without the ML backend's credentials, so a backend that requires basic
        auth would answer 401 to every event.
        """
        if not self.settings.auth_required:
            return
        import base64

        token = base64.b64encode(f"{self.settings.basic_auth_user}:{self.settings.basic_auth_pass}".encode()).decode()
        header = f"Basic {token}"
        ours = {ml["url"].rstrip("/") + "/webhook" for ml in client.list_ml_backends(self.pid) if ml.get("url")}
        for hook in client.list_webhooks(self.pid):
            if hook.get("url") in ours and (hook.get("headers") or {}).get("Authorization") != header:
                client.update_webhook(hook["id"], headers={**(hook.get("headers") or {}), "Authorization": header})
                log.info("project %s: added basic auth to webhook %s", self.pid, hook["id"])

    def _recheck_tasks(self, task_ids: list[int]) -> None:
        """Fetch tasks again to learn whether they are still labeled, and their labels."""
        client = self.backend.client(self.pid)
        for tid in task_ids:
            try:
                task = client.get_task(tid)
            except LabelStudioError as exc:
                log.warning("project %s: cannot re-read task %s: %s", self.pid, tid, exc)
                continue
            anns = [a for a in client.list_annotations(tid) if isinstance(a, dict)]
            with self.state.lock:
                info = self.state.tasks.setdefault(tid, TaskInfo())
                info.labeled = bool(anns) or bool(task.get("is_labeled"))
                info.label = next((annotation_label(a) for a in reversed(anns) if annotation_label(a)), None)
                for a in anns:
                    self.state.annotation_task[int(a["id"])] = tid

    def _source(self, tid: int, uri: str) -> Source:
        return (f"task {tid} ({uri})", lambda: self._fetch(tid, uri))

    def _fetch(self, tid: int, uri: str) -> bytes:
        local = self._local_path(uri)
        if local is not None:
            return local.read_bytes()
        return self.backend.client(self.pid).download(uri, task_id=tid)

    def _local_path(self, uri: str) -> Path | None:
        """A ``/data/local-files/?d=…`` image read from EXAMINE_DATA_ROOTS, refusing escapes."""
        if not self.settings.data_roots or "/data/local-files/" not in uri:
            return None
        rel = (parse_qs(urlsplit(uri).query).get("d") or [""])[0]
        for root in self.settings.data_roots:
            root = root.resolve()
            # Label Studio's d= is relative to its document root; the mount mirrors it.
            candidate = (root / rel.lstrip("/")).resolve()
            if not candidate.is_relative_to(root):
                raise ImageLoadError(uri, f"path escapes the data folder {root}; refusing to read it")
            if candidate.is_file():
                return candidate
        return None

    def _embed(self, task_ids: list[int]) -> None:
        encoder = self.backend.encoder(self.pid)
        if encoder is None:
            return
        store = self.backend.workspace.store(encoder)
        with self.state.lock:
            items = [(t, self.state.tasks[t].uri) for t in task_ids if t in self.state.tasks and self.state.tasks[t].uri]
        if not items:
            return
        report = embed_sources([self._source(t, u) for t, u in items], encoder, store,
                               device=self.settings.device, progress=False)
        with self.state.lock:
            self.state.encoder_version = encoder.version
            for (tid, _), key in zip(items, report.keys):
                info = self.state.tasks.get(tid)
                if info is not None:
                    info.key, info.error = key, None
            for i, err in report.errors.items():
                tid = items[i][0]
                if tid in self.state.tasks:
                    self.state.tasks[tid].error = f"task {tid}: {err}"
                    log.warning("project %s: %s", self.pid, self.state.tasks[tid].error)
        log.info("project %s: embedded %d new, %d cached, %d failed", self.pid, report.added, report.cached, len(report.errors))

    def _decoded_images(self) -> list[np.ndarray]:
        images = []
        size = self.settings.img_size
        with self.state.lock:
            items = [(t, i.uri) for t, i in sorted(self.state.tasks.items()) if i.uri]
        for tid, uri in items:
            try:
                images.append(load_image(self._fetch(tid, uri), item=f"task {tid}", max_side=2 * size))
            except Exception as exc:  # reported per task, training goes on
                log.warning("project %s: task %s skipped for training: %s", self.pid, tid, exc)
        return images

    def _rank(self) -> tuple[list[int], np.ndarray] | None:
        """Task ids of the unlabeled pool in queue order, with their policy values."""
        encoder = self.backend.encoder(self.pid)
        if encoder is None:
            return None
        store = self.backend.workspace.store(encoder)
        with self.state.lock:
            rows = [(t, i) for t, i in sorted(self.state.tasks.items()) if i.key and i.key in store]
        if not rows:
            return None
        X = store.get([i.key for _, i in rows])
        labeled = np.array([i.labeled for _, i in rows], dtype=bool)
        if (~labeled).sum() == 0:
            return [], np.zeros(0)
        if (~labeled).sum() == 1 or len(rows) < 2:
            only = [t for (t, i) in rows if not i.labeled]
            return only, np.ones(len(only))
        labels = [i.label for _, i in rows]
        ranking = rank(X, labeled=labeled, labels=labels, policy=self._policy())
        task_ids = [rows[j][0] for j in ranking.order]
        return task_ids, ranking.value[ranking.order]

    def _scores(self) -> dict[int, float]:
        ranked = self._rank()
        if ranked is None:
            return {}
        task_ids, _ = ranked
        n = len(task_ids)
        return {tid: (pos + 1) / n for pos, tid in enumerate(task_ids)}

    def _publish(self, task_ids: list[int], *, full: bool) -> None:
        """Push the queue (all of it, or its head) as predictions of a new version, then switch the project to it."""
        if not task_ids:
            return
        client = self.backend.client(self.pid)
        version = new_version()
        n = len(task_ids)
        preds = [{"task": tid, "model_version": version, "score": (pos + 1) / n, "result": []}
                 for pos, tid in enumerate(task_ids)]
        head = min(self.settings.head_size, n)
        t0 = time.perf_counter()
        # Label Studio's bulk import costs ~13 s per request on a 20,000-task project whatever its
        # size, one prediction ~0.07 s: a re-rank posts its head one by one; a full publish is one
        # bulk request (done when the project is quiet, or the first time).
        if full:
            client.import_predictions(self.pid, preds, batch_size=_BULK_BATCH)
        else:
            for p in preds[:head]:
                client.create_prediction(p)
        fields: dict[str, Any] = {"model_version": version}
        if self.settings.sampling in SAMPLING_LS:
            fields["sampling"] = SAMPLING_LS[self.settings.sampling]
        client.update_project(self.pid, **fields)
        with self.state.lock:
            previous = self.state.published_version
            self.state.published_version = version
            self.state.full_due = not full
        self.save()
        log.info("project %s: %s of %d published as %s in %.2f s", self.pid, "all" if full else f"head {head}",
                 n, version, time.perf_counter() - t0)
        if previous is None or not self._view_exists():
            client.ensure_view(self.pid, self.settings.view_title, ordering=["tasks:predictions_score"])
        if previous:
            self.backend.janitor.put(self.pid, previous)

    def _view_exists(self) -> bool:
        try:
            views = self.backend.client(self.pid).list_views(self.pid)
        except LabelStudioError:
            return True
        return any((v.get("data") or {}).get("title") == self.settings.view_title for v in views)


def _guess_image_key(data: dict) -> str | None:
    for k, v in data.items():
        if isinstance(v, str) and (v.startswith(("/data/", "http://", "https://", "s3://", "gs://", "azure-blob://"))):
            return k
    return None


def _copy(encoder: Encoder) -> Encoder:
    import copy

    enc = copy.deepcopy(encoder).cpu()
    enc.weights_changed()
    return enc
