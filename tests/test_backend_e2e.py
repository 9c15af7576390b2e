"""End to end: a real Label Studio 1.23.2 and the real backend process on 127.0.0.1, real images.

Shows: the backend connects (with HTTP basic auth); every unlabeled task gets a score; ``/next``
serves tasks in EXAMINE order; after annotations arrive through the API the served order changes
within the bound; annotations are never altered; bad tasks are reported per task and do not stop
the rest; a restarted backend keeps its store and does not re-embed; START_TRAINING retrains.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from backend.labelstudio import LabelStudio
from examine.datasets import medical_tiles
from examine.encoder import Encoder
from examine.ranking import DEFAULT_POLICY, rank
from examine.store import EmbeddingStore
from tests.backend_server import LABEL_CONFIG, png, start_backend

pytestmark = pytest.mark.e2e

AUTH = ("examine", "s3cret-pass")
N_GOOD = 30
LATENCY_BOUND_S = 5.0


@pytest.fixture(scope="module")
def env(label_studio, tmp_path_factory):
    backend = start_backend(
        label_studio,
        tmp_path_factory,
        AUTH,
        EXAMINE_TRAIN_EPOCHS="1",
        EXAMINE_HEAD_SIZE="10",
        EXAMINE_FULL_PUBLISH_IDLE_S="2",
        EXAMINE_CLEANUP_IDLE_S="2",
        EXAMINE_SCREENING="0",  # the exact queue is the subject here; tests/test_screening_e2e.py screens
    )
    model_dir = Path(backend.env["MODEL_DIR"])
    client = LabelStudio(label_studio.url, label_studio.token)
    pid = client.create_project("examine e2e", LABEL_CONFIG)["id"]
    tiles = medical_tiles(N_GOOD, size=64, seed=7)
    files = {f"tile{i:02d}.png": png(t) for i, t in enumerate(tiles)}
    good_ids = client.import_files(pid, files)
    broken = png(tiles[0])[:200]  # a truncated PNG
    broken_id = client.import_files(pid, {"broken.png": broken})[0]
    bad_ids = client.import_tasks(
        pid,
        [
            {"image": f"{label_studio.url}/data/upload/{pid}/no-such-file.png"},  # 404 on Label Studio
            {"image": "ftp://example.invalid/slide.png"},  # a scheme the backend refuses
        ],
    )
    ml = client.add_ml_backend(
        pid, backend.url, "examine", auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1]
    )
    ctx = dict(
        client=client,
        pid=pid,
        backend=backend,
        model_dir=model_dir,
        good=sorted(good_ids),
        broken=broken_id,
        bad=list(bad_ids),
        ml=ml,
        label_studio=label_studio,
    )
    yield ctx
    backend.stop()


def published(env) -> dict:
    return env["backend"].wait(
        env["pid"],
        lambda s: s["published_version"] and not s["pending"] and s["counts"]["embedded"] >= N_GOOD,
        auth=AUTH,
    )


def scores_of(client: LabelStudio, pid: int, version: str) -> dict[int, float]:
    out = {}
    for t in client.iter_tasks(pid, fields="all"):
        for p in t.get("predictions") or []:
            if p.get("model_version") == version:
                out[t["id"]] = p["score"]
    return out


def expected_order(env, status) -> list[int]:
    """The queue the library computes on the stored embeddings, independent of the backend."""
    enc = Encoder.load(env["model_dir"] / "encoder")
    store = EmbeddingStore(env["model_dir"] / "store", enc.version, enc.dim)
    client, pid = env["client"], env["pid"]
    keys, ids, labeled, labels = [], [], [], []
    import hashlib

    for t in client.iter_tasks(pid, fields="all"):
        if t["id"] not in env["good"]:
            continue
        data = client.download(t["data"]["image"], task_id=t["id"])
        keys.append(hashlib.sha256(data).hexdigest())
        ids.append(t["id"])
        anns = t.get("annotations") or []
        labeled.append(bool(anns))
        labels.append(anns[-1]["result"][0]["value"]["choices"][0] if anns and anns[-1]["result"] else None)
    r = rank(store.get(keys), labeled=np.array(labeled), labels=labels, policy=DEFAULT_POLICY)
    return [ids[j] for j in r.order]


def test_backend_requires_basic_auth(env):
    import requests

    assert requests.get(env["backend"].url + "/health", timeout=5).status_code == 200
    r = requests.post(env["backend"].url + "/predict", json={"tasks": []}, timeout=5)
    assert r.status_code == 401
    assert requests.post(env["backend"].url + "/predict", json={"tasks": []}, auth=AUTH, timeout=5).status_code == 200


def test_connected_and_every_unlabeled_task_scored(env):
    client, pid = env["client"], env["pid"]
    backends = client.list_ml_backends(pid)
    assert backends and backends[0]["url"] == env["backend"].url
    assert backends[0].get("state") in ("CO", "PR", "TR"), backends[0]
    status = published(env)
    project = client.get_project(pid)
    assert project["model_version"] == status["published_version"]
    assert project["sampling"] == "Uncertainty sampling"
    scores = scores_of(client, pid, status["published_version"])
    assert set(scores) == set(env["good"])
    assert all(0.0 < s <= 1.0 for s in scores.values())
    views = client.list_views(pid)
    assert any(
        v["data"].get("title") == "examine queue (score: lowest = next)"
        and v["data"]["ordering"] == ["tasks:predictions_score"]
        for v in views
    )


def test_bad_tasks_are_reported_per_task(env):
    status = published(env)
    errors = {int(k): v for k, v in status["errors"].items()}
    assert set(errors) == {env["broken"], *env["bad"]}, errors
    for tid, msg in errors.items():
        assert f"task {tid}" in msg
    assert status["counts"]["embedded"] == N_GOOD


def test_next_serves_examine_order(env):
    client, pid = env["client"], env["pid"]
    status = published(env)
    order = expected_order(env, status)
    scores = scores_of(client, pid, status["published_version"])
    assert sorted(scores, key=scores.get) == order
    nxt = client.next_task(pid)
    assert nxt["id"] == order[0]


def predictions_per_task(client: LabelStudio, pid: int, version: str) -> tuple[dict[int, int], int]:
    """How many predictions of ``version`` each task holds, and how many predictions the project holds."""
    per, total = {}, 0
    for t in client.iter_tasks(pid, fields="all"):
        preds = t.get("predictions") or []
        total += len(preds)
        per[t["id"]] = sum(p.get("model_version") == version for p in preds)
    return per, total


def test_annotations_reorder_the_stream_quickly_and_stay_untouched(env):
    """Each annotation re-ranks in place: the same version, one prediction per task, the new head served."""
    client, pid = env["client"], env["pid"]
    before = published(env)
    first_head = before["queue_head"]
    assert first_head[:10] == expected_order(env, before)[:10]  # the batch: the library's queue of these labels
    made = []
    latencies = []
    for label in ("stained", "background", "stained"):
        head = client.next_task(pid)["id"]
        result = [{"from_name": "tissue", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        t0 = time.monotonic()
        made.append(client.create_annotation(head, result))
        while True:
            status = env["backend"].status(pid, auth=AUTH)
            if status["queue_labels"] > before["queue_labels"] and not status["pending"]:
                break
            assert time.monotonic() - t0 < LATENCY_BOUND_S, (
                f"the re-rank did not land within {LATENCY_BOUND_S} s\n{env['backend'].log_tail()}"
            )
            time.sleep(0.05)
        latencies.append(time.monotonic() - t0)
        assert status["published_version"] == before["published_version"]  # updated in place
        before = status
    print(f"annotation → re-rank in Label Studio: {[f'{x:.2f} s' for x in latencies]}")
    status = published(env)
    # the batch being served stays first (three of its ten are labeled)
    scores = scores_of(client, pid, status["published_version"])
    labeled = {a["task"] for a in made}
    head = int(env["backend"].env["EXAMINE_HEAD_SIZE"])
    served_order = sorted((t for t in scores if t not in labeled), key=scores.get)[:head]
    assert served_order == status["queue_head"][:head]
    assert (
        set(served_order[:7]) <= set(first_head) and served_order[:7] == [t for t in first_head if t not in labeled][:7]
    )
    per, total = predictions_per_task(client, pid, status["published_version"])
    assert all(per[t] == 1 for t in env["good"] if t not in labeled)
    assert total <= len(per) + head
    # /next keeps serving a user the task it last gave them until the lock expires (TTL 3 s here);
    # the polling above took such locks.
    time.sleep(3.5)
    assert client.next_task(pid)["id"] == status["queue_head"][0]
    for a in made:  # annotations are read, never changed
        (now,) = client.list_annotations(a["task"])
        assert now["id"] == a["id"] and now["result"] == a["result"] and now["updated_at"] == a["updated_at"]


def test_a_project_update_that_changes_nothing_publishes_nothing(env):
    """Opening or saving the project's settings sends PROJECT_UPDATED; with the same config nothing is re-ranked."""
    client, pid = env["client"], env["pid"]
    before = published(env)
    project = client.get_project(pid)
    client.update_project(pid, description="opened and saved, nothing changed")
    client.update_project(pid, label_config=project["label_config"])
    time.sleep(3)
    after = published(env)
    assert after["publishes"] == before["publishes"] and after["published_version"] == before["published_version"]


def test_next_task_carries_the_probes_choice_as_a_pre_annotation(env):
    """After labels of two classes, the served task's current prediction proposes the probe's class."""
    from examine.probe import Probe

    client, pid = env["client"], env["pid"]
    status = env["backend"].wait(pid, lambda s: s["probe"].get("prelabel") and not s["pending"], auth=AUTH)
    assert status["probe"]["labels"] >= 2 and set(status["probe"]["counts"]) == {"stained", "background"}
    time.sleep(3.5)  # let the locks of earlier /next calls expire
    served = client.next_task(pid)["id"]
    (pred,) = [p for p in client.list_predictions(task=served) if p["model_version"] == status["published_version"]]
    (result,) = pred["result"]
    assert (result["from_name"], result["to_name"], result["type"]) == ("tissue", "image", "choices")
    assert 0.5 <= result["score"] <= 1.0 and 0.0 < pred["score"] <= 1.0  # the prediction's score: queue position
    # the same probe, fitted here on the stored embeddings and the annotations, proposes the same class
    enc = Encoder.load(env["model_dir"] / "encoder")
    store = EmbeddingStore(env["model_dir"] / "store", enc.version, enc.dim)
    import hashlib

    X, labels, ids = [], [], []
    for t in client.iter_tasks(pid, fields="all"):
        if t["id"] not in env["good"]:
            continue
        X.append(store.get([hashlib.sha256(client.download(t["data"]["image"], task_id=t["id"])).hexdigest()])[0])
        anns = t.get("annotations") or []
        labels.append(anns[-1]["result"][0]["value"]["choices"][0] if anns else None)
        ids.append(t["id"])
    X = np.asarray(X)
    have = [j for j, v in enumerate(labels) if v is not None]
    probe = Probe().fit(X[have], [labels[j] for j in have], classes=["stained", "background"], reference=X)
    assert result["value"]["choices"] == probe.predict(X[[ids.index(served)]])


def test_restart_keeps_store_and_does_not_reembed(env):
    published(env)
    enc = Encoder.load(env["model_dir"] / "encoder")
    store_before = len(EmbeddingStore(env["model_dir"] / "store", enc.version, enc.dim))
    env["backend"].restart()
    log_mark = env["backend"].log_path.stat().st_size
    env["client"].list_ml_backends(env["pid"])  # Label Studio checks the backend again
    import requests

    # Label Studio calls /setup on reconnect; a new TASKS_CREATED embeds only the new task.
    r = requests.post(
        env["backend"].url + "/setup",
        auth=AUTH,
        timeout=10,
        json={"project": f"{env['pid']}.0", "schema": LABEL_CONFIG},
    )
    assert r.status_code == 200
    tid = env["client"].import_files(env["pid"], {"new.png": png(medical_tiles(1, size=64, seed=99)[0])})[0]
    env["backend"].wait(env["pid"], lambda s: s["counts"]["embedded"] >= N_GOOD + 1 and not s["pending"], auth=AUTH)
    after = len(EmbeddingStore(env["model_dir"] / "store", enc.version, enc.dim))
    assert after == store_before + 1
    log = env["backend"].log_path.read_text()[log_mark:]
    assert "embedded 1 new" in log and f"embedded {N_GOOD}" not in log
    env["good"].append(tid)


def test_every_unlabeled_task_holds_one_current_prediction_and_no_old_version_stays(env):
    client, pid = env["client"], env["pid"]
    end = time.monotonic() + 60
    while time.monotonic() < end:
        status = published(env)
        versions = client.list_model_versions(pid)
        per, total = predictions_per_task(client, pid, status["published_version"])
        unlabeled = {
            t["id"] for t in client.iter_tasks(pid) if t["id"] in env["good"] and not t.get("total_annotations")
        }
        if all(per[t] == 1 for t in unlabeled) and list(versions) == [status["published_version"]]:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"versions {versions}, per task {per}\n{env['backend'].log_tail()}")
    assert total <= len(per)


def test_start_training_continues_mae_and_reembeds(env):
    client, pid = env["client"], env["pid"]
    first = published(env)
    client.train_ml_backend(env["ml"]["id"])
    status = env["backend"].wait(
        pid,
        lambda s: (
            s["encoder_version"] != first["encoder_version"]
            and s["published_version"] != first["published_version"]
            and not s["pending"]
        ),
        timeout=300,
        auth=AUTH,
    )
    assert (env["model_dir"] / "projects" / str(pid) / "encoder" / "encoder.safetensors").is_file()
    assert status["counts"]["embedded"] == len(env["good"])
