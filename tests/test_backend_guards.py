"""Only Label Studio drives a project, and the status page shows no server internals (unit level; the real
Label Studio versions of these are in tests/test_backend_faults.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from backend.app import create_app
from backend.bind import loopback
from backend.payload import config_problem
from backend.public import MAX_CHARS, public_text
from backend.runtime import Backend
from backend.settings import Settings
from backend.state import TaskInfo

IMAGE_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
)
TEXT_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>'
)


def make_app(tmp_path: Path, **kw):
    app = create_app(Settings(model_dir=tmp_path, **kw), start=False)
    return app, app.config["EXAMINE_BACKEND"]


def test_predict_for_a_project_never_set_up_adopts_nothing(tmp_path):
    app, backend = make_app(tmp_path, label_studio_url="http://127.0.0.1:1", label_studio_api_key="k" * 40)
    r = app.test_client().post("/predict", json={"project": "7.123", "tasks": [{"id": 1, "data": {}}]})
    assert r.status_code == 200 and r.get_json() == {"results": []}
    assert not backend.states.exists(7) and backend.jobs.pending(7) == set()
    assert app.test_client().get("/projects/7/status").status_code == 404


def test_a_config_without_an_image_tag_is_refused_at_setup(tmp_path):
    app, backend = make_app(tmp_path, label_studio_url="http://127.0.0.1:1", label_studio_api_key="k" * 40)
    r = app.test_client().post("/setup", json={"project": "3.1", "schema": TEXT_CONFIG})
    assert r.status_code == 400 and "no <Image" in r.get_json()["error"] and "project 3" in r.get_json()["error"]
    assert not backend.states.exists(3)
    r = app.test_client().post("/setup", json={"project": "3.1", "schema": "<View><Image"})
    assert r.status_code == 400 and "not valid XML" in r.get_json()["error"]


@pytest.mark.parametrize(
    "config, problem",
    [(None, False), ("", False), (IMAGE_CONFIG, False), (TEXT_CONFIG, True), ("<View>", True), ("<View/>", True)],
)
def test_config_problem(config, problem):
    assert (config_problem(config) is not None) == problem


def test_deletion_events_change_nothing_before_label_studio_confirms(tmp_path):
    app, backend = make_app(tmp_path)
    state = backend.states.get(5)
    state.tasks = {1: TaskInfo(uri="/data/upload/5/1.png", labeled=True, answers={"c": ["a"]}), 2: TaskInfo(uri="/x")}
    state.annotation_task[40] = 1
    c = app.test_client()
    r = c.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 5}, "tasks": [{"id": 1}, {"id": 2}]})
    assert r.status_code == 201 and set(state.tasks) == {1, 2}
    assert backend.jobs.pending(5) == {"sync", "rank"}
    c.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 5}, "annotations": [{"id": 40}]})
    assert state.tasks[1].labeled and state.tasks[1].answers == {"c": ["a"]} and state.recheck == {1}


def test_public_text_hides_folders_and_queries_and_keeps_one_line(tmp_path):
    model, data = tmp_path / "model", tmp_path / "data"
    text = (
        f"task 3: cannot read {data}/tiles/a.png (/data/local-files/?d=tiles/a.png&sig=SECRET) "
        f"while {model}/encoder was loaded from https://bucket.example/x.png?X-Amz-Signature=abc\n" + "<html>" * 5000
    )
    shown = public_text(text, {"MODEL_DIR": model, "EXAMINE_DATA_ROOTS[0]": data})
    assert str(tmp_path) not in shown and "SECRET" not in shown and "X-Amz" not in shown
    assert "EXAMINE_DATA_ROOTS[0]/tiles/a.png" in shown and "MODEL_DIR/encoder" in shown
    assert "\n" not in shown and "<html>" not in shown
    assert len(public_text("x" * 100_000, {})) == MAX_CHARS


def test_status_page_shows_public_texts(tmp_path):
    app, backend = make_app(tmp_path)
    state = backend.states.get(9)
    long_error = f"task 1: {tmp_path}/model failed ?token=abc\n" + "trace " * 40_000
    state.tasks = {1: TaskInfo(uri="/data/upload/9/1.png", error=long_error)}
    state.problems.append(f"damaged {tmp_path}/projects/9/state.json")
    body = app.test_client().get("/projects/9/status").get_json()
    text = str(body["errors"]) + str(body["problems"])
    assert str(tmp_path) not in text and "abc" not in text and "trace trace" not in text
    assert body["errors"]["1"].startswith("task 1: MODEL_DIR/model failed ?…")


@pytest.mark.parametrize(
    "host, loop", [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("localhost", True), ("0.0.0.0", False)]
)
def test_loopback(host, loop):
    assert loopback(host) == loop


def test_a_key_with_auth_off_on_a_public_bind_warns_how_to_turn_auth_on(tmp_path, caplog):
    settings = Settings(
        model_dir=tmp_path, host="0.0.0.0", label_studio_url="http://ls:8080", label_studio_api_key="k" * 40
    )
    backend = Backend(settings)
    with caplog.at_level(logging.WARNING, logger="backend.runtime"):
        backend.start()
    backend.stop()
    warned = [r.getMessage() for r in caplog.records if "basic auth is off" in r.getMessage()]
    assert warned and "BASIC_AUTH_USER" in warned[0] and "k" * 40 not in warned[0]
    caplog.clear()
    quiet = Backend(
        Settings(
            model_dir=tmp_path / "b", host="127.0.0.1", label_studio_url="http://ls:8080", label_studio_api_key="k" * 40
        )
    )
    with caplog.at_level(logging.WARNING, logger="backend.runtime"):
        quiet.start()
    quiet.stop()
    assert not any("basic auth is off" in r.getMessage() for r in caplog.records)


def test_projects_run_side_by_side_but_one_project_never_twice_at_once():
    import threading
    import time

    from backend.jobs import JobQueue

    running: dict[int, int] = {}
    most: dict[int, int] = {}
    done: dict[int, float] = {}
    lock = threading.Lock()

    def runner(pid, kinds):
        with lock:
            running[pid] = running.get(pid, 0) + 1
            most[pid] = max(most.get(pid, 0), running[pid])
        time.sleep(1.0 if pid == 1 else 0.05)
        with lock:
            running[pid] -= 1
            done[pid] = time.monotonic()

    q = JobQueue(runner, workers=3, debounce_s=0.01, max_wait_s=0.01)
    q.start()
    t0 = time.monotonic()
    q.submit(1, ["embed"])
    time.sleep(0.1)
    for _ in range(5):  # more work for the busy project, and a quick one for another
        q.submit(1, ["rank"])
        q.submit(2, ["rank"])
        time.sleep(0.02)
    assert q.wait_idle(10)
    q.stop()
    assert done[2] - t0 < 0.8  # not behind the slow project
    assert most == {1: 1, 2: 1}
    with pytest.raises(ValueError, match="workers"):
        JobQueue(runner, workers=0)


def test_public_text_replaces_whole_folders_only(tmp_path):
    folders = {"MODEL_DIR": Path("/data"), "EXAMINE_DATA_ROOTS[0]": Path("/models")}
    shown = public_text("GET /data/upload/1/a.png failed; /data/store/x; /models2/y; /models/z", folders)
    assert shown == "GET /data/upload/1/a.png failed; MODEL_DIR/store/x; /models2/y; EXAMINE_DATA_ROOTS[0]/z"


def test_a_refused_config_mended_in_label_studio_restarts_the_project(tmp_path):
    app, backend = make_app(tmp_path)
    state = backend.states.get(6)
    state.image_key, state.config_problem = None, "the labeling config has no <Image …> tag"
    body = {"action": "PROJECT_UPDATED", "project": {"id": 6, "label_config": IMAGE_CONFIG}}
    state.image_key = "image"  # even when the key itself did not change
    assert app.test_client().post("/webhook", json=body).status_code == 201
    assert backend.jobs.pending(6) == {"sync", "embed", "rank"}


@pytest.mark.parametrize(
    "argv, env, host, port",
    [
        (["/usr/bin/gunicorn", "--bind", "0.0.0.0:9000", "backend._wsgi:app"], {}, "0.0.0.0", 9000),
        (["gunicorn", "-b", "127.0.0.1:9090", "-b", "[::]:9091", "backend._wsgi:app"], {}, "::", 9091),
        (["gunicorn", "backend._wsgi:app"], {"GUNICORN_CMD_ARGS": "--bind=10.0.0.5:80"}, "10.0.0.5", 80),
        (["gunicorn", "-b", "unix:/tmp/examine.sock", "backend._wsgi:app"], {}, "127.0.0.1", 9090),
        (["gunicorn", "backend._wsgi:app"], {}, "127.0.0.1", 9090),
        (["python", "-m", "pytest", "--bind", "0.0.0.0:1"], {}, "127.0.0.1", 9090),
    ],
)
def test_the_start_up_warnings_name_gunicorns_real_bind(argv, env, host, port):
    from backend.bind import with_gunicorn_bind
    from backend.settings import Settings

    s = with_gunicorn_bind(Settings(host="127.0.0.1", port=9090), argv, env)
    assert (s.host, s.port) == (host, port)


def test_a_guessed_address_answers_which_ones_exist(tmp_path):
    app, _ = make_app(tmp_path)
    r = app.test_client().get("/status")
    assert r.status_code == 404 and r.get_json()["error"] == "no such endpoint: GET /status"
    assert "GET /projects/<project id>/status" in r.get_json()["endpoints"]
