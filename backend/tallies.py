"""The per-task tallies ``/status`` shows (counts, per-task errors, flags), kept for a while on large projects.

Each tally is a pass over every task under the project's lock: at 200,000 tasks about a quarter of a second, and
a dashboard (or a benchmark) polling ``/status`` four times a second then holds the worker's lock most of the time
(measured: 43 of 150 s during a team's labeling). A tally that took at least ``CHEAP_S`` is reused until
``REUSE`` times its own duration has passed; small projects are always counted afresh.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from backend.screener import flag_report
from backend.state import ProjectState

__all__ = ["CHEAP_S", "REUSE", "Tallies"]

#: Tallies faster than this are never reused.
CHEAP_S = 0.02
#: A slower tally is reused for this many times its own duration.
REUSE = 10.0


class Tallies:
    """The last tally of each project, with when it was made and what it cost."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[float, float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, state: ProjectState) -> dict[str, Any]:
        """``counts``, ``errors`` (task id → error) and ``flagged`` (:func:`backend.screener.flag_report`)."""
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(state.pid)
        if kept is not None and kept[1] >= CHEAP_S and now - kept[0] < REUSE * kept[1]:
            return kept[2]
        t0 = time.perf_counter()
        counts, errors = state.counts(), state.errors()
        with state.lock:
            flagged = flag_report(state.tasks)
        value = {"counts": counts, "errors": errors, "flagged": flagged}
        with self._lock:
            self._kept[state.pid] = (now, time.perf_counter() - t0, value)
        return value
