"""The worker side of one project: reconcile, pretrain, embed, rank, publish, train.

Every job here runs on the background worker (never on a request thread) and is
idempotent, so the queue can retry it after any failure:

- **reconcile** (job ``sync``) compares what Label Studio has — tasks, annotations,
  the project's model_version, our webhook and its auth header, prediction
  versions — with the state and repairs the difference; it returns the follow-up
  work it found necessary (embed new tasks, re-rank, re-publish);
- **embed** embeds tasks without a vector in the store (new, or lost to a damaged store);
- **rank** re-ranks from stored embeddings and publishes the head of the queue
  (all of it the first time); **full** publishes the whole queue.

Publishing keeps exactly one prediction of the project's model version on every unlabeled task
(``score`` = queue order, the LOWEST served first, see :mod:`backend.publish`; ``result`` = the
probe's choice). A re-rank updates those predictions in place, only the ones that change (the head
of the new queue, the tasks that left it, new tasks); a new version for the whole pool is pushed
only the first time, after a new encoder, or when predictions were lost in Label Studio. A publish
Label Studio refuses because a task was deleted meanwhile reconciles and tries once more; an aborted
version is marked stale (the janitor deletes it).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from typing import overload

import numpy as np

from backend.batch import keep_batch, within_batch
from backend.context import BackendContext
from backend.fetch import ImageFetcher
from backend.label_config import annotation_answers, controls_from_config, controls_from_state
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.payload import (
    config_problem,
    guess_image_key,
    image_key_from_config,
)
from backend.pool_rows import pool_rows
from backend.prelabel import learn, queue_labels
from backend.publisher import Publisher
from backend.screener import Screener
from backend.state import ProjectState, TaskInfo
from backend.versions import check_versions
from examine.embed import embed_sources
from examine.encoder import Encoder, create_encoder, is_pretrained_name
from examine.images import load_image
from examine.ranking import BATCH, DEFAULT_POLICY, LABEL_POLICIES, rank
from examine.store import EmbeddingStore, StoreError

log = logging.getLogger(__name__)

_EMBED_CHUNK = 2048  # several CUDA batches per call, so the embedding pipeline can overlap its stages
# Download failures worth retrying later (the host or Label Studio was down or slow), by message.
_TRANSIENT = re.compile(
    r"connection failed|connection timed out|timed out after|no complete answer within|"
    r"-> (5\d\d|429)|Label Studio credentials"
)


def is_transient(error: str | None) -> bool:
    """True for a task error that a later attempt may not repeat (network, 5xx, timeouts)."""
    return bool(error) and bool(_TRANSIENT.search(error or ""))


class ProjectWorker:
    """The background jobs of one Label Studio project."""

    def __init__(self, backend: BackendContext, pid: int):
        self.backend = backend
        self.settings = backend.settings
        self.pid = pid
        self.state: ProjectState = backend.states.get(pid)

    def save(self) -> None:
        """Persist the state."""
        self.backend.states.save(self.state)

    # -------------------------------------------------------------- reconcile

    def reconcile(self) -> list[str]:
        """Compare Label Studio with the state and repair; returns the follow-up job kinds."""
        client = self.backend.client(self.pid)
        started = time.monotonic()
        self.backend.last_reconcile[self.pid] = started  # /setup calls it causes are not re-reconciled
        try:
            project = client.get_project(self.pid)
        except LabelStudioError as exc:
            if exc.status == 404:
                self._problem(f"project {self.pid} no longer exists in Label Studio; nothing to do")
                return []
            raise
        follow: set[str] = set()
        config = project.get("label_config") if isinstance(project.get("label_config"), str) else None
        if self._config_refused(config_problem(config)):
            return []
        key = image_key_from_config(config)
        controls = [t.as_dict() for t in controls_from_config(config)]
        with self.state.lock:
            if key != self.state.image_key:
                self.state.image_key = key
                follow |= {"embed", "rank"}
            if controls != self.state.controls:
                if self.state.controls and self.state.published_version is not None:
                    self.state.full_due = True  # every task's proposal changes, not only the head's
                self.state.controls = controls
                follow.add("rank")
            before = {t: (i.uri, i.labeled) for t, i in self.state.tasks.items()}
            recheck, self.state.recheck = self.state.recheck, set()
        listed_at = time.monotonic()
        try:
            tasks = [t for t in client.iter_tasks(self.pid, page_size=5000) if isinstance(t, dict) and "id" in t]
        except Exception:
            with self.state.lock:
                self.state.recheck |= recheck  # re-read at the retried reconciliation
            raise
        self._learn_tasks(tasks)
        store = self._store()
        need_labels = []
        with self.state.lock:
            seen = set()
            for t in tasks:
                tid = int(t["id"])
                seen.add(tid)
                info = self.state.tasks[tid]
                labeled = bool(t.get("is_labeled")) or int(t.get("total_annotations") or 0) > 0
                if not labeled and self.state.labeled_at.get(tid, -1.0) >= listed_at:
                    labeled = True  # a webhook reported a label after the listing began: it is newer
                if labeled and (not info.labeled or info.answers is None or tid in recheck):
                    need_labels.append(tid)
                info.labeled = labeled
                if not labeled:
                    info.answers = None
                if before.get(tid) != (info.uri, info.labeled):
                    follow.add("rank")
                if is_transient(info.error) and (info.retry_at or 0.0) <= time.time():
                    info.error = None  # retry downloads that failed for passing reasons, once their time came
                if info.key and store is not None and info.key not in store:
                    info.key = None
                if info.uri and not info.error and (not info.key or store is None):
                    follow |= {"pretrain", "embed"}  # no vector, or no encoder (never made, lost or damaged)
            for tid in set(self.state.tasks) - seen:
                del self.state.tasks[tid]
                self.state.predictions.pop(tid, None)  # deleted with its task
                follow.add("rank")
            self.state.synced = True
            self.state.labeled_at = {t: at for t, at in self.state.labeled_at.items() if at >= listed_at}
        Publisher(self.backend, self.pid).ensure_webhook(client)
        if need_labels and (self._policy_uses_labels() or recheck):
            self._recheck_tasks(client, need_labels)
        follow |= self._check_versions(client, project)
        if self.state.published_version and self._proposals_missing():
            follow.add("rank")  # /predict and the head's predictions carry proposals again
        with self.state.lock:
            self.state.problems = [p for p in self.state.problems if "no longer exists" not in p]
        self.save()
        self.backend.last_reconcile[self.pid] = time.monotonic()
        self.state.reconcile_took = self.backend.last_reconcile[self.pid] - started
        log.info(
            "project %s: reconciled %d tasks (%s)%s",
            self.pid,
            len(tasks),
            self.state.counts(),
            f"; follow-up: {'+'.join(sorted(follow))}" if follow else "",
        )
        return sorted(follow)

    def _config_refused(self, problem: str | None) -> bool:
        """Record (or clear) why the project's config cannot be ranked; True: leave the project alone."""
        with self.state.lock:
            old, self.state.config_problem = self.state.config_problem, problem
            if old and old != problem:
                self.state.problems = [p for p in self.state.problems if not p.endswith(old)]
        if problem and problem != old:
            self._problem(problem)
        return problem is not None

    def _check_versions(self, client: LabelStudio, project: dict) -> set[str]:
        return check_versions(self.backend, self.state, client, project)

    def _recheck_tasks(self, client: LabelStudio, task_ids: list[int]) -> None:
        """Fetch tasks again to learn whether they are still labeled, and their labels."""
        for tid in task_ids:
            try:
                task = client.get_task(tid)
                anns = [a for a in client.list_annotations(tid) if isinstance(a, dict)]
            except LabelStudioError as exc:
                log.warning("project %s: cannot re-read task %s: %s", self.pid, tid, exc)
                continue
            with self.state.lock:
                info = self.state.tasks.setdefault(tid, TaskInfo())
                info.labeled = bool(anns) or bool(task.get("is_labeled"))
                info.answers = next((got for a in reversed(anns) if (got := annotation_answers(a)) is not None), None)
                for a in anns:
                    if isinstance(a.get("id"), int):
                        self.state.annotation_task[a["id"]] = tid

    def _learn_tasks(self, tasks: list[dict]) -> None:
        """Record tasks' image references; a task without an image is reported, not fatal."""
        with self.state.lock:
            for t in tasks:
                tid = int(t["id"])
                info = self.state.tasks.setdefault(tid, TaskInfo())
                raw = t.get("data")
                data: dict = raw if isinstance(raw, dict) else {}
                key = self.state.image_key or guess_image_key(data)
                uri = data.get(key) if key else None
                if not isinstance(uri, str) or not uri:
                    info.uri, info.key = None, None
                    info.error = (
                        f"task {tid}: no image under data key {key!r} (task data keys: {sorted(data)}); "
                        'the labeling config\'s <Image value="$…"> must name the key that holds the image URL'
                    )
                    continue
                if uri != info.uri:
                    info.uri, info.key, info.error = uri, None, None
                for ann in t.get("annotations") or []:
                    if isinstance(ann, dict) and isinstance(ann.get("id"), int):
                        self.state.annotation_task[ann["id"]] = tid
                        info.take_answers(annotation_answers(ann))

    # -------------------------------------------------------------- embed

    def pretrain(self) -> None:
        """Pretrain the shared MAE encoder on this project's images when no encoder exists yet (one project at a
        time: a second project waiting here then finds the first one's encoder)."""
        if self.state.config_problem or self.backend.encoder(self.pid) is not None:
            return
        images = self._decoded_images()  # downloaded before the lock: a slow image host delays this project only
        with self.backend.pretrain_lock:
            if self.backend.encoder(self.pid) is None:
                self._pretrain(images)

    def _pretrain(self, images: list[np.ndarray]) -> None:
        from examine.mae import default_pretrain_config, pretrain, sized_config

        if self.state.encoder_version is not None:
            self._problem(
                f"the encoder {self.state.encoder_version} is missing from MODEL_DIR; a new one is "
                "pretrained and every image embedded again",
                backend_wide=True,
            )

        if len(images) < 2:
            log.warning("project %s: %d readable images; MAE pretraining waits for more", self.pid, len(images))
            return
        enc_cfg = self.settings.encoder_config()
        if is_pretrained_name(enc_cfg.model):  # a named pretrained encoder: timm loads it, nothing to pretrain
            create_encoder(enc_cfg).save(self.backend.workspace.encoder_dir)
            log.info("project %s: using the pretrained encoder %s", self.pid, enc_cfg.model)
            return
        _, cfg = default_pretrain_config(self.settings.device)
        cfg = sized_config(cfg, len(images))
        cfg = replace(cfg, epochs=self.settings.pretrain_epochs or cfg.epochs)
        log.info("project %s: pretraining the MAE on %d images for %d epochs", self.pid, len(images), cfg.epochs)
        pretrain(
            images,
            self.backend.workspace.encoder_dir,
            cfg,
            encoder_config=enc_cfg,
            device=self.settings.device,
            progress=False,
        )

    def embed(self) -> list[str]:
        """Embed every task whose image has no vector in the store; asks for a re-rank when any got one."""
        encoder = None if self.state.config_problem else self.backend.encoder(self.pid)
        if encoder is None:
            return []
        store = self._store(encoder)
        with self.state.lock:
            if self.state.encoder_version != encoder.version:
                for info in self.state.tasks.values():
                    info.key = None  # keys stay valid, but must be checked against the new store
                if self.state.encoder_version is not None:
                    self.state.full_due = True  # a new embedding re-orders the whole pool
                    self.state.batch = []
                self.state.encoder_version = encoder.version
            for info in self.state.tasks.values():
                if info.key and info.key not in store:
                    info.key = None
            todo = [t for t, i in sorted(self.state.tasks.items()) if i.key is None and i.uri and not i.error]
        transient = 0
        for start in range(0, len(todo), _EMBED_CHUNK):
            transient += self._embed(todo[start : start + _EMBED_CHUNK], encoder)
            self.save()
        if transient and transient == len(todo) and not self.backend.client(self.pid).health():
            with self.state.lock:  # not the images' fault: they are fetched again as soon as Label Studio answers
                for t in todo:
                    if t in self.state.tasks:
                        self.state.tasks[t].failures, self.state.tasks[t].retry_at = 0, None
            raise LabelStudioError(f"project {self.pid}: Label Studio is unreachable; {transient} images wait")
        if self.settings.screening and Screener(self.backend, self.pid).measure():
            self.state.screened = None  # new measurements: screen the pool again at the next full rank
        with self.state.lock:
            return ["rank"] if any(self.state.tasks[t].key for t in todo if t in self.state.tasks) else []

    def _embed(self, task_ids: list[int], encoder: Encoder) -> int:
        """Embed some tasks; returns how many failed for passing reasons (retried by the next reconcile)."""
        store = self._store(encoder)
        with self.state.lock:
            items = [(t, uri) for t in task_ids if t in self.state.tasks and (uri := self.state.tasks[t].uri)]
        if not items:
            return 0
        fetcher = ImageFetcher(self.settings, self.backend.image_client(self.pid))
        report = embed_sources(
            [fetcher.source(t, u) for t, u in items], encoder, store, device=self.settings.device, progress=False
        )
        transient = 0
        with self.state.lock:
            self.state.encoder_version = encoder.version
            for (tid, _), key in zip(items, report.keys):
                info = self.state.tasks.get(tid)
                if info is not None and key is not None:
                    info.key, info.error, info.failures, info.retry_at = key, None, 0, None
            for i, err in report.errors.items():
                tid = items[i][0]
                if tid in self.state.tasks:
                    info = self.state.tasks[tid]
                    info.error = f"task {tid}: {err}"
                    if is_transient(str(err)):
                        transient += 1
                        info.failures += 1
                        wait = min(3600.0, self.settings.image_retry_s * 2 ** (info.failures - 1))
                        info.retry_at = time.time() + wait
                    log.warning("project %s: %s", self.pid, self.state.tasks[tid].error)
        log.info(
            "project %s: embedded %d new, %d cached, %d failed",
            self.pid,
            report.added,
            report.cached,
            len(report.errors),
        )
        return transient

    def _decoded_images(self) -> list[np.ndarray]:
        images = []
        fetcher = ImageFetcher(self.settings, self.backend.image_client(self.pid))
        with self.state.lock:
            items = [(t, i.uri) for t, i in sorted(self.state.tasks.items()) if i.uri and not i.error]
        for tid, uri in items:
            try:
                images.append(
                    load_image(
                        fetcher.fetch(tid, uri),
                        item=f"task {tid}",
                        max_side=2 * self.settings.encoder_config().img_size,
                    )
                )
            except Exception as exc:  # reported per task, training goes on
                log.warning("project %s: task %s skipped for training: %s", self.pid, tid, exc)
        return images

    @overload
    def _store(self, encoder: Encoder) -> EmbeddingStore: ...
    @overload
    def _store(self, encoder: None = None) -> EmbeddingStore | None: ...
    def _store(self, encoder: Encoder | None = None) -> EmbeddingStore | None:
        """The store of the current encoder; what opening it repaired is reported."""
        encoder = encoder or self.backend.encoder(self.pid)
        if encoder is None:
            return None
        store = self.backend.workspace.store(encoder)
        for msg in store.repaired:
            self._problem(msg.replace(str(self.settings.model_dir), "MODEL_DIR"), backend_wide=True)
        return store

    def _problem(self, msg: str, *, backend_wide: bool = False) -> None:
        log.error("project %s: %s", self.pid, msg)
        if backend_wide:
            self.backend.add_problem(msg)
            return
        with self.state.lock:
            if msg not in self.state.problems:
                self.state.problems.append(msg)
                del self.state.problems[:-20]

    # -------------------------------------------------------------- rank and publish

    def rank(self) -> None:
        """Re-rank and update Label Studio in place (a new version for the whole pool when one is due).

        When an event showed the project serving another model version, the versions are checked first
        (the project switched back, or a new version published), without listing the tasks.
        """
        with self.state.lock:
            check, self.state.versions_due = self.state.versions_due, False
        if check and self.state.synced:
            client = self.backend.client(self.pid)
            self._check_versions(client, client.get_project(self.pid))
        with self.state.lock:
            full = self.state.full_due or self.state.published_version is None or not self.state.predictions
        self._rank_and_publish(full=full)

    def publish_full(self) -> None:
        """Push the whole ranking under a new version (first publish, new encoder, predictions lost in Label Studio).

        Nothing when a re-rank earlier in the same run pushed it already (the pool is pushed once).
        """
        with self.state.lock:
            done = not self.state.full_due and self.state.published_version is not None and bool(self.state.predictions)
        if not done:
            self._rank_and_publish(full=True)

    def fill(self) -> None:
        """Add one chunk of the pool's missing predictions after a head-first push (re-ranks run between chunks)."""
        if self.state.filling and not self.state.config_problem:
            if self._proposals_missing():  # after a restart: the re-rank computes them, its publish fills on
                self.backend.submit(self.pid, ["rank"], event=False)
                return
            Publisher(self.backend, self.pid).fill()

    def _proposals_missing(self) -> bool:
        """Pre-annotations are due but none are in memory (they are not saved: a restart loses them).

        Due means the last fit learned something (its summary, saved, says so: ``fit_s``), whether or not it
        proposed then (pre-annotation may have been off); before the probes can learn (the cold start) there are
        none to wait for, and the fill goes on without them.
        """
        with self.state.lock:
            learned = bool(self.state.probe.get("prelabel")) or "fit_s" in self.state.probe
            if self.state.proposals is not None or not self.settings.prelabel or not learned:
                return False
            return any(t.image_level for t in controls_from_state(self.state.controls))

    def _rank_and_publish(self, *, full: bool) -> None:
        if not self.state.synced:
            self.reconcile()  # never publish what Label Studio has not confirmed
        if self.state.config_problem:
            log.info("project %s: not ranked: %s", self.pid, self.state.config_problem)
            return
        for attempt in (0, 1):
            ranked = self._rank()
            if ranked is None:
                return
            task_ids, clusters, n_labeled = ranked
            try:
                Publisher(self.backend, self.pid).publish(task_ids, clusters, full=full, ranked_labels=n_labeled)
                return
            except LabelStudioError as exc:
                if exc.status not in (400, 404) or attempt:
                    raise
                log.warning(
                    "project %s: Label Studio refused the publish (%s); reconciling (tasks deleted "
                    "meanwhile?) and publishing again",
                    self.pid,
                    exc,
                )
                if "embed" in self.reconcile():
                    self.embed()

    def _rank(self) -> tuple[list[int], list[int], int] | None:
        """Task ids of the unlabeled pool in queue order, the group each was served from (−1: none) and the
        number of labeled tasks the ranking knew; None: nothing to rank yet."""
        encoder = self.backend.encoder(self.pid)
        if encoder is None and self.state.encoder_version is not None:
            self.pretrain()  # the encoder that made the ranking in force is gone: a problem, and a new one
            self.embed()
            encoder = self.backend.encoder(self.pid)
        if encoder is None:
            return None
        for attempt in (0, 1):
            store = self._store(encoder)
            pool = pool_rows(self.state, store)
            if pool.lost:
                self._problem(
                    f"{pool.lost} embeddings were missing from the store (deleted or damaged); "
                    "their images are embedded again",
                    backend_wide=True,
                )
                self.embed()
                store = self._store(encoder)
                pool = pool_rows(self.state, store)
            rows = pool.rows
            if not rows:
                return None
            try:
                X = self.state.pool.get(store, pool.keys, fingerprint=pool.fingerprint)
                break
            except StoreError as exc:  # truncated while open: reopening repairs it
                if attempt:
                    raise
                log.error("project %s: %s", self.pid, exc)
        labeled = np.array([i.labeled for _, i in rows], dtype=bool)
        screener = Screener(self.backend, self.pid)
        deferred = screener.deferred(rows, X, labeled, pool.fingerprint) if self.settings.screening else []
        probe = learn(
            self.state,
            X,
            rows,
            enabled=self.settings.prelabel,
            moments=self.state.pool.moments,
            labeled_mask=labeled,
            tids=pool.tids,
        )
        n_labeled = int(labeled.sum())
        if (~labeled).sum() <= 1 or len(rows) < 2:
            rest = [t for (t, i) in rows if not i.labeled]
            return rest, [-1] * len(rest), n_labeled
        kept = within_batch(self.state, set(pool.tids[~labeled].tolist()))
        if kept is not None:
            return *kept, n_labeled
        # The comparison policies' classes: the config's first single-class question (the probes learn every tag).
        with self.state.lock:
            labels = queue_labels(self.state, rows)
        ranking = rank(
            X,
            labeled=labeled,
            labels=labels,
            policy=self._policy(),
            probe=probe,
            batch=BATCH,
            deferred=deferred,
            space_cache=self.state.pool.space,
        )
        order = [rows[j][0] for j in ranking.order]
        groups = [int(ranking.cluster[j]) for j in ranking.order]
        return *keep_batch(self.state, order, groups), n_labeled

    def _policy(self) -> str:
        return self.settings.policy or DEFAULT_POLICY

    def _policy_uses_labels(self) -> bool:
        return self._policy() in LABEL_POLICIES or (self.settings.prelabel and bool(self.state.controls))

    # -------------------------------------------------------------- training

    def train(self) -> None:
        """Continue the MAE's self-supervised training on this project's images (a new encoder version)."""
        import copy
        import shutil

        from examine.mae import continue_config, default_pretrain_config, pretrain

        encoder = self.backend.encoder(self.pid)
        images = self._decoded_images()
        if len(images) < 2:
            raise RuntimeError(f"project {self.pid}: fewer than 2 readable images to train on")
        if encoder is None:  # no encoder yet: training is the first pretraining
            enc_cfg = self.settings.encoder_config()
        else:  # train a copy: the live encoder keeps serving rankings meanwhile
            enc_cfg, encoder = encoder.config, copy.deepcopy(encoder).cpu()
            encoder.weights_changed()
        _, base = default_pretrain_config(self.settings.device)
        cfg = continue_config(base, self.settings.train_epochs)
        final = self.backend.project_encoder_dir(self.pid)
        out = final.with_name("encoder.training")
        if out.exists():
            shutil.rmtree(out)
        log.info("project %s: continuing MAE training on %d images for %d epochs", self.pid, len(images), cfg.epochs)
        trained, losses = pretrain(
            images,
            out,
            cfg,
            encoder=encoder,
            encoder_config=enc_cfg,
            device=self.settings.device,
            resume=False,
            progress=False,
        )
        if final.exists():
            shutil.rmtree(final)
        out.replace(final)
        log.info(
            "project %s: training done (loss %.4f → %.4f), encoder %s", self.pid, losses[0], losses[-1], trained.version
        )
