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


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, ROOT / "docker" / "label-studio.Dockerfile"])
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
