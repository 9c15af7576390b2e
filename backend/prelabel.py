"""Pre-annotations: the project's linear probe, refit on every re-rank, and the results Label Studio shows.

The probe (:class:`examine.probe.Probe`) learns the classes of the labeling config's first
``<Choices>`` tag from the annotations' choices, on the stored embeddings. Each unlabeled task
then carries the probe's class and probability; a published prediction turns them into a
``choices`` result (its ``score`` stays the queue position). What the probe learned, or why it
is off, is kept in the project's state for ``/status`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from backend.payload import ChoicesTag
from backend.state import ProjectState, TaskInfo
from examine.probe import Probe, column_moments

log = logging.getLogger(__name__)

__all__ = ["choices_tag", "config_label", "learn", "result_for"]

_SHOWN_OUTSIDE = 20  # labels outside the config listed at /status
_SHOWN_CHARS = 60  # of each


def config_label(state: ProjectState, info: TaskInfo) -> str | None:
    """The task's first label if the config's Choices tag declares it now, else None (caller holds the lock)."""
    raw = state.choices
    if not raw or info.label is None or not info.labeled:
        return None
    labels = info.labels or [info.label]
    return next((v for v in labels if v in raw.get("choices", ())), None)


def choices_tag(state: ProjectState) -> ChoicesTag | None:
    """The state's Choices tag, or None."""
    raw = state.choices
    if not raw:
        return None
    try:
        return ChoicesTag(str(raw["name"]), str(raw["to_name"]), tuple(raw["choices"]), bool(raw["multiple"]))
    except (KeyError, TypeError):
        return None


def learn(
    state: ProjectState,
    X: np.ndarray,
    rows: list[tuple[int, TaskInfo]],
    *,
    enabled: bool,
    moments: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = column_moments,
) -> Probe | None:
    """Fit the probe on the labeled rows of ``X`` and record each unlabeled task's choice (caller holds no lock).

    ``rows[j]`` is the task of ``X[j]``. Single-choice configs get one multinomial probe; multi-choice
    configs one probe per choice (chosen or not), and every choice above one half is proposed. Nothing
    is predicted when pre-annotation is off, the config has no Choices tag, or fewer than two classes
    are labeled; ``state.probe["why"]`` says which. Returns the single-choice probe (the queue's
    uncertainty uses it too), or None.

    The cross-validation (five more fits) is redone only when the labels grew by a tenth (at least 10)
    since it last ran, so a re-rank after one more label costs one fit. ``moments`` gives the pool's
    column moments (the backend keeps them while the pool is unchanged); every row of ``X`` is predicted
    in blocks and the unlabeled ones kept (a gather of the unlabeled rows would copy the pool).
    """
    tag = choices_tag(state)
    classes = list(tag.choices) if tag else []
    labeled: list[int] = []
    label_sets: list[list[str]] = []
    outside: dict[str, int] = {}
    for j, (_, info) in enumerate(rows):
        if not (info.labeled and info.label is not None):
            continue
        given = info.labels or [info.label]
        given = given if tag is not None and tag.multiple else given[:1]
        kept = [v for v in given if v in classes]
        for v in given:
            if v not in classes:
                outside[v[:_SHOWN_CHARS]] = outside.get(v[:_SHOWN_CHARS], 0) + 1
        if kept:  # a label the config does not declare (now) teaches nothing and is never proposed
            labeled.append(j)
            label_sets.append(kept)
    counts = {c: 0 for c in classes}
    for chosen in label_sets:
        for v in chosen:
            counts[v] += 1
    summary: dict[str, Any] = {"labels": len(labeled), "counts": counts, "prelabel": False, "cv_accuracy": None}
    if outside:
        shown = dict(sorted(outside.items(), key=lambda kv: (-kv[1], kv[0]))[:_SHOWN_OUTSIDE])
        summary["outside_config"] = {
            "labeled_tasks": sum(outside.values()),
            "labels": shown,
            "why": "labels that are not choices of the labeling config's tag: not learned, never proposed",
        }
    unlabeled = [j for j, (_, info) in enumerate(rows) if not info.labeled]
    predicted: dict[int, tuple[list[str], float]] = {}
    probe: Probe | None = None
    with state.lock:
        last = dict(state.probe)
    last_n = int(last.get("cv_labels") or 0)
    redo_cv = last.get("cv_accuracy") is None or len(labeled) >= last_n + max(10, last_n // 10) or len(labeled) < last_n
    if tag is None:
        summary["why"] = (
            "no pre-annotations: the labeling config has no <Choices> tag with two or more choices "
            "(tasks are still ranked)"
        )
    elif sum(1 for n in counts.values() if n) < 2:
        summary["why"] = "no pre-annotations yet: the probe needs labels of at least 2 classes"
    else:
        t0 = time.perf_counter()
        scale = moments(X)
        if tag.multiple:
            predicted, cv = _multi_choice(X, labeled, label_sets, unlabeled, classes, rows, redo_cv, scale)
        else:
            probe = Probe(cv=redo_cv).fit(X[labeled], [c[0] for c in label_sets], classes=classes, moments=scale)
            cv = probe.cv_accuracy_
            if unlabeled:
                P = probe.predict_proba(X)[unlabeled]
                best = np.argmax(P, axis=1)
                for j, k, p in zip(unlabeled, best, P[np.arange(len(best)), best]):
                    predicted[rows[j][0]] = ([str(probe.classes_[k])], float(p))
        if redo_cv:
            summary["cv_accuracy"], summary["cv_labels"] = cv, len(labeled)
        else:
            summary["cv_accuracy"], summary["cv_labels"] = last.get("cv_accuracy"), last_n
        summary["fit_s"] = round(time.perf_counter() - t0, 3)
        if enabled:
            summary["prelabel"] = True
        else:
            summary["why"] = "pre-annotations are off (EXAMINE_PRELABEL=0)"
            predicted = {}
    with state.lock:
        for tid, info in rows:
            info.predicted, info.predicted_p = predicted.get(tid, (None, None))
        state.probe = summary
    return probe


def _multi_choice(
    X: np.ndarray,
    labeled: list[int],
    label_sets: list[list[str]],
    unlabeled: list[int],
    classes: list[str],
    rows: list[tuple[int, TaskInfo]],
    cv: bool,
    scale: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[int, tuple[list[str], float]], float | None]:
    """One yes/no probe per choice; a task is proposed every choice whose probability exceeds one half.

    Returns the proposals and the mean cross-validated accuracy of the per-choice probes.
    """
    P = np.zeros((len(unlabeled), len(classes)))
    accs = []
    for k, c in enumerate(classes):
        yes = ["yes" if c in chosen else "no" for chosen in label_sets]
        if len(set(yes)) < 2:  # always or never chosen so far: propose what the labels say
            P[:, k] = 1.0 if yes and yes[0] == "yes" else 0.0
            continue
        probe = Probe(cv=cv).fit(X[labeled], yes, classes=["no", "yes"], moments=scale)
        if probe.cv_accuracy_ is not None:
            accs.append(probe.cv_accuracy_)
        if unlabeled:
            P[:, k] = probe.predict_proba(X)[unlabeled, 1]
    out: dict[int, tuple[list[str], float]] = {}
    for i, j in enumerate(unlabeled):
        chosen = [k for k in range(len(classes)) if P[i, k] > 0.5]
        if chosen:
            out[rows[j][0]] = ([classes[k] for k in chosen], float(P[i, chosen].min()))
    return out, (float(np.mean(accs)) if accs else None)


def result_for(state: ProjectState, info: TaskInfo) -> list[dict[str, Any]]:
    """The Label Studio ``result`` of a task's prediction: the probe's choice, or [] when there is none."""
    tag = choices_tag(state)
    if tag is None or info.labeled or info.predicted is None:
        return []
    values = [v for v in info.predicted if v in tag.choices]  # a proposal from before a config change: none
    if len(values) != len(info.predicted) or not values:
        return []
    return [tag.result(values, info.predicted_p or 0.0)]
