"""Housekeeping that must never compete with annotators: due full publishes, periodic reconcile, cleanup.

Label Studio on SQLite holds its write lock while it deletes a version (~70 s for
20,000 predictions) or imports a batch, and ``/next`` waits for it. Re-ranks update
predictions in place; a new version for the whole pool is only due after a new encoder
or lost predictions, and when a publish job could not do it the janitor queues it once
the project has been quiet for ``EXAMINE_FULL_PUBLISH_IDLE_S``. It queues a
reconciliation every ``EXAMINE_RECONCILE_S`` (missed events are caught up), a check of the project's
prediction versions every ``EXAMINE_VERSIONS_CHECK_S`` (predictions deleted by hand), and deletes
superseded or aborted versions one at a time after ``EXAMINE_CLEANUP_IDLE_S`` without
events. It never deletes the project's current version nor the last complete one.
"""

from __future__ import annotations

import logging
import threading
import time

from backend.context import BackendContext
from backend.labelstudio import LabelStudioError
from backend.payload import PENDING_VERSION

log = logging.getLogger(__name__)


#: A periodic reconciliation may take at most 1 / this of the time: it lists every task, and the project's re-ranks
#: wait behind it (listing 200,000 tasks took 4 min, which every 5 min would stall re-ranks nearly half the time).
RECONCILE_SPACING = 5


def reconcile_interval(every_s: float, took_s: float) -> float:
    """Seconds from the end of a reconciliation to the next: EXAMINE_RECONCILE_S, or more when it took long."""
    return max(every_s, RECONCILE_SPACING * took_s)


class Janitor(threading.Thread):
    """One daemon thread looking at every known project each ``tick`` seconds."""

    def __init__(self, backend: BackendContext, tick: float = 1.0):
        super().__init__(name="examine-janitor", daemon=True)
        self.backend = backend
        self.tick = tick
        self._stop_event = threading.Event()
        self._versions_at: dict[int, float] = {}  # when each project's versions were last checked

    def stop(self) -> None:
        """Ask the thread to end after its current step."""
        self._stop_event.set()

    def run(self) -> None:
        """Loop until stopped; a failing project is logged and retried on the next tick."""
        while not self._stop_event.wait(self.tick):
            for pid in self.backend.states.known_projects():
                try:
                    self.housekeep(pid)
                except Exception:  # keep the janitor alive
                    log.exception("project %s: housekeeping failed", pid)

    def housekeep(self, pid: int) -> None:
        """One look at one project: at most one action."""
        backend, s = self.backend, self.backend.settings
        if not backend.has_credentials(pid) or not backend.jobs.idle(pid) or backend.jobs.retrying(pid):
            return
        quiet = backend.quiet_for(pid)
        state = backend.states.get(pid)
        if state.full_due and quiet >= s.full_publish_idle_s:
            backend.submit(pid, ["full"], event=False)
            return
        last = backend.last_reconcile.get(pid)
        if last is not None and time.monotonic() - last >= reconcile_interval(s.reconcile_s, state.reconcile_took):
            backend.last_reconcile[pid] = time.monotonic()
            backend.submit(pid, ["sync"], event=False)
            return
        if state.published_version and time.monotonic() - self._versions_at.get(pid, 0.0) >= s.versions_check_s:
            # Predictions deleted by hand, or the project switched to another version, between reconciliations:
            # the next re-rank checks the versions (two small requests, no listing of the tasks).
            self._versions_at[pid] = time.monotonic()
            if last is not None and time.monotonic() - last >= s.versions_check_s:
                with state.lock:
                    state.versions_due = True
                backend.submit(pid, ["rank"], event=False)
                return
        with state.lock:
            keep = {state.published_version, state.complete_version}
            stale = [v for v in state.stale_versions if v not in keep]
        # The answers of /predict before the first ranking: a few empty predictions, deleted at once (they would
        # wait for a quiet project, which a team labeling all day never gives).
        pending = [v for v in stale if v == PENDING_VERSION and state.published_version is not None]
        if pending and backend.jobs.idle():
            stale = pending
        elif not stale or quiet < s.cleanup_idle_s or not backend.jobs.idle():
            return
        version = stale[0]
        client = backend.client(pid)
        try:
            # Whatever the state says (it may come from an old backup), the version the project serves in Label
            # Studio holds the last complete ranking of its unlabeled tasks: it is never deleted.
            if client.get_project(pid).get("model_version") == version:
                log.warning("project %s: version %s is the one Label Studio serves; not deleted", pid, version)
                with state.lock:
                    state.stale_versions = [v for v in state.stale_versions if v != version]
                return
            n = client.delete_model_version(pid, version)
            log.info("project %s: deleted %d predictions of superseded version %s", pid, n, version)
        except LabelStudioError as exc:
            if exc.status != 404:
                log.warning("project %s: could not delete version %s yet (%s); will retry", pid, version, exc)
                return
            log.info("project %s: version %s has no predictions in Label Studio", pid, version)
        with state.lock:
            state.stale_versions = [v for v in state.stale_versions if v != version]
        backend.states.save(state)
