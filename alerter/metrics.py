"""Prometheus metrics of the alerter, registered in a registry the caller owns."""

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class AlerterMetrics:
    """Counters of mails and skipped records, and the age of the last sent mail."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mails_sent = Counter(
            "hbmon_alerter_mails_sent",
            "Mails that the SMTP server accepted.",
            registry=registry,
        )
        self.mails_failed = Counter(
            "hbmon_alerter_mails_failed",
            "Failed delivery attempts, by kind: transient (retried) or "
            "permanent (record parked).",
            ["kind"],
            registry=registry,
        )
        self.mail_retries = Counter(
            "hbmon_alerter_mail_retries",
            "Delivery attempts repeated after a transient failure.",
            registry=registry,
        )
        self.poison_records = Counter(
            "hbmon_alerter_poison_records",
            "Records on the alert topic that could not be decoded and were skipped.",
            registry=registry,
        )
        self.duplicates_skipped = Counter(
            "hbmon_alerter_duplicates_skipped",
            "Events skipped because a mail for their event id was already sent.",
            registry=registry,
        )
        self._last_sent_monotonic = math.nan
        Gauge(
            "hbmon_alerter_seconds_since_last_send",
            "Seconds since the SMTP server last accepted a mail; NaN before the "
            "first mail.",
            registry=registry,
        ).set_function(self._seconds_since_last_send)

        # Create the labelled series up front, so they read 0 before any failure.
        for kind in ("transient", "permanent"):
            self.mails_failed.labels(kind=kind)

    def record_sent(self) -> None:
        """Count one accepted mail and restart the age gauge."""
        self.mails_sent.inc()
        self._last_sent_monotonic = time.monotonic()

    def _seconds_since_last_send(self) -> float:
        return time.monotonic() - self._last_sent_monotonic
