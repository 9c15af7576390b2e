"""scripts/services.py: a start that is still waiting says so."""

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
