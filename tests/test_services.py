"""scripts/services.py: a start that is still waiting says so; a launch does not wait."""

from __future__ import annotations

import sys

import pytest

from scripts import services
from scripts.services import Service, ServiceTimeout, free_port


def test_start_reports_progress_while_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "PROGRESS_EVERY", 0.4)
    silent = Service(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env={},
        log_path=tmp_path / "log.txt",
        health_url=f"http://127.0.0.1:{free_port()}/health",  # nothing answers
        name="silent",
    )
    waited: list[float] = []
    with pytest.raises(ServiceTimeout, match="silent did not answer"):
        silent.start(timeout=1.5, progress=waited.append)
    assert len(waited) >= 2 and waited == sorted(waited) and waited[0] >= 0.4
    assert not silent.running()  # a failed start stops the process


SERVE_AFTER_A_SECOND = (
    "import time, http.server; time.sleep(1); "
    "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')"
)


def test_launch_returns_at_once_and_start_then_waits(tmp_path):
    """The demo launches both servers side by side, then waits for each: launch does not wait, start does."""
    port = free_port()
    server = Service(
        [sys.executable, "-c", SERVE_AFTER_A_SECOND.format(port=port)],
        env={},
        log_path=tmp_path / "log.txt",
        health_url=f"http://127.0.0.1:{port}/",
        cwd=tmp_path,
        name="late",
    )
    try:
        assert server.launch() is server and server.running() and not server.healthy()
        pid = server.proc.pid
        server.start(timeout=30)
        assert server.healthy() and server.proc.pid == pid  # the launched process, not a second one
    finally:
        server.stop()
    assert not server.running()
