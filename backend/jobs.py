"""The background queue: coalesces events per project and runs them off the request path.

Label Studio gives a webhook one second and retries nothing, and without Redis it
sends webhooks inside the annotator's own request: the HTTP handler only records
*what* must be done (``submit``) and answers. One worker thread then runs each
project's pending kinds of work in a fixed order; a burst of events for a project
collapses into one run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

log = logging.getLogger(__name__)

# The order in which one run handles a project's pending kinds of work.
KINDS = ("sync", "pretrain", "embed", "train", "rank", "full")


class JobQueue:
    """One worker thread; per-project sets of pending kinds, debounced."""

    def __init__(self, runner: Callable[[int, list[str]], None], *, debounce_s: float = 0.2):
        self._runner = runner
        self._debounce = debounce_s
        self._pending: dict[int, set[str]] = {}
        self._ready_at: dict[int, float] = {}
        self._running: int | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="examine-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def submit(self, pid: int, kinds: Iterable[str], *, delay: float | None = None) -> None:
        kinds = set(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown job kinds {sorted(unknown)}")
        with self._cond:
            self._pending.setdefault(pid, set()).update(kinds)
            self._ready_at[pid] = time.monotonic() + (self._debounce if delay is None else delay)
            self._cond.notify_all()

    def pending(self, pid: int) -> set[str]:
        with self._cond:
            return set(self._pending.get(pid, ())) | ({"running"} if self._running == pid else set())

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and self._running is None

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (tests, shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.idle():
                return True
            time.sleep(0.05)
        return self.idle()

    def _take(self) -> tuple[int, list[str]] | None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                ready = [p for p in self._pending if self._ready_at.get(p, 0.0) <= now]
                if ready:
                    pid = min(ready, key=lambda p: self._ready_at.get(p, 0.0))
                    taken = self._pending.pop(pid)
                    kinds = [k for k in KINDS if k in taken]
                    self._running = pid
                    return pid, kinds
                wait = min((self._ready_at[p] - now for p in self._pending), default=None)
                self._cond.wait(timeout=wait)
            return None

    def _loop(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            pid, kinds = job
            try:
                self._runner(pid, kinds)
            except Exception:  # the worker must survive any one job
                log.exception("project %s: background job %s failed", pid, kinds)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
