"""Prometheus metrics of the ingest service, registered on the registry passed in."""

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ingest.heartbeat import TS_FLAGS

# Reasons of the 503 responses, the label of hbmon_ingest_unavailable_responses.
UNAVAILABLE_REASONS = ("queue_full", "broker_unreachable", "producer_error")


class IngestMetrics:
    """Counters and gauges of one ingest process.

    Label values are small fixed sets (endpoint, reason, field name, flag),
    so the number of series stays bounded whatever clients send.

    The counts taken on every accepted heartbeat (`accepted_single`,
    `accepted_batch` and `ts_flagged`) are plain integers, because
    `Counter.inc` takes a lock and cost about 0.45 µs per call
    (prometheus_client 0.26, measured in-process on a 2-core AMD EPYC VM).
    `sync` adds their growth to the Prometheus counters. It runs on every
    collect of `registry`. The app also calls it before each scrape and
    from its producer poll loop, because with several workers
    (prometheus_client's multiprocess mode) a scrape reads each worker's
    files, and a worker's counts reach its files only when it syncs. Only
    the event loop's thread may add to the plain counts.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted_single = 0
        self.accepted_batch = 0
        self.ts_flagged = dict.fromkeys(TS_FLAGS, 0)
        self._synced_accepted: dict[str, int] = {}
        self._synced_flagged: dict[str, int] = {}
        self._sync_lock = threading.Lock()
        # Not registered: _SyncedCounters collects them after a sync.
        self._accepted = Counter(
            "hbmon_ingest_heartbeats_accepted",
            "Heartbeats queued to the Kafka producer.",
            ["endpoint"],
            registry=None,
        )
        self._ts_flagged = Counter(
            "hbmon_ingest_device_ts_flagged",
            "Heartbeats published with an untrusted device timestamp, by flag.",
            ["flag"],
            registry=None,
        )
        # Create every series now, so each reads 0 before its first heartbeat.
        self._accepted.labels("single")
        self._accepted.labels("batch")
        for flag in TS_FLAGS:
            self._ts_flagged.labels(flag)
        registry.register(_SyncedCounters(self, (self._accepted, self._ts_flagged)))

        self._rejected = Counter(
            "hbmon_ingest_heartbeats_rejected",
            "Requests or batch items rejected with a 4xx, by reason and field.",
            ["reason", "field"],
            registry=registry,
        )
        self._unavailable = Counter(
            "hbmon_ingest_unavailable_responses",
            f"503 responses, by reason ({', '.join(UNAVAILABLE_REASONS)}).",
            ["reason"],
            registry=registry,
        )
        # Each reason shows as 0 from the start, so a rate query has a series.
        for reason in UNAVAILABLE_REASONS:
            self._unavailable.labels(reason)
        self.delivery_failures = Counter(
            "hbmon_ingest_delivery_failures",
            "Queued records, single heartbeats or bundles, that the producer "
            "failed to deliver.",
            registry=registry,
        )
        self.queue_length = Gauge(
            "hbmon_ingest_producer_queue_length",
            "Heartbeats waiting for a bundle, plus the producer's out-queue: "
            "records not yet acknowledged by Kafka, and delivery reports and "
            "callbacks not yet served.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def count_rejected(self, reason: str, field: str, count: int = 1) -> None:
        self._rejected.labels(reason, field).inc(count)

    def count_unavailable(self, reason: str) -> None:
        self._unavailable.labels(reason).inc()

    def sync(self) -> None:
        """Add what each plain count grew by since the last sync to its counter."""
        with self._sync_lock:
            accepted = {"single": self.accepted_single, "batch": self.accepted_batch}
            _add_growth(self._accepted, accepted, self._synced_accepted)
            _add_growth(self._ts_flagged, self.ts_flagged, self._synced_flagged)


def _add_growth(
    counter: Counter, counts: dict[str, int], synced: dict[str, int]
) -> None:
    """Add to each child of `counter` the growth of its count since `synced`."""
    for label, count in counts.items():
        growth = count - synced.get(label, 0)
        if growth:
            counter.labels(label).inc(growth)
            synced[label] = count


class _SyncedCounters(Collector):
    """Collect counters fed by `IngestMetrics.sync`, syncing them first."""

    def __init__(self, metrics: IngestMetrics, counters: tuple[Counter, ...]) -> None:
        self._metrics = metrics
        self._counters = counters

    def collect(self) -> Iterable[Metric]:
        self._metrics.sync()
        for counter in self._counters:
            yield from counter.collect()

    def describe(self) -> Iterable[Metric]:
        for counter in self._counters:
            yield from counter.describe()
