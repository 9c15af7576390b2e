"""The examine backend as a real process (gunicorn via ``python -m backend._wsgi``) for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from scripts.procs import stop_process_group
from tests.lsserver import REPO_ROOT, free_port


class BackendServer:
    """Starts, stops and restarts the backend on 127.0.0.1 with a given environment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "BackendServer":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend._wsgi"], cwd=REPO_ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"backend not healthy after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self, pid: int, auth=None) -> dict:
        return requests.get(f"{self.url}/projects/{pid}/status", timeout=10, auth=auth).json()

    def wait(self, pid: int, predicate, timeout: float = 240.0, auth=None) -> dict:
        end = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < end:
            st = self.status(pid, auth=auth)
            if predicate(st):
                return st
            time.sleep(0.3)
        raise AssertionError(f"backend state never satisfied the condition; last {st}\n{self.log_tail()}")
