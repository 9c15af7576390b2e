"""End to end on PostgreSQL: Label Studio 1.23.2 on a throw-away PostgreSQL 15 cluster, as a deployment runs it.

The other end-to-end tests use Label Studio's default SQLite database (``EXAMINE_TEST_LS_DB=postgres`` moves them
all onto PostgreSQL). Here Label Studio runs on its own cluster (scripts/pg_cluster.py: initdb, 127.0.0.1, a free
port, password auth) and the backend ranks a small project on it: every unlabeled task holds one prediction of the
current version, ``/next`` serves the head of the queue, and an annotation re-ranks in place. Skipped where
PostgreSQL is not installed (Debian: ``apt-get install postgresql-15``; ``make test`` installs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from scripts.pg_cluster import PostgresCluster, postgres_available
from scripts.services import LabelStudioServer
from tests.fault_setup import N_TILES, Setup
from tests.lsserver import running_label_studio

pytestmark = pytest.mark.e2e

LOCK_TTL_S = 3  # LabelStudioServer's LABEL_STUDIO_TASK_LOCK_TTL: /next keeps serving a user's locked task until then


@pytest.fixture(scope="module")
def pg_label_studio() -> Iterator[LabelStudioServer]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    with PostgresCluster(fsync=False) as pg, running_label_studio(postgres=pg, startup_timeout=300) as server:
        print(f"Label Studio on PostgreSQL {pg.host}:{pg.port}: first start {time.monotonic() - t0:.1f} s")
        yield server


def test_ranking_converges_and_next_serves_the_head_on_postgres(pg_label_studio, tmp_path, encoder_dir):
    ls = pg_label_studio
    pg = ls.postgres
    assert pg is not None and ls.env()["DJANGO_DB"] == "default"
    s = Setup(ls, tmp_path, encoder_dir)
    try:
        ids = s.import_tiles(N_TILES)
        s.connect()
        took = s.converged()
        print(f"{N_TILES} tasks ranked in {took:.1f} s")
        st = s.status()
        version = st["published_version"]
        # Label Studio keeps its tasks and the backend's predictions in PostgreSQL, not in a SQLite file.
        assert not (ls.data_dir / "label_studio.sqlite3").exists()
        ((tasks,),) = pg.query(f"SELECT count(*) FROM task WHERE project_id = {s.pid}")
        ((preds,),) = pg.query(
            f"SELECT count(*) FROM prediction WHERE project_id = {s.pid} AND model_version = '{version}'"
        )
        assert int(tasks) == N_TILES and int(preds) == N_TILES, (tasks, preds)
        # /next serves the head of the queue (uncertainty sampling over the published scores).
        head = st["queue_head"][0]
        assert head in ids
        assert s.client.next_task(s.pid)["id"] == head

        # One annotation re-ranks in place: same version, more publishes, the label counted, a new head served.
        s.annotate(head)
        t0 = time.monotonic()
        after = s.backend.wait(
            s.pid,
            lambda x: x["publishes"] > st["publishes"] and x["queue_labels"] >= 1 and not x["pending"],
            timeout=120,
        )
        print(f"annotation re-ranked in {time.monotonic() - t0:.1f} s")
        s.converged()
        after = s.status()
        assert after["published_version"] == version and after["counts"]["labeled"] == 1
        new_head = after["queue_head"][0]
        assert new_head != head
        time.sleep(LOCK_TTL_S + 0.5)  # the /next above locked a task for this user
        assert s.client.next_task(s.pid)["id"] == new_head
    finally:
        s.close()
