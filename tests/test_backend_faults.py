"""Faults against a real Label Studio 1.23.2 and the real backend process: each test injects one and
checks the outcome within a bound: every unlabeled task holds exactly one prediction of the project's
current model_version, new tasks are ranked, no annotation changed.

Faults: Label Studio stopped while work is due; the backend killed while tasks are deleted and
imported; basic auth turned on for a connected project; a truncated ``state.json``; a truncated store
file. Plus: malformed requests get 400, a slow image host cannot delay a webhook's answer.
"""

from __future__ import annotations

import http.server
import os
import signal
import socketserver
import threading
import time

import numpy as np
import pytest
import requests

from scripts.procs import stop_process_group
from tests.backend_server import BackendServer
from tests.fault_setup import AUTH, N_TILES
from tests.lsserver import free_port

pytestmark = pytest.mark.e2e


def kill(backend: BackendServer) -> None:
    os.killpg(backend.proc.pid, signal.SIGKILL)
    backend.proc.wait(10)
    backend.proc = None


def test_label_studio_stopped_while_a_publish_is_due(setup_factory, label_studio):
    # A debounce longer than Label Studio takes to stop puts the publish inside the outage.
    s = setup_factory(extra={"EXAMINE_DEBOUNCE_S": "1.5", "EXAMINE_MAX_WAIT_S": "1.5"})
    s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    head = s.client.next_task(s.pid)["id"]
    s.annotate(head)
    before = s.annotations()
    proc, label_studio.proc = label_studio.proc, None
    stop_process_group(proc)  # a real stop of the real server (its data stays)
    down = time.monotonic()
    time.sleep(20)
    label_studio.start()
    print(f"Label Studio down for {time.monotonic() - down:.1f} s")
    new = s.import_tiles(2)
    took = s.converged(must_rank=tuple(new))
    assert s.metric("examine_job_retries_total") >= 1 and s.metric("examine_publish_failures_total") >= 1
    assert s.annotations() == before
    print(f"converged {took:.1f} s after Label Studio came back")
    # The aborted publish and the superseded versions are cleaned up; only the current one stays.
    end = time.monotonic() + 60
    while time.monotonic() < end:
        current = s.client.get_project(s.pid)["model_version"]
        versions = set(s.client.list_model_versions(s.pid))
        if versions == {current}:
            break
        time.sleep(1)
    assert versions == {current}, (versions, current)


def test_backend_killed_while_tasks_are_deleted_and_imported(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    s.annotate(ids[0])
    s.converged()
    before = s.annotations()
    kill(s.backend)
    for tid in ids[3:5]:
        s.client.request("DELETE", f"/api/tasks/{tid}/")
    new = s.import_tiles(2)
    t0 = time.monotonic()
    s.backend.start()
    took = s.converged(must_rank=tuple(new))
    st = s.status()
    assert st["counts"]["tasks"] == N_TILES - 2 + 2 and st["counts"]["embedded"] == N_TILES
    assert s.annotations() == before
    print(f"restart → converged in {time.monotonic() - t0:.1f} s (after healthy: {took:.1f} s)")


def test_basic_auth_turned_on_for_a_connected_project(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(N_TILES)
    ml = s.connect()
    s.converged()
    s.annotate(ids[2])
    s.converged()
    before = s.annotations()
    s.backend.stop()
    s.backend.env.update(BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
    s.auth = AUTH
    s.backend.start()
    s.client.request(
        "PATCH",
        f"/api/ml/{ml['id']}",
        json={
            "project": s.pid,
            "url": s.backend.url,
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": AUTH[0],
            "basic_auth_pass": AUTH[1],
        },
    )
    s.backend.wait(s.pid, lambda st: st["synced"] and not st["pending"], auth=AUTH, timeout=60)
    hooks = s.client.list_webhooks(s.pid)
    assert any(
        h["url"] == s.backend.url + "/webhook" and h["headers"].get("Authorization", "").startswith("Basic ")
        for h in hooks
    ), hooks
    mark = s.backend.log_path.stat().st_size
    t0 = time.monotonic()
    new = s.import_tiles(1)
    took = s.converged(must_rank=tuple(new))
    assert "event TASKS_CREATED ok" in s.backend.log_path.read_text()[mark:]
    assert s.annotations() == before
    print(f"new task ranked {time.monotonic() - t0:.1f} s after import ({took:.1f})")


def test_truncated_state_json_is_rebuilt_from_label_studio(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    s.annotate(ids[0])
    s.converged()
    before = s.annotations()
    old = s.status()["published_version"]
    s.backend.stop()
    path = s.model_dir / "projects" / str(s.pid) / "state.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    new = s.import_tiles(1)  # imported while the backend is down: its event is lost
    mark = s.backend.log_path.stat().st_size
    s.backend.start()
    took = s.converged(must_rank=tuple(new))
    st = s.status()
    assert any("state.json" in p and "rebuilt" in p for p in st["problems"]), st["problems"]
    assert st["published_version"] != old and st["counts"]["embedded"] == N_TILES + 1
    log = s.backend.log_path.read_text()[mark:]
    assert "embedded 1 new" in log and f"embedded {N_TILES + 1} new" not in log  # cached embeddings reused
    assert s.annotations() == before
    print(f"state rebuilt and converged in {took:.1f} s")


def test_truncated_store_file_is_repaired_and_reembedded(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    (vectors,) = [p for p in (s.model_dir / "store").glob("*/vectors.f32") if "image-checks" not in str(p)]
    with open(vectors, "r+b") as fh:
        fh.truncate(vectors.stat().st_size // 2 + 3)
    t0 = time.monotonic()
    s.annotate(ids[1])  # any event; the periodic reconciliation would find it too
    new = s.import_tiles(1)
    before = s.annotations()
    took = s.converged(must_rank=tuple(new))
    st = s.status()
    assert any("dropped" in p or "missing from the store" in p for p in st["problems"]), st["problems"]
    assert st["counts"]["embedded"] == N_TILES + 1 and vectors.stat().st_size == (N_TILES + 1) * 192 * 4
    assert s.annotations() == before
    print(f"store repaired and converged in {time.monotonic() - t0:.1f} s ({took:.1f})")


MALFORMED = [
    ("/setup", b"not json"),
    ("/setup", b"[1, 2]"),
    ("/setup", b'{"project": null}'),
    ("/setup", b'{"project": "abc"}'),
    ("/setup", b'{"project": 1' + b"0" * 300 + b"}"),
    ("/setup", b'{"project": 1, "schema": 42}'),
    ("/setup", b'{"project": 1, "hostname": 5}'),
    ("/predict", b'{"tasks": "nope"}'),
    ("/predict", b'{"tasks": [1, 2]}'),
    ("/predict", b'{"tasks": [{"id": "x"}], "project": 1}'),
    ("/predict", b'{"tasks": [{"id": null}], "project": 1}'),
    ("/predict", b'{"tasks": [{"id": 1}], "project": -4}'),
    ("/webhook", b'{"project": 1}'),
    ("/webhook", b'{"action": 7, "project": 1}'),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": "x"}'),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "project": {"id": [1]}}'),
    ("/webhook", b"[" * 100000 + b"]" * 100000),
    ("/webhook", b""),
]


_BAD_VALUES = ["null", '"x"', "-1", "1.5", "true", "[]", "{}", '"\u00b2"', '"1e3"', "1e400", "9" * 30, '"0x10"']
_TEMPLATES = [
    ("/setup", '{{"project": {v}}}'),
    ("/setup", '{{"project": 999999, "schema": {v}}}'),
    ("/predict", '{{"project": {v}, "tasks": [{{"id": 1}}]}}'),
    ("/predict", '{{"project": PID, "tasks": [{{"id": {v}}}]}}'),
    ("/predict", '{{"project": PID, "tasks": {v}}}'),
    (
        "/webhook",
        '{{"action": "ANNOTATION_CREATED", "project": {{"id": PID}}, "annotation": {{"id": 1, "task": {v}}}}}',
    ),
    ("/webhook", '{{"action": "ANNOTATION_CREATED", "project": {{"id": PID}}, "annotation": {v}}}'),
    ("/webhook", '{{"action": "TASKS_DELETED", "project": {{"id": PID}}, "tasks": [{{"id": {v}}}]}}'),
    ("/webhook", '{{"action": "ANNOTATIONS_DELETED", "project": {{"id": PID}}, "annotations": [{{"id": {v}}}]}}'),
    ("/webhook", '{{"action": {v}, "project": {{"id": PID}}}}'),
    ("/webhook", '{{"action": "PROJECT_UPDATED", "project": {{"id": PID, "label_config": {v}}}}}'),
    ("/webhook", '{{"action": "ANNOTATION_CREATED", "project": {v}}}'),
]
_STATUS_IDS = ["abc", "-1", "%C2%B2", "1e3", "0x10", "%00", "%201", "9" * 30, "1.0", "%D9%A3"]


def test_no_malformed_request_of_any_kind_gets_a_5xx(setup_factory):
    s = setup_factory()
    s.import_tiles(2)
    s.connect()
    s.backend.wait(s.pid, lambda st: st["published_version"] and not st["pending"])
    kinds = [(r, t.format(v=v).replace("PID", str(s.pid)).encode()) for r, t in _TEMPLATES for v in _BAD_VALUES]
    kinds += MALFORMED
    answers = []
    for route, body in kinds:
        r = requests.post(s.backend.url + route, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        answers.append((route, body[:70], r.status_code))
    for pid in _STATUS_IDS:
        answers.append(("status", pid, requests.get(f"{s.backend.url}/projects/{pid}/status", timeout=5).status_code))
    fives = [a for a in answers if a[2] >= 500]
    print(f"{len(answers)} malformed kinds: {sum(a[2] < 500 for a in answers)} without a 5xx")
    assert len(answers) >= 90 and not fives, fives
    s.converged()  # and the project is still served


def test_malformed_requests_get_400_never_500(setup_factory):
    s = setup_factory(extra={"EXAMINE_MAX_REQUEST_MB": "1"})
    s.import_tiles(2)
    s.connect()
    pid = s.pid
    s.backend.wait(pid, lambda st: st["published_version"] and not st["pending"])
    known = [
        ("/webhook", f'{{"action": "ANNOTATION_CREATED", "project": {pid}, "annotation": "x"}}'.encode()),
        ("/webhook", f'{{"action": "ANNOTATION_CREATED", "project": {pid}, "annotation": {{"task": "a"}}}}'.encode()),
        ("/webhook", f'{{"action": "ANNOTATION_CREATED", "project": {pid}, "task": 5}}'.encode()),
        ("/webhook", f'{{"action": "TASKS_DELETED", "project": {pid}, "tasks": {{"id": 1}}}}'.encode()),
        (
            "/webhook",
            f'{{"action": "ANNOTATIONS_DELETED", "project": {pid}, "annotations": [{{"id": null}}]}}'.encode(),
        ),
        ("/webhook", f'{{"action": "PROJECT_UPDATED", "project": {{"id": {pid}, "label_config": 3}}}}'.encode()),
        ("/predict", b'{"tasks": [{"id": 1.5}], "project": 1}'),
    ]
    answers = []
    for route, body in MALFORMED + known:
        r = requests.post(s.backend.url + route, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        answers.append((route, body[:60], r.status_code, r.json().get("error", "")[:80]))
    print("\n".join(map(str, answers)))
    assert len(answers) >= 15 and all(code == 400 and err for _, _, code, err in answers), answers
    big = b'{"tasks": [' + b'{"id": 1},' * 200000 + b'{"id": 1}]}'  # 2 MB, over EXAMINE_MAX_REQUEST_MB=1
    r = requests.post(s.backend.url + "/predict", data=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert requests.get(s.backend.url + "/projects/abc/status", timeout=5).status_code == 400


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(30)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_slow_image_host_cannot_delay_webhooks(setup_factory):
    port = free_port()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = setup_factory(extra={"ALLOWED_HOSTS": f"127.0.0.1:{port}", "EXAMINE_RECONCILE_S": "300"})
        good = s.import_tiles(3)
        slow = s.client.import_tasks(
            s.pid, [{"image": f"http://127.0.0.1:{port}/img{i}.png?X-Amz-Signature=s3cr3t"} for i in range(6)]
        )
        s.connect()
        hook = {
            "action": "ANNOTATION_UPDATED",
            "project": {"id": s.pid},
            "annotation": {"id": 999999, "task": good[0], "result": []},
        }
        # Measure once the worker is stuck on the slow host.
        s.backend.wait(s.pid, lambda st: st["counts"]["embedded"] >= 3 and "running" in st["pending"], timeout=60)
        stop = time.monotonic() + 8
        worst, times = 0.0, []
        with requests.Session() as sess:
            pred = threading.Thread(
                target=lambda: [
                    requests.post(
                        s.backend.url + "/predict",
                        json={"project": s.pid, "tasks": [{"id": t} for t in slow]},
                        timeout=30,
                    )
                    for _ in range(5)
                ]
            )
            pred.start()
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = sess.post(s.backend.url + "/webhook", json=hook, timeout=5)
                times.append(time.perf_counter() - t0)
                worst = max(worst, times[-1])
                assert r.status_code in (200, 201)
                time.sleep(0.05)
            pred.join(60)
        print(
            f"{len(times)} webhook answers while images hang: median {np.median(times) * 1000:.1f} ms, "
            f"slowest {worst * 1000:.1f} ms"
        )
        assert worst < 0.1
        st = s.backend.wait(s.pid, lambda st: len(st["errors"]) == len(slow), timeout=120)
        for err in st["errors"].values():
            assert f"127.0.0.1:{port}" in err and "s3cr3t" not in err, err
        assert "s3cr3t" not in s.backend.log_path.read_text()
    finally:
        server.shutdown()
