"""Alerter metrics in a registry of the test's own."""

import math

from prometheus_client import CollectorRegistry

from alerter.metrics import AlerterMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_start_at_zero() -> None:
    registry = CollectorRegistry()
    AlerterMetrics(registry)

    assert sample(registry, "hbmon_alerter_mails_sent_total") == 0
    assert sample(registry, "hbmon_alerter_mails_failed_total", kind="transient") == 0
    assert sample(registry, "hbmon_alerter_mails_failed_total", kind="permanent") == 0
    assert sample(registry, "hbmon_alerter_mail_retries_total") == 0
    assert sample(registry, "hbmon_alerter_poison_records_total") == 0
    assert sample(registry, "hbmon_alerter_duplicates_skipped_total") == 0


def test_last_send_age_nan_initially() -> None:
    registry = CollectorRegistry()
    AlerterMetrics(registry)

    value = sample(registry, "hbmon_alerter_seconds_since_last_send")

    assert value is not None
    assert math.isnan(value)


def test_record_sent_counts_and_restarts_age() -> None:
    registry = CollectorRegistry()
    metrics = AlerterMetrics(registry)

    metrics.record_sent()

    age_s = sample(registry, "hbmon_alerter_seconds_since_last_send")
    assert sample(registry, "hbmon_alerter_mails_sent_total") == 1
    assert age_s is not None
    assert 0 <= age_s < 60
