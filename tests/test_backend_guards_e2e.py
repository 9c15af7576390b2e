"""Only Label Studio drives a project, against a real Label Studio 1.23.2 and the real backend process.

- ``/predict`` and ``/webhook`` naming a project that never connected the backend change nothing in Label Studio;
- a forged deletion of real tasks (or of their annotations) changes nothing: the queue stays whole;
- a task image that names Label Studio's API, directly or through a redirect from an allowed host, never
  reaches it with the key (Label Studio's own log shows no authenticated call);
- a labeling config without an image tag is refused at connection, and the project is left as it was.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import pytest
import requests

from backend.labelstudio import LabelStudioError
from tests.backend_server import LABEL_CONFIG
from tests.fault_setup import Setup, tiles

pytestmark = pytest.mark.e2e


def _post(s: Setup, route: str, body: dict) -> requests.Response:
    return requests.post(s.backend.url + route, json=body, timeout=10)


def _untouched(s: Setup, pid: int) -> None:
    project = s.client.get_project(pid)
    assert project["model_version"] in ("", None), project["model_version"]
    assert project.get("sampling") == "Sequential sampling", project.get("sampling")
    assert all(not t.get("predictions") for t in s.client.iter_tasks(pid, fields="all"))


def test_requests_for_a_project_that_never_connected_the_backend_change_nothing(setup_factory):
    s = setup_factory()
    other = s.client.create_project("never connected", LABEL_CONFIG)["id"]
    ids = list(s.client.import_files(other, tiles(4)))
    tasks = [{"id": t, "data": {}, "project": other} for t in ids]
    assert _post(s, "/predict", {"project": f"{other}.1", "tasks": tasks}).json() == {"results": []}
    for action in ("ANNOTATION_CREATED", "TASKS_CREATED", "PROJECT_UPDATED", "START_TRAINING"):
        body = {"action": action, "project": {"id": other}, "annotation": {"id": 1, "task": ids[0]}, "tasks": tasks}
        assert _post(s, "/webhook", body).status_code == 200
    time.sleep(3)  # anything queued would have started by now
    _untouched(s, other)
    assert requests.get(f"{s.backend.url}/projects/{other}/status", timeout=5).status_code == 404


def test_a_forged_deletion_of_real_tasks_changes_nothing(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(8)
    s.annotate(ids[0])
    s.connect()
    s.converged()
    before = s.status()["counts"]
    real = [{"id": t} for t in ids[1:6]]
    assert _post(s, "/webhook", {"action": "TASKS_DELETED", "project": {"id": s.pid}, "tasks": real}).ok
    anns = [{"id": a} for a in s.annotations()]
    assert _post(s, "/webhook", {"action": "ANNOTATIONS_DELETED", "project": {"id": s.pid}, "annotations": anns}).ok
    took = s.converged()  # every unlabeled task still holds one prediction of the current version
    assert s.status()["counts"] == before
    print(f"forged deletions: converged {took:.1f} s after, counts {before}")


def test_an_image_naming_the_api_never_reaches_it_with_the_key(setup_factory, label_studio):
    redirect = _Redirector(f"{label_studio.url}/api/current-user/whoami")
    try:
        s = setup_factory(extra={"ALLOWED_HOSTS": f"127.0.0.1:{redirect.port}"})
        ids = s.import_tiles(4)
        refs = ["/api/current-user/whoami", f"{label_studio.url}/api/projects/", "/data/../api/current-user/whoami"]
        bad = s.client.import_tasks(s.pid, [{"image": r} for r in refs] + [{"image": redirect.url + "/x.png"}])
        bad_ids = bad if isinstance(bad, list) else []
        s.connect()
        s.backend.wait(s.pid, lambda st: st["published_version"] and not st["pending"] and len(st["errors"]) == 4)
        errors = s.status()["errors"]
        assert s.status()["counts"]["embedded"] == len(ids)
        for tid in bad_ids[:3]:
            assert "not a Label Studio data path" in errors[str(tid)], errors
        assert redirect.hits, "the allowed host was never asked"
        log = label_studio.log_path.read_text(errors="replace")
        assert '"GET /api/current-user/whoami HTTP/1.1" 200' not in log
        assert '"GET /api/projects/ HTTP/1.1" 200' not in log
    finally:
        redirect.close()


def test_a_config_without_an_image_tag_is_refused_and_the_project_left_alone(setup_factory):
    s = setup_factory()
    text = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    pid = s.client.create_project("text only", text)["id"]
    s.client.import_tasks(pid, [{"text": f"note {i}"} for i in range(3)])
    with pytest.raises(LabelStudioError) as refused:
        s.client.add_ml_backend(pid, s.backend.url, "examine")
    print("Label Studio says:", str(refused.value)[:400])
    time.sleep(2)
    _untouched(s, pid)
    assert "no <Image" in s.backend.log_tail()


class _Redirector:
    """An allowed image host that answers every GET with a redirect to ``target`` (Label Studio's API)."""

    def __init__(self, target: str):
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.hits = hits
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("damage", ["encoder.json deleted", "weights truncated"])
def test_a_lost_encoder_is_a_problem_and_the_queue_recovers(setup_factory, damage):
    s = setup_factory(extra={"EXAMINE_PRETRAIN_EPOCHS": "2"})
    ids = s.import_tiles(8)
    s.annotate(ids[0])
    s.connect()
    s.converged()
    old = s.status()["encoder_version"]
    s.backend.stop()
    folder = s.model_dir / "encoder"
    if damage == "encoder.json deleted":
        (folder / "encoder.json").unlink()
    else:
        weights = next(folder.glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
    before = s.annotations()
    s.backend.start()
    t0 = time.monotonic()
    s.annotate(ids[1])
    st = s.backend.wait(s.pid, lambda st: st["encoder_version"] not in (None, old) and not st["pending"])
    took = s.converged()
    problems = " ".join(s.status()["problems"])
    assert "encoder" in problems and ("missing" in problems or "could not be loaded" in problems), problems
    assert (folder / "encoder.json").is_file() and st["encoder_version"] != old
    after = s.annotations()
    assert {a: v for a, v in after.items() if a in before} == before
    print(f"{damage}: new encoder and every unlabeled task ranked {time.monotonic() - t0:.1f} s after ({took:.1f})")


def test_a_project_waiting_on_a_slow_image_host_does_not_delay_another(setup_factory):
    slow_host = _Slow(20.0)
    try:
        s = setup_factory(
            extra={
                "ALLOWED_HOSTS": f"127.0.0.1:{slow_host.port}",
                "EXAMINE_IMAGE_DEADLINE_S": "25",
                "EXAMINE_RECONCILE_S": "300",
            }
        )
        ids = s.import_tiles(6)
        s.connect()
        s.converged()
        other = s.client.create_project("slow images", LABEL_CONFIG)["id"]
        s.client.import_files(other, tiles(2))
        s.client.import_tasks(other, [{"image": f"{slow_host.url}/img{i}.png"} for i in range(4)])
        s.client.add_ml_backend(other, s.backend.url, "examine")
        s.backend.wait(other, lambda st: "running" in st["pending"] and slow_host.hits, timeout=60)
        t0 = time.monotonic()
        s.annotate(ids[2])
        st = s.backend.wait(s.pid, lambda st: st["queue_labels"] >= 1 and not st["pending"], timeout=60)
        took = time.monotonic() - t0
        busy = "running" in s.backend.status(other)["pending"]
        print(f"re-ranked {took:.1f} s after a label while the other project waits on a 20 s host (busy: {busy})")
        assert busy and took < 10, (took, st)
    finally:
        slow_host.close()


class _Slow(_Redirector):
    """An allowed image host that answers after ``delay`` seconds."""

    def __init__(self, delay: float):
        super().__init__("")
        delay_s = delay

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                time.sleep(delay_s)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        hits = self.hits
        self.server.RequestHandlerClass = Handler


def test_a_label_that_arrives_during_a_reconciliation_is_never_published_as_unlabeled(setup_factory, label_studio):
    """A proxy in front of Label Studio holds the backend's task listing back until an annotation was made (and
    its webhook answered): the listing the reconciliation reads is older than the label."""
    proxy = _HoldingProxy(label_studio.url)
    try:
        s = setup_factory(extra={"LABEL_STUDIO_URL": proxy.url, "EXAMINE_RECONCILE_S": "3600"})
        ids = s.import_tiles(6)
        s.connect()
        s.converged()
        proxy.hold.set()
        hook = {"action": "TASKS_DELETED", "project": {"id": s.pid}, "tasks": []}  # asks for a reconciliation
        assert _post(s, "/webhook", hook).ok
        assert proxy.listing.wait(30), "the reconciliation never listed the tasks"
        s.annotate(ids[3])  # Label Studio sends ANNOTATION_CREATED now, while the listing is held
        time.sleep(1.0)
        proxy.hold.clear()
        proxy.release.set()
        st = s.backend.wait(s.pid, lambda st: not st["pending"] and st["queue_labels"] >= 1, timeout=60)
        assert st["counts"]["labeled"] == 1 and ids[3] not in st["queue_head"], st
        assert proxy.held >= 1
    finally:
        proxy.close()


class _HoldingProxy:
    """Forwards every request to Label Studio; while ``hold`` is set, a task listing waits for ``release``."""

    def __init__(self, upstream: str):
        self.hold, self.listing, self.release = threading.Event(), threading.Event(), threading.Event()
        self.held = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/api/tasks") and self.command == "GET" and outer.hold.is_set():
                    answer = requests.get(upstream + self.path, headers=dict(self.headers), timeout=60)
                    outer.held += 1
                    outer.listing.set()
                    outer.release.wait(30)  # Label Studio answered before the label existed
                else:
                    answer = requests.request(
                        self.command,
                        upstream + self.path,
                        headers=dict(self.headers),
                        data=body,
                        timeout=60,
                        allow_redirects=False,
                    )
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
