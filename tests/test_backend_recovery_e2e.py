"""A project never loses its ranking, proposals come only from the config, other backends are left alone.

Against a real Label Studio 1.23.2 and the real backend process (issue 32):
- the embedding store lost and the project's version deleted in Label Studio: every unlabeled task holds one
  prediction of the current version again within the bound;
- labels outside the config's choices (made through Label Studio's API, or sent by a forged webhook) are never
  proposed and are counted at /status; after a class rename no task proposes the old name;
- a second ML backend on the project keeps its own webhook and headers while examine runs with basic auth;
- a model version changed by hand is switched back within seconds of the next annotation.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socketserver
import threading
import time

import pytest
import requests

from tests.backend_server import LABEL_CONFIG
from tests.fault_setup import N_TILES, Setup

pytestmark = pytest.mark.e2e


def _proposed(s: Setup) -> dict[int, list[str]]:
    """Task id → the choices proposed by its prediction of the project's current version (unlabeled tasks)."""
    current = s.client.get_project(s.pid)["model_version"]
    out = {}
    for t in s.client.iter_tasks(s.pid, fields="all"):
        if t.get("annotations"):
            continue
        for p in t.get("predictions") or []:
            if p.get("model_version") == current:
                out[t["id"]] = [c for r in p.get("result") or [] for c in (r.get("value") or {}).get("choices", [])]
    return out


def test_store_lost_and_version_deleted_in_label_studio_converges_again(setup_factory):
    s = setup_factory()
    s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    version = s.status()["published_version"]
    s.backend.stop()
    shutil.rmtree(s.model_dir / "store")  # the embedding store is lost
    s.client.update_project(s.pid, model_version="")  # an admin deletes the predictions and resets the version
    s.client.delete_model_version(s.pid, version)
    assert version not in s.client.list_model_versions(s.pid)
    s.backend.start()
    took = s.converged()
    st = s.status()
    assert st["published_version"] != version
    assert st["counts"]["embedded"] == N_TILES
    print(f"store lost + version deleted: converged {took:.1f} s after the restart")


def test_outside_labels_are_never_proposed_and_a_rename_refreshes_every_proposal(setup_factory):
    s = setup_factory()
    ids = s.import_tiles(N_TILES)
    for tid, label in zip(ids[:4], ["stained", "background", "stained", "background"]):
        s.annotate(tid, label)
    s.annotate(ids[4], "<script>alert(1)</script>")  # Label Studio's API takes any value
    s.connect()
    s.converged()
    forged = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": s.pid},
        "task": {"id": ids[5]},
        "annotation": {
            "id": 999999,
            "task": ids[5],
            "result": [
                {"from_name": "tissue", "to_name": "image", "type": "choices", "value": {"choices": ["<img src=x>"]}}
            ],
        },
    }
    assert requests.post(s.backend.url + "/webhook", json=forged, timeout=10).ok
    s.annotate(ids[6], "stained")
    time.sleep(3)
    s.converged()
    proposed = _proposed(s)
    assert proposed and all(c in ("stained", "background") for cs in proposed.values() for c in cs), proposed
    assert any(proposed.values()), "the probe proposes nothing"
    # The forged label counts until the reconciliation finds the task unlabeled in Label Studio (EXAMINE_RECONCILE_S).
    end, outside = time.monotonic() + 60, {}
    while time.monotonic() < end:
        outside = s.status()["probe"].get("outside_config", {})
        if outside.get("labels") == {"<script>alert(1)</script>": 1}:
            break
        time.sleep(0.5)
    assert outside.get("labels") == {"<script>alert(1)</script>": 1}, outside
    # Rename a class: every unlabeled task's proposal comes from the new names.
    renamed = LABEL_CONFIG.replace('"stained"', '"tissue-stained"')
    s.client.update_project(s.pid, label_config=renamed)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        time.sleep(1)
        proposed = _proposed(s)
        if s.status()["pending"] == [] and not any("stained" in cs for cs in proposed.values()):
            break
    assert not any("stained" in cs for cs in proposed.values()), proposed
    assert len(proposed) >= N_TILES - 7  # every unlabeled task still holds a current prediction
    print(f"after the rename: {sum(1 for cs in proposed.values() if cs)} of {len(proposed)} tasks propose a class")


class _OtherBackend:
    """A second ML backend: answers Label Studio's /health and /setup, counts webhooks."""

    def __init__(self):
        self.events = 0

        other = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):  # noqa: N802
                self._answer({"status": "UP"})

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/webhook"):
                    other.events += 1
                self._answer({"model_version": "other-model"} if self.path.startswith("/setup") else {})

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_another_backends_webhook_is_left_alone(setup_factory):
    other = _OtherBackend()
    try:
        s = setup_factory(auth=True)
        s.import_tiles(6)
        s.client.add_ml_backend(s.pid, other.url, "other")
        hooks = [h for h in s.client.list_webhooks(s.pid) if h["url"].startswith(other.url)]
        if not hooks:
            hooks = [s.client.create_webhook(s.pid, other.url + "/webhook", headers={"X-Other": "kept"})]
        else:
            s.client.update_webhook(hooks[0]["id"], headers={"X-Other": "kept"})
        s.connect()
        s.converged()
        time.sleep(6)  # a periodic reconciliation (EXAMINE_RECONCILE_S=5) has run
        s.converged()
        hooks = {h["url"]: h for h in s.client.list_webhooks(s.pid)}
        assert hooks[other.url + "/webhook"].get("headers") == {"X-Other": "kept"}, hooks
        ours = hooks[s.backend.url + "/webhook"]
        assert str((ours.get("headers") or {}).get("Authorization", "")).startswith("Basic ")
    finally:
        other.close()


def test_a_model_version_changed_by_hand_is_restored_after_the_next_annotation(setup_factory):
    s = setup_factory(extra={"EXAMINE_RECONCILE_S": "600"})  # no periodic reconciliation to help
    s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    version = s.status()["published_version"]
    s.client.update_project(s.pid, model_version="examine")  # the ML backend's title: a live model name
    time.sleep(2)
    head = s.client.next_task(s.pid)
    assert head is not None
    s.annotate(head["id"])
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        if s.client.get_project(s.pid)["model_version"] == s.status()["published_version"]:
            break
        time.sleep(0.25)
    took = time.monotonic() - t0
    assert s.client.get_project(s.pid)["model_version"] == s.status()["published_version"], version
    assert took <= 10, took
    print(f"hand-changed model version restored {took:.1f} s after the annotation")


def test_predictions_deleted_by_hand_outside_the_head_come_back_before_the_periodic_reconciliation(setup_factory):
    s = setup_factory(extra={"EXAMINE_RECONCILE_S": "600", "EXAMINE_VERSIONS_CHECK_S": "3"})
    s.import_tiles(N_TILES)
    s.connect()
    s.converged()
    head = set(s.status()["queue_head"])
    current = s.client.get_project(s.pid)["model_version"]
    gone = 0
    for t in s.client.iter_tasks(s.pid, fields="all"):
        if t["id"] in head:
            continue
        for p in t.get("predictions") or []:
            if p.get("model_version") == current and gone < 5:
                s.client.request("DELETE", f"/api/predictions/{p['id']}/")
                gone += 1
    assert gone == 5
    t0 = time.monotonic()
    took = s.converged(timeout=60)
    print(f"5 predictions deleted by hand outside the head: every task holds one again {took:.1f} s later")
    assert time.monotonic() - t0 <= 60


def test_a_model_dir_restored_from_an_older_backup_never_serves_a_partial_version(setup_factory, tmp_path):
    s = setup_factory()
    s.import_tiles(5)
    s.connect()
    s.converged()
    s.backend.stop()
    backup = tmp_path / "backup"
    shutil.copytree(s.model_dir, backup)  # the admin's backup: a version holding 5 predictions
    s.backend.start()
    s.import_tiles(N_TILES * 2)
    s.converged()
    s.backend.stop()
    shutil.rmtree(s.model_dir)
    shutil.copytree(backup, s.model_dir)
    s.backend.start()
    worst, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 20:  # while the backend catches up, the project never serves a partial version
        current = s.client.get_project(s.pid)["model_version"]
        missing = sum(
            1
            for t in s.client.iter_tasks(s.pid, fields="all")
            if not t.get("annotations")
            and not any(p.get("model_version") == current for p in t.get("predictions") or [])
        )
        worst = max(worst, missing)
        time.sleep(0.5)
    took = s.converged()
    print(
        f"older MODEL_DIR restored: at most {worst} unlabeled tasks without a current prediction; converged {took:.1f} s"
    )
    assert worst <= 2, worst
