"""The session's real Label Studio for the end-to-end tests (the launcher is the demo's: scripts/services.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.services import REPO_ROOT, LabelStudioServer, free_port, label_studio_bin

__all__ = ["REPO_ROOT", "LabelStudioServer", "free_port", "label_studio", "label_studio_bin"]


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
