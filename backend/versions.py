"""Which prediction versions Label Studio holds against the state: keep, switch back, or publish anew.

A project always converges to a full ranking: Label Studio is switched to our version only when it holds that
version whole; predictions lost there (an admin deleted them, a state restored from an older backup) make the
next publish a new version for the whole pool; versions of ours that nothing uses are left to the janitor.
"""

from __future__ import annotations

import logging

from backend.context import BackendContext
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.payload import VERSION_PREFIX
from backend.publisher import Publisher
from backend.state import ProjectState

log = logging.getLogger(__name__)

__all__ = ["check_versions"]


def check_versions(backend: BackendContext, state: ProjectState, client: LabelStudio, project: dict) -> set[str]:
    """Our prediction versions in Label Studio vs the state.

    Unknown versions of ours are stale (deleted by the janitor), except the one the project serves from
    until a new version replaces it. A version is switched to only when Label Studio holds it whole (a
    prediction for every unlabeled task the state published, and for most of the pool); otherwise, or when
    predictions of it were deleted, the next publish is a new version for the whole pool, embedding again
    first if the store was lost. So a project always converges to a full ranking.
    """
    raw = client.list_model_versions(state.pid)
    if isinstance(raw, dict):
        counts = {str(v): int(n) if isinstance(n, int | float) else -1 for v, n in raw.items()}
    else:
        counts = {v if isinstance(v, str) else str((v or {}).get("model_version")): -1 for v in raw or []}
    live = project.get("model_version") if isinstance(project.get("model_version"), str) else None
    follow: set[str] = set()
    with state.lock:
        current = state.published_version
        keep = {current, state.complete_version, live}
        # Versions Label Studio no longer lists (an aborted publish that created nothing) need no cleanup.
        state.stale_versions = [v for v in state.stale_versions if v in counts and v != live]
        for v in sorted(counts):
            if v.startswith(VERSION_PREFIX) and v not in keep and v not in state.stale_versions:
                state.stale_versions.append(v)  # an aborted publish, or one a lost state knew
        pool = sum(1 for i in state.tasks.values() if i.uri and not i.error and not i.labeled)
        ours = sum(1 for t in state.predictions if t in state.tasks)
        covered = sum(1 for t in state.predictions if t in state.tasks and not state.tasks[t].labeled)
        held = counts.get(current, 0) if current else 0
        filling = state.filling  # a head-first push whose rest is being added: whole so far
        whole = (
            current is not None
            and current in counts
            and (held < 0 or held >= ours)
            and (2 * covered >= pool or filling)
        )
        if pool and not whole:
            state.full_due = True  # predictions lost, or a state older than Label Studio: a new version
            follow.add("full")
        due = state.full_due
    if due and pool:
        follow.add("full")
    elif filling:
        follow.add("fill")
    if current and not due and live != current:
        try:
            Publisher(backend, state.pid).switch_project(client, current)
        except LabelStudioError as exc:
            if exc.status != 400:
                raise
            # Label Studio no longer holds the version (deleted between the listing and the switch).
            log.warning("project %s: cannot switch back to %s (%s); publishing a new version", state.pid, current, exc)
            with state.lock:
                state.full_due = True
            return follow | {"full"}
        log.info("project %s: switched back to %s (the project's model version had changed)", state.pid, current)
    return follow
