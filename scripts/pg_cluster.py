"""A throw-away PostgreSQL cluster for Label Studio: tests and benchmarks run Label Studio on it as a deployment would.

Debian's PostgreSQL 15 (`postgresql-15`, binaries in /usr/lib/postgresql/15/bin; ``$EXAMINE_PG_BIN`` picks another
folder) is installed on the project's machines but not running. ``PostgresCluster`` makes a cluster in a new
temporary folder (initdb), starts it on 127.0.0.1 at a free port (pg_ctl), creates a role and a database for Label
Studio with a random password, and stops and removes it all on ``stop()`` / at the end of a ``with`` block:

    from scripts.pg_cluster import PostgresCluster
    with PostgresCluster() as pg:
        env = {**os.environ, **pg.label_studio_env()}   # DJANGO_DB=default, POSTGRE_NAME, POSTGRE_USER, ...

PostgreSQL refuses to run as root: as root, the cluster's processes run as the system user ``nobody`` (or
``$EXAMINE_PG_OS_USER``), which owns the temporary folder; as any other user, as that user. Clients reach it over TCP
on 127.0.0.1 with the password (scram-sha-256); the Unix socket lives in the private folder.

Command line (standard library only):

    python scripts/pg_cluster.py                   # start, print the Label Studio variables, wait for Ctrl-C
    python scripts/pg_cluster.py -- <command ...>  # run a command with those variables set, then stop
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_BIN = Path("/usr/lib/postgresql/15/bin")
#: The system user the cluster runs as when we are root (initdb and postgres refuse root).
DEFAULT_OS_USER = "nobody"

__all__ = ["DEFAULT_BIN", "PostgresCluster", "PostgresError", "pg_bin", "postgres_available"]


class PostgresError(RuntimeError):
    """The cluster could not be made, started or used."""


def pg_bin() -> Path:
    """The folder of PostgreSQL's server binaries: ``$EXAMINE_PG_BIN`` or Debian's PostgreSQL 15."""
    return Path(os.environ.get("EXAMINE_PG_BIN") or DEFAULT_BIN)


def postgres_available(bin_dir: Path | None = None) -> str | None:
    """None when a cluster can be made here, else why not (a reason for a skip)."""
    folder = bin_dir or pg_bin()
    for tool in ("initdb", "pg_ctl", "postgres", "psql"):
        if not (folder / tool).is_file():
            return f"PostgreSQL not installed: {folder / tool} is missing (Debian: apt-get install postgresql-15)"
    if os.geteuid() == 0:
        user = os.environ.get("EXAMINE_PG_OS_USER") or DEFAULT_OS_USER
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"running as root, and the system user {user!r} to run PostgreSQL as does not exist"
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A temporary PostgreSQL cluster with one database and one role (its owner) for Label Studio.

    Attributes once started: ``host``, ``port``, ``dbname``, ``user``, ``password``, ``folder`` (the temporary
    folder: ``data/``, ``socket/``, ``postgres.log``), ``log_path``. ``fsync=False`` trades durability for speed
    (a test's throw-away data; a benchmark that measures the database keeps the default). ``parent`` is where the
    temporary folder is made (default: the system's temporary folder); as root, the cluster's OS user must be able
    to enter it. ``settings`` are more server settings (postgresql.conf syntax, e.g. ``{"work_mem": "'64MB'"}``).
    """

    def __init__(
        self,
        *,
        bin_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        dbname: str = "labelstudio",
        user: str = "labelstudio",
        password: str | None = None,
        os_user: str | None = None,
        fsync: bool = True,
        parent: str | os.PathLike[str] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else pg_bin()
        self.host, self.requested_port = host, port
        self.port = port or 0
        for name in (dbname, user):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise ValueError(f"{name!r}: database and role names here are plain lower-case SQL identifiers")
        self.dbname, self.user = dbname, user
        self.password = password or secrets.token_hex(16)
        if os.geteuid() == 0:
            self.os_user: str | None = os_user or os.environ.get("EXAMINE_PG_OS_USER") or DEFAULT_OS_USER
        else:
            self.os_user = None  # ourselves
        self.fsync = fsync
        self.parent = Path(parent) if parent else None
        self.settings = dict(settings or {})
        self.folder: Path | None = None

    # ------------------------------------------------------------------ paths and processes

    @property
    def data_dir(self) -> Path:
        return self._folder() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._folder() / "socket"

    @property
    def log_path(self) -> Path:
        return self._folder() / "postgres.log"

    def _folder(self) -> Path:
        if self.folder is None:
            raise PostgresError("the cluster is not started")
        return self.folder

    def _run(
        self, tool: str, *args: str, check: bool = True, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool as the cluster's OS user, in the cluster's folder."""
        kw: dict = {}
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            kw = dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C", "PGTZ": "UTC"}
        proc = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self._folder(),
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
        if check and proc.returncode != 0:
            raise PostgresError(
                f"{tool} {' '.join(args[:4])} ... exited with {proc.returncode}:\n{proc.stdout[-2000:]}"
                f"{proc.stderr[-2000:]}\n{self.log_tail()}"
            )
        return proc

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PostgresError):
            return ""

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        """initdb, start on ``host``:``port`` (a free one unless given), create the role and the database."""
        if self.running():
            return self
        reason = postgres_available(self.bin_dir)
        if reason:
            raise PostgresError(reason)
        self.folder = Path(tempfile.mkdtemp(prefix="examine-pg-", dir=self.parent))
        try:
            if self.os_user is not None:  # the cluster's user owns the folder; nobody else may enter it
                entry = pwd.getpwnam(self.os_user)
                os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            self.folder.chmod(0o700)
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--locale=C",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions")  # fmt: skip
            self._mkdir_as_user(self.socket_dir)  # the server's user must own its socket directory
            for attempt in range(3):
                self.port = self.requested_port or _free_port(self.host)
                self._write_config()
                proc = self._run(
                    "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", str(int(timeout)),
                    "start", check=False, timeout=timeout + 10,
                )  # fmt: skip
                if proc.returncode == 0:
                    break
                if self.requested_port or attempt == 2 or "could not bind" not in self.log_tail(10):
                    raise PostgresError(
                        f"pg_ctl start exited with {proc.returncode}:\n{proc.stderr}\n{self.log_tail()}"
                    )
            self._psql(
                f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'",
                f"CREATE DATABASE {self.dbname} OWNER {self.user}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _mkdir_as_user(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            **({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"} if not self.fsync else {}),
            **self.settings,
        }
        # postgresql.auto.conf is read last; rewritten whole at every start attempt (a new port each time).
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def _psql(self, *statements: str) -> None:
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-p", str(self.port)]
        args += ["-U", "postgres", "-d", "postgres"]
        for sql in statements:
            args += ["-c", sql]
        self._run("psql", *args)

    def running(self) -> bool:
        if self.folder is None or not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def stop(self) -> None:
        """Stop the server (fast shutdown; killed if it does not stop) and remove the folder. Idempotent."""
        folder = self.folder
        if folder is None:
            return
        try:
            pid_file = self.data_dir / "postmaster.pid"
            if pid_file.exists():
                proc = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop",
                                 check=False, timeout=40)  # fmt: skip
                if proc.returncode != 0 and pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                        time.sleep(0.5)
                    except (OSError, ValueError, IndexError):
                        pass
        finally:
            self.folder = None
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresCluster({self.host}:{self.port}, db={self.dbname!r}, folder={str(self.folder)!r})"

    # ------------------------------------------------------------------ what clients need

    def label_studio_env(self) -> dict[str, str]:
        """Label Studio 1.23's database settings for this cluster (``core/settings/base.py``)."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.dbname,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }

    def query(self, sql: str) -> list[list[str]]:
        """Run ``sql`` as Label Studio's role over TCP with its password (what Label Studio does); the rows."""
        args = ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port)]
        out = self._run("psql", *args, "-U", self.user, "-d", self.dbname, "-c", sql, env={"PGPASSWORD": self.password})
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--bin-dir", help=f"PostgreSQL's binaries (default $EXAMINE_PG_BIN or {DEFAULT_BIN})")
    parser.add_argument("--no-fsync", action="store_true", help="fsync off: faster, for throw-away data")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- a command to run with the variables set")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    cluster = PostgresCluster(bin_dir=args.bin_dir, port=args.port, fsync=not args.no_fsync)
    stop_now = False

    def on_signal(signum, frame) -> None:
        nonlocal stop_now
        stop_now = True

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        cluster.start()
    except PostgresError as exc:
        print(f"pg_cluster: {exc}", file=sys.stderr)
        return 1
    try:
        env = cluster.label_studio_env()
        print(f"# PostgreSQL on {cluster.host}:{cluster.port} in {cluster.folder} ({time.monotonic() - t0:.1f} s)",
              file=sys.stderr)  # fmt: skip
        if command:
            return subprocess.run(command, env={**os.environ, **env}).returncode
        for key, value in env.items():
            print(f"export {key}={value}")
        print("# Ctrl-C stops and removes the cluster", file=sys.stderr, flush=True)
        while not stop_now:
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
        print("# cluster stopped and removed", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
