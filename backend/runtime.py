"""The backend process: settings, encoder, store, project states, the job queue, the janitor.

:class:`Backend` owns everything shared by the projects of one process. The HTTP
side (:mod:`backend.app`, :mod:`backend.protocol`) turns requests into work with
:meth:`Backend.submit`; the job queue runs it with :meth:`Backend.run_jobs`, which
dispatches each kind through the explicit :data:`JOBS` table to
:class:`backend.worker.ProjectWorker`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

# scikit-learn is imported with the service, not at the first re-rank: importing it holds the GIL for a while, which
# the backend pays at start, not while it answers webhooks (the library imports it on first use).
import sklearn.cluster  # noqa: F401
import sklearn.linear_model  # noqa: F401
import sklearn.model_selection  # noqa: F401

from backend.bind import loopback
from backend.janitor import Janitor
from backend.jobs import KINDS, JobFailed, JobQueue
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings
from backend.state import StateStore
from backend.worker import ProjectWorker
from examine.encoder import Encoder, create_encoder
from examine.ranking import POLICIES
from examine.workspace import Workspace

log = logging.getLogger(__name__)

#: Failed runs in a row after which a project's work is listed among its problems.
REPEATED_FAILURES = 3

#: Job kind → what runs it. ``sync`` (reconcile) returns the follow-up kinds it found necessary.
JOBS: dict[str, Callable[[ProjectWorker], list[str] | None]] = {
    "sync": ProjectWorker.reconcile,
    "pretrain": ProjectWorker.pretrain,
    "embed": ProjectWorker.embed,
    "rank": ProjectWorker.rank,
    "full": ProjectWorker.publish_full,
    "fill": ProjectWorker.fill,
}
assert set(JOBS) == set(KINDS)


class Refused(PermissionError):
    """A request for a project this backend must not serve (answered 403)."""


class Unavailable(RuntimeError):
    """Label Studio could not be asked (answered 502)."""


class Backend:
    """All projects of one backend process."""

    def __init__(self, settings: Settings):
        if settings.policy and settings.policy not in POLICIES:
            raise ValueError(f"EXAMINE_POLICY={settings.policy!r} is not a policy; choose one of {sorted(POLICIES)}")
        self.settings = settings
        self.workspace = Workspace(settings.model_dir)
        self.states = StateStore(settings.model_dir)
        self.jobs = JobQueue(
            self.run_jobs,
            workers=settings.job_threads,
            debounce_s=settings.debounce_s,
            max_wait_s=settings.max_wait_s,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
        )
        self.janitor = Janitor(self)
        self.problems: list[str] = []  # backend-wide (encoder); per-project ones live in the state
        self.publishes = 0
        self.publish_failures = 0
        self._clients: dict[tuple[int, str], LabelStudio] = {}
        self._setup_creds: dict[int, tuple[str, str]] = {}
        self.own_urls: set[str] = set()
        self._encoders: dict[str, Encoder] = {}
        self._lock = threading.RLock()
        self.pretrain_lock = threading.Lock()  # one shared MAE pretraining at a time, whichever project asks
        self._train_threads: dict[int, threading.Thread] = {}
        self._last_event: dict[int, float] = {}
        self.last_reconcile: dict[int, float] = {}

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the worker and the janitor; reconcile every known project (missed events are caught up)."""
        if not self.settings.label_studio_configured and not self.settings.auth_required:
            log.warning(
                "neither LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY nor BASIC_AUTH_USER is set: the first "
                "Label Studio to call /setup is the only one served (see README, Security)"
            )
        s = self.settings
        if s.label_studio_configured and not s.auth_required and not loopback(s.host):
            log.warning(
                "basic auth is off while the backend listens on %s with a Label Studio key: anyone who reaches "
                "port %s can send it events. Set BASIC_AUTH_USER and BASIC_AUTH_PASS, and the same user and "
                "password in each project's Settings > Model (Basic auth)",
                s.host,
                s.port,
            )
        self.jobs.start()
        self.janitor.start()
        for pid in self.states.known_projects():
            try:  # one project's trouble must not keep the others from starting
                state = self.states.get(pid)
                log.info(
                    "project %s: reconciling with Label Studio after start%s",
                    pid,
                    f" (resuming {'+'.join(state.pending)})" if state.pending else "",
                )
                self.submit(pid, ["sync", *[k for k in state.pending if k in KINDS]], event=False)
            except Exception:
                log.exception("project %s: cannot resume it; the other projects go on", pid)

    def stop(self) -> None:
        """Stop the worker and the janitor (pending work stays on disk)."""
        self.janitor.stop()
        self.jobs.stop()

    def submit(self, pid: int, kinds: list[str], *, event: bool = True) -> None:
        """Record work durably (pending.json), then queue it. ``event``: it counts as project activity."""
        state = self.states.get(pid)
        with state.lock:
            state.pending = sorted(set(state.pending) | set(kinds))
        self.states.save_pending(state)
        if event:
            self._last_event[pid] = time.monotonic()
        self.jobs.submit(pid, kinds)

    def quiet_for(self, pid: int) -> float:
        """Seconds since the last event or request that asked for work on the project."""
        return time.monotonic() - self._last_event.get(pid, 0.0)

    # -------------------------------------------------------------- jobs

    def run_jobs(self, pid: int, kinds: list[str]) -> None:
        """Run kinds of work in :data:`KINDS` order; a failure raises JobFailed with what is left (retried)."""
        if not self.has_credentials(pid):
            log.info(
                "project %s: %s waits for Label Studio credentials (the next /setup sends them)", pid, "+".join(kinds)
            )
            return  # stays in pending.json; /setup submits it again
        worker = ProjectWorker(self, pid)
        todo = list(kinds)
        t0 = time.perf_counter()
        while todo:
            kind = todo[0]
            try:
                more = JOBS[kind](worker) or []
            except Exception as exc:
                remaining = todo if kind == "sync" else ["sync", *todo]  # re-check Label Studio first
                raise JobFailed(sorted(set(remaining), key=KINDS.index), exc) from exc
            todo = sorted(set(todo[1:]) | {k for k in more if KINDS.index(k) > KINDS.index(kind)}, key=KINDS.index)
            state = self.states.get(pid)
            with state.lock:
                state.pending = [k for k in state.pending if k != kind or k in todo]
            self.states.save(state)
        log.info("project %s: %s done in %.2f s", pid, "+".join(kinds), time.perf_counter() - t0)

    def start_training(self, pid: int) -> None:
        """Continue the MAE's training in its own thread (the old encoder keeps serving)."""
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
            ProjectWorker(self, pid).train()
            self.submit(pid, ["embed", "rank"])
        except Exception:
            log.exception("project %s: training failed; the previous encoder stays in use", pid)

    # -------------------------------------------------------------- Label Studio

    def remember_setup(self, pid: int, hostname: str | None, token: str | None) -> bool:
        """Keep the credentials a verified /setup sent (memory only: tokens are never written to disk).

        Returns True when they are new (they matter only without LABEL_STUDIO_URL/API_KEY)."""
        if not (hostname and token) or self.settings.label_studio_configured:
            return False
        with self._lock:
            if self._setup_creds.get(pid) == (hostname, token):
                return False
            self._setup_creds[pid] = (hostname, token)
            self._clients = {k: v for k, v in self._clients.items() if k[0] != pid}
            return True

    def needs_verification(self, pid: int, hostname: str | None, token: str | None) -> bool:
        """A project not served yet, or a /setup bringing other credentials, is verified with Label Studio."""
        if not self.states.exists(pid):
            return True
        if self.settings.label_studio_configured or not (hostname and token):
            return False
        with self._lock:
            return self._setup_creds.get(pid) != (hostname, token)

    def has_credentials(self, pid: int) -> bool:
        """True when the project's Label Studio can be called."""
        return self.settings.label_studio_configured or pid in self._setup_creds

    def _credentials(self, pid: int) -> tuple[str, str]:
        s = self.settings
        if s.label_studio_configured:
            return s.label_studio_url, s.label_studio_api_key
        if pid in self._setup_creds:
            url, key = self._setup_creds[pid]
            return s.label_studio_url or url, key
        raise LabelStudioError(
            f"project {pid}: no Label Studio credentials yet; set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, "
            "or reconnect the backend in the project settings (/setup sends them)"
        )

    def client(self, pid: int) -> LabelStudio:
        """The REST client for a project: the configured Label Studio, else the one that called /setup."""
        return self._client(pid, "api")

    def image_client(self, pid: int) -> LabelStudio:
        """A client for image downloads: short connect timeout, overall deadline, no retry (reconcile retries), size cap."""
        return self._client(pid, "images")

    def _client(self, pid: int, kind: str) -> LabelStudio:
        with self._lock:
            if (pid, kind) not in self._clients:
                url, key = self._credentials(pid)
                s = self.settings
                if kind == "images":
                    client = LabelStudio(
                        url,
                        key,
                        allowed_hosts=s.allowed_hosts,
                        retries=0,
                        timeout=s.image_deadline_s,
                        connect_timeout=s.image_connect_timeout_s,
                        download_deadline=s.image_deadline_s,
                        max_image_bytes=s.max_image_mb * 2**20,
                    )
                else:
                    client = LabelStudio(url, key, allowed_hosts=s.allowed_hosts, connect_timeout=5.0)
                self._clients[(pid, kind)] = client
            return self._clients[(pid, kind)]

    def verify_project(self, pid: int, hostname: str | None, token: str | None) -> None:
        """Check with Label Studio that the project exists there before serving it.

        With LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set, the configured server is asked.
        Otherwise the hostname and token of /setup are used, and the first Label Studio that
        passes is pinned in ``MODEL_DIR/label_studio.json``: a /setup from another is refused.
        Raises Refused (the project is not there, or another server) or Unavailable.
        """
        s = self.settings
        if s.label_studio_configured:
            url, key = s.label_studio_url, s.label_studio_api_key
        else:
            url, key = (s.label_studio_url or hostname or ""), (token or "")
            if not url or not key:
                raise Refused(
                    "no Label Studio is configured (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY) and the "
                    "request carries no hostname and access token to verify the project with"
                )
            pinned = self._pinned()
            if pinned and pinned.rstrip("/") != url.rstrip("/"):
                raise Refused(
                    f"this backend serves the Label Studio at {pinned}; a project of another "
                    f"Label Studio is refused (set LABEL_STUDIO_URL to change it)"
                )
        try:
            probe = LabelStudio(url, key, timeout=2.5, retries=0)
        except ValueError as exc:
            raise Refused(f"cannot verify the project: {exc}") from None
        try:
            project = probe.get_project(pid)
        except LabelStudioError as exc:
            if exc.status in (401, 403, 404):
                raise Refused(
                    f"Label Studio at {url} has no project {pid} for this token (answered {exc.status})"
                ) from None
            raise Unavailable(f"cannot verify project {pid} with Label Studio: {exc}") from None
        finally:
            probe.close()
        if not isinstance(project, dict) or project.get("id") != pid:
            raise Refused(f"Label Studio at {url} did not return project {pid}")
        if not s.label_studio_configured and not self._pinned():
            self._pin(url)

    def _pinned(self) -> str | None:
        path = self.settings.model_dir / "label_studio.json"
        try:
            return json.loads(path.read_text()).get("url")
        except (OSError, ValueError, AttributeError):
            return None

    def _pin(self, url: str) -> None:
        path = self.settings.model_dir / "label_studio.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url}))
        os.replace(tmp, path)
        log.info("serving the Label Studio at %s from now on (MODEL_DIR/label_studio.json)", url)

    # -------------------------------------------------------------- encoder

    def encoder(self, pid: int) -> Encoder | None:
        """The project's own continued-training encoder, else the shared one; None before pretraining.

        A damaged encoder folder is moved aside (``encoder.damaged``) and reported, so a new one
        is pretrained; damaged EXAMINE_WEIGHTS are reported and raise EncoderError.
        """
        folder = self.project_encoder_dir(pid)
        if (folder / "encoder.json").is_file():
            return self._load_dir(folder, f"projects/{pid}/encoder")
        if self.settings.weights:
            return self._cached_encoder(Path(self.settings.weights))
        if self.workspace.has_encoder():
            return self._load_dir(self.workspace.encoder_dir, "encoder")
        return None

    def _load_dir(self, folder: Path, name: str) -> Encoder | None:
        try:
            return self._cached_encoder(folder)
        except Exception as exc:  # EncoderError, OSError, safetensors' own error on truncated weights, ...
            with self._lock:  # several project threads may meet the same damaged folder
                if not folder.exists():
                    return None  # another thread set it aside already
                aside = folder.with_name(folder.name + ".damaged")
                if aside.exists():
                    import shutil

                    shutil.rmtree(aside, ignore_errors=True)
                os.replace(folder, aside)
            msg = (
                f"MODEL_DIR/{name} could not be loaded ({str(exc)[:160]}); it was moved to {name}.damaged "
                "and a new encoder is pretrained (every image is embedded again)"
            )
            log.error(msg)
            self.add_problem(msg)
            return None

    def project_problems(self, pid: int) -> list[str]:
        """The project's own problems for /status and /metrics, a run failing again and again among them."""
        state = self.states.get(pid)
        with state.lock:
            out = list(state.problems)
        failed = self.jobs.failed_runs(pid)
        if failed >= REPEATED_FAILURES:
            out.append(
                f"the project's work has failed {failed} times in a row and is retried with backoff "
                f"(last: {self.jobs.last_error.get(pid, 'unknown')}); see the backend log"
            )
        return out

    def add_problem(self, msg: str) -> None:
        """Record a backend-wide problem for /status (once; the last 20), from any project's thread."""
        with self._lock:
            if msg not in self.problems:
                self.problems.append(msg)
                del self.problems[:-20]

    def _cached_encoder(self, path: Path) -> Encoder:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        key = f"{path}:" + ",".join(f"{f.name}:{f.stat().st_mtime_ns}:{f.stat().st_size}" for f in files if f.is_file())
        with self._lock:
            if key not in self._encoders:
                if path.is_dir():
                    enc = Encoder.load(path)
                else:
                    cfg = self.settings.encoder_config()
                    enc = create_encoder(cfg, weights=path)
                stale = [k for k in self._encoders if k.startswith(f"{path}:")]
                for k in stale:
                    del self._encoders[k]
                self._encoders[key] = enc
            return self._encoders[key]

    def project_encoder_dir(self, pid: int) -> Path:
        """Where the project's continued-training encoder lives."""
        return self.states.folder(pid) / "encoder"
