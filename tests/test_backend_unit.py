"""Backend pieces without a Label Studio server: HTTP protocol, auth, settings, payloads, the job queue."""

from __future__ import annotations

import base64
import logging
import threading
import time

import pytest

from backend.app import create_app
from backend.fetch import ImageFetcher
from backend.jobs import JobQueue
from backend.label_config import annotation_answers
from backend.payload import BadRequest, image_key_from_config, project_id
from backend.prelabel import proposal
from backend.settings import Settings
from backend.state import TaskInfo
from backend.worker import ProjectWorker
from examine.images import ImageLoadError

CONFIG = '<View><Image name="img" value="$picture"/><Choices name="c" toName="img"><Choice value="x"/></Choices></View>'


def make_app(tmp_path, **kw):
    settings = Settings(model_dir=tmp_path, **kw)
    app = create_app(settings, start=False)
    return app, app.config["EXAMINE_BACKEND"]


def known(backend, pid, *tids):
    """Make a project known (as after a verified /setup), with some tasks."""
    state = backend.states.get(pid)
    for t in tids:
        state.tasks[t] = TaskInfo(uri=f"/data/upload/{pid}/{t}.png")
    backend.states.save(state)
    return state


def embedded_project(tmp_path, n, vectors, *, listed=None, **settings):
    """A backend whose project 1 holds tasks 1..n, embedded (``vectors(dim)`` gives their rows), reconciled, and
    talking to a fake Label Studio that lists ``listed`` (default: all); returns (backend, state, fake)."""
    import hashlib

    from examine.encoder import EncoderConfig, create_encoder

    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(tmp_path / "encoder")
    _, backend = make_app(tmp_path, **settings)
    enc = backend.encoder(1)
    state = known(backend, 1, *range(1, n + 1))
    keys = [hashlib.sha256(str(t).encode()).hexdigest() for t in range(1, n + 1)]
    backend.workspace.store(enc).add(keys, vectors(enc.dim))
    for t, k in zip(range(1, n + 1), keys):
        state.tasks[t].key = k
    state.synced, state.image_key, state.encoder_version = True, "picture", enc.version
    fake = _FakeLabelStudio(tasks=list(range(1, n + 1)) if listed is None else listed)
    backend._clients[(1, "api")] = fake
    return backend, state, fake


def basic(user, pw):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_health_is_open_and_everything_else_needs_basic_auth(tmp_path):
    app, _ = make_app(tmp_path, basic_auth_user="u", basic_auth_pass="p")
    c = app.test_client()
    assert c.get("/health").status_code == 200
    assert c.post("/predict", json={"tasks": []}).status_code == 401
    assert c.post("/predict", json={"tasks": []}, headers=basic("u", "wrong")).status_code == 401
    assert c.post("/predict", json={"tasks": []}, headers=basic("u", "p")).get_json() == {"results": []}
    assert c.get("/versions", headers=basic("u", "p")).status_code == 200


@pytest.mark.parametrize(
    "route, body, words",
    [
        ("/predict", {"tasks": "nope"}, "tasks"),
        ("/predict", [1, 2], "JSON object"),
        ("/webhook", {"project": {"id": 1}}, "action"),
        ("/setup", {"project": "abc"}, "project id"),
    ],
)
def test_malformed_requests_get_400_with_the_reason(tmp_path, route, body, words):
    app, _ = make_app(tmp_path)
    r = app.test_client().post(route, json=body)
    assert r.status_code == 400 and words in r.get_json()["error"]


def test_webhook_answers_fast_and_queues_one_rerank(tmp_path):
    app, backend = make_app(tmp_path)
    known(backend, 3, 5)
    c = app.test_client()
    payload = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 3},
        "annotation": {"id": 11, "task": 5, "result": [{"from_name": "c", "value": {"choices": ["tumour"]}}]},
        "task": {"id": 5, "project": 3, "data": {"image": "/data/upload/3/a.png"}},
    }
    t0 = time.perf_counter()
    for _ in range(5):
        assert c.post("/webhook", json=payload).status_code == 201
    assert (time.perf_counter() - t0) / 5 < 0.1
    assert backend.jobs.pending(3) == {"rank"}
    state = backend.states.get(3)
    assert state.tasks[5].labeled and state.tasks[5].answers == {"c": ["tumour"]} and state.annotation_task[11] == 5
    assert (tmp_path / "projects" / "3" / "pending.json").is_file()


def test_webhook_without_project_is_ignored(tmp_path):
    app, _ = make_app(tmp_path)
    r = app.test_client().post("/webhook", json={"action": "PROJECT_CREATED"})
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"


def test_setup_of_a_project_label_studio_cannot_confirm_is_refused_and_never_logs_the_token(tmp_path, caplog):
    app, backend = make_app(tmp_path)
    secret = "0123456789abcdef0123456789abcdef01234567"
    with caplog.at_level(logging.DEBUG):
        r = app.test_client().post(
            "/setup",
            json={
                "project": "7.1795638417",
                "schema": CONFIG,
                "hostname": "http://127.0.0.1:1",
                "access_token": secret,
            },
        )
    assert r.status_code == 502 and "verify project 7" in r.get_json()["error"]
    assert secret not in caplog.text
    assert not (tmp_path / "projects" / "7").exists() and not backend.states.exists(7)
    r = app.test_client().post("/setup", json={"project": 7, "schema": CONFIG})
    assert r.status_code == 403 and "no Label Studio is configured" in r.get_json()["error"]


def test_pending_work_survives_a_restart(tmp_path):
    app, backend = make_app(tmp_path)
    known(backend, 4, 1)
    app.test_client().post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 4}, "tasks": [{"id": 1}]})
    _, again = make_app(tmp_path)
    assert again.states.get(4).pending == ["rank", "sync"]  # a deletion is confirmed against Label Studio


def test_forged_events_for_unknown_projects_and_tasks_change_nothing(tmp_path):
    app, backend = make_app(tmp_path)
    c = app.test_client()
    for pid in range(100, 130):
        r = c.post(
            "/webhook",
            json={"action": "ANNOTATION_CREATED", "project": pid, "annotation": {"id": 1, "task": 1, "result": []}},
        )
        assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert list((tmp_path / "projects").iterdir()) == []
    state = known(backend, 2, 8)
    r = c.post(
        "/webhook",
        json={"action": "ANNOTATION_CREATED", "project": 2, "annotation": {"id": 5, "task": 999, "result": []}},
    )
    assert r.status_code == 201 and 999 not in state.tasks and backend.jobs.pending(2) == {"sync"}
    c.post("/webhook", json={"action": "TASKS_DELETED", "project": 2, "tasks": [{"id": 12345}]})
    assert set(state.tasks) == {8}


def test_damaged_state_of_one_project_is_set_aside_and_named(tmp_path):
    _, backend = make_app(tmp_path)
    known(backend, 1, 10)
    known(backend, 2, 20)
    (tmp_path / "projects" / "1" / "state.json").write_text('{"pid": 1, "tasks": {"10": {"ur')
    (tmp_path / "projects" / "2" / "pending.json").write_bytes(b"\x00garbage")
    app, again = make_app(tmp_path)  # boots
    s1, s2 = again.states.get(1), again.states.get(2)
    assert s1.tasks == {} and not s1.synced and "projects/1/state.json" in s1.problems[0]
    assert (tmp_path / "projects" / "1" / "state.json.damaged").is_file()
    assert set(s2.tasks) == {20} and s2.pending == ["sync"] and "projects/2/pending.json" in s2.problems[0]
    st = app.test_client().get("/projects/1/status").get_json()
    assert "state.json" in st["problems"][0] and str(tmp_path) not in str(st)
    assert app.test_client().get("/projects/2/status").get_json()["counts"]["tasks"] == 1


def test_tasks_without_an_image_are_reported(tmp_path):
    _, backend = make_app(tmp_path)
    model = ProjectWorker(backend, 1)
    model.state.image_key = "image"
    model._learn_tasks([{"id": 9, "data": {"text": "hello"}}])
    err = model.state.tasks[9].error
    assert "task 9" in err and "'image'" in err and "text" in err


def test_local_files_cannot_escape_the_data_roots(tmp_path):
    root = tmp_path / "files"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    fetcher = ImageFetcher(Settings(model_dir=tmp_path / "model", data_roots=(root,)), None)
    assert fetcher.local_path("/data/local-files/?d=a/x.png") == (root / "a" / "x.png").resolve()
    with pytest.raises(ImageLoadError, match="escapes"):
        fetcher.local_path("/data/local-files/?d=../secret.png")
    assert fetcher.local_path("/data/upload/1/x.png") is None


def test_payload_helpers():
    assert project_id("12.1795638417") == 12 and project_id({"id": 3}) == 3 and project_id(5) == 5
    assert image_key_from_config(CONFIG) == "picture"
    assert image_key_from_config("<View><Text name='t' value='$text'/></View>") is None
    assert image_key_from_config("not xml") is None
    with pytest.raises(BadRequest, match="string"):
        image_key_from_config(42)
    for bad in (None, True, "abc", 0, -1, 10**300, "1e5", 1.5):
        with pytest.raises(BadRequest):
            project_id(bad)
    assert annotation_answers({"result": [{"from_name": "b", "value": {"rectanglelabels": ["cell"]}}]}) == {
        "b": ["cell"]
    }
    assert (
        annotation_answers({"was_cancelled": True, "result": [{"from_name": "c", "value": {"choices": ["x"]}}]}) is None
    )
    assert annotation_answers({"result": []}) == {} and annotation_answers("x") is None


def test_settings_from_env_and_their_errors(tmp_path):
    s = Settings.from_env(
        {
            "PORT": "9191",
            "ALLOWED_HOSTS": "a.org, b.org",
            "EXAMINE_DATA_ROOTS": "/x,/y",
            "EXAMINE_SAMPLING": "keep",
            "LABEL_STUDIO_API_KEY": "tok",
        }
    )
    assert s.port == 9191 and s.allowed_hosts == ("a.org", "b.org") and len(s.data_roots) == 2
    assert "tok" not in repr(s)
    with pytest.raises(ValueError, match="PORT"):
        Settings.from_env({"PORT": "ninety"})
    with pytest.raises(ValueError, match="EXAMINE_SAMPLING"):
        Settings.from_env({"EXAMINE_SAMPLING": "random"})
    with pytest.raises(ValueError, match="WORKERS"):
        Settings.from_env({"WORKERS": "4"})
    with pytest.raises(ValueError, match="BASIC_AUTH"):
        Settings.from_env({"BASIC_AUTH_USER": "u"})
    with pytest.raises(ValueError, match="EXAMINE_POLICY"):
        make_app(tmp_path, policy="magic")


def test_job_queue_coalesces_a_burst():
    calls = []
    done = threading.Event()

    def runner(pid, kinds):
        calls.append((pid, kinds))
        done.set()

    q = JobQueue(runner, debounce_s=0.2)
    for kinds in (["rank"], ["embed"], ["rank"], ["sync"]):
        q.submit(1, kinds)
    q.start()
    assert done.wait(5) and q.wait_idle(5)
    q.stop()
    assert calls == [(1, ["sync", "embed", "rank"])]
    with pytest.raises(ValueError, match="unknown"):
        q.submit(1, ["dance"])


def test_annotation_deletion_is_resolved_in_the_background(tmp_path):
    app, backend = make_app(tmp_path)
    known(backend, 2, 8)
    c = app.test_client()
    created = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 2},
        "annotation": {"id": 31, "task": 8, "result": [{"from_name": "c", "value": {"choices": ["a"]}}]},
        "task": {"id": 8},
    }
    c.post("/webhook", json=created)
    t0 = time.perf_counter()
    r = c.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 2}, "annotations": [{"id": 31}]})
    assert r.status_code == 201 and time.perf_counter() - t0 < 0.1
    assert backend.jobs.pending(2) == {"sync", "rank"}
    state = backend.states.get(2)  # nothing changes before Label Studio confirms: its task is re-read
    assert state.tasks[8].answers == {"c": ["a"]} and state.tasks[8].labeled and state.recheck == {8}


def test_failed_jobs_are_retried_with_backoff_never_dropped():
    calls = []

    def runner(pid, kinds):
        calls.append((time.monotonic(), kinds))
        if len(calls) < 3:
            raise ConnectionError("Label Studio is down")

    q = JobQueue(runner, debounce_s=0.01, retry_base_s=0.1, retry_max_s=0.2)
    q.start()
    q.submit(1, ["sync", "rank"])
    end = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < end:
        time.sleep(0.02)
    assert q.wait_idle(5)
    q.stop()
    assert [k for _, k in calls] == [["sync", "rank"]] * 3 and q.retries == 2
    assert calls[2][0] - calls[1][0] >= 0.19 and not q.retrying(1)


def test_a_continuous_event_stream_is_ranked_within_the_max_wait():
    runs = []
    q = JobQueue(lambda pid, kinds: runs.append(time.monotonic()), debounce_s=0.3, max_wait_s=0.6)
    q.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:  # an event every 0.1 s: the debounce alone would never fire
        q.submit(1, ["rank"])
        time.sleep(0.1)
    q.stop()
    assert runs and runs[0] - t0 < 0.9


def test_metrics_are_prometheus_text(tmp_path):
    app, backend = make_app(tmp_path)
    known(backend, 6, 1, 2)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'examine_tasks{project="6"} 2.0' in text and "examine_job_retries_total 0.0" in text
    assert "examine_jobs_pending" in text and "examine_last_publish" in text


def test_versions_and_health_show_no_paths(tmp_path):
    app, _ = make_app(tmp_path)
    c = app.test_client()
    assert str(tmp_path) not in c.get("/versions").get_data(as_text=True)
    assert c.get("/health").get_json() == {"status": "UP"}


def test_damaged_encoder_is_set_aside_and_reported(tmp_path):
    from examine.encoder import EncoderConfig, create_encoder

    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(tmp_path / "encoder")
    weights = tmp_path / "encoder" / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _, backend = make_app(tmp_path)
    assert backend.encoder(1) is None  # → a new one is pretrained by the next job
    assert (tmp_path / "encoder.damaged").is_dir() and not (tmp_path / "encoder").exists()
    assert "MODEL_DIR/encoder could not be loaded" in backend.problems[0] and str(tmp_path) not in backend.problems[0]


class _FakeLabelStudio:
    """A stand-in for the REST client (unit level only; the e2e tests use a real Label Studio)."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.imported: list[list[dict]] = []
        self.created: list[dict] = []
        self.patched: list[tuple[int, dict]] = []
        self.preds: dict[int, dict] = {}  # prediction id → prediction
        self.versions: set[str] = set()
        self.project = {"id": 1, "label_config": CONFIG, "model_version": ""}

    def get_project(self, pid):
        return self.project

    def iter_tasks(self, pid, page_size=1000):
        return [{"id": t, "data": {"picture": f"/data/upload/1/{t}.png"}, "total_annotations": 0} for t in self.tasks]

    def list_ml_backends(self, pid):
        return []

    def list_webhooks(self, pid):
        return []

    def list_model_versions(self, pid):
        return {v: sum(p["model_version"] == v for p in self.preds.values()) for v in self.versions}

    def _store(self, pred):
        pid = len(self.preds) + 1
        self.preds[pid] = {"id": pid, "cluster": None, **pred}
        return self.preds[pid]

    def import_predictions(self, pid, preds, batch_size=0):
        from backend.labelstudio import LabelStudioError

        self.versions.add(preds[0]["model_version"])  # as if part of it had been stored
        if any(p["task"] not in self.tasks for p in preds):
            raise LabelStudioError("POST /api/projects/1/import/predictions -> 400: task does not exist", status=400)
        self.imported.append(preds)
        for p in preds:
            self._store({**p, "cluster": None})  # a bulk import drops `cluster`
        return len(preds)

    def list_predictions(self, project=None, task=None):
        return [p for p in self.preds.values() if task is None or p["task"] == task]

    def update_project(self, pid, **fields):
        self.project.update(fields)

    def create_prediction(self, prediction):
        self.created.append(prediction)
        self.versions.add(prediction["model_version"])
        return self._store(prediction)

    def update_prediction(self, prediction_id, **fields):
        self.patched.append((prediction_id, fields))
        if prediction_id not in self.preds:
            return None
        self.preds[prediction_id].update(fields)
        return self.preds[prediction_id]

    def list_views(self, pid):
        return [{"data": {"title": "examine queue (score: lowest = next)"}}]

    def serve_order(self):
        """Label Studio's uncertainty sampling without solved tasks: current version, lowest score first."""
        mine = [p for p in self.preds.values() if p["model_version"] == self.project["model_version"]]
        return [p["task"] for p in sorted(mine, key=lambda p: p["score"])]


def test_a_full_publish_that_hits_a_deleted_task_reconciles_and_recovers(tmp_path):
    import numpy as np

    backend, state, fake = embedded_project(  # task 6 was deleted while events were missed
        tmp_path, 6, lambda d: np.random.default_rng(0).normal(size=(6, d)), listed=[1, 2, 3, 4, 5]
    )
    ProjectWorker(backend, 1).publish_full()
    assert [sorted(p["task"] for p in batch) for batch in fake.imported] == [[1, 2, 3, 4, 5]]
    assert 6 not in state.tasks and state.complete_version == fake.project["model_version"]
    assert len(state.stale_versions) == 1  # the aborted version, for the janitor to clean up


def test_a_re_rank_updates_one_prediction_per_task_in_place_and_serves_the_new_head(tmp_path):
    """First publish: one bulk version. Then each label costs a few in-place updates: no new version, no
    second prediction on any task, Label Studio's order starts with the new queue's head, whose
    predictions carry the probe's choice and their group as `cluster`."""
    import numpy as np

    from backend.label_config import controls_from_config

    n = 40

    def four_groups(dim):
        rng = np.random.default_rng(0)
        return rng.normal(size=(n, dim)) + np.repeat(rng.normal(size=(4, dim)) * 3, n // 4, axis=0)

    backend, state, fake = embedded_project(tmp_path, n, four_groups, head_size=5)
    state.tasks[1].labeled, state.tasks[1].answers = True, {"c": ["x"]}
    state.tasks[40].labeled, state.tasks[40].answers = True, {"c": ["y"]}
    two = CONFIG.replace('<Choice value="x"/>', '<Choice value="x"/><Choice value="y"/>')
    state.controls = [t.as_dict() for t in controls_from_config(two)]
    worker = ProjectWorker(backend, 1)
    worker.rank()
    version = state.published_version
    assert len(fake.imported) == 1 and fake.project["model_version"] == version
    assert fake.serve_order()[:5] == state.queue[:5]
    head = [fake.preds[state.predictions[t].id] for t in state.queue[:5]]
    assert all(p["cluster"] is not None for p in head) and len({p["cluster"] for p in head}) >= 2
    assert all(p["result"][0]["value"]["choices"][0] in ("x", "y") for p in head)
    for k in range(12):  # label the served task, re-rank: a few updates each time, never a new version
        served = next(t for t in fake.serve_order() if not state.tasks[t].labeled)
        batch = [t for t, _ in state.batch]
        assert served == batch[0]
        state.tasks[served].labeled, state.tasks[served].answers = True, {"c": ["xy"[k % 2]]}
        before = len(fake.patched)
        worker.rank()
        # the batch being served stays first until used up; the next batch of 10 is chosen with its last task
        now = [t for t, _ in state.batch]
        assert now[: len(batch) - 1] == batch[1:] and 2 <= len(now) <= 11
        assert len(now) == len(batch) - 1 or len(batch) == 2
        assert state.queue[: len(state.batch)] == [t for t, _ in state.batch]
        assert state.published_version == version and len(fake.imported) == 1 and not fake.created
        assert len(fake.patched) - before <= 2 * 5
        unlabeled = [t for t, i in state.tasks.items() if not i.labeled]
        per_task = [
            sum(p["task"] == t and p["model_version"] == version for p in fake.preds.values()) for t in unlabeled
        ]
        assert per_task == [1] * len(unlabeled) and len(fake.preds) <= n
        order = [t for t in fake.serve_order() if not state.tasks[t].labeled]
        assert order[:5] == state.queue[:5]
        for t in state.queue[:5]:
            assert fake.preds[state.predictions[t].id]["result"][0]["value"]["choices"] == proposal(state, t)[0]["c"]


def test_a_setup_during_a_running_reconciliation_queues_nothing_and_never_asks_for_a_rank(tmp_path):
    """Our reconciliation lists the ML backends, so Label Studio calls /setup while it runs; on a large project
    that call must not queue the next reconciliation (they would follow each other for ever), and a /setup
    with nothing new must not republish."""
    from backend.protocol import SETUP_JOBS, ProjectProtocol

    _, backend = make_app(tmp_path, label_studio_url="http://ls.invalid", label_studio_api_key="k" * 40)
    state = known(backend, 1, 1, 2)
    state.synced, state.image_key = True, "picture"
    submitted = []
    backend.submit = lambda pid, kinds, event=True: submitted.append(list(kinds))
    backend.jobs.pending = lambda pid: {"running"}  # a long reconciliation is in progress
    ProjectProtocol(backend, 1).setup({"project": "1.1", "schema": CONFIG})
    assert submitted == []
    backend.jobs.pending = lambda pid: set()  # idle, and not reconciled recently: reconcile, no rank asked
    ProjectProtocol(backend, 1).setup({"project": "1.1", "schema": CONFIG})
    assert submitted == [["sync", "pretrain", "embed"]] and "rank" not in SETUP_JOBS


@pytest.mark.parametrize("raw", ["²", "١٢", "٣", "１", "1²", "𝟙", "12 3", "-1", "0", "1" * 21, "1e3", "", " "])
def test_ids_are_ascii_digits_only_and_anything_else_is_a_400(tmp_path, raw):
    from backend.payload import BadRequest, parse_id

    with pytest.raises(BadRequest):
        parse_id(raw, "task id")
    app, _ = make_app(tmp_path)
    r = app.test_client().get(f"/projects/{raw}/status")
    assert r.status_code in (400, 404)
    assert parse_id(" 42 ", "task id") == 42


def test_a_label_reported_while_a_reconciliation_lists_tasks_survives_it(tmp_path):
    """The listing said 'unlabeled' for task 2, but its ANNOTATION_CREATED arrived after the listing began:
    the reconciliation merges (the label stays) instead of overwriting it with the older listing."""
    app, backend = make_app(tmp_path)
    state = known(backend, 1, 1, 2, 3)
    state.image_key = "picture"
    fake = _FakeLabelStudio(tasks=[1, 2, 3])
    listing = fake.iter_tasks(1)
    calls = []

    def slow_listing(pid, page_size=1000):
        snapshot = [dict(t) for t in listing]  # Label Studio answered before the label existed ...
        calls.append(pid)
        if len(calls) > 1:
            return snapshot
        created = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 1},
            "annotation": {"id": 77, "task": 2, "result": [{"value": {"choices": ["a"]}}]},
            "task": {"id": 2},
        }
        assert app.test_client().post("/webhook", json=created).status_code == 201  # ... which arrives meanwhile
        return snapshot

    fake.iter_tasks = slow_listing
    backend._clients[(1, "api")] = fake
    ProjectWorker(backend, 1).reconcile()
    assert state.tasks[2].labeled and not state.tasks[1].labeled
    ProjectWorker(backend, 1).reconcile()  # a later listing without it is newer than the event: it wins
    assert not state.tasks[2].labeled


def test_a_failed_download_is_not_fetched_again_before_its_retry_time(tmp_path):
    _, backend = make_app(tmp_path)
    state = known(backend, 1, 1, 2)
    state.image_key = "picture"
    for t in (1, 2):
        state.tasks[t].uri = f"/data/upload/1/{t}.png"
        state.tasks[t].error = f"task {t}: GET /data/upload/1/{t}.png: no complete answer within 20 s"
    state.tasks[1].retry_at = time.time() + 600  # its time has not come
    state.tasks[2].retry_at = time.time() - 1
    backend._clients[(1, "api")] = _FakeLabelStudio(tasks=[1, 2])
    ProjectWorker(backend, 1).reconcile()
    assert state.tasks[1].error and state.tasks[2].error is None


def test_a_run_that_fails_again_and_again_is_a_problem_at_status_and_metrics(tmp_path):
    app, backend = make_app(tmp_path)
    known(backend, 3, 1)
    backend.jobs._attempts[3] = 3  # what three failed runs in a row leave (the queue is not started here)
    backend.jobs.last_error[3] = "sync: PATCH /api/projects/3/ -> 400"
    st = app.test_client().get("/projects/3/status").get_json()
    assert any("failed 3 times in a row" in p and "-> 400" in p for p in st["problems"]), st["problems"]
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'examine_problems{project="3"} 1.0' in text
    backend.jobs._attempts.pop(3)  # a run succeeded
    assert app.test_client().get("/projects/3/status").get_json()["problems"] == []


def test_a_project_folder_or_state_file_replaced_by_something_else_is_set_aside_and_named(tmp_path):
    _, backend = make_app(tmp_path)
    known(backend, 1, 10)
    known(backend, 2, 20)
    root = tmp_path / "projects"
    import shutil

    shutil.rmtree(root / "1")
    (root / "1").write_text("not a folder")
    (root / "2" / "state.json").unlink()
    (root / "2" / "state.json").mkdir()
    _, again = make_app(tmp_path)
    assert again.states.known_projects() == [1, 2]  # neither project is forgotten
    for pid in (1, 2):
        state = again.states.get(pid)
        assert not state.synced and "replaced by something else" in state.problems[0], state.problems
        again.states.save(state)  # saving works again: no retry for ever
        assert (root / str(pid) / "state.json").is_file()
    assert any(p.name.startswith("1.damaged.") for p in root.iterdir())


def test_choices_of_another_object_than_the_image_are_not_the_images_classes():
    from backend.label_config import controls_from_config

    text_first = (
        '<View><Text name="note" value="$note"/><Image name="img" value="$image"/>'
        '<Choices name="sentiment" toName="note"><Choice value="good"/><Choice value="bad"/></Choices>'
        '<Choices name="tissue" toName="img"><Choice value="tumour"/><Choice value="normal"/></Choices></View>'
    )
    (tag,) = controls_from_config(text_first)
    assert tag.name == "tissue" and tag.labels == ("tumour", "normal")
    only_text = text_first.replace('<Choices name="tissue" toName="img">', '<Choices name="tissue" toName="note">')
    assert controls_from_config(only_text) == []


def test_labels_outside_the_config_are_counted_never_learned_nor_proposed(tmp_path):
    import numpy as np

    from backend.prelabel import learn, result_for
    from backend.state import ProjectState

    state = ProjectState(
        1, controls=[{"name": "c", "to_name": "img", "tag": "Choices", "labels": ["a", "b"], "kind": "class"}]
    )
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (6, 8)), rng.normal(3, 1, (6, 8))])
    given = ["a", "a", "<script>x</script>", None, None, None, "b", "b", "<img src=x>", None, None, None]
    rows = [
        (i + 1, TaskInfo(uri="u", labeled=g is not None, answers={"c": [g]} if g else None))
        for i, g in enumerate(given)
    ]
    state.tasks = dict(rows)
    learn(state, X, rows, enabled=True)
    assert state.probe["counts"] == {"a": 2, "b": 2} and state.probe["labels"] == 4
    assert state.probe["outside_config"]["labels"] == {"<script>x</script>": 1, "<img src=x>": 1}
    proposals = [result_for(state, t) for t, info in rows if not info.labeled]
    assert proposals and all(r[0]["value"]["choices"][0] in ("a", "b") for r in proposals)
    # A rename: the old proposals are never sent, whatever was stored.
    state.controls = [{"name": "c", "to_name": "img", "tag": "Choices", "labels": ["a2", "b"], "kind": "class"}]
    assert not any(r and r[0]["value"]["choices"][0] == "a" for r in (result_for(state, t) for t, _ in rows))


def test_the_tasks_are_saved_row_by_row_and_only_what_changed(tmp_path):
    import json

    from backend.publish import Published
    from backend.state import StateStore
    from backend.task_rows import RowPlan, RowSnapshot

    store = StateStore(tmp_path)
    state = store.get(4)
    for t in range(1, 301):
        state.tasks[t] = TaskInfo(uri=f"/data/upload/4/{t}.png", key=f"{t:064x}")
        state.predictions[t] = Published(1000 + t, t / 301)
    state.annotation_task[77] = 3
    store.save(state)
    assert "tasks" not in json.loads((tmp_path / "projects" / "4" / "state.json").read_text())
    state.tasks[3].labeled, state.tasks[3].answers = True, {"c": ["x"]}
    state.predictions[9].score = 0.5
    del state.tasks[300], state.predictions[300]
    plan = RowPlan(store._rows[4], state.tasks, state.predictions, state.annotation_task)
    assert (len(plan.put_tasks), len(plan.put_preds), len(plan.gone_tasks), len(plan.gone_preds)) == (1, 1, 1, 1)
    state.tasks[5].answers = {}  # a change in place after the plan is still seen by the next one
    store.save(state)
    again = StateStore(tmp_path).get(4)
    assert again.tasks == state.tasks and again.predictions == state.predictions
    assert again.annotation_task == {77: 3} and again.tasks[3].answers == {"c": ["x"]} and 300 not in again.tasks
    assert RowPlan(RowSnapshot(), {}, {}, {}).changed() == 0


def test_a_state_json_from_before_tasks_db_is_read_and_moved_to_rows(tmp_path):
    import json

    folder = tmp_path / "projects" / "5"
    folder.mkdir(parents=True)
    old = {
        "pid": 5,
        "tasks": {"1": {"uri": "/data/upload/5/1.png", "labeled": True, "label": "a"}},
        "predictions": {"2": [11, 0.25, None, None]},
        "annotation_task": {"8": 1},
        "published_version": "examine-v",
    }
    (folder / "state.json").write_text(json.dumps(old))
    _, backend = make_app(tmp_path)
    state = backend.states.get(5)
    # its single label (saved before answers per tag) is read again from Label Studio by the next reconciliation
    assert (
        state.tasks[1].labeled
        and state.tasks[1].answers is None
        and state.predictions[2].score == 0.25
        and state.annotation_task == {8: 1}
    )
    backend.states.save(state)
    assert "tasks" not in json.loads((folder / "state.json").read_text()) and (folder / "tasks.db").is_file()
    _, again = make_app(tmp_path)
    assert again.states.get(5).tasks == state.tasks and again.states.get(5).published_version == "examine-v"


def test_a_damaged_tasks_db_is_set_aside_named_and_its_tasks_listed_again(tmp_path):
    _, backend = make_app(tmp_path)
    known(backend, 6, 1, 2)
    (tmp_path / "projects" / "6" / "tasks.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    _, again = make_app(tmp_path)
    state = again.states.get(6)
    assert state.tasks == {} and not state.synced
    assert "tasks.db is unreadable" in state.problems[0] and "listed again" in state.problems[0], state.problems
    again.states.save(state)  # a fresh tasks.db
    assert (tmp_path / "projects" / "6" / "tasks.db").is_file()


def test_a_new_version_is_pushed_head_first_and_the_pool_filled_in_chunks_with_re_ranks_between(tmp_path, monkeypatch):
    """The project is switched to a new version once its head is in Label Studio; the rest follows one chunk
    per fill job, each in queue order; a label between chunks re-ranks in place; at the end every unlabeled
    task holds exactly one prediction of the version."""
    import numpy as np

    import backend.publisher as publisher

    monkeypatch.setattr(publisher, "FIRST_PUSH", 8)
    monkeypatch.setattr(publisher, "FILL_CHUNK", 10)
    n = 35
    backend, state, fake = embedded_project(
        tmp_path, n, lambda d: np.random.default_rng(1).normal(size=(n, d)), head_size=4
    )
    submitted = []
    monkeypatch.setattr(backend, "submit", lambda pid, kinds, event=True: submitted.append(list(kinds)))
    worker = ProjectWorker(backend, 1)
    worker.rank()
    version = state.published_version
    assert [len(b) for b in fake.imported] == [8] and fake.project["model_version"] == version
    assert sorted(p["task"] for p in fake.imported[0]) == sorted(state.queue[:8]) and state.filling
    assert ["fill"] in submitted
    worker.fill()  # tasks 9-18 of the queue
    holding = {p["task"] for p in fake.preds.values() if p["model_version"] == version}
    assert holding == set(state.queue[:18])
    served = state.queue[0]
    state.tasks[served].labeled = True
    worker.rank()  # a label between two chunks: in place, no new version
    assert state.published_version == version and state.filling
    while state.filling:
        worker.fill()
    unlabeled = [t for t, i in state.tasks.items() if not i.labeled]
    per_task = [sum(p["task"] == t and p["model_version"] == version for p in fake.preds.values()) for t in unlabeled]
    assert per_task == [1] * len(unlabeled)


def test_predict_answers_a_task_not_published_yet_under_the_pending_version(tmp_path):
    """Label Studio stores what /predict answers: a task without our prediction must not get a second one of
    the current version once the publish reaches it."""
    from backend.payload import PENDING_VERSION
    from backend.protocol import ProjectProtocol
    from backend.publish import Published

    _, backend = make_app(tmp_path)
    state = known(backend, 2, 1, 2)
    state.published_version = "examine-v1"
    state.predictions[1] = Published(11, 0.25)
    out = ProjectProtocol(backend, 2).predict([{"id": 1}, {"id": 2}])
    assert out[0]["model_version"] == "examine-v1" and out[0]["score"] == 0.25
    assert out[1]["model_version"] == PENDING_VERSION and "score" not in out[1]


def test_a_team_gets_the_next_batch_before_its_members_run_out_of_the_current_one(tmp_path):
    """Each person labeling at once holds one task of the batch: the next batch is chosen while as many are left."""
    app, backend = make_app(tmp_path)
    state = known(backend, 7, *range(1, 31))
    assert state.annotators() == 1
    c = app.test_client()
    ok = [
        c.post(
            "/webhook",
            json={
                "action": "ANNOTATION_CREATED",
                "project": {"id": 7},
                "annotation": {"id": a, "task": a, "completed_by": u},
            },
        ).status_code
        for a, u in ((1, 5), (2, {"id": 6}), (3, 7), (4, 5))
    ]
    assert all(code < 300 for code in ok) and state.annotators() == 3
    from backend.batch import within_batch

    worker = ProjectWorker(backend, 7)
    state.queue, state.queue_groups = list(range(5, 31)), [0] * 26
    state.batch = [[t, 0] for t in range(5, 9)]  # 4 left: more than the 3 people hold at once
    assert within_batch(worker.state, set(range(5, 31))) is not None
    state.batch = [[t, 0] for t in range(5, 8)]  # 3 left, each held by someone: the next batch is chosen now
    assert within_batch(worker.state, set(range(5, 31))) is None
    state.annotated_by = {}  # one person: the batch is served to its last task
    assert within_batch(worker.state, set(range(5, 31))) is not None


def test_a_long_reconciliation_spaces_the_next_one():
    from backend.janitor import RECONCILE_SPACING, reconcile_interval

    assert reconcile_interval(300.0, 0.4) == 300.0  # a small project: EXAMINE_RECONCILE_S
    assert reconcile_interval(5.0, 0.4) == 5.0
    assert reconcile_interval(300.0, 240.0) == RECONCILE_SPACING * 240.0  # 200,000 tasks listed in 4 min: 20 min


def test_a_new_proposal_alone_writes_no_row(tmp_path):
    """The probe refits after every label and moves nearly every task's probability: that alone must not
    rewrite the project's rows (a label would cost every row at 200,000 tasks); proposals are not rows."""
    import numpy as np

    from backend.prelabel import learn
    from backend.state import ProjectState
    from backend.task_rows import RowPlan, RowSnapshot, write_rows

    state = ProjectState(
        1, controls=[{"name": "c", "to_name": "i", "tag": "Choices", "labels": ["a", "b"], "kind": "class"}]
    )
    state.tasks = {t: TaskInfo(uri=f"/x/{t}.png", key=f"{t:064x}") for t in range(1, 41)}
    X = np.random.default_rng(0).normal(size=(40, 4))
    for t in (1, 2, 3, 4):
        state.tasks[t].labeled, state.tasks[t].answers = True, {"c": ["ab"[t % 2]]}
    snap = RowSnapshot()
    assert write_rows(tmp_path / "tasks.db", snap, RowPlan(snap, state.tasks, {}, {})) == 40
    learn(state, X, sorted(state.tasks.items()), enabled=True)
    assert proposal(state, 10) is not None
    assert write_rows(tmp_path / "tasks.db", snap, RowPlan(snap, state.tasks, {}, {})) == 0
    state.tasks[5].labeled, state.tasks[5].answers = True, {"c": ["a"]}  # a real change writes its row
    learn(state, X, sorted(state.tasks.items()), enabled=True)
    assert write_rows(tmp_path / "tasks.db", snap, RowPlan(snap, state.tasks, {}, {})) == 1


def test_status_tallies_are_fresh_on_small_projects_and_reused_a_while_on_large_ones(monkeypatch):
    """/status's pass over every task is reused for REUSE times its cost once it costs CHEAP_S or more."""
    from backend import tallies
    from backend.state import ProjectState

    state = ProjectState(1)
    state.tasks = {t: TaskInfo(uri="u", key="k") for t in range(1, 6)}
    kept = tallies.Tallies()
    assert kept.get(state)["counts"]["tasks"] == 5
    state.tasks[6] = TaskInfo(uri="u", error="task 6: unreadable")
    assert kept.get(state)["counts"]["tasks"] == 6 and kept.get(state)["errors"] == {6: "task 6: unreadable"}
    monkeypatch.setattr(tallies, "CHEAP_S", 0.0)
    monkeypatch.setattr(tallies, "REUSE", 1e9)  # as if each tally took long
    first = kept.get(state)
    state.tasks[7] = TaskInfo(uri="u")
    assert kept.get(state) is first and first["counts"]["tasks"] == 6  # reused
    monkeypatch.setattr(tallies, "REUSE", 0.0)
    assert kept.get(state)["counts"]["tasks"] == 7


def test_after_a_restart_the_fill_waits_for_a_re_rank_that_makes_the_proposals_again(tmp_path):
    """Proposals are not saved: a fill after a restart would create predictions without pre-annotations, so it
    asks for a re-rank first (whose publish goes on filling)."""
    import numpy as np

    from backend.label_config import controls_from_config

    backend, state, _ = embedded_project(tmp_path, 20, lambda dim: np.random.default_rng(0).normal(size=(20, dim)))
    two = CONFIG.replace('<Choice value="x"/>', '<Choice value="x"/><Choice value="y"/>')
    state.controls = [t.as_dict() for t in controls_from_config(two)]
    state.filling, state.published_version, state.proposals = True, "examine-v", None
    state.probe = {"prelabel": True}  # the last fit made proposals (its summary is saved; they are not)
    ProjectWorker(backend, 1).fill()
    assert backend.jobs.pending(1) == {"rank"}
    # pre-annotation was off at the last fit (EXAMINE_PRELABEL=0) and is on now: proposals are due as well
    backend.jobs._pending.clear()
    state.probe = {"prelabel": False, "fit_s": 0.01, "why": "pre-annotations are off (EXAMINE_PRELABEL=0)"}
    ProjectWorker(backend, 1).fill()
    assert backend.jobs.pending(1) == {"rank"}


def test_before_the_probes_can_learn_the_fill_goes_on_without_proposals(tmp_path, monkeypatch):
    """At the cold start no proposal exists to wait for: the fill adds its chunk (it once asked for a re-rank
    instead, whose publish added 40 predictions per cycle: hours for a 200,000-task pool)."""
    import numpy as np

    from backend.label_config import controls_from_config
    from backend.publisher import Publisher

    backend, state, _ = embedded_project(tmp_path, 20, lambda dim: np.random.default_rng(0).normal(size=(20, dim)))
    two = CONFIG.replace('<Choice value="x"/>', '<Choice value="x"/><Choice value="y"/>')
    state.controls = [t.as_dict() for t in controls_from_config(two)]
    state.filling, state.published_version, state.proposals = True, "examine-v", None
    state.probe = {"prelabel": False, "why": "nothing learned yet"}
    filled = []
    monkeypatch.setattr(Publisher, "fill", lambda self: filled.append(self.pid) or 0)
    ProjectWorker(backend, 1).fill()
    assert filled == [1] and "rank" not in backend.jobs.pending(1)
