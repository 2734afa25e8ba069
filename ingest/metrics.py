"""Prometheus metrics of the ingest service, registered on the registry passed in."""

from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.heartbeat import TS_FLAGS


class IngestMetrics:
    """Counters and gauges of one ingest process.

    Label values are small fixed sets (endpoint, reason, field name, flag),
    so the number of series stays bounded whatever clients send.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        accepted = Counter(
            "hbmon_ingest_heartbeats_accepted",
            "Heartbeats queued to the Kafka producer.",
            ["endpoint"],
            registry=registry,
        )
        self.accepted_single = accepted.labels("single")
        self.accepted_batch = accepted.labels("batch")
        self._rejected = Counter(
            "hbmon_ingest_heartbeats_rejected",
            "Requests or batch items rejected with a 4xx, by reason and field.",
            ["reason", "field"],
            registry=registry,
        )
        self._unavailable = Counter(
            "hbmon_ingest_unavailable_responses",
            "503 responses, by reason (queue_full, broker_unreachable, "
            "producer_error).",
            ["reason"],
            registry=registry,
        )
        self.delivery_failures = Counter(
            "hbmon_ingest_delivery_failures",
            "Queued heartbeat records that the producer failed to deliver.",
            registry=registry,
        )
        ts_flagged = Counter(
            "hbmon_ingest_device_ts_flagged",
            "Heartbeats published with an untrusted device timestamp, by flag.",
            ["flag"],
            registry=registry,
        )
        self.ts_flagged = {flag: ts_flagged.labels(flag) for flag in TS_FLAGS}
        self.queue_length = Gauge(
            "hbmon_ingest_producer_queue_length",
            "Producer out-queue length: records not yet acknowledged by Kafka, "
            "plus delivery reports and callbacks not yet served.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def count_rejected(self, reason: str, field: str, count: int = 1) -> None:
        self._rejected.labels(reason, field).inc(count)

    def count_unavailable(self, reason: str) -> None:
        self._unavailable.labels(reason).inc()
