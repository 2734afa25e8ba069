"""The alerter's consumer-group member: alert records in, notification mails out.

The worker handles one record at a time, in partition order, and commits a
record's offset only after its mail was accepted, parked or skipped. A
record whose delivery keeps failing is read again, never passed over.
"""

import enum
import logging
import threading
from datetime import UTC, datetime
from email.message import EmailMessage

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from alerter.backoff import Backoff
from alerter.dedup import RecentIds
from alerter.message import printable, render_message
from alerter.metrics import AlerterMetrics
from alerter.settings import AlerterSettings
from alerter.smtp import DeliveryError, SmtpMailer
from hbmon.events import AlertEvent, InvalidRecord, decode_alert
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog

logger = logging.getLogger(__name__)

# librdkafka's default max.poll.interval.ms; the consumer never uses less.
_MIN_POLL_INTERVAL_MS = 300_000


class Delivery(enum.Enum):
    """Outcome of delivering one record's mail."""

    SENT = "sent"
    PARKED = "parked"
    PENDING = "pending"


def create_consumer(kafka: KafkaSettings, settings: AlerterSettings) -> Consumer:
    """Create a consumer-group member that commits only on explicit commit() calls."""
    # The group removes a member that does not call poll() within
    # max.poll.interval.ms. One record's delivery attempts can keep the
    # worker from polling for up to delivery_budget_s, so the interval is
    # twice that, and never below librdkafka's default.
    poll_interval_ms = max(
        _MIN_POLL_INTERVAL_MS, int(2_000 * settings.delivery_budget_s)
    )
    return Consumer(
        kafka.client_config(
            group_id=settings.group_id,
            client_id="hbmon-alerter",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_interval_ms=poll_interval_ms,
        )
    )


def build_worker(
    kafka: KafkaSettings, settings: AlerterSettings, registry: CollectorRegistry
) -> "AlertWorker":
    """Create a worker with its own consumer, SMTP client and metrics in `registry`."""
    return AlertWorker(
        consumer=create_consumer(kafka, settings),
        mailer=SmtpMailer(settings),
        settings=settings,
        topic=kafka.alert_topic,
        metrics=AlerterMetrics(registry),
    )


class AlertWorker:
    """Consumer-group member that turns alert events into mails, one record per call.

    NOTE: the ids of mailed events are kept in memory only. After a
    restart, committed offsets alone prevent resends, so a mail whose
    offset commit was lost (a crash between the SMTP reply and the commit,
    or a rebalance) is sent again. Persisting recent ids, for example in a
    compacted topic, would close that gap.
    """

    def __init__(
        self,
        consumer: Consumer,
        mailer: SmtpMailer,
        settings: AlerterSettings,
        topic: str,
        metrics: AlerterMetrics,
    ) -> None:
        self.consumer = consumer
        self.mailer = mailer
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.recent_ids = RecentIds(settings.dedup_size)
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        # Transient failures since the last accepted or parked mail. It
        # survives re-reading a record, so the backoff keeps growing.
        self._failures = 0
        self._stopping = threading.Event()
        self._log_limit = RateLimitedLog()

    def start(self) -> None:
        """Subscribe to the alert topic."""
        self.consumer.subscribe(
            [self.topic], on_assign=_log_assigned, on_revoke=_log_revoked
        )
        logger.info(
            "Alerter started: group %s, topic %s, SMTP server %s (security %s)",
            self.settings.group_id,
            self.topic,
            self.mailer.address,
            self.settings.smtp_security,
        )

    def run(self, poll_timeout_s: float = 1.0) -> None:
        """Process records until stop() is called, then close the consumer."""
        self.start()
        try:
            while not self._stopping.is_set():
                self.process_one(poll_timeout_s)
        finally:
            self.close()

    def stop(self) -> None:
        """Make run() return after the current record. Safe in a signal handler."""
        self._stopping.set()

    def close(self) -> None:
        """Leave the consumer group and close the SMTP connection."""
        self.consumer.close()
        self.mailer.close()
        logger.info("Alerter stopped: group %s left", self.settings.group_id)

    def process_one(self, timeout_s: float) -> bool:
        """Poll for one record and handle it. Return True if a record arrived.

        A decoded event is mailed unless its id was mailed recently. The
        record's offset is committed synchronously once the mail was
        accepted or parked, or once the record was skipped as poison or as
        a duplicate. When delivery still fails after `max_attempts`
        attempts, or stop() was called, the consumer seeks back to the
        record, so the next call reads it again and no later offset of its
        partition is committed before it.

        Raises:
            KafkaException: the consumer hit a fatal error, or could not
                seek back to a record whose mail is still pending.
        """
        record = self.consumer.poll(timeout_s)
        if record is None:
            return False
        error = record.error()
        if error is not None:
            self._handle_consumer_error(error)
            return False

        # 1. Decode and render. A record that fails either is poison.
        try:
            event = decode_alert(record.value())
            message = render_message(
                event,
                sender=self.settings.sender,
                recipients=self.settings.recipients,
                now=datetime.now(UTC),
            )
        except InvalidRecord as err:
            self._skip_poison(record, err)
            return True

        # 2. Skip an event whose mail was sent already.
        if event.event_id in self.recent_ids:
            self.metrics.duplicates_skipped.inc()
            logger.info(
                "Skipping event %s for device %s: its mail was already sent",
                event.event_id,
                printable(event.device_id),
            )
            self._commit(record)
            return True

        # 3. Deliver, then commit unless the mail is still pending.
        if self._deliver(event, message) is Delivery.PENDING:
            self._seek_back(record)
            return True
        self._commit(record)
        return True

    def _deliver(self, event: AlertEvent, message: EmailMessage) -> Delivery:
        for attempt in range(1, self.settings.max_attempts + 1):
            if self._failures:
                self.metrics.mail_retries.inc()
            try:
                rejected = self.mailer.send(message)
            except DeliveryError as err:
                if not err.retriable:
                    self._park(event, err)
                    return Delivery.PARKED
                self._failures += 1
                self.metrics.mails_failed.labels(kind="transient").inc()
                delay_s = self.backoff.delay_s(self._failures)
                self._log_transient(event, err, attempt, delay_s)
                if self._stopping.wait(delay_s):
                    return Delivery.PENDING
                continue

            self._record_sent(event, rejected)
            return Delivery.SENT
        return Delivery.PENDING

    def _record_sent(
        self, event: AlertEvent, rejected: dict[str, tuple[int, bytes]]
    ) -> None:
        self._failures = 0
        self.recent_ids.add(event.event_id)
        self.metrics.record_sent()
        logger.info(
            "Mail sent for event %s (device %s, %s)",
            event.event_id,
            printable(event.device_id),
            event.type,
        )
        if rejected:
            logger.warning(
                "SMTP server rejected recipients %s of the mail for event %s; the "
                "others got it, so it is not sent again",
                "; ".join(
                    f"{address} ({code})" for address, (code, _) in rejected.items()
                ),
                event.event_id,
            )

    def _park(self, event: AlertEvent, err: DeliveryError) -> None:
        # NOTE: parking only logs and counts the event. A dead-letter topic
        # that keeps parked events for replay does not exist yet.
        self._failures = 0
        self.metrics.mails_failed.labels(kind="permanent").inc()
        logger.error(
            "SMTP server rejected the mail for event %s (device %s, %s) "
            "permanently: %s. Parking the event, so no mail is sent for it and "
            "its offset will be committed",
            event.event_id,
            printable(event.device_id),
            event.type,
            err,
        )

    def _log_transient(
        self, event: AlertEvent, err: DeliveryError, attempt: int, delay_s: float
    ) -> None:
        suppressed = self._log_limit.allow("transient")
        if suppressed is None:
            return
        logger.warning(
            "Delivery of the mail for event %s (device %s) failed: %s; attempt "
            "%d of %d for this read, will retry in %.2f s%s",
            event.event_id,
            printable(event.device_id),
            err,
            attempt,
            self.settings.max_attempts,
            delay_s,
            _suppressed_note(suppressed),
        )

    def _skip_poison(self, record: Message, err: InvalidRecord) -> None:
        self.metrics.poison_records.inc()
        suppressed = self._log_limit.allow("poison")
        if suppressed is not None:
            logger.warning(
                "Skipping poison record %s[%d] at offset %d: invalid %s; its "
                "offset will be committed%s",
                record.topic(),
                record.partition(),
                record.offset(),
                err,
                _suppressed_note(suppressed),
            )
        self._commit(record)

    def _commit(self, record: Message) -> None:
        try:
            self.consumer.commit(message=record, asynchronous=False)
        except KafkaException as err:
            logger.warning(
                "Committing offset %d of %s[%d] failed: %s; continuing. If the "
                "partition is reassigned before a later commit succeeds, the "
                "record is read again and its mail sent twice",
                record.offset(),
                record.topic(),
                record.partition(),
                err,
            )

    def _seek_back(self, record: Message) -> None:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError(
                f"cannot seek back to a record without a position: {record}"
            )
        try:
            self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException:
            logger.error(
                "Seeking back to offset %d of %s[%d] failed; exiting, so that a "
                "restart resumes from the committed offset and skips no mail",
                offset,
                topic,
                partition,
            )
            raise

    def _handle_consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        suppressed = self._log_limit.allow("consumer")
        if suppressed is not None:
            logger.warning(
                "Consumer error on topic %s: %s; will keep polling%s",
                self.topic,
                error,
                _suppressed_note(suppressed),
            )


def _suppressed_note(suppressed: int) -> str:
    return f" ({suppressed} similar lines suppressed)" if suppressed else ""


def _log_assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    logger.info("Assigned partitions: %s", _describe(partitions))


def _log_revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    logger.info("Revoked partitions: %s", _describe(partitions))


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"
