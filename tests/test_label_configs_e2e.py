"""End to end: projects that draw boxes and masks, and one that asks several questions, teach the queue.

A real Label Studio 1.23.2 and the real backend on 127.0.0.1, real medical tiles. Each project gets its labels
through Label Studio's API before the backend is connected, so its first ranking knows all of them and can be
reproduced here from the stored embeddings: the backend's queue is the default policy's order with the probes
of every tag, and not the order the same labeled tasks would get without their labels.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from backend.label_config import controls_from_config
from backend.labelstudio import LabelStudio
from examine.datasets import medical_tiles_with_sources
from examine.encoder import Encoder
from examine.probe import column_moments
from examine.ranking import BATCH, DEFAULT_POLICY, rank
from examine.store import EmbeddingStore
from examine.targets import Target, TargetProbe
from tests.backend_server import png, start_backend

pytestmark = pytest.mark.e2e

AUTH = ("examine", "s3cret-pass")
N = 40
LABELED = 20  # past the switch to uncertainty (5 per class seen: nodule, mass and "no box" are 3)
IMAGE = '<Image name="image" value="$image"/>'
BOXES = f'<View>{IMAGE}<RectangleLabels name="box" toName="image"><Label value="Nodule"/><Label value="Mass"/></RectangleLabels></View>'
BRUSH = f'<View>{IMAGE}<BrushLabels name="mask" toName="image"><Label value="Tumour"/><Label value="Vessel"/></BrushLabels></View>'
SEVERAL = (
    f"<View>{IMAGE}"
    '<Choices name="tissue" toName="image"><Choice value="stained"/><Choice value="background"/></Choices>'
    '<Choices name="modality" toName="image"><Choice value="fundus"/><Choice value="microscopy"/></Choices>'
    '<RectangleLabels name="box" toName="image"><Label value="Nodule"/><Label value="Mass"/></RectangleLabels>'
    "</View>"
)
REGION_OF = {"ihc": "Nodule", "cell": "Mass"}  # by the tile's source; the other sources: no region


def region(tag: str, kind: str, label: str) -> dict:
    value: dict = {"rectanglelabels": [label], "x": 10, "y": 10, "width": 30, "height": 30, "rotation": 0}
    if kind == "brushlabels":
        value = {"format": "rle", "rle": [0, 1, 2, 3], "brushlabels": [label]}
    return {
        "from_name": tag,
        "to_name": "image",
        "type": kind,
        "value": value,
        "original_width": 64,
        "original_height": 64,
    }


def answers_of(config: str, source: str) -> list[dict]:
    """The annotation an expert would give a tile of ``source`` under ``config``."""
    out = []
    for tag in controls_from_config(config):
        if tag.tag == "RectangleLabels" and source in REGION_OF:
            out.append(region(tag.name, "rectanglelabels", REGION_OF[source]))
        elif tag.tag == "BrushLabels" and source in ("ihc", "retina"):
            out.append(region(tag.name, "brushlabels", "Tumour" if source == "ihc" else "Vessel"))
        elif tag.name == "tissue":
            value = "stained" if source == "ihc" else "background"
            out.append({"from_name": "tissue", "to_name": "image", "type": "choices", "value": {"choices": [value]}})
        elif tag.name == "modality":
            value = "fundus" if source in ("retina", "microaneurysms") else "microscopy"
            out.append({"from_name": "modality", "to_name": "image", "type": "choices", "value": {"choices": [value]}})
    return out


@pytest.fixture(scope="module")
def env(label_studio, tmp_path_factory):
    backend = start_backend(label_studio, tmp_path_factory, AUTH, EXAMINE_HEAD_SIZE="40", EXAMINE_SCREENING="0")
    client = LabelStudio(label_studio.url, label_studio.token)
    tiles, sources = medical_tiles_with_sources(N, size=64, seed=11)
    projects = {}
    for name, config in (("boxes", BOXES), ("brush", BRUSH), ("several", SEVERAL)):
        pid = client.create_project(f"examine {name}", config)["id"]
        ids = sorted(client.import_files(pid, {f"t{i:02d}.png": png(t) for i, t in enumerate(tiles)}))
        for tid, source in zip(ids[:LABELED], sources[:LABELED]):  # ids follow the files' order
            client.create_annotation(tid, answers_of(config, source))
        client.add_ml_backend(
            pid, backend.url, "examine", auth_method="BASIC_AUTH", basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1]
        )
        projects[name] = dict(pid=pid, ids=ids, config=config)
    yield dict(
        client=client, backend=backend, projects=projects, sources=sources, model_dir=Path(backend.env["MODEL_DIR"])
    )
    backend.stop()


def ranked(env, name: str) -> dict:
    pid = env["projects"][name]["pid"]
    return env["backend"].wait(
        pid, lambda s: s["published_version"] and not s["pending"] and s["queue_labels"] == LABELED, auth=AUTH
    )


def pool(env, name: str) -> tuple[np.ndarray, list[dict]]:
    """The project's stored embeddings (task id order) and each task's annotation as Label Studio holds it."""
    client, p = env["client"], env["projects"][name]
    enc = Encoder.load(env["model_dir"] / "encoder")
    store = EmbeddingStore(env["model_dir"] / "store", enc.version, enc.dim)
    X, anns = [], []
    for t in sorted(client.iter_tasks(p["pid"], fields="all"), key=lambda t: t["id"]):
        X.append(store.get([hashlib.sha256(client.download(t["data"]["image"], task_id=t["id"])).hexdigest()])[0])
        anns.append((t.get("annotations") or [None])[-1])
    return np.asarray(X), anns


def expected_queue(env, name: str) -> tuple[list[int], list[int], TargetProbe]:
    """The default queue with the probes of every tag, and the same labeled tasks' queue without labels."""
    from backend.label_config import annotation_answers

    X, anns = pool(env, name)
    ids = env["projects"][name]["ids"]
    tags = controls_from_config(env["projects"][name]["config"])
    labeled = np.array([a is not None for a in anns])
    answers = [annotation_answers(a) for a in anns if a is not None]
    probe = TargetProbe([Target(t.name, t.labels, t.kind) for t in tags]).fit(
        X[labeled], answers, moments=column_moments(X)
    )
    with_labels = rank(X, labeled=labeled, policy=DEFAULT_POLICY, probe=probe, batch=BATCH)
    blind = rank(X, labeled=labeled, policy=DEFAULT_POLICY, batch=BATCH)
    return [ids[j] for j in with_labels.order], [ids[j] for j in blind.order], probe


@pytest.mark.parametrize("name, tag", [("boxes", "box"), ("brush", "mask")])
def test_region_labels_teach_the_queue(env, name, tag):
    """Boxes or masks of two labels: /status shows what the probe learns, and the queue orders by it."""
    status = ranked(env, name)
    learned = status["probe"]["tags"][tag]
    assert learned["learns"] == "each label, in the image or not" and learned["labels"] == LABELED
    assert sum(learned["counts"].values()) > 0 and all(learned["counts"].values())
    assert not status["probe"]["prelabel"] and "no image-level question" in status["probe"]["why"]
    want, blind, _ = expected_queue(env, name)
    assert status["queue_head"] == want
    assert want[:BATCH] != blind[:BATCH]  # the labels, not only which tasks carry one, chose the batch
    # no region is proposed: the served task's prediction carries the queue position only
    client, pid = env["client"], env["projects"][name]["pid"]
    time.sleep(0.5)
    served = client.next_task(pid)["id"]
    (pred,) = [p for p in client.list_predictions(task=served) if p["model_version"] == status["published_version"]]
    assert pred["result"] == [] and served == want[0]


def test_several_questions_and_boxes_are_all_learned_and_both_questions_proposed(env):
    status = ranked(env, "several")
    tags = status["probe"]["tags"]
    assert {n: bool(t["learns"]) for n, t in tags.items()} == {"tissue": True, "modality": True, "box": True}
    assert tags["tissue"]["counts"]["stained"] == sum(s == "ihc" for s in env["sources"][:LABELED])
    assert status["probe"]["prelabel"]
    want, blind, probe = expected_queue(env, "several")
    assert status["queue_head"] == want and want[:BATCH] != blind[:BATCH]
    client, pid = env["client"], env["projects"]["several"]["pid"]
    served = client.next_task(pid)["id"]
    (pred,) = [p for p in client.list_predictions(task=served) if p["model_version"] == status["published_version"]]
    by_tag = {r["from_name"]: r for r in pred["result"]}
    assert set(by_tag) == {"tissue", "modality"}  # both questions proposed; boxes are not
    X, _ = pool(env, "several")
    P = probe.predict_proba(X[[env["projects"]["several"]["ids"].index(served)]])
    for name in ("tissue", "modality"):
        classes = next(t.labels for t in controls_from_config(SEVERAL) if t.name == name)
        assert by_tag[name]["value"]["choices"] == [classes[int(np.argmax(P[name][0]))]]
        assert by_tag[name]["score"] == pytest.approx(float(P[name][0].max()), abs=1e-3)
