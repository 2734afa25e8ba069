"""Prometheus metrics of one monitor process."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MonitorMetrics:
    """The monitor's counters and gauges, registered in the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_consumed = Counter(
            "hbmon_monitor_records_consumed_total",
            "Heartbeat records read from Kafka.",
            registry=registry,
        )
        self.records_invalid = Counter(
            "hbmon_monitor_records_invalid_total",
            "Heartbeat records, and heartbeats in bundle records, that could not be "
            "decoded and were skipped.",
            registry=registry,
        )
        self.alerts_emitted = Counter(
            "hbmon_monitor_alerts_emitted_total",
            "Alert events published, by type.",
            ["type"],
            registry=registry,
        )
        self.alert_delivery_failures = Counter(
            "hbmon_monitor_alert_delivery_failures_total",
            "Alert events that the producer failed to deliver.",
            registry=registry,
        )
        self.devices_tracked = Gauge(
            "hbmon_monitor_devices_tracked",
            "Devices held in the shards of this process.",
            registry=registry,
        )
        self.devices_down = Gauge(
            "hbmon_monitor_devices_down",
            "Devices currently DOWN in the shards of this process.",
            registry=registry,
        )
        self.partitions_owned = Gauge(
            "hbmon_monitor_partitions_owned",
            "Heartbeat partitions assigned to this process.",
            registry=registry,
        )
        self.lag_records = Gauge(
            "hbmon_monitor_lag_records",
            "Records between the consumer position and the high watermark.",
            ["partition"],
            registry=registry,
        )
        self.clock_delay_seconds = Gauge(
            "hbmon_monitor_clock_delay_seconds",
            "How far a partition clock is behind the wall clock.",
            ["partition"],
            registry=registry,
        )
        self.alerts_held = Gauge(
            "hbmon_monitor_alerts_held",
            "DOWN alerts held back until a later record confirms them.",
            registry=registry,
        )
        self.partitions_degraded = Gauge(
            "hbmon_monitor_partitions_degraded",
            "Owned partitions in DEGRADED state (silent, suspected pipeline outage).",
            registry=registry,
        )
        self.broker_contact_lost = Gauge(
            "hbmon_monitor_broker_contact_lost",
            "1 while no broker leading an owned partition has responded for "
            "HBMON_MONITOR_CONTACT_TIMEOUT_MS, so no deadline is judged; else 0.",
            registry=registry,
        )
        self.broker_contact_losses = Counter(
            "hbmon_monitor_broker_contact_losses_total",
            "Times the monitor lost contact with the brokers leading its partitions.",
            registry=registry,
        )
        self.commits = Counter(
            "hbmon_monitor_commits_total",
            "Commits of alerts, changelog records and offsets, by outcome "
            "(committed, aborted, retried). Each is one Kafka transaction in "
            "exactly-once mode.",
            ["outcome"],
            registry=registry,
        )
        self.producer_restarts = Counter(
            "hbmon_monitor_producer_restarts_total",
            "Transactional producers replaced by a new one with the same "
            "transactional id, by reason (fatal_error, stalled_call, "
            "repeated_timeouts).",
            ["reason"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "hbmon_monitor_commit_seconds",
            "Time of one commit, from the first changelog record to the reply.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.changelog_records_written = Counter(
            "hbmon_monitor_changelog_records_written_total",
            "Records written to the state topic.",
            registry=registry,
        )
        self.changelog_records_invalid = Counter(
            "hbmon_monitor_changelog_records_invalid_total",
            "State topic records that could not be decoded and were skipped.",
            registry=registry,
        )
        self.restore_seconds = Histogram(
            "hbmon_monitor_restore_seconds",
            "Time to restore newly assigned partitions from the state topic.",
            buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=registry,
        )
        self.devices_restored = Counter(
            "hbmon_monitor_devices_restored_total",
            "Devices restored from the state topic.",
            registry=registry,
        )
        self.scan_seconds = Histogram(
            "hbmon_monitor_scan_seconds",
            "Time of one expiry scan over all owned shards.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )
