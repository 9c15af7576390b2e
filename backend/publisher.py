"""Publish a ranking to Label Studio: one prediction per task, changed in place, a new version only when due.

See :mod:`backend.publish` for the plan of a re-rank's updates; this module sends them. The first publish (and one
after a new encoder or lost predictions) bulk-imports the whole queue under a new version and switches the project
to it; later ones PATCH the few predictions that change, four at a time, and create predictions for new tasks.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from backend.context import BackendContext
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.payload import new_version, normal_url
from backend.prelabel import prepare_proposals, proposal, result_for
from backend.publish import FLAG_BAND, Published, plan_head, queue_order

log = logging.getLogger(__name__)

__all__ = ["Publisher"]

SAMPLING_LS = {"uncertainty": "Uncertainty sampling", "sequential": "Sequential sampling"}
_BULK_BATCH = 20000
_SINGLE_MAX = 200  # more new predictions than this go in one bulk import
#: A new version is pushed head first: the first tasks of the queue, then the project is switched to it and
#: annotators are served; the rest of the pool follows in chunks, one per ``fill`` job (re-ranks run between).
FIRST_PUSH = 2000
FILL_CHUNK = 10000
_THREADS = 4  # concurrent prediction updates (Label Studio answers ~2x faster than one by one)
_UNKNOWN = 0  # a prediction id not looked up yet (bulk imports answer none)


class Publisher:
    """Sends one project's rankings to Label Studio."""

    def __init__(self, backend: BackendContext, pid: int):
        self.backend = backend
        self.settings = backend.settings
        self.pid = pid
        self.state = backend.states.get(pid)
        self.clean: int | None = None  # tasks of the queue being published before the flagged ones

    def save(self) -> None:
        """Persist the state."""
        self.backend.states.save(self.state)

    def publish(self, task_ids: list[int], clusters: list[int], *, full: bool, ranked_labels: int) -> None:
        """Make Label Studio serve ``task_ids`` in order: a new version for all of them, or in-place updates.

        ``clusters`` holds the ranking's group of each task; ``ranked_labels`` the labels the ranking knew.
        The tasks the screening flagged close the queue and get scores in the flagged band.
        """
        if not task_ids:
            return
        client = self.backend.client(self.pid)
        t0 = time.perf_counter()
        self.clean = self._clean_count(task_ids)
        try:
            if full:
                self._push_version(client, task_ids)
            else:
                with self.state.lock:
                    filling = self.state.filling
                # While the pool is being filled, only the tasks near the head get theirs here; the fill does the rest.
                self._ensure_predictions(client, task_ids, limit=2 * self.settings.head_size if filling else None)
            sent = self._update_head(client, task_ids, clusters)
            if self.clean < len(task_ids):
                self._ensure_flagged_view(client)
        except Exception:
            self.backend.publish_failures += 1
            self.save()
            raise
        elapsed = time.perf_counter() - t0
        with self.state.lock:
            if self.state.filling:
                self.backend.submit(self.pid, ["fill"], event=False)
            self.state.queue, self.state.queue_groups = list(task_ids), list(clusters)
            self.state.queue_labels = ranked_labels
            self.state.publishes += 1
            self.state.last_publish, self.state.last_publish_s = time.time(), elapsed
        self.backend.publishes += 1
        self.save()
        log.info(
            "project %s: %s%d prediction updates for a queue of %d (version %s) in %.2f s",
            self.pid,
            "new version for the whole pool, then " if full else "",
            sent,
            len(task_ids),
            self.state.published_version,
            elapsed,
        )

    def _clean_count(self, task_ids: list[int]) -> int:
        """How many tasks of a queue come before the flagged ones that close it."""
        with self.state.lock:
            tasks = self.state.tasks
            flagged = next(
                (k for k, t in enumerate(reversed(task_ids)) if not (t in tasks and tasks[t].flag)), len(task_ids)
            )
        return len(task_ids) - flagged

    def _push_version(self, client: LabelStudio, task_ids: list[int]) -> None:
        """A new version: the queue's first :data:`FIRST_PUSH` tasks in one bulk import, then the project is
        switched to it (annotators are served from the new ranking at once); the rest follows (``fill``)."""
        version = new_version()
        n, head = len(task_ids), self.settings.head_size
        first = task_ids[:FIRST_PUSH]
        with self.state.lock:
            prepare_proposals(self.state, first)
            proposals = {t: _values(proposal(self.state, t)) for t in first}
            results = {t: self._result(t) for t in first}
        scores = {t: queue_order(pos, n, head, self.clean) for pos, t in enumerate(first)}
        preds = [{"task": t, "model_version": version, "score": scores[t], "result": results[t]} for t in first]
        try:
            # Label Studio's bulk import costs ~13 s per request on a 20,000-task project whatever its size.
            created = client.import_predictions(self.pid, preds, batch_size=_BULK_BATCH)
            # A bulk import answers no ids: each is looked up when its prediction is first updated (the head),
            # so a 200,000-task project is never listed whole; only a partial import is listed to see what is in.
            ids = self._prediction_ids(client, version) if created < len(preds) else dict.fromkeys(first, _UNKNOWN)
            self.switch_project(client, version)
        except Exception:
            with self.state.lock:  # whatever of it reached Label Studio is deleted by the janitor
                self.state.stale_versions.append(version)
            raise
        with self.state.lock:
            previous = {self.state.published_version, self.state.complete_version}
            self.state.published_version = self.state.complete_version = version
            self.state.predictions = {t: Published(ids[t], scores[t], None, proposals[t]) for t in first if t in ids}
            self.state.full_due = False
            self.state.filling = n > len(first)
            for v in sorted(v for v in previous if v and v != version):
                if v not in self.state.stale_versions:
                    self.state.stale_versions.append(v)
        if not self._view_exists(client):
            client.ensure_view(self.pid, self.settings.view_title, ordering=["tasks:predictions_score"])

    def switch_project(self, client: LabelStudio, version: str) -> None:
        """Set the project's ``model_version`` (and its sampling, unless EXAMINE_SAMPLING=keep)."""
        fields: dict[str, Any] = {"model_version": version}
        if self.settings.sampling in SAMPLING_LS:
            fields["sampling"] = SAMPLING_LS[self.settings.sampling]
        with self.state.lock:
            self.state.switching = version
        client.update_project(self.pid, **fields)

    def fill(self) -> int:
        """One chunk of the pool's missing predictions of the current version (after a head-first push), in queue
        order; queues the next chunk while tasks are missing. Returns how many are still missing."""
        client = self.backend.client(self.pid)
        with self.state.lock:
            queue = [t for t in self.state.queue if t in self.state.tasks and not self.state.tasks[t].labeled]
        self.clean = self._clean_count(queue)
        left = self._ensure_predictions(client, queue, limit=FILL_CHUNK) if queue else 0
        with self.state.lock:
            self.state.filling = left > 0
        self.save()
        if left:
            self.backend.submit(self.pid, ["fill"], event=False)
        else:
            log.info(
                "project %s: every unlabeled task holds a prediction of %s", self.pid, self.state.published_version
            )
        return left

    def _ensure_predictions(self, client: LabelStudio, task_ids: list[int], limit: int | None = None) -> int:
        """Give queued tasks without a prediction of the current version one (new tasks, annotations deleted, the
        rest of a head-first push), at most ``limit`` of them in queue order; returns how many are still missing."""
        with self.state.lock:
            version = self.state.published_version
            missing = [t for t in task_ids if t not in self.state.predictions]
        left = max(0, len(missing) - limit) if limit is not None else 0
        missing = missing[:limit] if limit is not None else missing
        if not missing:
            return left
        n, head, position = len(task_ids), self.settings.head_size, {t: i for i, t in enumerate(task_ids)}
        scores = {t: queue_order(position[t], n, head, self.clean) for t in missing}
        with self.state.lock:
            prepare_proposals(self.state, missing)
            preds: list[dict[str, Any]] = [
                {
                    "task": t,
                    "model_version": version,
                    "score": scores[t],
                    "result": self._result(t),
                }
                for t in missing
            ]
            proposals = {t: _values(proposal(self.state, t)) for t in missing if t in self.state.tasks}
        if len(missing) > _SINGLE_MAX:
            created = client.import_predictions(self.pid, preds, batch_size=_BULK_BATCH)
            if created < len(preds):
                wanted = set(missing)
                made = {t: i for t, i in self._prediction_ids(client, cast(str, version)).items() if t in wanted}
            else:
                made = dict.fromkeys(missing, _UNKNOWN)
        else:
            with ThreadPoolExecutor(_THREADS) as pool:
                made = {int(r["task"]): int(r["id"]) for r in pool.map(client.create_prediction, preds)}
        with self.state.lock:
            for t in missing:
                if t in made:
                    self.state.predictions[t] = Published(made[t], scores[t], None, proposals.get(t))
        log.info("project %s: %d tasks got their first prediction of %s", self.pid, len(made), version)
        return left + len(missing) - len(made)

    def _update_head(self, client: LabelStudio, task_ids: list[int], clusters: list[int]) -> int:
        """Send the fewest in-place updates that put the queue's head first; returns how many were sent."""
        head = self.settings.head_size
        with self.state.lock:
            published = dict(self.state.predictions)
            unpublished = set(task_ids).difference(published)  # a failed creation: next time
            if unpublished:
                clean = sum(1 for t in task_ids[: self.clean] if t not in unpublished)
                kept = [(t, c) for t, c in zip(task_ids, clusters) if t not in unpublished]
                task_ids, clusters = [t for t, _ in kept], [c for _, c in kept]
            else:
                clean = len(task_ids) if self.clean is None else self.clean
            labeled_clusters = {
                p.cluster
                for t, p in published.items()
                if p.cluster is not None and (t not in self.state.tasks or self.state.tasks[t].labeled)
            }
            prepare_proposals(self.state, task_ids[:head])
            choices = {t: _values(proposal(self.state, t)) for t in task_ids[:head] if t in self.state.tasks}
            plan = plan_head(
                task_ids,
                clusters,
                published,
                choices,
                labeled_clusters,
                head=head,
                next_cluster=self.state.next_cluster,
                clean=clean,
            )
            self.state.next_cluster = plan.next_cluster
            bodies = {}
            for tid, fields in plan.updates.items():
                body = {k: v for k, v in fields.items() if k != "choices"}
                if "choices" in fields:
                    body["result"] = self._result(tid)
                bodies[tid] = body

        version = cast(str, self.state.published_version)

        def send(tid: int) -> tuple[int, dict | None]:
            pred_id = published[tid].id
            if pred_id == _UNKNOWN:  # bulk-imported: look its id up once
                found = [p for p in client.list_predictions(task=tid) if p.get("model_version") == version]
                if not found:
                    return tid, None
                pred_id = published[tid].id = int(found[0]["id"])
            return tid, client.update_prediction(pred_id, **bodies[tid])

        with ThreadPoolExecutor(_THREADS) as pool:
            done = list(pool.map(send, bodies))
        lost = [tid for tid, answer in done if answer is None]
        with self.state.lock:
            for tid, answer in done:
                if answer is not None and tid in self.state.predictions:
                    pub = self.state.predictions[tid]
                    fields = plan.updates[tid]
                    pub.score = float(fields.get("score", pub.score))
                    pub.cluster = fields.get("cluster", pub.cluster)
                    if "choices" in fields:
                        pub.choices = fields["choices"]
            for tid in lost:  # deleted in Label Studio meanwhile: created again by the next publish
                self.state.predictions.pop(tid, None)
        if lost:
            log.warning("project %s: %d predictions were gone from Label Studio; re-creating them", self.pid, len(lost))
            self._ensure_predictions(client, task_ids)
            return len(done) + self._update_head(client, task_ids, clusters)
        return len(done)

    def _prediction_ids(self, client: LabelStudio, version: str) -> dict[int, int]:
        """Task id → prediction id of ``version``, from one listing of the project's predictions."""
        return {
            int(p["task"]): int(p["id"])
            for p in client.list_predictions(project=self.pid)
            if isinstance(p, dict) and p.get("model_version") == version
        }

    def _result(self, tid: int) -> list[dict[str, Any]]:
        """The pre-annotation of a task (caller holds the lock)."""
        return result_for(self.state, tid)

    def _ensure_flagged_view(self, client: LabelStudio) -> None:
        """The Data Manager tab of the unlabeled tasks the screening flagged (their scores lie in the flagged band)."""
        if self.state.flagged_view or not self.settings.screening:
            return
        filters = {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:predictions_score",
                    "operator": "greater_or_equal",
                    "type": "Number",
                    "value": FLAG_BAND,
                },
                {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
            ],
        }
        try:
            client.ensure_view(
                self.pid, self.settings.flagged_view_title, ordering=["tasks:predictions_score"], filters=filters
            )
            self.state.flagged_view = True
        except LabelStudioError as exc:  # the queue matters more than the tab: tried again at the next publish
            log.warning("project %s: the flagged tab could not be made: %s", self.pid, exc)

    def _view_exists(self, client: LabelStudio) -> bool:
        try:
            views = client.list_views(self.pid)
        except LabelStudioError:
            return True
        return any((v.get("data") or {}).get("title") == self.settings.view_title for v in views if isinstance(v, dict))

    def ensure_webhook(self, client: LabelStudio) -> None:
        """Our ``{backend}/webhook`` exists, is active, and carries our basic-auth header when auth is on.

        Label Studio creates that webhook when the backend is connected but sends it without the
        ML backend's credentials, so a backend that requires basic auth would answer 401 to every event.
        Only the ML backends whose URL is this backend's (as Label Studio called ``/setup``) are ours:
        another backend's webhook on the same project, and its headers, are left alone.
        """
        header = None
        if self.settings.auth_required:
            import base64

            token = base64.b64encode(f"{self.settings.basic_auth_user}:{self.settings.basic_auth_pass}".encode())
            header = f"Basic {token.decode()}"
        backends = [ml for ml in client.list_ml_backends(self.pid) if isinstance(ml, dict) and ml.get("url")]
        own = set(self.backend.own_urls)  # Label Studio calls /setup of each listed backend: filled by now
        ours = {str(ml["url"]).rstrip("/") + "/webhook" for ml in backends if normal_url(str(ml["url"])) in own}
        if backends and not ours:
            log.info("project %s: none of its ML backends is known as this one yet; webhooks left alone", self.pid)
        hooks = [h for h in client.list_webhooks(self.pid) if isinstance(h, dict)]
        for url in sorted(ours):
            mine = [h for h in hooks if h.get("url") == url]
            if not mine:
                client.create_webhook(self.pid, url, headers={"Authorization": header} if header else None)
                log.info("project %s: re-created the webhook to this backend", self.pid)
            for hook in mine:
                headers = dict(hook.get("headers") or {})
                fields: dict[str, Any] = {}
                if header and headers.get("Authorization") != header:
                    fields["headers"] = {**headers, "Authorization": header}
                if hook.get("is_active") is False:
                    fields["is_active"] = True
                if fields:
                    client.update_webhook(hook["id"], **fields)
                    log.info("project %s: updated webhook %s (%s)", self.pid, hook["id"], ", ".join(sorted(fields)))


def _values(found: tuple[dict[str, list[str]], dict[str, float]] | None) -> dict[str, list[str]] | None:
    """The proposed values per tag of :func:`backend.prelabel.proposal` (what a prediction's result shows)."""
    return found[0] if found else None
