"""Alerter metrics in a registry of the test's own."""

import math

from prometheus_client import CollectorRegistry

from alerter.metrics import AlerterMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_start_at_zero() -> None:
    registry = CollectorRegistry()
    AlerterMetrics(registry)

    assert sample(registry, "hbmon_alerter_poison_records_total") == 0
    assert sample(registry, "hbmon_alerter_duplicates_skipped_total") == 0
    assert sample(registry, "hbmon_alerter_pending_records") == 0


def test_add_channel_creates_series_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = AlerterMetrics(registry)

    metrics.add_channel("oncall", "email", lambda: 3.0, lambda: 12.5)

    lane = {"receiver": "oncall", "channel": "email"}
    assert sample(registry, "hbmon_alerter_notifications_sent_total", **lane) == 0
    assert sample(registry, "hbmon_alerter_notifications_retried_total", **lane) == 0
    assert sample(registry, "hbmon_alerter_notifications_parked_total", **lane) == 0
    for kind in ("transient", "permanent"):
        value = sample(
            registry, "hbmon_alerter_notifications_failed_total", kind=kind, **lane
        )
        assert value == 0
    assert sample(registry, "hbmon_alerter_queue_depth", **lane) == 3.0
    assert sample(registry, "hbmon_alerter_oldest_pending_seconds", **lane) == 12.5


def test_last_send_age_nan_initially() -> None:
    registry = CollectorRegistry()
    AlerterMetrics(registry)

    value = sample(registry, "hbmon_alerter_seconds_since_last_send")

    assert value is not None
    assert math.isnan(value)


def test_record_sent_counts_and_restarts_age() -> None:
    registry = CollectorRegistry()
    metrics = AlerterMetrics(registry)
    metrics.add_channel("oncall", "email", lambda: 0.0, lambda: 0.0)

    metrics.record_sent("oncall", "email")

    age_s = sample(registry, "hbmon_alerter_seconds_since_last_send")
    sent = sample(
        registry,
        "hbmon_alerter_notifications_sent_total",
        receiver="oncall",
        channel="email",
    )
    assert sent == 1
    assert age_s is not None
    assert 0 <= age_s < 60
