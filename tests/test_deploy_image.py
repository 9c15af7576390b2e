"""Static checks that keep backend/Dockerfile buildable by Docker 20.10 (Debian 12's docker.io) without a registry,
and the health probe it installs (docker/examine-healthcheck). `make image-test` builds and runs it for real."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "backend" / "Dockerfile"
PROBE = ROOT / "docker" / "examine-healthcheck"
PG_DOCKERFILE = ROOT / "docker" / "postgres.Dockerfile"
PG_ENTRYPOINT = ROOT / "docker" / "postgres-entrypoint.sh"


def instructions(path: Path) -> list[str]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(current.strip())
            current = ""
    return out


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, ROOT / "docker" / "label-studio.Dockerfile", PG_DOCKERFILE])
def test_dockerfile_needs_no_frontend_image(dockerfile):
    """No `# syntax=` line (it pulls a frontend image) and no heredocs (Docker 20.10's built-in frontend lacks them)."""
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    assert not any(re.match(r"(RUN|COPY)\s.*<<", ins) for ins in instructions(dockerfile))


def test_base_images_and_mirrors_are_build_arguments():
    args = {ins.split()[1].split("=")[0] for ins in instructions(DOCKERFILE) if ins.startswith("ARG ")}
    assert {"CUDA_BASE_IMAGE", "CPU_BASE_IMAGE", "TORCH_CPU_INDEX", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"} <= args
    froms = [ins for ins in instructions(DOCKERFILE) if ins.startswith("FROM ")]
    assert all(" AS " in f for f in froms) and froms[-1].startswith("FROM base-${VARIANT}")


def test_probe_is_copied_into_the_image():
    copies = [ins for ins in instructions(DOCKERFILE) if ins.startswith("COPY ")]
    assert "COPY docker/examine-healthcheck /usr/local/bin/examine-healthcheck" in copies
    assert PROBE.read_text().startswith("#!/usr/bin/env python3\n")


@pytest.mark.parametrize(
    "auth,status,healthy",
    [
        (None, 200, True),
        (None, 503, False),
        (("user", "s3cret"), 200, True),
        (("user", "wrong"), 200, False),
    ],
)
def test_backend_healthcheck_probe(auth, status, healthy):
    """Run the probe against a stand-in /health (with Basic auth when the service uses it)."""
    expected_auth = "Basic " + base64.b64encode(b"user:s3cret").decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            ok_auth = auth is None or self.headers.get("Authorization") == expected_auth
            code = status if self.path == "/health" and ok_auth else 401
            body = b'{"status": "UP"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASIC_AUTH_")}
        env["PORT"] = str(server.server_address[1])
        if auth:
            env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"] = auth
        result = subprocess.run([sys.executable, "-I", str(PROBE)], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) == healthy, result.stderr.decode()


# --------------------------------------------------------------------------------------------- PostgreSQL image


def test_postgres_image_follows_the_official_interface():
    """docker/postgres.Dockerfile stands in for postgres:15 in docker-compose.yml: same data path, pg_isready on
    PATH, the entrypoint copied from the build context, a non-root user, fast shutdown."""
    ins = instructions(PG_DOCKERFILE)
    args = {i.split()[1].split("=")[0]: i.split("=", 1)[1] if "=" in i else None for i in ins if i.startswith("ARG ")}
    assert "BASE_IMAGE" in args and args["PG_MAJOR"] == "15"
    assert any(i.startswith("RUN ") and "apt-get install" in i and "postgresql-${PG_MAJOR}" in i for i in ins)
    assert any("create_main_cluster = false" in i for i in ins), "the package must not create or start a cluster"
    copies = [i for i in ins if i.startswith("COPY ")]
    assert copies == ["COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh"]
    env = " ".join(i for i in ins if i.startswith("ENV "))
    assert "PGDATA=/var/lib/postgresql/data" in env and "PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:" in env
    assert [i for i in ins if i.startswith("USER ")][-1] == "USER postgres"
    assert 'VOLUME ["/var/lib/postgresql/data"]' in ins and "STOPSIGNAL SIGINT" in ins
    assert os.access(PG_ENTRYPOINT, os.X_OK) and PG_ENTRYPOINT.read_text().startswith("#!/bin/sh\n")


def test_postgres_entrypoint_initializes_and_serves():
    """The entrypoint run on the host's PostgreSQL 15: an empty PGDATA is initialized with POSTGRES_USER /
    POSTGRES_PASSWORD / POSTGRES_DB, the server accepts that password over TCP and refuses another; a second start
    on the same data keeps it; without POSTGRES_PASSWORD an empty PGDATA is refused."""
    import secrets
    import shutil
    import tempfile
    import time

    from scripts.pg_cluster import PostgresCluster, postgres_available

    if reason := postgres_available():
        pytest.skip(reason)
    helper = PostgresCluster()  # only for the OS user to run as (initdb refuses root) and the binaries
    bin_dir = helper.bin_dir
    folder = Path(tempfile.mkdtemp(prefix="examine-pg-entry-"))  # not under pytest's root-only tmp_path
    kw: dict = {}
    if helper.os_user:
        import pwd

        entry = pwd.getpwnam(helper.os_user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        kw = dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    port = free_port()
    password = secrets.token_hex(8)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PGDATA": str(folder / "data"), "PGPORT": str(port), "LANG": "C"}
    env = dict(base, POSTGRES_USER="labelstudio", POSTGRES_DB="labelstudio", POSTGRES_PASSWORD=password)
    cmd = ["sh", str(PG_ENTRYPOINT), "postgres", "-c", "listen_addresses=127.0.0.1"]
    cmd += ["-c", f"unix_socket_directories={folder}"]

    def psql(pw: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bin_dir / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "labelstudio"]
            + ["-d", "labelstudio", "-c", "SELECT current_database() || ' ' || current_user"],
            env={**os.environ, "PGPASSWORD": pw},
            capture_output=True,
            text=True,
            timeout=30,
        )

    def serve() -> None:
        server = subprocess.Popen(cmd, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[0]
                time.sleep(0.3)
            ok = psql(password)
            assert ok.returncode == 0 and ok.stdout.strip() == "labelstudio labelstudio", ok.stderr
            assert psql("wrong").returncode != 0
        finally:
            server.send_signal(2)  # SIGINT, the image's STOPSIGNAL: fast shutdown
            server.wait(30)

    try:
        serve()
        assert (folder / "data" / "PG_VERSION").is_file()
        serve()  # the initialized data is reused
        refused = subprocess.run(
            ["sh", str(PG_ENTRYPOINT), "postgres"],
            env=dict(base, PGDATA=str(folder / "empty")),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
            **kw,
        )
        assert refused.returncode == 1 and "POSTGRES_PASSWORD is not set" in refused.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
