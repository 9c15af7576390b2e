"""A real Label Studio server for end-to-end tests.

`LabelStudioServer` starts `label-studio` from its own virtualenv (``.venv-ls`` at the repository
root, or the executable named by ``LABEL_STUDIO_BIN``) on 127.0.0.1 at a free port, with a
throw-away data directory, a known admin user and a fixed legacy API token. It waits for
``GET /health`` and stops the whole process group on exit.

The ``label_studio`` fixture shares one server across the test session. Tests that use it are
marked ``@pytest.mark.e2e``. A missing Label Studio install fails the fixture (it does not skip):
``make setup-ls`` installs it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts.procs import label_studio_env, stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BIN = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"

__all__ = ["LabelStudioServer", "free_port", "label_studio", "label_studio_bin"]


def label_studio_bin() -> Path:
    """Path of the `label-studio` executable: ``$LABEL_STUDIO_BIN`` or ``.venv-ls/bin/label-studio``."""
    return Path(os.environ.get("LABEL_STUDIO_BIN") or DEFAULT_BIN)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """A Label Studio process on 127.0.0.1, usable as a context manager.

    Attributes once started: ``url``, ``token`` (legacy, 40 hex chars), ``username``, ``password``,
    ``data_dir`` (LABEL_STUDIO_BASE_DATA_DIR), ``files_root`` (LOCAL_FILES_DOCUMENT_ROOT; local
    storages must point at a sub-directory of it), ``log_path`` (server stdout+stderr).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        executable: str | os.PathLike[str] | None = None,
        port: int | None = None,
        startup_timeout: float = 180.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.executable = Path(executable) if executable else label_studio_bin()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ls-e2e-"))
        self.files_root = self.data_dir / "files"
        self.log_path = self.data_dir / "label-studio.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "admin@example.com"
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(20)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._pat: str | None = None

    def __repr__(self) -> str:
        return f"LabelStudioServer(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    def env(self) -> dict[str, str]:
        """Environment of the server process: scripted, offline, local files served, SSRF checks off."""
        env = label_studio_env(self.data_dir, self.files_root, self.username, self.password, self.token,
                               task_lock_ttl=3)
        env.update(self.extra_env)
        return env

    def start(self) -> LabelStudioServer:
        """Start the server and block until ``GET /health`` answers 200."""
        if self._proc is not None:
            return self
        if not self.executable.is_file():
            raise FileNotFoundError(
                f"Label Studio executable not found at {self.executable}; run `make setup-ls` "
                "or set LABEL_STUDIO_BIN"
            )
        self.files_root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.executable), "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", str(self.port), "--host", self.url,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Label Studio exited with code {self._proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"Label Studio did not answer /health within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def personal_access_token(self) -> str:
        """A personal access token of the admin: created on the first call (``POST /api/token/``,
        which answers 409 to a user who already has one), then cached."""
        if self._pat is None:
            resp = requests.post(
                f"{self.url}/api/token/", headers={"Authorization": f"Token {self.token}"}, timeout=30
            )
            if resp.status_code != 201:
                raise RuntimeError(f"POST /api/token/ -> {resp.status_code}: {resp.text[:200]}")
            self._pat = resp.json()["token"]
        return self._pat

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and remove a temporary data dir."""
        proc, self._proc = self._proc, None
        stop_process_group(proc, timeout)
        if self._own_dir and os.environ.get("LS_E2E_KEEP_DATA") != "1":
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    """One real Label Studio for the whole test session (fails if Label Studio is not installed)."""
    exe = label_studio_bin()
    if not exe.is_file():
        pytest.fail(
            f"e2e tests need Label Studio at {exe}: run `make setup-ls` (or set LABEL_STUDIO_BIN); "
            "deselect them with -m 'not e2e'",
            pytrace=False,
        )
    server = LabelStudioServer(executable=exe)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
