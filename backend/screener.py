"""Screen one project's images: measure each task's image once, flag the unusable ones with reasons.

The image's bytes go to :func:`examine.image_checks.source_checks`, which decodes them within bounded memory
(a native-pixel centre crop and a view of at most 1,024 pixels a side, never a full-size RGB copy).

The measurements (:mod:`examine.image_checks`) are stored by image hash beside the embeddings, so
a restart or a new encoder measures nothing again. At every full re-rank the pool is screened
(:func:`examine.screening.screen`) with its embeddings; flagged unlabeled tasks are served after
the clean pool and listed in the Data Manager tab ``EXAMINE_FLAGGED_VIEW``; an annotation says an
image is usable, so a labeled task is never flagged.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from functools import partial
from typing import cast

import numpy as np

from backend.context import BackendContext
from backend.fetch import ImageFetcher
from backend.state import TaskInfo
from examine.screening import screen

log = logging.getLogger(__name__)

__all__ = ["Screener", "flag_counts", "flag_report"]
_LISTED = 200  # flagged tasks listed with their reasons at /status


def flag_counts(tasks: dict[int, TaskInfo]) -> dict[str, int]:
    """Unlabeled flagged tasks by their strongest reason (the words before the first colon)."""
    return dict(Counter(i.flag.split(":")[0] for i in tasks.values() if i.flag and not i.labeled))


def flag_report(tasks: dict[int, TaskInfo]) -> dict:
    """For /status: counts by reason and the first flagged tasks with their reasons (caller holds the lock)."""
    flagged = [(t, i.flag) for t, i in tasks.items() if i.flag and not i.labeled]  # 38,000 of 200,000 seen
    return {
        "by_reason": dict(Counter(flag.split(":")[0] for _, flag in flagged)),
        "tasks": {str(t): flag for t, flag in heapq.nsmallest(_LISTED, flagged)},
        "served": "after every clean task; an annotation unflags a task",
    }


class Screener:
    """Measures and screens the images of one project."""

    def __init__(self, backend: BackendContext, pid: int):
        self.backend = backend
        self.pid = pid
        self.state = backend.states.get(pid)

    def measure(self) -> int:
        """Measure every embedded task's image that has no stored checks; returns how many were measured."""
        with self.state.lock:
            todo = {i.key: (t, i.uri) for t, i in sorted(self.state.tasks.items()) if i.key and i.uri}
        missing = self.backend.workspace.checks_store().missing(todo)
        if not missing:
            return 0
        fetcher = ImageFetcher(self.backend.settings, self.backend.image_client(self.pid))

        def load(tid: int, uri: str) -> bytes:  # decoded by the checks within bounded memory, whatever its size
            return fetcher.fetch(tid, uri)

        def skipped(key: str, exc: Exception) -> None:  # the image is simply not screened
            log.warning("project %s: task %s not screened: %s", self.pid, todo[key][0], exc)

        return self.backend.workspace.measure(((k, partial(load, *todo[k])) for k in missing), on_error=skipped)

    def deferred(
        self, rows: list[tuple[int, TaskInfo]], X: np.ndarray, labeled: np.ndarray, fingerprint: str
    ) -> list[int]:
        """The rows (task id, info) of ``X`` to serve last: the unlabeled flagged ones, in task order.

        The pool is screened again only when its images changed (``fingerprint``: the rows' keys,
        :attr:`backend.pool_rows.PoolRows.fingerprint`, against ``state.screened``); an annotation unflags a
        task at once.
        """
        if self.state.screened != fingerprint:
            self.screen([t for t, _ in rows], [cast(str, i.key) for _, i in rows], X, labeled)
            self.state.screened = fingerprint
        with self.state.lock:
            return [j for j, (_, i) in enumerate(rows) if i.flag and not i.labeled]

    def screen(self, task_ids: list[int], keys: list[str], X: np.ndarray, labeled: np.ndarray) -> None:
        """Screen the ranked rows (task ids, image keys, embeddings, labeled mask) and record each task's flag.

        Rows without checks are not screened.
        """
        checks, measured = self.backend.workspace.checks(keys)
        result = screen(checks, X, labeled=labeled | ~measured, names=[f"task {t}" for t in task_ids])
        with self.state.lock:
            for tid, flagged, reason in zip(task_ids, result.flagged, result.reasons):
                info = self.state.tasks.get(tid)
                if info is not None:
                    info.flag = reason if flagged else None
        if result.flagged.any():
            log.info(
                "project %s: %d of %d images flagged as unusable: %s",
                self.pid,
                int(result.flagged.sum()),
                len(keys),
                result.counts(),
            )
