"""The batch being served: the queue's policies choose batches of ``BATCH``; a batch is served to its end.

Within a batch nothing but the labeled tasks changes what is served next, so a label does not choose the queue
again (:func:`within_batch`); a newly chosen queue keeps the unlabeled rest of the current batch first
(:func:`keep_batch`).
"""

from __future__ import annotations

from backend.state import ProjectState
from examine.ranking import BATCH

__all__ = ["keep_batch", "within_batch"]


def within_batch(state: ProjectState, unlabeled: set[int]) -> tuple[list[int], list[int]] | None:
    """The queue in force minus the tasks labeled since, while its batch has more tasks left than people
    labeling the project at once.

    Within a batch nothing but the labeled tasks changes what is served next, so the queue is not
    chosen again: a label costs the probe's refit (pre-annotations) and a few updates, whatever the
    size of the project. The queue is chosen again (None) when as many tasks of the batch are left as
    people label at once (one for a single annotator; a team holds several tasks of the batch at the
    same time), so the next batch is in Label Studio before they are submitted, and whenever tasks were
    added or a new version is due.
    """
    with state.lock:
        queue, groups = state.queue, state.queue_groups
        remaining = [t for t, _ in state.batch if t in unlabeled]
        ahead = 1 + state.annotators()  # tasks served at once: the next batch is there before they are
        if state.full_due or len(remaining) < ahead or len(groups) != len(queue):
            return None
        queued = set(queue)
        if not unlabeled <= queued:
            return None
        state.batch = [[t, g] for t, g in state.batch if t in unlabeled]
        gone = queued - unlabeled  # labeled (or deleted) since: a few tasks
        kept = [(t, g) for t, g in zip(queue, groups) if t not in gone] if gone else list(zip(queue, groups))
    return [t for t, _ in kept], [g for _, g in kept]


def keep_batch(state: ProjectState, order: list[int], groups: list[int]) -> tuple[list[int], list[int]]:
    """Serve the current batch to its end before the next: its unlabeled tasks stay first, in their order.

    The queue's policies pick batches of :data:`BATCH` (Cluster-Margin's batch is diverse by design), and
    the annotation simulation measured exactly that: a batch is chosen, labeled, and the next one is chosen
    with every label so far. Re-choosing after each label would let one label reshuffle a batch half served.
    Each label still refits the probe (pre-annotations) at once, and Label Studio's round robin moves off
    the group just labeled. A new batch is chosen once the current one is used up.
    """
    ranked = set(order)
    with state.lock:
        batch = [(t, g) for t, g in state.batch if t in ranked]
        if len(batch) < 1 + state.annotators():  # the next batch follows the last tasks of this one
            taken = {t for t, _ in batch}
            batch += [(t, g) for t, g in zip(order, groups) if t not in taken][:BATCH]
        state.batch = [[t, g] for t, g in batch]
    first = {t for t, _ in batch}
    rest = [(t, g) for t, g in zip(order, groups) if t not in first]
    return [t for t, _ in batch] + [t for t, _ in rest], [g for _, g in batch] + [g for _, g in rest]
