"""The per-task part of a project's state in SQLite, written row by row: only what changed since the last save.

A project of 200,000 tasks holds 200,000 task records and as many published predictions; written whole as
JSON that took 6.5 s per save (66 MB), and the worker saves after every label and every embedding chunk.
Here each save compares cheap fingerprints with those of the last save and writes the changed rows in one
transaction (``tasks.db`` beside ``state.json``, which keeps the small fields).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, fields
from operator import itemgetter
from pathlib import Path
from typing import Any

from backend.publish import Published
from backend.task_info import TaskInfo

__all__ = ["FILE", "RowPlan", "RowSnapshot", "load_rows", "write_rows"]

FILE = "tasks.db"
_TABLES = (
    "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, row TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predictions (task INTEGER PRIMARY KEY, row TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, task INTEGER NOT NULL)",
)
# The probes' proposals are not task records (backend.prelabel.Proposals): a refit moves nearly every task's
# probability, and a row per task rewritten after each label would cost 200,000 rows at 200,000 tasks.
_TASK_FIELDS = tuple(f.name for f in fields(TaskInfo))
_FIELDS_OF = itemgetter(*_TASK_FIELDS)
_ANSWERS = _TASK_FIELDS.index("answers")  # the one field that is not a plain value


def _frozen(v: Any) -> Any:
    """A copy of a field that a later change in place cannot change (lists and dicts of lists)."""
    if isinstance(v, dict):
        return tuple(sorted((str(k), _frozen(x)) for k, x in v.items()))
    return tuple(v) if isinstance(v, list) else v


def _task_print(info: TaskInfo) -> tuple:
    """What a task record holds (one call per task and save: at 200,000 tasks every microsecond is 0.2 s)."""
    values = _FIELDS_OF(info.__dict__)
    if values[_ANSWERS] is None:
        return values
    return values[:_ANSWERS] + (_frozen(values[_ANSWERS]),) + values[_ANSWERS + 1 :]


def _pred_print(p: Published) -> tuple:
    return (p.id, p.score, p.cluster, None if p.choices is None else _frozen(p.choices))


class RowSnapshot:
    """The fingerprints of the rows as last written (or read) for one project."""

    def __init__(self) -> None:
        self.tasks: dict[int, tuple] = {}
        self.predictions: dict[int, tuple] = {}
        self.annotations: dict[int, int] = {}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed save survives a crash, as the fsynced state.json did
    return conn


class RowPlan:
    """The rows one save writes and deletes, and the prints they leave (made under the state's lock, written
    without it)."""

    def __init__(
        self,
        snapshot: RowSnapshot,
        tasks: dict[int, TaskInfo],
        predictions: dict[int, Published],
        annotations: dict[int, int],
    ) -> None:
        self.task_prints = {t: _task_print(i) for t, i in tasks.items()}
        self.pred_prints = {t: _pred_print(p) for t, p in predictions.items()}
        self.annotations = dict(annotations)
        old = snapshot
        self.put_tasks = [
            (t, json.dumps(asdict(tasks[t]))) for t, fp in self.task_prints.items() if old.tasks.get(t) != fp
        ]
        self.put_preds = [
            (t, json.dumps(predictions[t].to_json()))
            for t, fp in self.pred_prints.items()
            if old.predictions.get(t) != fp
        ]
        self.put_anns = [(a, t) for a, t in annotations.items() if old.annotations.get(a) != t]
        self.gone_tasks = [(t,) for t in old.tasks.keys() - self.task_prints.keys()]
        self.gone_preds = [(t,) for t in old.predictions.keys() - self.pred_prints.keys()]
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
    snapshot.tasks, snapshot.predictions, snapshot.annotations = plan.task_prints, plan.pred_prints, plan.annotations
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
    snapshot.tasks = {t: _task_print(i) for t, i in tasks.items()}
    snapshot.predictions = {t: _pred_print(p) for t, p in predictions.items()}
    snapshot.annotations = dict(annotations)
    return tasks, predictions, annotations, snapshot


def _names() -> tuple[str, str, str]:
    return ("tasks", "predictions", "annotations")
