"""End to end: a real Label Studio 1.23.2 and the backend flag planted blank and blurred images.

A project holds 30 clean tiles of one real immunohistochemistry slide (one stain, as a pathology
project is; the evaluation's mixed pools are the harder case), 3 blank and 3 blurred ones. The backend's
flagged tab lists exactly the tasks it flagged (all six planted ones), each with a reason at
``/status``; ``/next`` serves no flagged task while a clean one is left; an annotation unflags.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from backend.labelstudio import LabelStudio
from examine.datasets import corrupt, medical_tiles_with_sources
from tests.backend_server import LABEL_CONFIG, png, start_backend

pytestmark = pytest.mark.e2e

AUTH = ("examine", "s3cret-pass")
N_CLEAN = 30
TAB = "examine flagged: unusable? (served last)"
RESULT = [{"from_name": "tissue", "to_name": "image", "type": "choices", "value": {"choices": ["stained"]}}]


@pytest.fixture(scope="module")
def env(label_studio, tmp_path_factory):
    backend = start_backend(label_studio, tmp_path_factory, AUTH, EXAMINE_HEAD_SIZE="10")
    client = LabelStudio(label_studio.url, label_studio.token)
    pid = client.create_project("examine screening e2e", LABEL_CONFIG)["id"]
    many, sources = medical_tiles_with_sources(8 * (N_CLEAN + 6), size=64, seed=21)
    tiles = [t for t, s in zip(many, sources) if s == "ihc"][: N_CLEAN + 6]
    rng = np.random.default_rng(0)
    images = {f"tile{i:02d}.png": png(t) for i, t in enumerate(tiles[:N_CLEAN])}
    planted = {f"blank{i}.png": png(corrupt(tiles[N_CLEAN + i], "blank", rng)) for i in range(3)}
    planted |= {f"blur{i}.png": png(corrupt(tiles[N_CLEAN + 3 + i], "blur", rng)) for i in range(3)}
    clean_ids = client.import_files(pid, images)
    planted_ids = client.import_files(pid, planted)
    client.add_ml_backend(
        pid, backend.url, "examine", auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1]
    )
    yield dict(client=client, pid=pid, backend=backend, clean=set(clean_ids), planted=set(planted_ids))
    backend.stop()


def screened(env) -> dict:
    return env["backend"].wait(
        env["pid"],
        lambda s: s["published_version"] and not s["pending"] and s["counts"]["embedded"] >= N_CLEAN + 6,
        auth=AUTH,
    )


def tab_tasks(client: LabelStudio, pid: int) -> set[int]:
    tab = next(v for v in client.list_views(pid) if v["data"].get("title") == TAB)
    return {t["id"] for t in client.iter_tasks(pid, view=tab["id"])}


def test_the_flagged_tab_holds_exactly_the_flagged_tasks_with_reasons(env):
    client, pid = env["client"], env["pid"]
    status = screened(env)
    flagged = {int(t) for t in status["flagged"]["tasks"]}
    assert env["planted"] <= flagged, (sorted(env["planted"] - flagged), status["flagged"])
    assert len(flagged - env["planted"]) <= 1, status["flagged"]  # at most one clean tile on 36
    assert status["counts"]["flagged"] == len(flagged)
    assert sum(status["flagged"]["by_reason"].values()) == len(flagged)
    for t in env["planted"]:
        reason = status["flagged"]["tasks"][str(t)]
        assert "σ" in reason and ("blank" in reason or "focus" in reason), reason
    assert tab_tasks(client, pid) == flagged
    import requests

    metrics = requests.get(env["backend"].url + "/metrics", auth=AUTH, timeout=10).text
    assert "examine_tasks_flagged{" in metrics


def test_next_serves_no_flagged_task_while_clean_ones_are_left_and_an_annotation_unflags(env):
    client, pid = env["client"], env["pid"]
    status = screened(env)
    flagged = {int(t) for t in status["flagged"]["tasks"]}
    clean_left = (env["clean"] | env["planted"]) - flagged
    while clean_left:
        nxt = client.next_task(pid)
        assert nxt is not None and nxt["id"] not in flagged, (nxt and nxt["id"], sorted(clean_left))
        client.create_annotation(nxt["id"], RESULT)
        clean_left.discard(nxt["id"])
    nxt = client.next_task(pid)
    assert nxt is not None and nxt["id"] in flagged  # flagged tasks are served last, never dropped
    client.create_annotation(nxt["id"], RESULT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = env["backend"].status(pid, auth=AUTH)
        if str(nxt["id"]) not in status["flagged"]["tasks"] and not status["pending"]:
            break
        time.sleep(0.5)
    assert str(nxt["id"]) not in status["flagged"]["tasks"]
    assert nxt["id"] not in tab_tasks(client, pid)  # the tab lists unlabeled tasks only
