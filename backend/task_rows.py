"""The per-task part of a project's state in SQLite, written row by row: only what changed since the last save.

A project of 200,000 tasks holds 200,000 task records and as many published predictions; written whole as
JSON that took 6.5 s per save (66 MB), and the worker saves after every label and every embedding chunk.
Here each save writes the records changed since the last one (each change stamps its record with a revision:
:mod:`backend.task_info`) in one transaction (``tasks.db`` beside ``state.json``, which keeps the small fields).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backend.publish import Published
from backend.task_info import TaskInfo, revision

__all__ = ["FILE", "RowPlan", "RowSnapshot", "load_rows", "write_rows"]

FILE = "tasks.db"
_TABLES = (
    "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, row TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predictions (task INTEGER PRIMARY KEY, row TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, task INTEGER NOT NULL)",
)
# The probes' proposals are not task records (backend.prelabel.Proposals): a refit moves nearly every task's
# probability, and a row per task rewritten after each label would cost 200,000 rows at 200,000 tasks.


class RowSnapshot:
    """What the rows on disk hold for one project: the revision of the last save (every record changed since
    carries a higher one: :mod:`backend.task_info`), the task and prediction ids written, the annotation index."""

    def __init__(self) -> None:
        self.mark = 0
        self.tasks: set[int] = set()
        self.predictions: set[int] = set()
        self.annotations: dict[int, int] = {}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed save survives a crash, as the fsynced state.json did
    return conn


class RowPlan:
    """The rows one save writes and deletes (made under the state's lock, written without it): the records
    changed since the snapshot's revision, the ones added and the ones gone. At 200,000 tasks a label changes a
    few records; comparing every record field by field took 0.15 s per save."""

    def __init__(
        self,
        snapshot: RowSnapshot,
        tasks: dict[int, TaskInfo],
        predictions: dict[int, Published],
        annotations: dict[int, int],
    ) -> None:
        self.mark = revision()  # a change from here on is written by the next save
        old = snapshot
        self.task_ids, self.pred_ids = set(tasks), set(predictions)
        self.annotations = dict(annotations)
        self.put_tasks = [
            (t, json.dumps(asdict(i))) for t, i in tasks.items() if i._rev > old.mark or t not in old.tasks
        ]
        self.put_preds = [
            (t, json.dumps(p.to_json()))
            for t, p in predictions.items()
            if p._rev > old.mark or t not in old.predictions
        ]
        self.put_anns = [(a, t) for a, t in annotations.items() if old.annotations.get(a) != t]
        self.gone_tasks = [(t,) for t in old.tasks - self.task_ids]
        self.gone_preds = [(t,) for t in old.predictions - self.pred_ids]
        self.gone_anns = [(a,) for a in old.annotations.keys() - self.annotations.keys()]

    def changed(self) -> int:
        """Rows written or deleted."""
        parts = (self.put_tasks, self.put_preds, self.put_anns, self.gone_tasks, self.gone_preds, self.gone_anns)
        return sum(len(p) for p in parts)


def write_rows(path: Path, snapshot: RowSnapshot, plan: RowPlan) -> int:
    """Write ``plan`` in one transaction and move ``snapshot`` to it; returns how many rows changed.

    Saves of one project must not overlap (the caller serialises them): a plan is a difference to the snapshot.
    """
    changed = plan.changed()
    if changed or not path.exists():
        conn = _connect(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql in _TABLES:
                conn.execute(sql)
            conn.executemany("INSERT OR REPLACE INTO tasks (id, row) VALUES (?, ?)", plan.put_tasks)
            conn.executemany("INSERT OR REPLACE INTO predictions (task, row) VALUES (?, ?)", plan.put_preds)
            conn.executemany("INSERT OR REPLACE INTO annotations (id, task) VALUES (?, ?)", plan.put_anns)
            conn.executemany("DELETE FROM tasks WHERE id = ?", plan.gone_tasks)
            conn.executemany("DELETE FROM predictions WHERE task = ?", plan.gone_preds)
            conn.executemany("DELETE FROM annotations WHERE id = ?", plan.gone_anns)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
    snapshot.tasks, snapshot.predictions, snapshot.annotations = plan.task_ids, plan.pred_ids, plan.annotations
    snapshot.mark = plan.mark
    return changed


def load_rows(path: Path) -> tuple[dict[int, TaskInfo], dict[int, Published], dict[int, int], RowSnapshot]:
    """The rows of ``path`` and their snapshot; ValueError (naming the file) when it cannot be read."""
    snapshot = RowSnapshot()
    if not path.exists():
        return {}, {}, {}, snapshot
    try:
        conn = _connect(path)
        try:
            rows: list[Any] = [conn.execute(f"SELECT * FROM {t}").fetchall() for t in _names()]
        finally:
            conn.close()
        tasks = {int(t): TaskInfo.from_json(json.loads(r)) for t, r in rows[0]}
        predictions = {int(t): Published.from_json(json.loads(r)) for t, r in rows[1]}
        annotations = {int(a): int(t) for a, t in rows[2]}
    except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path.name} is unreadable ({type(exc).__name__}: {str(exc)[:120]})") from exc
    snapshot.mark = revision()  # every record was just read: none is changed
    snapshot.tasks, snapshot.predictions, snapshot.annotations = set(tasks), set(predictions), dict(annotations)
    return tasks, predictions, annotations, snapshot


def _names() -> tuple[str, str, str]:
    return ("tasks", "predictions", "annotations")
