"""The in-place publish plan (backend.publish) against brute-force references and a model of Label Studio's sampling."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from backend.publish import HEAD_BAND, Published, increasing_run, plan_head, queue_order


def ls_serve_order(preds: dict[int, Published], unlabeled: set[int], solved: list[int]) -> list[int]:
    """Label Studio 1.23's uncertainty sampling (next_task._try_uncertainty_sampling): tasks ordered by how many
    solved tasks share their prediction's cluster, then by ascending score."""
    solved_per_cluster = Counter(preds[t].cluster for t in solved if t in preds)
    return sorted(unlabeled, key=lambda t: (solved_per_cluster.get(preds[t].cluster, 0), preds[t].score, t))


def apply(preds: dict[int, Published], updates: dict[int, dict]) -> None:
    for tid, fields in updates.items():
        p = preds[tid]
        p.score = fields.get("score", p.score)
        p.cluster = fields.get("cluster", p.cluster)
        p.choices = fields.get("choices", p.choices)


@pytest.mark.parametrize("seed", range(200))
def test_increasing_run_is_a_longest_strictly_increasing_subsequence(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 9)
    values = [rng.choice([None, *range(5)]) if rng.random() < 0.9 else None for _ in range(n)]
    run = increasing_run(values)
    assert all(values[i] is not None for i in run) and run == sorted(run)
    assert all(values[a] < values[b] for a, b in zip(run, run[1:]))
    best = 0
    present = [i for i, v in enumerate(values) if v is not None]
    for k in range(len(present), 0, -1):
        if any(all(values[a] < values[b] for a, b in zip(c, c[1:])) for c in itertools.combinations(present, k)):
            best = k
            break
    assert len(run) == best


def test_queue_order_keeps_the_head_below_the_band_and_the_rest_in_order():
    pool, head = 50, 20
    scores = [queue_order(i, pool, head) for i in range(pool)]
    assert scores == sorted(scores) and len(set(scores)) == pool
    assert max(scores[:head]) < HEAD_BAND <= min(scores[head:]) and scores[-1] < 1.0 and scores[0] > 0.0


def _fresh(order, head):
    return {t: Published(id=100 + t, score=queue_order(i, len(order), head)) for i, t in enumerate(order)}


@pytest.mark.parametrize("seed", range(60))
def test_after_any_re_rank_label_studio_serves_the_new_head_in_order(seed):
    """Random label sequences and random re-rankings: after each plan, the model of Label Studio serves the
    newest queue's head in its order, labeled tasks keep their predictions, and every task keeps one."""
    rng = random.Random(seed)
    n, head = rng.randint(3, 30), rng.randint(1, 8)
    order = list(range(1, n + 1))
    rng.shuffle(order)
    preds = _fresh(order, head)
    labeled: list[int] = []
    next_cluster = 1
    for _ in range(min(n - 1, 12)):
        unlabeled = [t for t in order if t not in labeled]
        # a new ranking: mostly the old order, with a few moves (a re-rank after one label changes little)
        new = list(unlabeled)
        for _ in range(rng.randint(0, 3)):
            i, j = rng.randrange(len(new)), rng.randrange(len(new))
            new.insert(j, new.pop(i))
        groups = [rng.randint(-1, 3) for _ in new]
        choices = {t: [rng.choice("ab")] for t in new[:head]}
        used = {preds[t].cluster for t in labeled if preds[t].cluster is not None}
        plan = plan_head(new, groups, preds, choices, used, head=head, next_cluster=next_cluster)
        assert plan.next_cluster >= next_cluster
        next_cluster = plan.next_cluster
        assert not set(plan.updates) & set(labeled)  # labeled tasks' predictions are never touched
        apply(preds, plan.updates)
        assert all(0.0 <= preds[t].score <= 1.0 for t in plan.updates)
        top = new[: min(head, len(new))]
        assert ls_serve_order(preds, set(new), labeled)[: len(top)] == top
        for t in top:
            assert preds[t].choices == choices[t] and preds[t].cluster not in used
        # same group in the ranking ⇔ same cluster in Label Studio (within the head)
        for (a, ga), (b, gb) in itertools.combinations(zip(top, groups), 2):
            assert (preds[a].cluster == preds[b].cluster) == (ga == gb and ga >= 0)
        # the annotator labels the served task, then the next re-rank follows
        served = ls_serve_order(preds, set(new), labeled)[0]
        labeled.append(served)
        order = new


def test_one_more_label_costs_one_or_two_updates_not_the_whole_head():
    head, order = 20, list(range(1, 201))
    preds = _fresh(order, head)
    groups = [-1] * len(order)
    plan = plan_head(order, groups, preds, {}, set(), head=head, next_cluster=1)  # clusters set once
    apply(preds, plan.updates)
    used = {preds[1].cluster}
    plan = plan_head(order[1:], groups[1:], preds, {}, used, head=head, next_cluster=plan.next_cluster)
    assert set(plan.updates) == {21}  # only the task that enters the head
    assert plan.updates[21]["score"] < HEAD_BAND


def test_round_robin_moves_off_the_group_just_labeled_before_the_re_rank():
    """Head groups A, A, B: once the first A is labeled, Label Studio serves B next, with nothing re-published."""
    order, groups, head = [5, 6, 7, 8], [0, 0, 1, 2], 3
    preds = _fresh(order, head)
    plan = plan_head(order, groups, preds, {}, set(), head=head, next_cluster=1)
    apply(preds, plan.updates)
    assert ls_serve_order(preds, {6, 7, 8}, solved=[5])[0] == 7


def test_a_labeled_groups_id_is_never_reused_and_squeezed_scores_are_renumbered():
    order, head = [1, 2, 3], 2
    preds = _fresh(order, head)
    preds[1].cluster, preds[2].cluster = 7, 7
    plan = plan_head([2, 3], [0, -1], preds, {}, {7}, head=head, next_cluster=10)
    assert plan.updates[2]["cluster"] == 10 and plan.updates[3]["cluster"] == 11
    preds = {1: Published(1, 0.05, 1), 2: Published(2, 0.05 + 1e-12, 2), 3: Published(3, 0.5, 3)}
    plan = plan_head([1, 3, 2], [-1, -1, -1], preds, {}, set(), head=3, next_cluster=4)
    assert plan.renumbered


def test_flagged_tasks_get_the_flagged_band_and_never_the_head():
    from backend.publish import FLAG_BAND, HEAD_BAND, Published, plan_head, queue_order

    pool, head, clean = 10, 3, 7
    scores = [queue_order(p, pool, head, clean) for p in range(pool)]
    assert scores == sorted(scores) and len(set(scores)) == pool
    assert all(s < HEAD_BAND for s in scores[:3]) and all(HEAD_BAND <= s < FLAG_BAND for s in scores[3:7])
    assert all(FLAG_BAND <= s < 1.0 for s in scores[7:])
    assert queue_order(0, 4, 3, 0) >= FLAG_BAND  # nothing clean left: flagged tasks are served in their order
    # task 5 was clean and is now flagged; task 9 was flagged and is now clean
    published = {t: Published(t, queue_order(t, pool, head, 9 if t != 9 else 10)) for t in range(pool)}
    published[9] = Published(9, 0.97)
    order = [0, 1, 2, 3, 4, 6, 7, 8, 9, 5]
    plan = plan_head(order, [-1] * pool, published, {}, set(), head=head, next_cluster=1, clean=9)
    assert plan.updates[5]["score"] >= FLAG_BAND and plan.updates[9]["score"] < FLAG_BAND
