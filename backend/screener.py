"""Screen one project's images: measure each task's image once, flag the unusable ones with reasons.

The measurements (:mod:`examine.image_checks`) are stored by image hash beside the embeddings, so
a restart or a new encoder measures nothing again. At every full re-rank the pool is screened
(:func:`examine.screening.screen`) with its embeddings; flagged unlabeled tasks are served after
the clean pool and listed in the Data Manager tab ``EXAMINE_FLAGGED_VIEW``; an annotation says an
image is usable, so a labeled task is never flagged.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from backend.context import BackendContext
from backend.fetch import ImageFetcher
from backend.state import TaskInfo
from examine.image_checks import CHECKS, COLOUR_BINS, N_VALUES, image_checks
from examine.images import load_image
from examine.screening import screen

log = logging.getLogger(__name__)

__all__ = ["Screener", "flag_counts", "flag_report"]
_LISTED = 200  # flagged tasks listed with their reasons at /status


def flag_counts(tasks: dict[int, TaskInfo]) -> dict[str, int]:
    """Unlabeled flagged tasks by their strongest reason (the words before the first colon)."""
    return dict(Counter(i.flag.split(":")[0] for i in tasks.values() if i.flag and not i.labeled))


def flag_report(tasks: dict[int, TaskInfo]) -> dict:
    """For /status: counts by reason and the first flagged tasks with their reasons (caller holds the lock)."""
    listed = {str(t): i.flag for t, i in sorted(tasks.items()) if i.flag and not i.labeled}
    return {
        "by_reason": flag_counts(tasks),
        "tasks": dict(list(listed.items())[:_LISTED]),
        "served": "after every clean task; an annotation unflags a task",
    }


class Screener:
    """Measures and screens the images of one project."""

    def __init__(self, backend: BackendContext, pid: int):
        self.backend = backend
        self.pid = pid
        self.state = backend.states.get(pid)
        self.store = backend.workspace.checks_store()

    def measure(self) -> int:
        """Measure every embedded task's image that has no stored checks; returns how many were measured."""
        with self.state.lock:
            todo = {i.key: (t, i.uri) for t, i in sorted(self.state.tasks.items()) if i.key and i.uri}
        missing = self.store.missing(todo)
        if not missing:
            return 0
        fetcher = ImageFetcher(self.backend.settings, self.backend.image_client(self.pid))
        keys, rows = [], []
        for key in missing:
            tid, uri = todo[key]
            try:
                rows.append(image_checks(load_image(fetcher.fetch(tid, uri), item=f"task {tid}")))
                keys.append(key)
            except Exception as exc:  # one bad image never stops the batch; it is simply not screened
                log.warning("project %s: task %s not screened: %s", self.pid, tid, exc)
            if len(keys) >= 256:
                self.store.add(keys, np.stack(rows))
                keys, rows = [], []
        if keys:
            self.store.add(keys, np.stack(rows))
        return len(missing)

    def screen(self, task_ids: list[int], keys: list[str], X: np.ndarray, labeled: np.ndarray) -> list[int]:
        """Screen the ranked rows (task ids, image keys, embeddings, labeled mask); record each task's flag.

        Returns the rows to serve last, most usable first. Rows without checks are not screened.
        """
        self.store.refresh()
        have = np.array([k in self.store for k in keys], bool)
        checks = np.zeros((len(keys), N_VALUES), np.float32)
        if have.any():
            checks[have] = self.store.get([k for k, h in zip(keys, have) if h])
            # neutral stand-ins for the unmeasured: the pool's median checks and no thumbnail
            checks[~have, : len(CHECKS) + COLOUR_BINS] = np.median(checks[have, : len(CHECKS) + COLOUR_BINS], axis=0)
        result = screen(checks, X, labeled=labeled | ~have)
        with self.state.lock:
            for tid, flagged, reason in zip(task_ids, result.flagged, result.reasons):
                info = self.state.tasks.get(tid)
                if info is not None:
                    info.flag = reason if flagged else None
        rows = np.flatnonzero(result.flagged)
        n = int(len(rows))
        if n:
            log.info("project %s: %d of %d images flagged as unusable: %s", self.pid, n, len(keys), result.counts())
        return [int(r) for r in rows[np.argsort(-result.quality[rows], kind="stable")]]
