"""The background queue: coalesces events per project, runs them off the request path, retries failures.

Label Studio gives a webhook one second and retries nothing, and without Redis it
sends webhooks inside the annotator's own request: the HTTP handler only records
*what* must be done (``submit``) and answers. A bounded pool of worker threads
(``workers``) runs each project's pending kinds of work in a fixed order, never one
project in two threads at once, so a slow or huge project delays only itself while
fewer projects than workers are busy; a burst of events for a project collapses into
one run. Events are debounced, but never for longer than
``max_wait_s`` after the first one (a continuous stream still gets re-ranked).
A run that fails is retried with exponential backoff (``retry_base_s`` doubling up
to ``retry_max_s``), never dropped; the durable copy of the pending work is the
project's ``pending.json`` (see :mod:`backend.runtime`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: The order in which one run handles a project's pending kinds of work.
KINDS = ("sync", "pretrain", "embed", "rank", "full", "fill")


class JobFailed(RuntimeError):
    """A run stopped at a kind of work; ``remaining`` are the kinds still to do (retried)."""

    def __init__(self, remaining: list[str], cause: BaseException):
        super().__init__(f"{'+'.join(remaining)} failed: {cause}")
        self.remaining = remaining
        self.cause = cause


class JobQueue:
    """A pool of worker threads; per-project sets of pending kinds, debounced, retried with backoff."""

    def __init__(
        self,
        runner: Callable[[int, list[str]], None],
        *,
        workers: int = 4,
        debounce_s: float = 0.2,
        max_wait_s: float = 2.0,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
    ):
        self._runner = runner
        self._debounce = debounce_s
        self._max_wait = max(max_wait_s, debounce_s)
        self._retry_base = retry_base_s
        self._retry_max = max(retry_max_s, retry_base_s)
        self._pending: dict[int, set[str]] = {}
        self._ready_at: dict[int, float] = {}
        self._first_at: dict[int, float] = {}
        self._attempts: dict[int, int] = {}
        self.last_error: dict[int, str] = {}
        self.retries = 0  # runs re-queued after a failure, since start
        self.failures = 0
        self._running: set[int] = set()
        self._cond = threading.Condition()
        self._stop = False
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._threads = [
            threading.Thread(target=self._loop, name=f"examine-jobs-{i}", daemon=True) for i in range(workers)
        ]

    def start(self) -> None:
        """Start the worker threads."""
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current runs (pending work stays in pending.json)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, end - time.monotonic()))

    def submit(self, pid: int, kinds: Iterable[str], *, delay: float | None = None) -> None:
        """Queue kinds of work for a project, ready after the debounce (or ``delay``), capped by the max wait."""
        kinds = set(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown job kinds {sorted(unknown)}")
        now = time.monotonic()
        with self._cond:
            self._pending.setdefault(pid, set()).update(kinds)
            first = self._first_at.setdefault(pid, now)
            ready = now + (self._debounce if delay is None else delay)
            if delay is None:
                ready = min(ready, first + self._max_wait)
            self._ready_at[pid] = ready
            self._cond.notify_all()

    def pending(self, pid: int) -> set[str]:
        """Kinds waiting for the project, plus ``running`` while a run is in progress."""
        with self._cond:
            return set(self._pending.get(pid, ())) | ({"running"} if pid in self._running else set())

    def failed_runs(self, pid: int) -> int:
        """Runs of the project that failed in a row (0 once one succeeds)."""
        with self._cond:
            return self._attempts.get(pid, 0)

    def retrying(self, pid: int) -> bool:
        """True while the project's last run failed and a retry is scheduled."""
        with self._cond:
            return self._attempts.get(pid, 0) > 0

    def idle(self, pid: int | None = None) -> bool:
        """Nothing pending or running (for one project, or at all)."""
        with self._cond:
            if pid is None:
                return not self._pending and not self._running
            return pid not in self._pending and pid not in self._running

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
                free = [p for p in self._pending if p not in self._running]  # a project runs in one thread
                ready = [p for p in free if self._ready_at.get(p, 0.0) <= now]
                if ready:
                    pid = min(ready, key=lambda p: self._ready_at.get(p, 0.0))
                    taken = self._pending.pop(pid)
                    self._first_at.pop(pid, None)
                    self._running.add(pid)
                    return pid, [k for k in KINDS if k in taken]
                wait = min((self._ready_at[p] - now for p in free), default=None)
                self._cond.wait(timeout=None if wait is None else max(wait, 0.0))
            return None

    def _loop(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            pid, kinds = job
            try:
                self._runner(pid, kinds)
                with self._cond:
                    self._attempts.pop(pid, None)
                    self.last_error.pop(pid, None)
            except Exception as exc:  # the worker must survive any one job; the work is retried
                remaining = exc.remaining if isinstance(exc, JobFailed) else kinds
                cause = exc.cause if isinstance(exc, JobFailed) else exc
                with self._cond:
                    attempt = self._attempts.get(pid, 0) + 1
                    self._attempts[pid] = attempt
                    self.retries += 1
                    self.failures += 1
                    self.last_error[pid] = f"{'+'.join(remaining)}: {cause}"
                delay = min(self._retry_max, self._retry_base * 2 ** (attempt - 1))
                log.warning(
                    "project %s: %s failed (%s); retry %d in %.1f s",
                    pid,
                    "+".join(remaining),
                    cause,
                    attempt,
                    delay,
                    exc_info=not isinstance(cause, (OSError, RuntimeError)),
                )
                self.submit(pid, remaining, delay=delay)
            finally:
                with self._cond:
                    self._running.discard(pid)
                    self._cond.notify_all()
