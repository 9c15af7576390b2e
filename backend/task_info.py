"""What the backend knows of one task (a record of the project's state)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["TaskInfo"]


@dataclass
class TaskInfo:
    """What the backend knows of one task."""

    uri: str | None = None  # the image reference in task.data
    key: str | None = None  # sha256 of the image bytes once embedded
    labeled: bool = False
    error: str | None = None  # why the task has no embedding (shown per task)
    answers: dict[str, list[str]] | None = None  # its latest annotation's labels per control tag (from_name)
    flag: str | None = None  # why the screening judged its image unusable (served after the clean pool)
    failures: int = 0  # downloads in a row that failed for passing reasons
    retry_at: float | None = None  # unix time before which such a failure is not fetched again

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
