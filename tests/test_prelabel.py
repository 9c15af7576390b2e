"""Pre-annotations: the Choices tag, the probe's classes on unlabeled tasks, /predict and /status."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app import create_app
from backend.payload import annotation_label, choices_from_config
from backend.prelabel import learn, result_for
from backend.publish import Published
from backend.settings import Settings
from backend.state import ProjectState, TaskInfo

CONFIG = (
    '<View><Image name="img" value="$image"/>'
    '<Choices name="tissue" toName="img"><Choice value="tumour"/><Choice value="stroma"/><Choice value="fat"/></Choices>'
    "</View>"
)


def test_choices_tag_is_read_from_the_config():
    tag = choices_from_config(CONFIG)
    assert tag is not None and (tag.name, tag.to_name, tag.choices, tag.multiple) == (
        "tissue",
        "img",
        ("tumour", "stroma", "fat"),
        False,
    )
    multi = CONFIG.replace('toName="img">', 'toName="img" choice="multiple">')
    assert choices_from_config(multi).multiple
    boxes = '<View><Image name="i" value="$image"/><RectangleLabels name="b" toName="i"><Label value="x"/></RectangleLabels></View>'
    assert choices_from_config(boxes) is None
    assert choices_from_config("<View><Choices") is None and choices_from_config(None) is None
    one = '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="x"/></Choices></View>'
    assert choices_from_config(one) is None


def test_annotation_label_reads_only_the_choices_tag_when_named():
    ann = {
        "result": [
            {"from_name": "box", "value": {"rectanglelabels": ["cell"]}},
            {"from_name": "tissue", "value": {"choices": ["fat"]}},
        ]
    }
    assert annotation_label(ann) == "cell"
    assert annotation_label(ann, "tissue") == "fat"
    assert annotation_label({"was_cancelled": True, **ann}, "tissue") is None


def project(n=60, seed=0):
    rng = np.random.default_rng(seed)
    names = ["tumour", "stroma", "fat"]
    y = rng.integers(0, 2, n)  # fat is never labeled
    X = np.eye(3)[y] * 5 + rng.normal(size=(n, 3))
    state = ProjectState(pid=1, choices=choices_from_config(CONFIG).as_dict())
    for t in range(n):
        state.tasks[t + 1] = TaskInfo(uri=f"/data/upload/1/{t}.png", key=f"k{t}")
        if t < 20:
            state.tasks[t + 1].labeled, state.tasks[t + 1].label = True, names[y[t]]
    rows = sorted(state.tasks.items())
    return state, X, rows, [names[v] for v in y]


def test_learn_predicts_every_unlabeled_task_and_reports_what_it_learned():
    state, X, rows, truth = project()
    learn(state, X, rows, enabled=True)
    unlabeled = [(t, i) for t, i in rows if not i.labeled]
    assert all(i.predicted is not None and 0.5 <= i.predicted_p <= 1 for _, i in unlabeled)
    assert np.mean([i.predicted == [truth[t - 1]] for t, i in unlabeled]) > 0.9
    assert all(i.predicted is None for t, i in rows if i.labeled)
    assert state.probe["prelabel"] and state.probe["labels"] == 20
    assert set(state.probe["counts"]) == {"tumour", "stroma", "fat"} and state.probe["counts"]["fat"] == 0
    assert state.probe["cv_accuracy"] > 0.9
    res = result_for(state, unlabeled[0][1])
    assert res == [
        {
            "from_name": "tissue",
            "to_name": "img",
            "type": "choices",
            "value": {"choices": unlabeled[0][1].predicted},
            "score": pytest.approx(unlabeled[0][1].predicted_p, abs=1e-4),
        }
    ]


def test_no_prelabel_when_off_without_choices_or_with_one_class():
    state, X, rows, _ = project()
    learn(state, X, rows, enabled=False)
    assert not state.probe["prelabel"] and "EXAMINE_PRELABEL=0" in state.probe["why"]
    assert state.probe["cv_accuracy"] is not None  # the probe is still measured for /status
    assert all(result_for(state, i) == [] for _, i in rows)

    state.choices = None
    learn(state, X, rows, enabled=True)
    assert "no <Choices> tag" in state.probe["why"] and all(i.predicted is None for _, i in rows)

    state, X, rows, _ = project()
    for _, info in rows:
        if info.labeled:
            info.label = "tumour"
    learn(state, X, rows, enabled=True)
    assert "at least 2 classes" in state.probe["why"]


def test_predict_and_status_carry_the_probe(tmp_path):
    app = create_app(Settings(model_dir=tmp_path), start=False)
    backend = app.config["EXAMINE_BACKEND"]
    state, X, rows, _ = project()
    learn(state, X, rows, enabled=True)
    live = backend.states.get(1)
    live.choices, live.tasks, live.probe, live.queue = state.choices, state.tasks, state.probe, [30, 21]
    live.predictions = {30: Published(7, 0.5), 21: Published(8, 0.05)}  # what Label Studio holds
    backend.states.save(live)
    c = app.test_client()
    out = c.post("/predict", json={"project": "1.1", "tasks": [{"id": 30}, {"id": 1}]}).get_json()["results"]
    assert out[0]["result"][0]["value"]["choices"] == state.tasks[30].predicted and out[0]["score"] == 0.5
    assert out[1]["result"] == []  # labeled
    status = c.get("/projects/1/status").get_json()
    assert status["probe"]["labels"] == 20 and "lowest score is served first" in status["score"]
    metrics = c.get("/metrics").get_data(as_text=True)
    assert 'examine_labels{class="fat",project="1"} 0.0' in metrics and "examine_probe_cv_accuracy" in metrics


@pytest.mark.parametrize("raw, value", [("0", False), ("1", True), ("false", False), ("on", True)])
def test_prelabel_setting(raw, value):
    assert Settings.from_env({"EXAMINE_PRELABEL": raw}).prelabel is value
    with pytest.raises(ValueError, match="EXAMINE_PRELABEL"):
        Settings.from_env({"EXAMINE_PRELABEL": "maybe"})


def test_multi_choice_configs_get_one_probe_per_choice():
    multi = CONFIG.replace('toName="img">', 'toName="img" choice="multiple">')
    rng = np.random.default_rng(1)
    n = 80
    has_a, has_b = rng.random(n) < 0.5, rng.random(n) < 0.5  # two independent findings
    X = np.stack([has_a * 4.0, has_b * 4.0, np.zeros(n)], axis=1) + rng.normal(size=(n, 3))
    state = ProjectState(pid=1, choices=choices_from_config(multi).as_dict())
    for t in range(n):
        info = state.tasks[t + 1] = TaskInfo(uri=f"/x/{t}.png", key=f"k{t}")
        if t < 40:
            chosen = [c for c, on in (("tumour", has_a[t]), ("stroma", has_b[t])) if on]
            info.labeled = True
            info.take_labels(chosen or ["fat"])
    learn(state, X, sorted(state.tasks.items()), enabled=True)
    right = 0
    for t in range(40, n):
        want = [c for c, on in (("tumour", has_a[t]), ("stroma", has_b[t])) if on] or ["fat"]
        got = state.tasks[t + 1].predicted or []
        right += sorted(got) == sorted(want)
    assert right >= 0.8 * 40
    assert state.probe["prelabel"] and state.probe["counts"]["tumour"] == int(has_a[:40].sum())
    both = next(t for t in range(40, n) if has_a[t] and has_b[t])
    result = result_for(state, state.tasks[both + 1])
    assert sorted(result[0]["value"]["choices"]) == ["stroma", "tumour"]


def test_cross_validation_is_redone_only_when_the_labels_grew_by_a_tenth():
    state, X, rows, _ = project(n=200)
    for t, info in rows[20:60]:
        info.labeled, info.label = True, ["tumour", "stroma"][t % 2]
    learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 60 and state.probe["cv_accuracy"] is not None
    first = state.probe["cv_accuracy"]
    rows[60][1].labeled, rows[60][1].label = True, "stroma"
    probe = learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 60 and state.probe["cv_accuracy"] == first and probe.n_labels_ == 61
    for _, info in rows[61:75]:
        info.labeled, info.label = True, "tumour"
    learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 75
