"""The session's real Label Studio for the end-to-end tests (the launcher is the demo's: scripts/services.py).

On SQLite by default; ``EXAMINE_TEST_LS_DB=postgres`` runs the whole session's Label Studio on a throw-away
PostgreSQL cluster (scripts/pg_cluster.py), as a deployment would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from scripts.pg_cluster import postgres_available
from scripts.services import REPO_ROOT, LabelStudioServer, ServiceError, free_port, label_studio_bin, ls_db_from_env

__all__ = [
    "REPO_ROOT",
    "LabelStudioServer",
    "db_from_env",
    "free_port",
    "label_studio",
    "label_studio_bin",
    "running_label_studio",
]


def db_from_env() -> str:
    """The database the tests' Label Studio runs on (``EXAMINE_TEST_LS_DB``); the session fails when it cannot."""
    try:
        db = ls_db_from_env()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    if db == "postgres" and (reason := postgres_available()):
        pytest.fail(f"EXAMINE_TEST_LS_DB=postgres: {reason}", pytrace=False)
    return db


@contextmanager
def running_label_studio(**options: Any) -> Iterator[LabelStudioServer]:
    """A real Label Studio started with ``options`` (those of :class:`LabelStudioServer`) and stopped after;
    a missing install or a failed start fails the test with the reason."""
    exe = label_studio_bin()
    if not exe.is_file():
        pytest.fail(
            f"e2e tests need Label Studio at {exe}: run `make setup-ls` (or set LABEL_STUDIO_BIN); "
            "deselect them with -m 'not e2e'",
            pytrace=False,
        )
    server = LabelStudioServer(executable=exe, **options)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    """One real Label Studio for the whole test session (fails if Label Studio is not installed)."""
    with running_label_studio(db=db_from_env()) as server:
        yield server
