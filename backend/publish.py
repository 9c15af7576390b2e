"""Plan what a re-rank changes in Label Studio: the fewest prediction updates that make it serve the new queue.

Every unlabeled task holds exactly one prediction of the project's model version, and a re-rank
updates those predictions in place (``PATCH /api/predictions/{id}``, ~0.09 s each) instead of
pushing a new version: Label Studio never serves a task without a current score, the Data Manager
shows one prediction per task, and only what changed is sent.

Label Studio's uncertainty sampling serves the lowest ``score`` first among the tasks whose
prediction ``cluster`` has the fewest tasks solved by the user. The score is a *queue order*
(:func:`queue_order`): the next :data:`HEAD` tasks of the newest ranking (the head) hold scores
below :data:`HEAD_BAND`, every other unlabeled task a score at or above it, by its position when
it was last placed. Within the head the plan keeps every score that is already in order (the
longest increasing run) and gives the others a score between their neighbours, so one new label
usually costs one or two updates instead of twenty.

Clusters carry the ranking's groups (coverage clusters, Cluster-Margin clusters) so Label Studio's
round robin moves away from the group just labeled the instant an annotation lands, before the
re-rank that includes it arrives. A group keeps its cluster id while no task with that id has been
labeled; otherwise it gets a fresh id, so the solved count Label Studio keeps per id always starts
at zero for a group of the ranking in force.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.task_info import Revised

__all__ = [
    "HEAD_BAND",
    "FLAG_BAND",
    "SCORE_MEANING",
    "Published",
    "HeadPlan",
    "plan_head",
    "queue_order",
    "increasing_run",
]

#: Head scores lie in (0, HEAD_BAND); the rest of the clean queue in [HEAD_BAND, FLAG_BAND);
#: images the screening flagged as unusable in [FLAG_BAND, 1), served after every clean one.
HEAD_BAND = 0.1
FLAG_BAND = 0.95
#: What a prediction's score means, for people (status page, README, the Data Manager tab's title).
SCORE_MEANING = (
    "queue order: the lowest score is served first; below 0.1 = the next tasks of the newest ranking; "
    "0.95 and above = flagged as unusable, served last "
    "(not the EXAMINE value, which ranking.csv and the report show as examine_value)"
)
#: Below this gap between two head scores the head is renumbered (float resolution is far finer).
_MIN_GAP = 1e-9


@dataclass
class Published(Revised):
    """What Label Studio holds for one task: its prediction id, score, cluster and proposals (per image-level tag)."""

    id: int
    score: float
    cluster: int | None = None
    choices: Any = None  # {tag name: proposed values} (backend.prelabel.proposal; a list: saved by an older version)

    def to_json(self) -> list[Any]:
        """Compact saved form (state.json holds one per task)."""
        return [self.id, self.score, self.cluster, self.choices]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> Published:
        """Inverse of :meth:`to_json`."""
        pid, score, cluster, choices = (list(raw) + [None, None])[:4]
        return cls(int(pid), float(score), None if cluster is None else int(cluster), choices)


@dataclass
class HeadPlan:
    """The updates one re-rank sends: ``{task id: fields to PATCH}``, demotions first, then the head in order."""

    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_cluster: int = 0
    renumbered: bool = False


def queue_order(position: int, pool: int, head: int, clean: int | None = None) -> float:
    """The score of the task at 0-based ``position`` of a queue of ``pool`` tasks whose first ``head`` form the head
    and whose first ``clean`` (default: all) are not flagged.

    Lower is served sooner; head scores are evenly spread in (0, HEAD_BAND), the rest of the clean
    tasks in [HEAD_BAND, FLAG_BAND), the flagged ones in [FLAG_BAND, 1).
    """
    clean = pool if clean is None else clean
    if position >= clean:
        return FLAG_BAND + (1.0 - FLAG_BAND) * (position - clean + 1) / (pool - clean + 1)
    if position < min(head, clean):
        return HEAD_BAND * (position + 1) / (head + 1)
    return HEAD_BAND + (FLAG_BAND - HEAD_BAND) * (position + 1) / (clean + 1)


def increasing_run(values: Sequence[float | None]) -> list[int]:
    """Indices of a longest strictly increasing subsequence of the non-None ``values`` (O(n log n))."""
    tails: list[float] = []  # smallest tail value of an increasing run of each length
    tail_idx: list[int] = []
    prev: dict[int, int] = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        k = bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_idx.append(i)
        else:
            tails[k], tail_idx[k] = v, i
        if k:
            prev[i] = tail_idx[k - 1]
    run = []
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        run.append(i)
        i = prev.get(i, -1)
    return run[::-1]


def plan_head(
    order: Sequence[int],
    groups: Sequence[int],
    published: dict[int, Published],
    choices: dict[int, dict[str, list[str]] | None],
    labeled_clusters: set[int],
    *,
    head: int,
    next_cluster: int,
    clean: int | None = None,
) -> HeadPlan:
    """The updates that make Label Studio serve ``order`` (task ids, best first) from its head.

    ``groups[i]`` is the ranking's group of ``order[i]`` (−1: none); ``published`` what Label Studio
    holds (every task of ``order`` must have an entry); ``choices`` the proposals of each head
    task (per image-level tag); ``labeled_clusters`` the cluster ids of labeled tasks (their solved count is no longer zero);
    ``next_cluster`` the first unused cluster id; ``clean`` how many tasks of ``order`` come before the
    flagged ones (default: all), which never enter the head and keep scores at or above FLAG_BAND.
    """
    plan = HeadPlan(next_cluster=next_cluster)
    pool = len(order)
    clean = pool if clean is None else clean
    head = min(head, clean)
    top = list(order[:head])
    top_set = set(top)
    position = {t: i for i, t in enumerate(order)}

    # 1. demote former head tasks that left the head (placed at their new position), and move
    #    the tasks whose flag changed to their band
    for tid, pub in published.items():
        if tid in top_set or tid not in position:
            continue
        flagged = position[tid] >= clean
        if pub.score < HEAD_BAND or flagged != (pub.score >= FLAG_BAND):
            plan.updates[tid] = {"score": queue_order(position[tid], pool, head, clean)}

    # 2. clusters: a group keeps an id that only its tasks hold and no labeled task held
    members: dict[Any, list[int]] = {}
    for tid, g in zip(top, groups[:head]):
        members.setdefault(g if g >= 0 else ("solo", tid), []).append(tid)
    held = Counter(published[t].cluster for t in top)
    cluster: dict[int, int] = {}
    for tasks in members.values():
        ids = {published[t].cluster for t in tasks}
        c = next(iter(ids)) if len(ids) == 1 else None
        if c is None or c in labeled_clusters or held[c] != len(tasks):
            c, plan.next_cluster = plan.next_cluster, plan.next_cluster + 1
        for t in tasks:
            cluster[t] = c

    # 3. scores: keep the longest run already in head order, interpolate the others
    current = [published[t].score if published[t].score < HEAD_BAND else None for t in top]
    keep = set(increasing_run(current))
    score: list[float] = [0.0] * len(top)
    i = 0
    while i < len(top):
        if i in keep:
            score[i] = float(current[i])  # type: ignore[arg-type]
            i += 1
            continue
        j = i
        while j < len(top) and j not in keep:
            j += 1
        lo = score[i - 1] if i else 0.0
        hi = float(current[j]) if j < len(top) else HEAD_BAND  # type: ignore[arg-type]
        for k in range(i, j):
            score[k] = lo + (hi - lo) * (k - i + 1) / (j - i + 1)
        i = j
    gaps = [b - a for a, b in zip([0.0, *score], [*score, HEAD_BAND])]
    if top and min(gaps) < _MIN_GAP:
        score = [queue_order(k, pool, head) for k in range(len(top))]
        plan.renumbered = True

    for k, tid in enumerate(top):
        pub = published[tid]
        fields: dict[str, Any] = {}
        if pub.score != score[k]:
            fields["score"] = score[k]
        if pub.cluster != cluster[tid]:
            fields["cluster"] = cluster[tid]
        if choices.get(tid) != pub.choices:
            fields["choices"] = choices.get(tid)
        if fields:
            plan.updates[tid] = fields
    return plan
