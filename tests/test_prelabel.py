"""Pre-annotations: the config's tags, the probes' classes on unlabeled tasks, /predict and /status."""

from __future__ import annotations

import numpy as np
import pytest

from backend.app import create_app
from backend.label_config import annotation_answers, controls_from_config
from backend.prelabel import learn, proposal, result_for
from backend.publish import Published
from backend.settings import Settings
from backend.state import ProjectState, TaskInfo

CONFIG = (
    '<View><Image name="img" value="$image"/>'
    '<Choices name="tissue" toName="img"><Choice value="tumour"/><Choice value="stroma"/><Choice value="fat"/></Choices>'
    "</View>"
)


def test_choices_tag_is_read_from_the_config():
    (tag,) = controls_from_config(CONFIG)
    assert (tag.name, tag.to_name, tag.labels, tag.kind, tag.image_level) == (
        "tissue",
        "img",
        ("tumour", "stroma", "fat"),
        "class",
        True,
    )
    multi = CONFIG.replace('toName="img">', 'toName="img" choice="multiple">')
    assert controls_from_config(multi)[0].kind == "multi"
    assert controls_from_config("<View><Choices") == [] and controls_from_config(None) == []
    one = '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="x"/></Choices></View>'
    assert controls_from_config(one) == []


def test_annotation_answers_read_every_tag():
    ann = {
        "result": [
            {"from_name": "box", "value": {"x": 1, "rectanglelabels": ["cell"]}},
            {"from_name": "box", "value": {"x": 2, "rectanglelabels": ["cell"]}},
            {"from_name": "tissue", "value": {"choices": ["fat"]}},
            {"from_name": "note", "value": {"text": ["free text"]}},
        ]
    }
    assert annotation_answers(ann) == {"box": ["cell"], "tissue": ["fat"]}
    assert annotation_answers({"was_cancelled": True, **ann}) is None
    assert annotation_answers({"result": []}) == {}


def with_label(info, value):
    info.labeled = True
    info.take_answers({"tissue": [value]})


def project(n=60, seed=0):
    rng = np.random.default_rng(seed)
    names = ["tumour", "stroma", "fat"]
    y = rng.integers(0, 2, n)  # fat is never labeled
    X = np.eye(3)[y] * 5 + rng.normal(size=(n, 3))
    state = ProjectState(pid=1, controls=[t.as_dict() for t in controls_from_config(CONFIG)])
    for t in range(n):
        state.tasks[t + 1] = TaskInfo(uri=f"/data/upload/1/{t}.png", key=f"k{t}")
        if t < 20:
            with_label(state.tasks[t + 1], names[y[t]])
    rows = sorted(state.tasks.items())
    return state, X, rows, [names[v] for v in y]


def test_learn_predicts_every_unlabeled_task_and_reports_what_it_learned():
    state, X, rows, truth = project()
    learn(state, X, rows, enabled=True)
    unlabeled = [(t, i) for t, i in rows if not i.labeled]
    got = {t: proposal(state, t) for t, _ in unlabeled}
    assert all(g is not None and 0.5 <= g[1]["tissue"] <= 1 for g in got.values())
    assert np.mean([got[t][0] == {"tissue": [truth[t - 1]]} for t, _ in unlabeled]) > 0.9
    assert all(proposal(state, t) is None for t, i in rows if i.labeled)
    assert state.probe["prelabel"] and state.probe["labels"] == 20
    assert set(state.probe["counts"]) == {"tumour", "stroma", "fat"} and state.probe["counts"]["fat"] == 0
    assert state.probe["cv_accuracy"] > 0.9
    first = got[unlabeled[0][0]]
    res = result_for(state, unlabeled[0][0])
    assert res == [
        {
            "from_name": "tissue",
            "to_name": "img",
            "type": "choices",
            "value": {"choices": first[0]["tissue"]},
            "score": pytest.approx(first[1]["tissue"], abs=1e-4),
        }
    ]


def test_no_prelabel_when_off_without_choices_or_with_one_class():
    state, X, rows, _ = project()
    learn(state, X, rows, enabled=False)
    assert not state.probe["prelabel"] and "EXAMINE_PRELABEL=0" in state.probe["why"]
    assert state.probe["cv_accuracy"] is not None  # the probe is still measured for /status
    assert all(result_for(state, t) == [] for t, _ in rows)

    state.controls = []
    learn(state, X, rows, enabled=True)
    assert "no control tag on the image" in state.probe["why"] and all(proposal(state, t) is None for t, _ in rows)

    state, X, rows, _ = project()
    for _, info in rows:
        if info.labeled:
            with_label(info, "tumour")
    learn(state, X, rows, enabled=True)
    assert "at least 2 classes" in state.probe["why"]


def test_predict_and_status_carry_the_probe(tmp_path):
    app = create_app(Settings(model_dir=tmp_path), start=False)
    backend = app.config["EXAMINE_BACKEND"]
    state, X, rows, _ = project()
    learn(state, X, rows, enabled=True)
    live = backend.states.get(1)
    live.controls, live.tasks, live.probe, live.queue = state.controls, state.tasks, state.probe, [30, 21]
    live.proposals = state.proposals  # kept in memory, recomputed by the first re-rank after a restart
    live.predictions = {30: Published(7, 0.5), 21: Published(8, 0.05)}  # what Label Studio holds
    backend.states.save(live)
    c = app.test_client()
    out = c.post("/predict", json={"project": "1.1", "tasks": [{"id": 30}, {"id": 1}]}).get_json()["results"]
    assert out[0]["result"][0]["value"]["choices"] == proposal(state, 30)[0]["tissue"] and out[0]["score"] == 0.5
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
    state = ProjectState(pid=1, controls=[t.as_dict() for t in controls_from_config(multi)])
    for t in range(n):
        info = state.tasks[t + 1] = TaskInfo(uri=f"/x/{t}.png", key=f"k{t}")
        if t < 40:
            chosen = [c for c, on in (("tumour", has_a[t]), ("stroma", has_b[t])) if on]
            info.labeled = True
            info.take_answers({"tissue": chosen or ["fat"]})
    learn(state, X, sorted(state.tasks.items()), enabled=True)
    right = 0
    for t in range(40, n):
        want = [c for c, on in (("tumour", has_a[t]), ("stroma", has_b[t])) if on] or ["fat"]
        got = (proposal(state, t + 1) or ({}, {}))[0].get("tissue", [])
        right += sorted(got) == sorted(want)
    assert right >= 0.8 * 40
    assert state.probe["prelabel"] and state.probe["counts"]["tumour"] == int(has_a[:40].sum())
    both = next(t for t in range(40, n) if has_a[t] and has_b[t])
    result = result_for(state, both + 1)
    assert sorted(result[0]["value"]["choices"]) == ["stroma", "tumour"]


def test_cross_validation_is_redone_only_when_the_labels_grew_by_a_tenth():
    state, X, rows, _ = project(n=200)
    for t, info in rows[20:60]:
        with_label(info, ["tumour", "stroma"][t % 2])
    learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 60 and state.probe["cv_accuracy"] is not None
    first = state.probe["cv_accuracy"]
    with_label(rows[60][1], "stroma")
    probe = learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 60 and state.probe["cv_accuracy"] == first and probe.n_labels_ == 61
    for _, info in rows[61:75]:
        with_label(info, "tumour")
    learn(state, X, rows, enabled=True)
    assert state.probe["cv_labels"] == 75


def test_per_tag_accuracy_stands_between_cross_validations_and_a_changed_tag_shows_no_old_proposal():
    state, X, rows, _ = project(n=200)
    for t, info in rows[20:60]:
        with_label(info, ["tumour", "stroma"][t % 2])
    learn(state, X, rows, enabled=True)
    first = state.probe["tags"]["tissue"]["cv_accuracy"]
    with_label(rows[60][1], "stroma")
    learn(state, X, rows, enabled=True)  # no new cross-validation: the tag's accuracy stands
    assert first is not None and state.probe["tags"]["tissue"]["cv_accuracy"] == first
    tid = next(t for t, i in rows if not i.labeled)
    assert result_for(state, tid)
    state.controls = [{**state.controls[0], "kind": "multi"}]  # same name and classes, now multi-choice
    assert result_for(state, tid) == []  # until the next re-rank fits it again


def test_proposals_worked_out_when_asked_equal_the_probes_prediction_of_every_task():
    """Brute-force reference: the probe's probabilities for the whole pool at once. Proposals are worked out one
    task at a time or in blocks (prepare), in any order, and give the same classes and probabilities."""
    import gc

    from backend.prelabel import Proposals

    state, X, rows, _ = project()
    learn(state, X, rows, enabled=True)
    props = state.proposals
    unlabeled = [t for t, i in rows if not i.labeled]
    assert props.prelabeled == len(unlabeled)  # a single-class question proposes a class for every task
    P = props._probe.predict_proba(X)["tissue"]
    labels = controls_from_config(CONFIG)[0].labels
    props.prepare(unlabeled[::3] + [10**9])  # an unknown task is ignored
    for t in reversed(unlabeled):
        values, ps = proposal(state, t)
        assert values == {"tissue": [labels[int(np.argmax(P[t - 1]))]]}
        assert ps["tissue"] == pytest.approx(P[t - 1].max(), abs=1e-4)
    # once the backend drops the pool's matrix, what was not worked out has no proposal until the next refit
    Y = np.array(X)
    unlabeled_rows = [j for j, (_, i) in enumerate(rows) if not i.labeled]
    later = Proposals.of_probe(props._probe, Y, unlabeled_rows, rows, {"tissue": props.tags["tissue"][0]})
    first = later.of(unlabeled[0])
    del Y
    gc.collect()
    assert later.of(unlabeled[0]) == first and later.of(unlabeled[1]) is None


def test_multi_label_proposals_count_the_tasks_with_a_class_above_one_half():
    multi = CONFIG.replace('toName="img">', 'toName="img" choice="multiple">')
    rng = np.random.default_rng(2)
    n = 60
    has_a = rng.random(n) < 0.5
    X = np.stack([has_a * 4.0, rng.normal(size=n), np.zeros(n)], axis=1) + rng.normal(size=(n, 3))
    state = ProjectState(pid=1, controls=[t.as_dict() for t in controls_from_config(multi)])
    for t in range(n):
        info = state.tasks[t + 1] = TaskInfo(uri=f"/x/{t}.png", key=f"k{t}")
        if t < 30:
            info.labeled = True
            info.take_answers({"tissue": ["tumour"] if has_a[t] else ["stroma"]})
    learn(state, X, sorted(state.tasks.items()), enabled=True)
    want = sum(proposal(state, t + 1) is not None for t in range(30, n))
    assert state.proposals.prelabeled == want and 0 < want <= 30
