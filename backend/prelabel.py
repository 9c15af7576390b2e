"""Pre-annotations: the project's linear probes, refit on every re-rank, and the results Label Studio shows.

The probes (:class:`examine.targets.TargetProbe`) learn every control tag of the labeling config tied to
the image (:mod:`backend.label_config`) from the annotations, on the stored embeddings: the classes of each
``<Choices>`` and ``<Taxonomy>`` question, and for region tags (boxes, polygons, masks, key points) whether
the image holds each label. The queue's uncertainty comes from all of them. Each unlabeled task then carries
a proposal and its probability for every image-level question; a published prediction turns them into
``choices`` / ``taxonomy`` results (its ``score`` stays the queue position). Regions are not proposed: the
probes know whether an image holds a nodule, not where. What the probes learned, or why they are off, is kept
in the project's state for ``/status`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from backend.label_config import ControlTag, controls_from_state
from backend.state import ProjectState, TaskInfo
from examine.probe import ProbeError, column_moments
from examine.targets import Target, TargetProbe

log = logging.getLogger(__name__)

__all__ = ["controls", "learn", "queue_label", "result_for"]

_SHOWN_OUTSIDE = 20  # labels outside the config listed at /status
_SHOWN_CHARS = 60  # of each


def controls(state: ProjectState) -> list[ControlTag]:
    """The control tags of the project's config that the probes learn (caller may hold the lock)."""
    return controls_from_state(state.controls)


def queue_label(state: ProjectState, info: TaskInfo) -> str | None:
    """The task's class for the label-aware comparison policies (``class-aware``): its answer to the config's
    first single-class question, when the config declares it; else None (caller holds the lock)."""
    if not info.labeled or not info.answers:
        return None
    tag = next((t for t in controls(state) if t.kind == "class"), None)
    given = info.answers.get(tag.name) if tag else None
    return next((v for v in given or () if v in tag.labels), None) if tag else None


def learn(
    state: ProjectState,
    X: np.ndarray,
    rows: list[tuple[int, TaskInfo]],
    *,
    enabled: bool,
    moments: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = column_moments,
) -> TargetProbe | None:
    """Fit the probes on the labeled rows of ``X`` and record each unlabeled task's proposals (caller holds no lock).

    ``rows[j]`` is the task of ``X[j]``. Every control tag on the image is a target (single-choice: one
    multinomial probe; multi-choice and taxonomy: one yes/no probe per class; region tags: one per label,
    present or not). Nothing is proposed when pre-annotation is off, no tag is image-level, or no tag has
    two classes labeled; ``state.probe["why"]`` says which. Returns the probes (the queue's uncertainty uses
    them), or None when none can learn.

    The cross-validation (five more fits per probe) is redone only when the labels grew by a tenth (at least
    10) since it last ran, so a re-rank after one more label costs one fit per probe. ``moments`` gives the
    pool's column moments (the backend keeps them while the pool is unchanged); every row of ``X`` is
    predicted in blocks and the unlabeled ones kept (a gather of the unlabeled rows would copy the pool).
    """
    tags = controls(state)
    known = {t.name: t for t in tags}
    labeled: list[int] = []
    answers: list[dict[str, list[str]]] = []
    outside: dict[str, int] = {}
    for j, (_, info) in enumerate(rows):
        if not info.labeled or info.answers is None:
            continue
        mine = {k: v for k, v in info.answers.items() if k in known}
        for name, given in mine.items():
            for v in given:
                if v not in known[name].labels:
                    outside[v[:_SHOWN_CHARS]] = outside.get(v[:_SHOWN_CHARS], 0) + 1
        labeled.append(j)
        answers.append(mine)
    summary: dict[str, Any] = {"labels": 0, "counts": {}, "prelabel": False, "cv_accuracy": None, "tags": {}}
    if outside:
        shown = dict(sorted(outside.items(), key=lambda kv: (-kv[1], kv[0]))[:_SHOWN_OUTSIDE])
        summary["outside_config"] = {
            "labeled_tasks": sum(outside.values()),
            "labels": shown,
            "why": "labels that are not classes of the labeling config's tag: not learned, never proposed",
        }
    unlabeled = [j for j, (_, info) in enumerate(rows) if not info.labeled]
    predicted: dict[int, tuple[dict[str, list[str]], dict[str, float]]] = {}
    probe: TargetProbe | None = None
    with state.lock:
        last = dict(state.probe)
    last_n = int(last.get("cv_labels") or 0)
    n_answers = sum(1 for a in answers if a or any(t.kind == "presence" for t in tags))
    redo_cv = last.get("cv_accuracy") is None or n_answers >= last_n + max(10, last_n // 10) or n_answers < last_n
    if not tags:
        summary["why"] = (
            "the labeling config has no control tag on the image (<Choices>, <Taxonomy>, <RectangleLabels>, "
            "<PolygonLabels>, <BrushLabels>, <KeyPointLabels>, <EllipseLabels>, <Labels>) with classes: "
            "nothing to learn, no pre-annotations (tasks are still ranked)"
        )
    else:
        t0 = time.perf_counter()
        targets = [Target(t.name, t.labels, t.kind) for t in tags]
        try:
            probe = TargetProbe(targets, cv=redo_cv).fit(X[labeled], answers, moments=moments(X))
        except ProbeError:
            probe = None
            summary["tags"] = _tag_summaries(tags, TargetProbe(targets).tally(answers))
            summary["why"] = "nothing learned yet: each tag's probe needs labels of at least 2 classes"
        if probe is not None:
            summary["tags"] = _tag_summaries(tags, probe.per_target_)
            if redo_cv:
                summary["cv_accuracy"], summary["cv_labels"] = probe.cv_accuracy_, n_answers
            else:
                summary["cv_accuracy"], summary["cv_labels"] = last.get("cv_accuracy"), last_n
            summary["fit_s"] = round(time.perf_counter() - t0, 3)
            proposals = {t.name: t for t in tags if t.image_level and t.name in probe.heads_}
            if not proposals:
                summary["why"] = "no pre-annotations: no image-level question (<Choices>, <Taxonomy>) has learned yet"
            elif not enabled:
                summary["why"] = "pre-annotations are off (EXAMINE_PRELABEL=0)"
            else:
                summary["prelabel"] = True
                predicted = _proposals(probe, X, unlabeled, rows, proposals)
    summary["labels"] = probe.n_labels_ if probe is not None else sum(1 for a in answers if a)
    for info in summary["tags"].values():
        for c, n in info["counts"].items():
            summary["counts"][c] = summary["counts"].get(c, 0) + n
    with state.lock:
        for tid, info in rows:
            info.predicted, info.predicted_p = predicted.get(tid, (None, None))
        state.probe = summary
    return probe


def _tag_summaries(tags: list[ControlTag], per_target: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """/status's view of each tag: what its probe learns, labels per class, cross-validated quality."""
    learns = {"class": "its class", "multi": "each class, chosen or not", "presence": "each label, in the image or not"}
    out = {}
    for t in tags:
        info = per_target[t.name]
        out[t.name] = {
            "tag": t.tag,
            "learns": learns[t.kind] if info.get("learns") else None,
            "labels": info["labels"],
            "counts": info["counts"],
            "cv_accuracy": info["cv_accuracy"],
            **({"why": info["why"]} if info.get("why") else {}),
        }
    return out


def _proposals(
    probe: TargetProbe,
    X: np.ndarray,
    unlabeled: list[int],
    rows: list[tuple[int, TaskInfo]],
    tags: dict[str, ControlTag],
) -> dict[int, tuple[dict[str, list[str]], dict[str, float]]]:
    """Per unlabeled task, each image-level tag's proposal and its probability: the most probable class of a
    single-class question; every class above one half of a multi-class one (probability: the lowest)."""
    out: dict[int, tuple[dict[str, list[str]], dict[str, float]]] = {}
    if not unlabeled:
        return out
    for name, P in probe.predict_proba(X).items():
        if name not in tags:
            continue
        tag, P = tags[name], P[unlabeled]
        if tag.kind == "class":
            best = np.argmax(P, axis=1)
            for j, k, p in zip(unlabeled, best, P[np.arange(len(best)), best]):
                values, ps = out.setdefault(rows[j][0], ({}, {}))
                values[name], ps[name] = [tag.labels[k]], float(p)
            continue
        on = P > 0.5
        for i in np.flatnonzero(on.any(axis=1)):
            chosen = np.flatnonzero(on[i])
            values, ps = out.setdefault(rows[unlabeled[i]][0], ({}, {}))
            values[name], ps[name] = [tag.labels[k] for k in chosen], float(P[i, chosen].min())
    return out


def result_for(state: ProjectState, info: TaskInfo) -> list[dict[str, Any]]:
    """The Label Studio ``result`` of a task's prediction: one item per image-level tag the probes propose
    (none for a labeled task, or a proposal from before a config change)."""
    if info.labeled or not info.predicted:
        return []
    out = []
    for tag in controls(state):
        values = info.predicted.get(tag.name)
        if not tag.image_level or not values or not all(v in tag.labels for v in values):
            continue
        out.append(tag.result(values, (info.predicted_p or {}).get(tag.name, 0.0)))
    return out
