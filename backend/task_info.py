"""What the backend knows of one task (a record of the project's state), and the table of a project's tasks.

Every change of a record stamps it with a new revision (:func:`revision`), so a save writes the records changed
since the last one without comparing 200,000 of them field by field; a change of an image key, or a task added to
or removed from a :class:`TaskTable`, moves the counters the re-rank's cached rows depend on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["TaskInfo", "TaskTable", "key_revision", "revision"]

_REVISIONS = itertools.count(1)  # next() is atomic under the GIL: records change from several threads
_LAST_KEY_CHANGE = [0]


def revision() -> int:
    """A new revision: every record changed after this call carries a higher one."""
    return next(_REVISIONS)


def key_revision() -> int:
    """The revision of the last change of any task's image key (in any project)."""
    return _LAST_KEY_CHANGE[0]


class Revised:
    """A record whose every attribute change stamps ``_rev`` with a new :func:`revision`."""

    _rev: int

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__  # records are plain attribute bags (no slots, no properties): the fast path
        d[name] = value
        d["_rev"] = next(_REVISIONS)


@dataclass
class TaskInfo(Revised):
    """What the backend knows of one task."""

    uri: str | None = None  # the image reference in task.data
    key: str | None = None  # sha256 of the image bytes once embedded
    labeled: bool = False
    error: str | None = None  # why the task has no embedding (shown per task)
    answers: dict[str, list[str]] | None = None  # its latest annotation's labels per control tag (from_name)
    flag: str | None = None  # why the screening judged its image unusable (served after the clean pool)
    failures: int = 0  # downloads in a row that failed for passing reasons
    retry_at: float | None = None  # unix time before which such a failure is not fetched again

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        moved = name == "key" and d.get("key") != value
        d[name] = value  # the value first: a save that reads the new stamp also reads the new value
        d["_rev"] = next(_REVISIONS)
        if moved:
            _LAST_KEY_CHANGE[0] = d["_rev"]

    def take_answers(self, answers: dict[str, list[str]] | None) -> None:
        """Record what an annotation says (:func:`backend.label_config.annotation_answers`); a skipped one
        (None) keeps the earlier answers."""
        if answers is not None:
            self.answers = {k: list(v) for k, v in answers.items()}

    @classmethod
    def from_json(cls, raw: dict) -> TaskInfo:
        """A record as saved; fields it no longer holds are dropped: a single label from before answers per tag
        (the next reconciliation reads the task's annotations again, one task at a time) and proposals (kept by the state as arrays)."""
        raw = dict(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class TaskTable(dict[int, TaskInfo]):
    """A project's tasks by id; ``revision`` moves whenever a task is added or removed (not when one changes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.revision = revision()

    def _moved(self) -> None:
        self.revision = next(_REVISIONS)

    def __setitem__(self, key: int, value: TaskInfo) -> None:
        super().__setitem__(key, value)
        self._moved()

    def __delitem__(self, key: int) -> None:
        super().__delitem__(key)
        self._moved()

    def setdefault(self, key: int, default: TaskInfo = None) -> TaskInfo:  # type: ignore[assignment]
        if key not in self:
            self._moved()
        return super().setdefault(key, default)

    def pop(self, key: int, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            self._moved()
        return super().pop(key, *default)

    def popitem(self) -> tuple[int, TaskInfo]:
        self._moved()
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._moved()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._moved()

    def __ior__(self, other: Any) -> TaskTable:  # type: ignore[override,misc]
        self.update(other)
        return self
