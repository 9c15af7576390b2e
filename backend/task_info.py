"""What the backend knows of one task (a record of the project's state)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskInfo"]


@dataclass
class TaskInfo:
    """What the backend knows of one task."""

    uri: str | None = None  # the image reference in task.data
    key: str | None = None  # sha256 of the image bytes once embedded
    labeled: bool = False
    label: str | None = None  # first class label of its latest annotation, for label-aware policies
    error: str | None = None  # why the task has no embedding (shown per task)
    labels: list[str] | None = None  # every choice of its latest annotation (multi-choice configs)
    predicted: list[str] | None = None  # the probe's choice(s) (pre-annotation) while unlabeled
    predicted_p: float | None = None  # its probability (the lowest of several choices)
    flag: str | None = None  # why the screening judged its image unusable (served after the clean pool)
    failures: int = 0  # downloads in a row that failed for passing reasons
    retry_at: float | None = None  # unix time before which such a failure is not fetched again

    def take_labels(self, labels: list[str]) -> None:
        """Record an annotation's labels (an annotation without any keeps the earlier ones)."""
        if labels:
            self.labels, self.label = list(labels), labels[0]
