"""``/metrics`` in the Prometheus text format, read from the live state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from backend.screener import flag_counts

if TYPE_CHECKING:
    from backend.runtime import Backend

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Collector:
    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        b = self.backend
        per = {
            name: GaugeMetricFamily(f"examine_{name}", doc, labels=["project"])
            for name, doc in (
                ("tasks", "tasks the backend knows"),
                ("tasks_embedded", "tasks with an embedding"),
                ("tasks_labeled", "labeled tasks"),
                ("tasks_failed", "tasks whose image could not be embedded"),
                ("jobs_pending", "kinds of work waiting or running"),
                ("problems", "damaged files and other problems reported at /projects/<id>/status"),
                ("stale_versions", "prediction versions waiting for deletion"),
                ("last_publish_timestamp_seconds", "unix time of the last successful publish"),
                ("last_publish_duration_seconds", "duration of the last successful publish"),
            )
        }
        for pid in b.states.known_projects():
            st = b.states.get(pid)
            c = st.counts()
            label = [str(pid)]
            per["tasks"].add_metric(label, c["tasks"])
            per["tasks_embedded"].add_metric(label, c["embedded"])
            per["tasks_labeled"].add_metric(label, c["labeled"])
            per["tasks_failed"].add_metric(label, c["failed"])
            per["jobs_pending"].add_metric(label, len(b.jobs.pending(pid)))
            per["problems"].add_metric(label, len(b.project_problems(pid)))
            per["stale_versions"].add_metric(label, len(st.stale_versions))
            if st.last_publish is not None:
                per["last_publish_timestamp_seconds"].add_metric(label, st.last_publish)
                per["last_publish_duration_seconds"].add_metric(label, st.last_publish_s or 0.0)
        yield from per.values()
        yield from self._probe()
        yield self._flagged()
        yield CounterMetricFamily("examine_job_retries", "failed runs re-queued with backoff", value=b.jobs.retries)
        yield CounterMetricFamily("examine_publishes", "successful publishes", value=b.publishes)
        yield CounterMetricFamily("examine_publish_failures", "aborted publishes", value=b.publish_failures)
        yield GaugeMetricFamily(
            "examine_backend_problems", "backend-wide problems (encoder, store)", value=len(b.problems)
        )

    def _probe(self) -> Iterator[Metric]:
        b = self.backend
        acc = GaugeMetricFamily(
            "examine_probe_cv_accuracy", "cross-validated accuracy of the project's linear probe", labels=["project"]
        )
        per_class = GaugeMetricFamily(
            "examine_labels", "labeled tasks per class of the config's tags on the image", labels=["project", "class"]
        )
        prelabeled = GaugeMetricFamily(
            "examine_tasks_prelabeled",
            "unlabeled tasks the probes proposed a class for at their last fit",
            labels=["project"],
        )
        for pid in b.states.known_projects():
            st = b.states.get(pid)
            with st.lock:
                probe = dict(st.probe)
                n_pre = st.proposals.prelabeled if st.proposals is not None else 0
            if probe.get("cv_accuracy") is not None:
                acc.add_metric([str(pid)], float(probe["cv_accuracy"]))
            for cls, n in (probe.get("counts") or {}).items():
                per_class.add_metric([str(pid), str(cls)], int(n))
            prelabeled.add_metric([str(pid)], n_pre)
        yield from (acc, per_class, prelabeled)

    def _flagged(self) -> Metric:
        flagged = GaugeMetricFamily(
            "examine_tasks_flagged",
            "unlabeled tasks the screening flagged as unusable, by strongest reason",
            labels=["project", "reason"],
        )
        for pid in self.backend.states.known_projects():
            st = self.backend.states.get(pid)
            with st.lock:
                counts = flag_counts(st.tasks)
            for reason, n in sorted(counts.items()):
                flagged.add_metric([str(pid), reason], n)
        return flagged


def render(backend: Backend) -> bytes:
    """The current metrics as Prometheus text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(backend))
    return generate_latest(registry)
