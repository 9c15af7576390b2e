"""One launcher for the two servers we run outside Docker: Label Studio (from ``.venv-ls``) and the backend.

Used by ``scripts/demo.py``. ``LabelStudioServer`` and ``BackendServer`` take the same arguments and expose the
same attributes and methods as ``tests/lsserver.LabelStudioServer`` and ``tests/backend_server.BackendServer``,
so the tests can import them from here instead of keeping their own copies:

    from scripts.services import LabelStudioServer, BackendServer, free_port, label_studio_bin

Differences a caller may use (all optional keyword arguments): ``host``, ``files_root``, ``log_path``,
``credentials`` (username, password, token), ``task_lock_ttl`` and ``db`` for Label Studio, and its ``add_user()``
(a teammate signed up through the invite link, for several annotators); ``host``, ``port`` and
``cwd`` for the backend. ``db="postgres"`` runs Label Studio on a throw-away PostgreSQL cluster
(``scripts/pg_cluster.py``) instead of SQLite, as a deployment would; tests and benchmarks pick it with
``EXAMINE_TEST_LS_DB=postgres`` (``ls_db_from_env``). SQLite stays the default, and the demo's. Every server runs in its own process group, waits for ``GET /health`` and is stopped
with its whole group (``scripts.procs.stop_process_group``). Errors are ``ServiceError`` (a RuntimeError), and
``ServiceTimeout`` (also a TimeoutError) when a server never becomes healthy.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

if __package__ in (None, ""):  # imported as a top-level module (scripts/ on sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.pg_cluster import PostgresCluster  # noqa: E402
from scripts.procs import label_studio_env, stop_process_group  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LS_BIN = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"
ADMIN_EMAIL = "admin@example.com"
#: Label Studio's databases: SQLite in its data dir (the default) or a throw-away PostgreSQL cluster.
LS_DATABASES = ("sqlite", "postgres")
#: Seconds between the progress calls of a start that is still waiting (a console silent for longer looks stuck).
PROGRESS_EVERY = 15.0

__all__ = [
    "BackendServer",
    "LabelStudioServer",
    "Service",
    "ServiceError",
    "ServiceTimeout",
    "ensure_port_free",
    "free_port",
    "label_studio_bin",
    "label_studio_env",
    "log_tail",
    "ls_db_from_env",
    "stop_process_group",
]


class ServiceError(RuntimeError):
    """A server could not be started or died."""


class ServiceTimeout(ServiceError, TimeoutError):
    """A server did not answer ``/health`` in time."""


def label_studio_bin() -> Path:
    """Path of the `label-studio` executable: ``$LABEL_STUDIO_BIN`` or ``.venv-ls/bin/label-studio``."""
    return Path(os.environ.get("LABEL_STUDIO_BIN") or DEFAULT_LS_BIN)


def ls_db_from_env() -> str:
    """The database tests and benchmarks run Label Studio on: ``$EXAMINE_TEST_LS_DB`` (sqlite or postgres)."""
    db = (os.environ.get("EXAMINE_TEST_LS_DB") or "sqlite").strip().lower()
    if db not in LS_DATABASES:
        raise ServiceError(f"EXAMINE_TEST_LS_DB={db!r}: expected one of {', '.join(LS_DATABASES)}")
    return db


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_port_free(host: str, port: int, what: str, hint: str = "") -> None:
    """Raise ServiceError when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise ServiceError(f"port {port} on {host} is already in use; {what} needs it. {hint}".rstrip()) from None


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Service:
    """A server process in its own process group, with its log file and a health URL."""

    name = "server"

    def __init__(
        self,
        cmd: list[str],
        env: Mapping[str, str],
        log_path: Path,
        health_url: str,
        cwd: Path = REPO_ROOT,
        name: str | None = None,
    ) -> None:
        self.cmd, self._env, self.log_path = list(cmd), dict(env), Path(log_path)
        self.health_url, self.cwd = health_url, Path(cwd)
        self.name = name or self.name
        self.proc: subprocess.Popen | None = None

    def launch(self) -> Service:
        """Start the process (unless running) without waiting for it to answer: :meth:`start` then waits."""
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.process_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def start(self, timeout: float = 180.0, progress: Callable[[float], None] | None = None) -> Service:
        """Start the process (unless running) and block until ``health_url`` answers 200.

        ``progress`` is called with the seconds waited so far every ``PROGRESS_EVERY`` seconds of the wait.
        """
        self.launch()
        try:
            self.wait_healthy(timeout, progress)
        except BaseException:
            self.stop()
            raise
        return self

    def process_env(self) -> dict[str, str]:
        """The environment the process is started with."""
        return self._env

    def healthy(self) -> bool:
        try:
            return requests.get(self.health_url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout: float, progress: Callable[[float], None] | None = None) -> None:
        start = time.monotonic()
        deadline, next_report = start + timeout, start + PROGRESS_EVERY
        while time.monotonic() < deadline:
            self.check_alive()
            if self.healthy():
                return
            if progress is not None and time.monotonic() >= next_report:
                progress(time.monotonic() - start)
                next_report += PROGRESS_EVERY
            time.sleep(0.3)
        raise ServiceTimeout(
            f"{self.name} did not answer {self.health_url} within {timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise ServiceError (with the log's tail) if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with code {self.proc.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``; True if it was running."""
        proc, self.proc = self.proc, None
        return stop_process_group(proc, timeout)

    def restart(self, timeout: float = 180.0) -> None:
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LabelStudioServer(Service):
    """Label Studio 1.23 from its own venv: scripted admin, legacy token, local files served, SSRF checks off.

    Attributes: ``url``, ``port``, ``token`` (legacy, 40 hex chars), ``username``, ``password``, ``data_dir``
    (LABEL_STUDIO_BASE_DATA_DIR; a temporary one, removed by ``stop()``, when none is given), ``files_root``
    (LOCAL_FILES_DOCUMENT_ROOT; local storages must point at a sub-directory), ``log_path``, ``db``.

    ``db="postgres"``: Label Studio's database is a PostgreSQL cluster instead of SQLite: ``postgres`` when given (a
    started ``scripts.pg_cluster.PostgresCluster``, left running by ``stop()``), else a throw-away one made at the
    first ``launch()`` and removed by ``stop()`` (``fsync`` off: test data). ``postgres`` holds the cluster.
    """

    name = "Label Studio"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        executable: str | os.PathLike[str] | None = None,
        port: int | None = None,
        startup_timeout: float = 180.0,
        extra_env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        files_root: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        credentials: tuple[str, str, str] | None = None,
        task_lock_ttl: int | None = 3,
        db: str = "sqlite",
        postgres: PostgresCluster | None = None,
    ) -> None:
        if postgres is not None:
            db = "postgres"
        if db not in LS_DATABASES:
            raise ServiceError(f"Label Studio database {db!r}: expected one of {', '.join(LS_DATABASES)}")
        self.db, self.postgres, self._own_postgres = db, postgres, False
        self.executable = Path(executable) if executable else label_studio_bin()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ls-e2e-"))
        self.files_root = Path(files_root) if files_root else self.data_dir / "files"
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.username, self.password, self.token = credentials or (
            ADMIN_EMAIL,
            secrets.token_urlsafe(12),
            secrets.token_hex(20),
        )
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.task_lock_ttl = task_lock_ttl
        self._pat: str | None = None
        cmd = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            host,
            "--port",
            str(self.port),
            "--host",
            self.url,
        ]
        super().__init__(
            cmd,
            {},
            Path(log_path) if log_path else self.data_dir / "label-studio.log",
            self.url + "/health",
            cwd=self.data_dir,
        )

    def __repr__(self) -> str:
        return f"LabelStudioServer(url={self.url!r}, data_dir={str(self.data_dir)!r}, db={self.db!r})"

    def first_start(self) -> bool:
        """True while the database is still empty (the first start runs the migrations, ~1 min).

        For PostgreSQL: while no cluster runs yet (a given cluster is taken as migrated)."""
        if self.db == "postgres":
            return self.postgres is None
        return not (self.data_dir / "label_studio.sqlite3").exists()

    def env(self) -> dict[str, str]:
        """Environment of the server process: scripted, offline, local files served, SSRF checks off."""
        env = label_studio_env(
            self.data_dir, self.files_root, self.username, self.password, self.token, task_lock_ttl=self.task_lock_ttl
        )
        if self.postgres is not None:
            env.update(self.postgres.label_studio_env())
        env.update(self.extra_env)
        return env

    def process_env(self) -> dict[str, str]:
        return self.env()

    def launch(self) -> LabelStudioServer:
        if not self.executable.is_file():
            raise FileNotFoundError(
                f"Label Studio executable not found at {self.executable}; run `make setup-ls` or set LABEL_STUDIO_BIN"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        if self.db == "postgres" and self.postgres is None:
            self.postgres, self._own_postgres = PostgresCluster(fsync=False).start(), True
        try:
            super().launch()
        except BaseException:
            self._stop_own_postgres()
            raise
        return self

    def start(self, timeout: float | None = None, progress: Callable[[float], None] | None = None) -> LabelStudioServer:
        super().start(self.startup_timeout if timeout is None else timeout, progress)
        return self

    def personal_access_token(self) -> str:
        """A personal access token of the admin, created on the first call (``POST /api/token/``), then cached."""
        if self._pat is None:
            resp = requests.post(f"{self.url}/api/token/", headers={"Authorization": f"Token {self.token}"}, timeout=30)
            if resp.status_code != 201:
                raise ServiceError(f"POST /api/token/ -> {resp.status_code}: {resp.text[:200]}")
            self._pat = resp.json()["token"]
        return self._pat

    def add_user(self, email: str, password: str | None = None) -> str:
        """Sign a new user up through the organization's invite link, as a teammate would; returns their legacy token.

        ``GET /api/invite`` (as the admin) gives the link; the signup form (``/user/signup/?token=…``, CSRF
        included) creates the user as a member of the organization and logs them in; ``GET
        /api/current-user/token`` in that session answers their legacy API token.
        """
        admin = {"Authorization": f"Token {self.token}"}
        resp = requests.get(f"{self.url}/api/invite", headers=admin, timeout=30)
        if resp.status_code != 200:
            raise ServiceError(f"GET /api/invite -> {resp.status_code}: {resp.text[:200]}")
        signup = f"{self.url}/user/signup/?token={resp.json()['token']}"
        with requests.Session() as session:
            session.get(signup, timeout=30)
            form = {
                "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
                "email": email,
                "password": password or secrets.token_urlsafe(12),
            }
            resp = session.post(signup, data=form, headers={"Referer": signup}, timeout=30, allow_redirects=False)
            if resp.status_code != 302:
                raise ServiceError(f"signing {email} up -> {resp.status_code}: {resp.text[-300:]}")
            resp = session.get(f"{self.url}/api/current-user/token", timeout=30)
            if resp.status_code != 200:
                raise ServiceError(f"GET /api/current-user/token for {email} -> {resp.status_code}: {resp.text[:200]}")
            return str(resp.json()["token"])

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process group; a temporary data dir is removed (unless LS_E2E_KEEP_DATA=1), and so is a
        PostgreSQL cluster made by ``launch()``."""
        was_running = super().stop(timeout)
        self._stop_own_postgres()
        if self._own_dir and os.environ.get("LS_E2E_KEEP_DATA") != "1":
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return was_running

    def _stop_own_postgres(self) -> None:
        if self._own_postgres and self.postgres is not None:
            self.postgres.stop()
            self.postgres, self._own_postgres = None, False


class BackendServer(Service):
    """The examine backend (``python -m backend._wsgi``, gunicorn) on ``host:port`` with a given environment."""

    name = "backend"

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        python: str = sys.executable,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.env = {**os.environ, **env, "HOST": host, "PORT": str(self.port)}  # read at every start
        super().__init__([python, "-m", "backend._wsgi"], self.env, Path(log_path), self.url + "/health", cwd=cwd)

    def process_env(self) -> dict[str, str]:
        return self.env

    def start(self, timeout: float = 120.0, progress: Callable[[float], None] | None = None) -> BackendServer:
        super().start(timeout, progress)
        return self

    def status(self, pid: int, auth=None) -> dict:
        """``GET /projects/<pid>/status``."""
        return requests.get(f"{self.url}/projects/{pid}/status", timeout=10, auth=auth).json()

    def wait(self, pid: int, predicate: Callable[[dict], bool], timeout: float = 240.0, auth=None) -> dict:
        """Poll the project's status until ``predicate(status)``; AssertionError (with the log) on timeout."""
        end = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < end:
            st = self.status(pid, auth=auth)
            if predicate(st):
                return st
            time.sleep(0.3)
        raise AssertionError(f"backend state never satisfied the condition; last {st}\n{self.log_tail(60)}")
