"""Prometheus metrics of the alerter, registered in a registry the caller owns.

Delivery metrics carry `receiver` and `channel` labels: one series per
channel of each receiver in the routes file.
"""

import math
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

FAILURE_KINDS = ("transient", "permanent")


class AlerterMetrics:
    """Counters of events, verdicts and deliveries, and gauges of what is pending."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.poison_records = Counter(
            "hbmon_alerter_poison_records",
            "Records on the alert topic that could not be decoded and were skipped.",
            registry=registry,
        )
        self.invalid_silences = Counter(
            "hbmon_alerter_invalid_silences",
            "Stored silences skipped because their record is invalid.",
            registry=registry,
        )
        self.duplicates_skipped = Counter(
            "hbmon_alerter_duplicates_skipped",
            "Events read again whose notification was already decided.",
            registry=registry,
        )
        self.events = Counter(
            "hbmon_alerter_events",
            "Alert events handled, by verdict: notify, flapping-notice, "
            "held-flapping, silenced, unnotified-recovery.",
            ["verdict"],
            registry=registry,
        )
        self.cancelled = Counter(
            "hbmon_alerter_notifications_cancelled",
            "Unsent notification items dropped because the device changed state "
            "again before they left their group, by kind: DOWN, RECOVERED, STILL "
            "DOWN.",
            ["kind"],
            registry=registry,
        )
        self.sent = Counter(
            "hbmon_alerter_notifications_sent",
            "Notifications the receiver accepted.",
            ["receiver", "channel"],
            registry=registry,
        )
        self.failed = Counter(
            "hbmon_alerter_notifications_failed",
            "Failed delivery attempts, by kind: transient (retried) or permanent "
            "(parked).",
            ["receiver", "channel", "kind"],
            registry=registry,
        )
        self.retried = Counter(
            "hbmon_alerter_notifications_retried",
            "Delivery attempts repeated after a transient failure.",
            ["receiver", "channel"],
            registry=registry,
        )
        self.parked = Counter(
            "hbmon_alerter_notifications_parked",
            "Notifications written to the dead-letter topic instead of delivered.",
            ["receiver", "channel"],
            registry=registry,
        )
        self._queue_depth = Gauge(
            "hbmon_alerter_queue_depth",
            "Notifications waiting in a channel's queue, the one in progress included.",
            ["receiver", "channel"],
            registry=registry,
        )
        self._oldest_pending = Gauge(
            "hbmon_alerter_oldest_pending_seconds",
            "Age of the oldest notification in a channel's queue; 0 when empty.",
            ["receiver", "channel"],
            registry=registry,
        )
        self.pending_records = Gauge(
            "hbmon_alerter_pending_records",
            "Records read but not yet settled, so their offsets are not committed.",
            registry=registry,
        )
        self.grouped_items = Gauge(
            "hbmon_alerter_grouped_items",
            "Items waiting in groups for their group wait or interval to pass.",
            registry=registry,
        )
        self._last_sent_monotonic = math.nan
        self._lock = threading.Lock()
        Gauge(
            "hbmon_alerter_seconds_since_last_send",
            "Seconds since a receiver last accepted a notification; NaN before the "
            "first.",
            registry=registry,
        ).set_function(self._seconds_since_last_send)

    def add_channel(
        self,
        receiver: str,
        channel: str,
        depth: Callable[[], float],
        oldest_s: Callable[[], float],
    ) -> None:
        """Create a channel's series at zero and attach its queue gauges."""
        self.sent.labels(receiver, channel)
        self.retried.labels(receiver, channel)
        self.parked.labels(receiver, channel)
        for kind in FAILURE_KINDS:
            self.failed.labels(receiver, channel, kind)
        self._queue_depth.labels(receiver, channel).set_function(depth)
        self._oldest_pending.labels(receiver, channel).set_function(oldest_s)

    def record_sent(self, receiver: str, channel: str) -> None:
        """Count one accepted notification and restart the age gauge."""
        self.sent.labels(receiver, channel).inc()
        with self._lock:
            self._last_sent_monotonic = time.monotonic()

    def _seconds_since_last_send(self) -> float:
        with self._lock:
            return time.monotonic() - self._last_sent_monotonic
