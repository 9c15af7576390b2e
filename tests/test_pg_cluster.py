"""scripts/pg_cluster.py: a throw-away PostgreSQL cluster for Label Studio (no Label Studio started here).

The cluster starts in a couple of seconds, accepts Label Studio's role over TCP with its password only, runs as a
non-root user, and leaves no process or folder behind. Skipped where Debian's postgresql-15 is not installed.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from scripts.pg_cluster import PostgresCluster, PostgresError, postgres_available
from scripts.services import LabelStudioServer, ServiceError, ls_db_from_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_postgres = pytest.mark.skipif(bool(postgres_available()), reason=postgres_available() or "")


@needs_postgres
def test_cluster_serves_label_studio_role_and_leaves_nothing_behind():
    with PostgresCluster(fsync=False) as pg:
        folder, pid = pg.folder, int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        assert folder is not None and pg.running()
        assert pg.query("SELECT current_user, current_database()") == [["labelstudio", "labelstudio"]]
        env = pg.label_studio_env()
        assert env["DJANGO_DB"] == "default" and env["POSTGRE_HOST"] == "127.0.0.1"
        assert env["POSTGRE_PORT"] == str(pg.port) and env["POSTGRE_PASSWORD"] == pg.password
        # The server runs as a non-root user (PostgreSQL refuses root), which owns the private folder.
        owner = pwd.getpwuid(os.stat(folder).st_uid).pw_name
        assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == owner != "root"
        assert os.stat(folder).st_mode & 0o077 == 0
        # TCP needs the password.
        pg.password, right = "wrong", pg.password
        with pytest.raises(PostgresError, match="password authentication failed"):
            pg.query("SELECT 1")
        pg.password = right
    assert not folder.exists() and not alive(pid)
    pg.stop()  # idempotent


@needs_postgres
def test_command_line_runs_a_command_with_the_variables():
    code = "import os; print(os.environ['DJANGO_DB'], os.environ['POSTGRE_NAME'], os.environ['POSTGRE_PORT'])"
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "pg_cluster.py"),
            "--no-fsync",
            "--",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    db, name, port = out.stdout.split()
    assert (db, name) == ("default", "labelstudio") and int(port) > 0
    assert "cluster stopped and removed" in out.stderr


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_names_must_be_plain_identifiers():
    with pytest.raises(ValueError):
        PostgresCluster(dbname="x; DROP DATABASE y")


def test_label_studio_server_on_a_given_cluster_gets_its_settings(monkeypatch):
    class Fake:
        def label_studio_env(self):
            return {"DJANGO_DB": "default", "POSTGRE_PORT": "5999"}

    server = LabelStudioServer(postgres=Fake())  # type: ignore[arg-type]
    try:
        env = server.env()
        assert server.db == "postgres" and env["DJANGO_DB"] == "default" and env["POSTGRE_PORT"] == "5999"
        assert "DJANGO_DB" not in LabelStudioServer(data_dir=server.data_dir).env()  # SQLite stays the default
    finally:
        server.stop()
    monkeypatch.setenv("EXAMINE_TEST_LS_DB", "Postgres")
    assert ls_db_from_env() == "postgres"
    monkeypatch.setenv("EXAMINE_TEST_LS_DB", "mysql")
    with pytest.raises(ServiceError, match="EXAMINE_TEST_LS_DB"):
        ls_db_from_env()
    with pytest.raises(ServiceError):
        LabelStudioServer(db="mysql")
