"""Several scripted annotators labeling one Label Studio project at once, through ``/next`` as the UI does.

Shared by ``tests/test_team_e2e.py`` and ``benchmarks/bench_team.py``. Each annotator is its own Label Studio user
(``LabelStudioServer.add_user``) with its own token: it asks ``GET /api/projects/<id>/next/``, looks at the task
until its next Submit is due (one every ``interval`` seconds, the annotators' schedules staggered evenly), submits
the right answer and at once asks ``/next`` again. Meanwhile a :class:`StatusRecorder` polls the backend's
``/projects/<id>/status`` and keeps every ranking it publishes (``publishes``, ``queue_labels``, ``queue_head``,
``last_publish``).

What :func:`evaluate` calls a serve that **reflects every label submitted before it**: the served task is among the
first (annotators + 1) unlabeled tasks of the ranking that knew every label whose Submit had returned before the
serve was requested (the first recorded ranking whose ``queue_labels`` reaches that count). A serve requested before
that ranking had landed (its ``last_publish`` is after the request) is a **race**: Label Studio could only use the
ranking before, so it is also checked against the ranking in force when it was requested. When that first ranking
also knew labels submitted after the request (the backend coalesced them) and the served task is one of them, the
serve is **coalesced**: that ranking cannot place it, and only the ranking in force is checked. A publish lands in
several prediction updates, so a racing serve may also come from the ranking being written while ``/next`` ran (the
first one landing after the request): reported as ``in_flight``. A **duplicate** is a task
served to an annotator while another annotator holds it (served to them, not submitted yet).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.labelstudio import LabelStudio
from scripts.services import BackendServer

__all__ = ["Label", "Serve", "Snapshot", "StatusRecorder", "TeamReport", "evaluate", "run_team"]


@dataclass
class Snapshot:
    """One ranking the backend published, as its status showed it."""

    seen: float  # unix time the recorder first saw it
    publishes: int
    queue_labels: int
    head: list[int]
    last_publish: float | None

    @property
    def landed(self) -> float:
        """When it was in Label Studio: the backend's own ``last_publish`` (same machine), else when seen."""
        return self.last_publish if self.last_publish is not None else self.seen


@dataclass
class Serve:
    annotator: int
    task: int | None
    requested: float
    answered: float
    labels_before: int  # labeled tasks (pre-labeled included) whose Submit returned before the request
    labeled_before: frozenset[int]  # those tasks (pre-labeled not included)
    in_force: Snapshot | None  # the newest ranking recorded before the request
    score: float | None = None  # the served task's prediction of the project's version, as Label Studio sent it
    cluster: int | None = None
    held_by: int | None = None  # another annotator holding the task (served, not submitted) at this serve


@dataclass
class Label:
    annotator: int
    task: int
    submitted: float  # unix time the Submit (POST annotation) returned
    number: int = 0  # labeled tasks (pre-labeled included) once it counts, in the order Submits returned


class StatusRecorder:
    """Polls ``/projects/<pid>/status`` every ``every`` seconds in a thread; keeps each new ranking it sees.

    ``labels_before``: tasks labeled before the team started; a snapshot's ``queue_labels`` counts the team's only.
    """

    def __init__(self, backend: BackendServer, pid: int, every: float = 0.1, labels_before: int = 0) -> None:
        self.backend, self.pid, self.every, self.labels_before = backend, pid, every, labels_before
        self.snapshots: list[Snapshot] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-recorder", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> StatusRecorder:
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def poll(self) -> None:
        try:
            st = self.backend.status(self.pid)
        except Exception:  # a slow answer under load: the next poll sees the same ranking
            self.errors += 1
            return
        snap = Snapshot(
            time.time(),
            int(st.get("publishes") or 0),
            max(0, int(st.get("queue_labels") or 0) - self.labels_before),
            [int(t) for t in st.get("queue_head") or []],
            st.get("last_publish"),
        )
        with self._lock:
            last = self.snapshots[-1] if self.snapshots else None
            if last is None or (snap.publishes, snap.queue_labels, snap.head) != (
                last.publishes,
                last.queue_labels,
                last.head,
            ):
                self.snapshots.append(snap)

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self.snapshots[-1] if self.snapshots else None


def _current_prediction(task: dict, version: str | None) -> dict | None:
    for p in task.get("predictions") or []:
        if p.get("model_version") == version:
            return p
    return None


def run_team(
    url: str,
    tokens: Sequence[str],
    pid: int,
    answer: Callable[[int], list[dict]],
    recorder: StatusRecorder,
    *,
    labels: int,
    interval: float,
    version: Callable[[], str | None],
    prelabeled: int = 0,
    serialize_next: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Serve], list[Label]]:
    """Every token's annotator labels ``labels`` tasks, one Submit every ``interval`` s; the serves and the labels.

    ``answer(task_id)`` is the annotation result to submit; ``version()`` the project's model version (to read the
    served task's current prediction); ``prelabeled`` the labels the project held before. ``serialize_next``: one
    ``/next`` at a time across the team (Label Studio on SQLite picks and locks a task outside any transaction, so two
    ``/next`` at the same instant can get the same task; on PostgreSQL it is one transaction with ``SKIP LOCKED``).
    """
    lock, next_lock = threading.Lock(), threading.Lock()
    serves: list[Serve] = []
    done: list[Label] = []
    holders: dict[int, int] = {}  # task → the annotator holding it (served, not submitted)
    errors: list[BaseException] = []
    start = time.time() + 0.5
    n = len(tokens)

    def annotator(i: int) -> None:
        client = LabelStudio(url, tokens[i], timeout=300)
        began = start + i * interval / n
        time.sleep(max(0.0, began - time.time()))
        for k in range(labels):
            with lock:
                requested = time.time()
                labeled = frozenset(lb.task for lb in done)
            in_force = recorder.latest()
            with next_lock if serialize_next else contextlib.nullcontext():
                task = client.next_task(pid)
            answered = time.time()
            tid = None if task is None else int(task["id"])
            pred = None if task is None else _current_prediction(task, version())
            with lock:
                held = holders.get(tid) if tid is not None else None
                if tid is not None:
                    holders[tid] = i
                serves.append(
                    Serve(
                        i,
                        tid,
                        requested,
                        answered,
                        prelabeled + len(labeled),
                        labeled,
                        in_force,
                        None if pred is None else float(pred["score"]),
                        None if pred is None else pred.get("cluster"),
                        held if held != i else None,
                    )
                )
            if log:
                log(f"annotator {i} serve {k + 1}: task {tid} after {answered - requested:.2f} s")
            if tid is None:
                return
            time.sleep(max(0.0, began + (k + 1) * interval - time.time()))
            client.create_annotation(tid, answer(tid))
            with lock:
                done.append(Label(i, tid, time.time(), prelabeled + len({lb.task for lb in done} | {tid})))
                if holders.get(tid) == i:
                    del holders[tid]

    def guarded(i: int) -> None:
        try:
            annotator(i)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"annotator-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return serves, done


def _first_knowing(snapshots: Sequence[Snapshot], labels: int) -> Snapshot | None:
    for s in snapshots:
        if s.queue_labels >= labels:
            return s
    return None


@dataclass
class TeamReport:
    annotators: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per serve
    landed: list[float] = field(default_factory=list)  # per label: re-rank in Label Studio after its Submit, s
    unlanded: int = 0  # labels no recorded ranking knew of

    @property
    def window(self) -> int:
        return self.annotators + 1

    def count(self, key: str) -> int:
        return sum(bool(r[key]) for r in self.rows)

    def summary(self) -> dict[str, Any]:
        served = [r for r in self.rows if r["task"] is not None]
        race = [r for r in served if r["race"]]
        nxt = [r["next_s"] for r in served]
        return {
            "serves": len(served),
            "reflects": sum(r["reflects"] for r in served),
            "head": sum(r["position"] == 0 for r in served),
            "outside": [r for r in served if not r["reflects"]],
            "race": len(race),
            "race_reflects": sum(r["reflects"] for r in race),
            "race_in_force_ok": sum(r["in_force_ok"] for r in race),
            "not_race_missed": sum(not r["reflects"] for r in served if not r["race"]),
            "coalesced": sum(r["coalesced"] for r in served),
            "coalesced_in_force_ok": sum(r["in_force_ok"] for r in served if r["coalesced"]),
            "reflects_or_in_force": sum(
                r["reflects"] or ((r["race"] or r["coalesced"]) and r["in_force_ok"]) for r in served
            ),
            "reflects_or_either": sum(
                r["reflects"] or ((r["race"] or r["coalesced"]) and (r["in_force_ok"] or r["in_flight_ok"]))
                for r in served
            ),
            "duplicates": [r for r in served if r["held_by"] is not None],
            "landed_median": statistics.median(self.landed) if self.landed else float("nan"),
            "landed_max": max(self.landed) if self.landed else float("nan"),
            "unlanded": self.unlanded,
            "next_median": statistics.median(nxt) if nxt else float("nan"),
            "next_max": max(nxt) if nxt else float("nan"),
            "positions": sorted(r["position"] for r in served if r["position"] is not None),
        }


def evaluate(
    serves: Sequence[Serve], labels: Sequence[Label], snapshots: Sequence[Snapshot], annotators: int
) -> TeamReport:
    """Each serve against the ranking that knew every label submitted before it; each label's landing delay."""
    report = TeamReport(annotators)
    snaps = sorted(snapshots, key=lambda s: s.seen)
    for s in sorted(serves, key=lambda s: s.requested):
        fresh = _first_knowing(snaps, s.labels_before)
        head = [t for t in (fresh.head if fresh else []) if t not in s.labeled_before]
        pos = head.index(s.task) if s.task in head else None
        race = fresh is None or fresh.landed > s.requested
        # a re-rank that coalesced later labels may already know the served task as labeled: it cannot place it
        later = {lb.task for lb in labels if fresh and lb.number <= fresh.queue_labels} - s.labeled_before
        old = [t for t in (s.in_force.head if s.in_force else []) if t not in s.labeled_before]
        old_pos = old.index(s.task) if s.task in old else None
        # the ranking being written into Label Studio while /next ran (a publish lands in several updates)
        flight = next((x for x in snaps if x.landed > s.requested), None)
        new = [t for t in (flight.head if flight else []) if t not in s.labeled_before]
        new_pos = new.index(s.task) if s.task in new else None
        report.rows.append(
            {
                "annotator": s.annotator,
                "task": s.task,
                "requested": s.requested,
                "next_s": s.answered - s.requested,
                "labels_before": s.labels_before,
                "position": pos,
                "reflects": pos is not None and pos < report.window,
                "race": race,
                "coalesced": s.task in later,
                "in_force_position": old_pos,
                "in_force_ok": old_pos is not None and old_pos < report.window,
                "in_flight_position": new_pos,
                "in_flight_ok": new_pos is not None and new_pos < report.window,
                "in_force_knew_all": s.in_force is not None and s.in_force.queue_labels >= s.labels_before,
                "score": s.score,
                "cluster": s.cluster,
                "held_by": s.held_by,
            }
        )
    for lb in labels:
        fresh = _first_knowing(snaps, lb.number)
        if fresh is None:
            report.unlanded += 1
        else:
            report.landed.append(fresh.landed - lb.submitted)
    return report
