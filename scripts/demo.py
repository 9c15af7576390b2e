"""`make demo`: a local Label Studio whose label stream serves the most valuable medical image first.

Starts Label Studio 1.23.2 (from ``.venv-ls``) on 127.0.0.1:8080 and the examine backend
(``python -m backend._wsgi``) on 127.0.0.1:9090, writes real medical tiles into Label Studio's
local-files root, creates the project "EXAMINE demo" with a Local Files storage, connects the
backend, waits until the backend has pretrained its MAE, embedded the tiles and published its
ranking, prints where to log in and the first tasks of the label stream, and runs until Ctrl-C.

Everything lives in ``.demo/`` (Label Studio's data, the tiles, the backend's model directory,
the admin's credentials, the logs), so a second run reuses the user, the project and the
embeddings; a moved or reused folder keeps its tasks (the storage follows the new path) and the
webhook follows the backend's port. ``--once`` sets up, prints and stops (the browser test uses that path).
Both servers are started by ``scripts/services.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings
from examine.datasets import write_medical_tiles

if __package__ in (None, ""):  # run as `python scripts/demo.py`: make `scripts.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.demo_config import (  # noqa: E402
    BACKEND_TITLE,
    DEFAULT_EPOCHS,
    LABEL_CONFIG,
    PROJECT_TITLE,
    REPO_ROOT,
    STORAGE_TITLE,
    Credentials,
    DemoConfig,
    DemoError,
    load_or_create_credentials,
)
from scripts.services import BackendServer, LabelStudioServer, ServiceError, ensure_port_free  # noqa: E402

# ------------------------------------------------------------------ processes (scripts/services.py)


def label_studio_server(cfg: DemoConfig, creds: Credentials) -> LabelStudioServer:
    """Label Studio with a scripted admin, legacy tokens, local files served and SSRF checks off (loopback backend)."""
    if not cfg.label_studio_bin.is_file():
        raise DemoError(
            f"Label Studio not found at {cfg.label_studio_bin}: run `make setup-ls` (or set LABEL_STUDIO_BIN)"
        )
    return LabelStudioServer(
        cfg.ls_data_dir,
        executable=cfg.label_studio_bin,
        port=cfg.ls_port,
        host=cfg.host,
        files_root=cfg.files_root,
        log_path=cfg.logs_dir / "label-studio.log",
        credentials=(creds.email, creds.password, creds.token),
        task_lock_ttl=cfg.task_lock_ttl,
        startup_timeout=600,
    )


def backend_server(cfg: DemoConfig, creds: Credentials) -> BackendServer:
    """The examine backend, reading the tiles from disk and talking to the demo's Label Studio."""
    env = {
        "LABEL_STUDIO_URL": cfg.ls_url,
        "LABEL_STUDIO_API_KEY": creds.token,
        "MODEL_DIR": str(cfg.model_dir),
        "EXAMINE_DATA_ROOTS": str(cfg.files_root),
        "EXAMINE_PRETRAIN_EPOCHS": str(cfg.epochs),
        "BASIC_AUTH_USER": cfg.basic_auth[0] if cfg.basic_auth else "",
        "BASIC_AUTH_PASS": cfg.basic_auth[1] if cfg.basic_auth else "",
        "PYTHONUNBUFFERED": "1",
    }
    return BackendServer(env, cfg.logs_dir / "backend.log", host=cfg.host, port=cfg.backend_port)


# ------------------------------------------------------------------ Label Studio content


def ensure_tiles(cfg: DemoConfig) -> tuple[list[Path], bool]:
    """The tiles in ``tiles_dir``: written on the first run, reused afterwards. Returns (paths, written)."""
    existing = sorted(cfg.tiles_dir.glob("tile_*.png"))
    if existing:
        return existing, False
    return write_medical_tiles(cfg.tiles_dir, cfg.tiles, size=cfg.tile_size, seed=cfg.seed), True


def api(client: LabelStudio, method: str, path: str, **kwargs: Any) -> Any:
    """A Label Studio API call the client has no method for; the decoded JSON answer."""
    resp = client.request(method, path, **kwargs)
    return resp.json() if resp is not None and resp.content else None


def find_project(client: LabelStudio, title: str) -> dict | None:
    """The first project called ``title`` (lowest id), or None."""
    body = api(client, "GET", "/api/projects/", params={"page_size": 1000, "ordering": "id"})
    projects = body.get("results", []) if isinstance(body, dict) else body
    return next((p for p in projects if p.get("title") == title), None)


def ensure_project(client: LabelStudio) -> tuple[int, bool]:
    """The demo project's id, created unless one with its title exists. Returns (id, created)."""
    project = find_project(client, PROJECT_TITLE)
    if project is not None:
        return int(project["id"]), False
    description = "Unlabeled medical tiles, ordered by the EXAMINE score of their MAE embeddings."
    return int(client.create_project(PROJECT_TITLE, LABEL_CONFIG, description=description)["id"]), True


def ensure_storage(client: LabelStudio, pid: int, folder: Path, n_files: int) -> str:
    """Point the project's Local Files storage at ``folder`` and import new files; says what it did.

    Label Studio links every imported file by its absolute path, so after a move (a moved, copied or reused
    demo folder) syncing the old storage at its new path would import every tile a second time. The storage
    found by its title is pointed at ``folder`` (Label Studio serves only files under a storage's path), and
    synced only while the project holds fewer tasks than there are files: the tasks' URLs are relative to the
    local-files root (``?d=tiles/...``), so existing tasks keep working after the move.
    """
    storages = api(client, "GET", "/api/storages/localfiles/", params={"project": pid}) or []
    ours = next((s for s in storages if Path(s.get("path", "")) == folder), None)
    note = ""
    if ours is None:
        ours = next((s for s in storages if s.get("title") == STORAGE_TITLE), None)
        if ours is None:
            client.add_local_storage(pid, str(folder), sync=True, title=STORAGE_TITLE, regex_filter=r".*\.png$")
            return "connected"
        api(client, "PATCH", f"/api/storages/localfiles/{ours['id']}", json={"project": pid, "path": str(folder)})
        note = f"moved from {ours.get('path')}; "
    if int(client.get_project(pid).get("task_number") or 0) < n_files:
        api(client, "POST", f"/api/storages/localfiles/{ours['id']}/sync")
        return note + "synced"
    return note + "up to date, not re-synced"


def wait_for_tasks(client: LabelStudio, pid: int, n: int, timeout: float = 120.0) -> int:
    """Wait until the project holds at least ``n`` tasks; returns the count."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(client.get_project(pid).get("task_number") or 0)
        if count >= n:
            return count
        time.sleep(0.5)
    raise DemoError(f"project {pid} has {count} tasks after {timeout:.0f} s, expected {n} (storage sync)")


def ensure_ml_backend(client: LabelStudio, pid: int, cfg: DemoConfig) -> str:
    """Connect the backend to the project, or update the existing connection (URL, auth) and its webhook.

    Label Studio calls the backend's ``/setup`` either way, so a backend whose model folder was
    removed learns the project again; for a backend that knows it already, that is a no-op.
    """
    auth: dict[str, str] = {"auth_method": "NONE"}
    if cfg.basic_auth:
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": cfg.basic_auth[0], "basic_auth_pass": cfg.basic_auth[1]}
    for ml in client.list_ml_backends(pid):
        if ml.get("title") == BACKEND_TITLE:
            body = {"project": pid, "url": cfg.backend_url, "title": BACKEND_TITLE, **auth}
            api(client, "PATCH", f"/api/ml/{ml['id']}", json=body)
            return ensure_webhook(client, pid, cfg, old_url=str(ml.get("url") or ""))
    client.add_ml_backend(pid, cfg.backend_url, BACKEND_TITLE, **auth)
    return ensure_webhook(client, pid, cfg)


def ensure_webhook(client: LabelStudio, pid: int, cfg: DemoConfig, old_url: str = "") -> str:
    """Exactly one webhook to ``<backend>/webhook``; webhooks to an earlier demo backend are moved or removed.

    Label Studio creates the backend's webhook only when the backend is first added: changing the ML backend's
    URL (another ``--backend-port`` on a reused demo folder) keeps sending events to the old address. Stale
    webhooks are the old backend URL's and any other ``http://<host>:<port>/webhook`` on the demo's host.
    """
    want = cfg.backend_url.rstrip("/") + "/webhook"

    def stale(url: str) -> bool:
        parts = urlsplit(url)
        return url != want and (
            url == old_url.rstrip("/") + "/webhook"
            or (parts.hostname == cfg.host and parts.path.rstrip("/") == "/webhook")
        )

    hooks = [h for h in client.list_webhooks(pid) if h.get("url")]
    old = [h for h in hooks if stale(h["url"])]
    n_old = len(old)
    if not any(h["url"] == want for h in hooks):
        if old:  # keep its settings (and the basic-auth header the backend may have added)
            client.update_webhook(old.pop(0)["id"], url=want)
        else:
            api(
                client,
                "POST",
                "/api/webhooks/",
                json={"project": pid, "url": want, "send_payload": True, "send_for_all_actions": True},
            )
    for hook in old:
        api(client, "DELETE", f"/api/webhooks/{hook['id']}/")
    return f"webhook {want}" + (f", replacing {n_old} on an old address" if n_old else "")


# ------------------------------------------------------------------ waiting for the ranking


def pretrain_progress(model_dir: Path) -> tuple[int, int, float] | None:
    """(finished epochs, total epochs, last loss) of the backend's running MAE pretraining, from its checkpoint."""
    ckpt = model_dir / "encoder" / "mae_checkpoint.safetensors"
    if not ckpt.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(ckpt), framework="np") as f:
            meta = json.loads(f.metadata()["meta"])
        return int(meta["epoch"]), int(meta["config"]["epochs"]), float(meta["losses"][-1])
    except Exception:  # being replaced right now: ask again next time
        return None


def describe_progress(status: dict, cfg: DemoConfig, n_tiles: int) -> str:
    """One line saying what the backend is doing now."""
    counts, pending = status.get("counts") or {}, status.get("pending") or []
    has_encoder = (cfg.model_dir / "encoder" / "encoder.json").is_file() or bool(os.environ.get("EXAMINE_WEIGHTS"))
    if not counts.get("tasks"):
        return "backend: reading the project's tasks"
    if not has_encoder and not status.get("encoder_version"):
        progress = pretrain_progress(cfg.model_dir)
        done = f"epoch {progress[0]}/{progress[1]}, loss {progress[2]:.3f}" if progress else "first epoch running"
        return f"backend: pretraining its MAE on {counts['tasks']} tiles ({done})"
    if counts.get("embedded", 0) + counts.get("failed", 0) < n_tiles:
        return f"backend: embedding tiles ({counts.get('embedded', 0)}/{n_tiles})"
    if not status.get("published_version") or pending:
        return "backend: ranking and publishing"
    return "backend: ranking published"


def backend_status(cfg: DemoConfig, pid: int) -> dict:
    """``GET /projects/<pid>/status`` of the backend."""
    resp = requests.get(f"{cfg.backend_url}/projects/{pid}/status", auth=cfg.basic_auth, timeout=10)
    resp.raise_for_status()
    return resp.json()


def wait_for_ranking(
    cfg: DemoConfig, pid: int, client: LabelStudio, n_tiles: int, alive: Callable[[], None], say: Callable[[str], None]
) -> dict:
    """Poll the backend until its ranking of every tile is published and is the project's model_version."""
    deadline = time.monotonic() + cfg.ready_timeout_s
    last, last_said = "", 0.0
    while time.monotonic() < deadline:
        alive()
        status = backend_status(cfg, pid)
        line = describe_progress(status, cfg, n_tiles)
        if line != last or time.monotonic() - last_said > 30:
            say(line)
            last, last_said = line, time.monotonic()
        counts = status.get("counts") or {}
        version = status.get("published_version")
        if (
            version
            and not status.get("pending")
            and counts.get("tasks", 0) >= n_tiles
            and counts.get("embedded", 0) + counts.get("failed", 0) >= n_tiles
            and client.get_project(pid).get("model_version") == version
        ):
            return status
        time.sleep(1.0)
    raise DemoError(
        f"the backend did not publish a ranking within {cfg.ready_timeout_s:.0f} s; see {cfg.logs_dir / 'backend.log'}"
    )


# ------------------------------------------------------------------ the queue as Label Studio serves it


@dataclass(frozen=True)
class QueueItem:
    """A task near the head of the label stream."""

    task_id: int
    file: str
    score: float


def file_name(uri: str) -> str:
    """``/data/local-files/?d=tiles/tile_00012_ihc.png`` → ``tile_00012_ihc.png``."""
    rel = (parse_qs(urlsplit(uri).query).get("d") or [uri])[0]
    return rel.rsplit("/", 1)[-1]


def head_of_queue(client: LabelStudio, pid: int, k: int = 5) -> list[QueueItem]:
    """The first ``k`` unlabeled tasks in Label Studio's own ordering by prediction score (lowest first).

    With "Uncertainty sampling" and one annotator, ``/next`` ("Label All Tasks") serves them in this order.
    The score is the task's queue order under the project's current model_version (lowest = next;
    below 0.1 = the head of the newest ranking).
    """
    version = client.get_project(pid).get("model_version")
    items: list[QueueItem] = []
    for task in client.iter_tasks(pid, fields="all", query={"ordering": ["tasks:predictions_score"]}):
        scores = [
            p["score"]
            for p in task.get("predictions") or []
            if p.get("model_version") == version and p.get("score") is not None
        ]
        if task.get("is_labeled") or not scores:
            continue
        items.append(QueueItem(int(task["id"]), file_name(str(task["data"].get("image", ""))), float(scores[0])))
        if len(items) == k:
            break
    return items


# ------------------------------------------------------------------ the demo


@dataclass
class DemoInfo:
    """What `Demo.setup` found or made."""

    project_id: int
    tiles: int
    status: dict
    queue: list[QueueItem]
    view_id: int | None


class Demo:
    """Both servers and the project; a context manager that always stops the servers."""

    def __init__(self, cfg: DemoConfig, say: Callable[[str], None] | None = None):
        self.cfg = cfg
        self._t0 = time.monotonic()
        self.say = say or self._say
        self.creds = load_or_create_credentials(cfg.credentials_path)
        self.label_studio: LabelStudioServer | None = None
        self.backend: BackendServer | None = None
        self.client: LabelStudio | None = None

    def elapsed(self) -> float:
        """Seconds since this demo was created."""
        return time.monotonic() - self._t0

    def _say(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> None:
        """Raise DemoError if either server has died."""
        for service in (self.label_studio, self.backend):
            if service is not None:
                service.check_alive()

    def start_servers(self) -> list[Path]:
        """Start Label Studio and the backend side by side, write the tiles while they boot, then wait for both
        (Label Studio first: its token is checked). Returns the tiles."""
        cfg = self.cfg
        hint = "Stop whatever runs there (an earlier `make demo`?) or pick another port with {}."
        ensure_port_free(cfg.host, cfg.ls_port, "the demo's Label Studio", hint.format("--port"))
        ensure_port_free(cfg.host, cfg.backend_port, "the demo's backend", hint.format("--backend-port"))
        self.label_studio = label_studio_server(cfg, self.creds)
        first = self.label_studio.first_start()
        self.say(
            f"starting Label Studio on {cfg.ls_url}" + (" (first start: database migrations, ~1 min)" if first else "")
        )
        self.label_studio.launch()
        self.say(f"starting the backend on {cfg.backend_url} beside it")
        self.backend = backend_server(cfg, self.creds)
        self.backend.launch()
        tiles = self.write_tiles()
        self.label_studio.start(progress=lambda waited: self.say(f"Label Studio is still starting ({waited:.0f} s)"))
        self.client = LabelStudio(cfg.ls_url, self.creds.token)
        self._check_token()
        self.say(f"Label Studio is up; waiting for the backend on {cfg.backend_url}")
        self.backend.start(timeout=300)
        return tiles

    def write_tiles(self) -> list[Path]:
        """The demo's tiles: written on the first run, reused afterwards."""
        cfg = self.cfg
        tiles, written = ensure_tiles(cfg)
        if written:
            self.say(f"wrote {len(tiles)} medical tiles ({cfg.tile_size} px) to {cfg.tiles_dir}")
        else:
            note = (
                "" if len(tiles) == cfg.tiles else f" (--tiles {cfg.tiles} ignored; remove {cfg.tiles_dir} to rewrite)"
            )
            self.say(f"reusing {len(tiles)} tiles in {cfg.tiles_dir}{note}")
        return tiles

    def _check_token(self) -> None:
        assert self.client is not None
        try:
            self.client.whoami()
        except LabelStudioError as exc:
            raise DemoError(
                f"Label Studio in {self.cfg.ls_data_dir} does not accept the token in {self.cfg.credentials_path} "
                f"({exc}); they were made by different runs. Remove {self.cfg.root} to start over."
            ) from None

    def prepare_project(self, tiles: list[Path]) -> tuple[int, int]:
        """Project, storage of ``tiles``, backend connection. Returns (project id, number of tiles)."""
        assert self.client is not None
        cfg = self.cfg
        pid, created = ensure_project(self.client)
        self.say(f"{'created' if created else 'reusing'} project {PROJECT_TITLE!r} (id {pid})")
        done = ensure_storage(self.client, pid, cfg.tiles_dir.resolve(), len(tiles))
        n = wait_for_tasks(self.client, pid, len(tiles))
        self.say(f"Local Files storage {done}: {n} tasks")
        hook = ensure_ml_backend(self.client, pid, cfg)
        self.say(f"backend connected to the project ({hook})")
        return pid, len(tiles)

    def setup(self) -> DemoInfo:
        """Everything up to a published ranking, read back from Label Studio."""
        tiles = self.start_servers()
        pid, n = self.prepare_project(tiles)
        assert self.client is not None
        status = wait_for_ranking(self.cfg, pid, self.client, n, self.alive, self.say)
        title = os.environ.get("EXAMINE_VIEW_TITLE") or Settings.view_title
        views = [v for v in self.client.list_views(pid) if (v.get("data") or {}).get("title") == title]
        return DemoInfo(pid, n, status, head_of_queue(self.client, pid), views[0]["id"] if views else None)

    def stop(self) -> list[str]:
        """Stop both servers (backend first); returns the names of those that were running."""
        stopped = []
        for service in (self.backend, self.label_studio):
            if service is not None and service.stop():
                stopped.append(service.name)
        if self.client is not None:
            self.client.close()
            self.client = None
        return stopped


def summary(cfg: DemoConfig, creds: Credentials, info: DemoInfo) -> str:
    """The text printed once the ranking is published."""
    pid = info.project_id
    counts = info.status.get("counts") or {}
    lines = [
        "",
        "EXAMINE demo is ready.",
        f"  Label Studio   {cfg.ls_url}",
        f"  login          {creds.email} / {creds.password}   (stored in {cfg.credentials_path})",
        f"  project        {cfg.ls_url}/projects/{pid}/data" + (f"?tab={info.view_id}" if info.view_id else ""),
        f"  backend        {cfg.backend_url}   (status: {cfg.backend_url}/projects/{pid}/status)",
        f"  ranking        {info.status.get('published_version')}: {counts.get('embedded', 0)} tiles embedded, "
        f"{counts.get('labeled', 0)} labeled, {counts.get('failed', 0)} failed",
        f"  screening      {counts.get('flagged', 0)} flagged as unusable, served last "
        "(Data Manager tab 'examine flagged: unusable? (served last)'; reasons in the status above)",
        f"  logs           {cfg.logs_dir}",
        "",
        "First tasks of the label stream ('Label All Tasks'; score = queue order, lowest = next):",
        "   queue  task  file                           score",
    ]
    for rank, item in enumerate(info.queue, 1):
        lines.append(f"   {rank:>5}  {item.task_id:>4}  {item.file:<30} {item.score:.4f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="demo.py")
    p.add_argument(
        "--port",
        type=int,
        default=int(env.get("DEMO_LS_PORT", 8080)),
        help="Label Studio port (env DEMO_LS_PORT; default 8080)",
    )
    p.add_argument(
        "--backend-port",
        type=int,
        default=int(env.get("DEMO_BACKEND_PORT", 9090)),
        help="backend port (env DEMO_BACKEND_PORT; default 9090)",
    )
    p.add_argument("--tiles", type=int, default=200, help="medical tiles written on the first run (default 200)")
    p.add_argument(
        "--epochs",
        type=int,
        default=int(env.get("EXAMINE_PRETRAIN_EPOCHS") or DEFAULT_EPOCHS),
        help=f"MAE pretraining epochs on the first run (env EXAMINE_PRETRAIN_EPOCHS; default {DEFAULT_EPOCHS})",
    )
    p.add_argument("--dir", type=Path, default=REPO_ROOT / ".demo", help="demo folder (default .demo)")
    p.add_argument(
        "--basic-auth",
        metavar="USER:PASS",
        default=_env_basic_auth(),
        help="protect the backend with HTTP basic auth (env BASIC_AUTH_USER/BASIC_AUTH_PASS)",
    )
    p.add_argument(
        "--once", "--no-wait", dest="once", action="store_true", help="set up, print, then stop both servers"
    )
    args = p.parse_args(argv)
    if args.tiles < 2:
        p.error("--tiles must be at least 2")
    if args.basic_auth and ":" not in args.basic_auth:
        p.error("--basic-auth must be USER:PASS")
    return args


def _env_basic_auth() -> str | None:
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    return f"{user}:{password}" if user and password else None


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    auth = tuple(args.basic_auth.split(":", 1)) if args.basic_auth else None
    return DemoConfig(
        root=args.dir.resolve(),
        ls_port=args.port,
        backend_port=args.backend_port,
        tiles=args.tiles,
        epochs=args.epochs,
        basic_auth=auth,
    )  # type: ignore[arg-type]


class Stop(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def serve_forever(demo: Demo) -> None:
    """Sleep until Ctrl-C, checking that both servers stay up."""
    while True:
        demo.alive()
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (a background job)
        signal.signal(sig, _raise_stop)
    demo = Demo(cfg)
    code = 0
    try:
        info = demo.setup()
        print(summary(cfg, demo.creds, info), flush=True)
        print(f"\nready after {demo.elapsed():.0f} s.", flush=True)
        if not args.once:
            print("Press Ctrl-C to stop both servers.", flush=True)
            serve_forever(demo)
    except KeyboardInterrupt as exc:
        print(f"\n{'Ctrl-C' if str(exc) in ('', 'SIGINT') else exc}: stopping both servers...", flush=True)
    except (DemoError, ServiceError, LabelStudioError, requests.RequestException) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        stopped = demo.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if stopped:
            print(f"stopped {' and '.join(stopped)}; data kept in {cfg.root}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
