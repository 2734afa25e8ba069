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
            "Heartbeat records that could not be decoded and were skipped.",
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
        self.scan_seconds = Histogram(
            "hbmon_monitor_scan_seconds",
            "Time of one expiry scan over all owned shards.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )
