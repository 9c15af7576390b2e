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
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from backend.label_config import ControlTag, controls_from_state
from backend.state import ProjectState, TaskInfo
from examine.probe import ProbeError, column_moments
from examine.targets import Target, TargetProbe

log = logging.getLogger(__name__)

__all__ = ["Proposals", "controls", "learn", "prepare_proposals", "proposal", "queue_labels", "result_for"]

_SHOWN_OUTSIDE = 20  # labels outside the config listed at /status
_SHOWN_CHARS = 60  # of each


def controls(state: ProjectState) -> list[ControlTag]:
    """The control tags of the project's config that the probes learn (caller may hold the lock)."""
    return controls_from_state(state.controls)


def queue_labels(state: ProjectState, rows: list[tuple[int, TaskInfo]]) -> list[str | None] | None:
    """Each row's class for the label-aware comparison policies (``class-aware``): its answer to the config's
    first single-class question, when the config declares it; None without such a question (caller holds the
    lock)."""
    tag = next((t for t in controls(state) if t.kind == "class"), None)
    if tag is None:
        return None
    out: list[str | None] = []
    for _, info in rows:
        given = info.answers.get(tag.name) if info.labeled and info.answers else None
        out.append(next((v for v in given or () if v in tag.labels), None))
    return out


def learn(
    state: ProjectState,
    X: np.ndarray,
    rows: list[tuple[int, TaskInfo]],
    *,
    enabled: bool,
    moments: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] = column_moments,
    labeled_mask: np.ndarray | None = None,
    tids: np.ndarray | None = None,
) -> TargetProbe | None:
    """Fit the probes on the labeled rows of ``X`` and record each unlabeled task's proposals (caller holds no lock).

    ``rows[j]`` is the task of ``X[j]``. Every control tag on the image is a target (single-choice: one
    multinomial probe; multi-choice and taxonomy: one yes/no probe per class; region tags: one per label,
    present or not). Nothing is proposed when pre-annotation is off, no tag is image-level, or no tag has
    two classes labeled; ``state.probe["why"]`` says which. Returns the probes (the queue's uncertainty uses
    them), or None when none can learn.

    The cross-validation (five more fits per probe) is redone only when the labels grew by a tenth (at least
    10) since it last ran, so a re-rank after one more label costs one fit per probe. ``moments`` gives the
    pool's column moments (the backend keeps them while the pool is unchanged); the unlabeled rows are
    predicted when their proposals are first asked for (:class:`Proposals`).
    ``labeled_mask`` and ``tids``: which rows are labeled and their task ids, when the caller has them (a pass
    over 200,000 records less).
    """
    tags = controls(state)
    known = {t.name: t for t in tags}
    labeled: list[int] = []
    answers: list[dict[str, list[str]]] = []
    outside: dict[str, int] = {}
    mask = np.fromiter((i.labeled for _, i in rows), bool, len(rows)) if labeled_mask is None else labeled_mask
    for j in np.flatnonzero(mask).tolist():
        info = rows[j][1]
        if info.answers is None:
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
    unlabeled = np.flatnonzero(~mask)
    proposals: Proposals | None = None
    probe: TargetProbe | None = None
    with state.lock:
        last = dict(state.probe)
    last_n = int(last.get("cv_labels") or 0)
    every = any(t.kind == "presence" for t in tags)  # a region tag: every labeled task answers it
    n_answers = sum(1 for a in answers if a or every)
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
            summary["tags"] = _tag_summaries(tags, probe.per_target_, None if redo_cv else last.get("tags"))
            if redo_cv:
                summary["cv_accuracy"], summary["cv_labels"] = probe.cv_accuracy_, n_answers
            else:
                summary["cv_accuracy"], summary["cv_labels"] = last.get("cv_accuracy"), last_n
            summary["fit_s"] = round(time.perf_counter() - t0, 3)
            asked = {t.name: t for t in tags if t.image_level and t.name in probe.heads_}
            if not asked:
                summary["why"] = "no pre-annotations: no image-level question (<Choices>, <Taxonomy>) has learned yet"
            elif not enabled:
                summary["why"] = "pre-annotations are off (EXAMINE_PRELABEL=0)"
            else:
                summary["prelabel"] = True
                proposals = Proposals.of_probe(probe, X, unlabeled, rows, asked, tids=tids)
    summary["labels"] = probe.n_labels_ if probe is not None else sum(1 for a in answers if a)
    for info in summary["tags"].values():
        for c, n in info["counts"].items():
            summary["counts"][c] = summary["counts"].get(c, 0) + n
    with state.lock:
        state.proposals = proposals
        state.probe = summary
    return probe


def _tag_summaries(
    tags: list[ControlTag], per_target: dict[str, dict[str, Any]], last: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """/status's view of each tag: what its probe learns, labels per class, cross-validated quality (``last``:
    the previous summaries, whose accuracy stands while the cross-validation is not redone)."""
    learns = {"class": "its class", "multi": "each class, chosen or not", "presence": "each label, in the image or not"}
    out = {}
    for t in tags:
        info = per_target[t.name]
        out[t.name] = {
            "tag": t.tag,
            "learns": learns[t.kind] if info.get("learns") else None,
            "labels": info["labels"],
            "counts": info["counts"],
            "cv_accuracy": last.get(t.name, {}).get("cv_accuracy") if last else info["cv_accuracy"],
            **({"why": info["why"]} if info.get("why") else {}),
        }
    return out


class Proposals:
    """The proposals of one re-rank for every unlabeled task, worked out when first asked for and kept as
    arrays. Predicting the whole pool after each label took 0.65 s at 200,000 tasks × 3,072 dimensions, while
    a label changes the predictions of the head's few tasks (the fill asks for a chunk at a time). Per
    image-level tag: the proposed class of each row (single-class questions) or the classes above one half
    (multi-class ones), and the probability (the lowest of several classes).

    The pool's matrix is held weakly: once the backend drops it (the pool changed) the rows not worked out
    yet have no proposal until the next refit, which follows at once."""

    _BLOCK = 4096  # rows predicted per pass

    def __init__(
        self,
        probe: TargetProbe,
        X: np.ndarray,
        tids: np.ndarray,
        rows: np.ndarray,
        tags: dict[str, ControlTag],
    ):
        order = np.argsort(tids, kind="stable")
        self.tids = np.asarray(tids, np.int64)[order]
        self._rows = np.asarray(rows, np.int64)[order]  # row of X of each task
        self._probe = probe
        self._X = weakref.ref(X)
        self._done = np.zeros(len(self.tids), bool)
        n = len(self.tids)
        self.tags: dict[str, tuple[ControlTag, np.ndarray, np.ndarray]] = {
            name: (
                tag,
                np.full(n, -1, np.int32) if tag.kind == "class" else np.zeros((n, len(tag.labels)), bool),
                np.zeros(n, np.float32),
            )
            for name, tag in tags.items()
        }

    @classmethod
    def of_probe(
        cls,
        probe: TargetProbe,
        X: np.ndarray,
        unlabeled: Sequence[int] | np.ndarray,
        rows: list[tuple[int, TaskInfo]],
        tags: dict[str, ControlTag],
        *,
        tids: np.ndarray | None = None,
    ) -> Proposals:
        """The probes' proposals for the rows ``unlabeled`` of ``X`` (``rows[j]`` is the task of ``X[j]``;
        ``tids``: every row's task id, when the caller has them)."""
        picked = np.asarray(unlabeled, np.int64)
        if tids is None:
            ids = np.fromiter((rows[j][0] for j in picked.tolist()), np.int64, len(picked))
        else:
            ids = tids[picked]
        return cls(probe, X, ids, picked, tags)

    def prepare(self, tids: Iterable[int]) -> None:
        """Work out the proposals of ``tids`` not worked out yet, in blocks (before looking many of them up)."""
        want = np.fromiter(tids, np.int64)
        j = np.searchsorted(self.tids, want)
        inside = j < len(self.tids)
        j = j[inside]
        j = np.unique(j[self.tids[j] == want[inside]])
        self._work_out(j[~self._done[j]])

    def _work_out(self, js: np.ndarray) -> None:
        X = self._X()
        if X is None or not len(js):
            return
        for start in range(0, len(js), self._BLOCK):
            part = js[start : start + self._BLOCK]
            for name, P in self._probe.predict_proba(X[self._rows[part]], targets=list(self.tags)).items():
                tag, chosen, p = self.tags[name]
                if tag.kind == "class":
                    best = np.argmax(P, axis=1)
                    chosen[part], p[part] = best, P[np.arange(len(best)), best]
                else:
                    on = P > 0.5
                    low = np.where(on, P, np.inf).min(axis=1) if P.shape[1] else np.full(len(P), np.inf)
                    chosen[part], p[part] = on, np.where(np.isfinite(low), low, 0.0)
            self._done[part] = True

    @property
    def prelabeled(self) -> int:
        """Unlabeled tasks with at least one proposal. A single-class question proposes a class for every one;
        multi-class questions only: the tasks worked out so far with a class above one half (counting the rest
        would predict the whole pool, under the project's lock, at every metrics scrape)."""
        if any(tag.kind == "class" for tag, _, _ in self.tags.values()):
            return len(self.tids)
        any_chosen = np.zeros(len(self.tids), bool)
        for _, chosen, _ in self.tags.values():
            any_chosen |= chosen.any(axis=1)
        return int((any_chosen & self._done).sum())

    def of(self, tid: int) -> tuple[dict[str, list[str]], dict[str, float]] | None:
        """The task's proposal per tag and each one's probability, or None (no row, or nothing above one half)."""
        j = int(np.searchsorted(self.tids, tid))
        if j >= len(self.tids) or self.tids[j] != tid:
            return None
        if not self._done[j]:
            self._work_out(np.array([j]))
            if not self._done[j]:
                return None
        values: dict[str, list[str]] = {}
        ps: dict[str, float] = {}
        for name, (tag, chosen, p) in self.tags.items():
            picked = [int(chosen[j])] if chosen.ndim == 1 else np.flatnonzero(chosen[j]).tolist()
            if picked:
                values[name], ps[name] = [tag.labels[k] for k in picked], round(float(p[j]), 4)
        return (values, ps) if values else None


def prepare_proposals(state: ProjectState, tids: Iterable[int]) -> None:
    """Work out the proposals of many tasks at once before they are looked up one by one (caller holds the lock)."""
    if state.proposals is not None:
        state.proposals.prepare(tids)


def proposal(state: ProjectState, tid: int) -> tuple[dict[str, list[str]], dict[str, float]] | None:
    """The probes' current proposal for an unlabeled task (per tag: values, probability), or None (caller holds
    the lock)."""
    info = state.tasks.get(tid)
    if info is None or info.labeled or state.proposals is None:
        return None
    return state.proposals.of(tid)


def result_for(state: ProjectState, tid: int) -> list[dict[str, Any]]:
    """The Label Studio ``result`` of a task's prediction: one item per image-level tag the probes propose
    (none for a labeled task, or a proposal from before a config change). Caller holds the lock."""
    found = proposal(state, tid)
    if found is None:
        return []
    values, ps = found
    out = []
    fitted = state.proposals.tags if state.proposals is not None else {}
    for tag in controls(state):
        chosen = values.get(tag.name)
        if not tag.image_level or not chosen or fitted.get(tag.name, (None,))[0] != tag:
            continue  # a proposal of the tag as it was before a config change: never shown
        out.append(tag.result(chosen, ps.get(tag.name, 0.0)))
    return out
