"""The alerter's consumer-group member: alert records in, notifications out.

One unit of work (process_one) reads a batch of records and decides, for
each, what to notify (DeviceBook) and puts it into its groups (Grouper).
It then hands the groups whose wait is over to the channel lanes
(Dispatcher), and once a second reviews silences, flapping and reminders.
Last, it writes changed device state and commits the offsets below the
lowest unsettled record (OffsetLedger). Channel lanes deliver in their own
threads, so a failing receiver never stops this loop.
"""

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from alerter.backoff import Backoff
from alerter.config import RoutingConfig, default_config, load_config
from alerter.deadletter import DeadLetters
from alerter.dedup import RecentIds
from alerter.devices import DeviceBook, Verdict, decode_state
from alerter.dispatch import Dispatcher, Lane, build_channel
from alerter.grouping import Grouper
from alerter.ledger import OffsetLedger, RecordRef
from alerter.message import printable
from alerter.metrics import AlerterMetrics
from alerter.notification import Item, Kind, kind_of
from alerter.routing import Route
from alerter.sentlog import SentLog
from alerter.settings import AlerterSettings
from alerter.silences import Silence, SilenceStore, decode_silence
from alerter.tables import TopicReader, TopicWriter, create_producer
from alerter.topics import ensure_alerter_topics
from hbmon.events import MONITORING_TYPES, AlertEvent, InvalidRecord, decode_alert
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog

logger = logging.getLogger(__name__)

_BATCH_RECORDS = 500
_REVIEW_INTERVAL_S = 1.0
_COMMIT_INTERVAL_S = 0.5
_CATCH_UP_TIMEOUT_S = 60.0
_FLUSH_TIMEOUT_S = 10.0


@dataclass
class Stores:
    """The alerter's topics: writers, readers and their in-memory views."""

    producer: Producer | None
    sent_log: SentLog
    dead_letters: DeadLetters
    silences: SilenceStore
    state_writer: TopicWriter | None = None
    silence_writer: TopicWriter | None = None
    state_reader: TopicReader | None = None
    sent_reader: TopicReader | None = None
    silence_reader: TopicReader | None = None
    readers: list[TopicReader] = field(default_factory=list)


def create_consumer(kafka: KafkaSettings, settings: AlerterSettings) -> Consumer:
    """Create a consumer-group member that commits only on explicit commit() calls."""
    extra = {"group_instance_id": settings.instance_id} if settings.instance_id else {}
    return Consumer(
        kafka.client_config(
            group_id=settings.group_id,
            client_id="hbmon-alerter",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **extra,
        )
    )


def load_routing(
    settings: AlerterSettings, environ: Mapping[str, str] | None = None
) -> RoutingConfig:
    """Load the routes file, or the single default route when none is set.

    Raises:
        ConfigError: the routes file breaks a rule.
    """
    if not settings.routes_file:
        return default_config(settings)
    return load_config(
        settings.routes_file, settings, os.environ if environ is None else environ
    )


def build_worker(
    kafka: KafkaSettings,
    settings: AlerterSettings,
    registry: CollectorRegistry,
    config: RoutingConfig | None = None,
) -> "AlertWorker":
    """Create the alerter's topics and a worker with its own clients and metrics.

    Raises:
        ConfigError: the routes file breaks a rule.
        KafkaException: the topics cannot be created.
    """
    config = config or load_routing(settings)
    ensure_alerter_topics(kafka, settings)
    producer = create_producer(kafka)
    silences = SilenceStore(config.silences)
    stores = Stores(
        producer=producer,
        sent_log=SentLog(TopicWriter(producer, settings.sent_topic)),
        dead_letters=DeadLetters(TopicWriter(producer, settings.dead_letter_topic)),
        silences=silences,
        state_writer=TopicWriter(producer, settings.state_topic),
        silence_writer=TopicWriter(producer, settings.silence_topic),
    )
    return AlertWorker(
        consumer=create_consumer(kafka, settings),
        kafka=kafka,
        settings=settings,
        config=config,
        stores=stores,
        metrics=AlerterMetrics(registry),
    )


class AlertWorker:
    """Consumer-group member that turns alert events into notifications.

    process_one() is the unit of work; run() loops around it. start()
    reads the alerter's topics and subscribes; close() stops the lanes,
    commits what is settled and leaves the group.
    """

    def __init__(
        self,
        consumer: Consumer,
        kafka: KafkaSettings,
        settings: AlerterSettings,
        config: RoutingConfig,
        stores: Stores,
        metrics: AlerterMetrics,
    ) -> None:
        self.consumer = consumer
        self.kafka = kafka
        self.topic = kafka.alert_topic
        self.settings = settings
        self.config = config
        self.router = config.router
        self.stores = stores
        self.metrics = metrics
        self.ledger = OffsetLedger()
        self.grouper = Grouper(self.ledger)
        self.book = DeviceBook(config.flapping)
        self.recent_ids = RecentIds(settings.dedup_size)
        self.dispatcher = self._build_dispatcher()
        self._assigned: set[int] = set()
        self._next_review_s = 0.0
        self._next_commit_s = 0.0
        self._stopping = threading.Event()
        self._log_limit = RateLimitedLog()

    @property
    def silences(self) -> SilenceStore:
        return self.stores.silences

    @property
    def assigned_partitions(self) -> set[int]:
        """The partitions of the alert topic this member owns now."""
        return set(self._assigned)

    def start(self) -> None:
        """Read the sent log, device state and silences, start the lanes, subscribe.

        Raises:
            StateError: an alerter topic could not be read to its end.
        """
        self._start_readers()
        self.dispatcher.start()
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        logger.info(
            "Alerter started: group %s, topic %s, %d routes plus the default, "
            "%d receivers, SMTP server %s:%d (security %s)",
            self.settings.group_id,
            self.topic,
            len(self.router.routes),
            len(self.router.receivers),
            self.settings.smtp_host,
            self.settings.smtp_port,
            self.settings.smtp_security,
        )

    def run(self, poll_timeout_s: float = 1.0) -> None:
        """Process records until stop() is called, then close."""
        self.start()
        try:
            while not self._stopping.is_set():
                self.process_one(poll_timeout_s)
        finally:
            self.close()

    def stop(self) -> None:
        """Make run() return after the current unit of work; signal-handler safe."""
        self._stopping.set()

    def close(self) -> None:
        """Stop the lanes, commit settled offsets, leave the group, close clients."""
        # NOTE: a lane still waiting for the reply to the end of DATA (up to
        # HBMON_SMTP_DATA_TIMEOUT_S) is not waited for. If the server accepts
        # that mail anyway, the sent log misses it and a restart sends it again.
        self.dispatcher.stop(timeout_s=self.settings.smtp_timeout_s + 1.0)
        self._persist_state()
        self._commit(force=True)
        self.consumer.close()
        for reader in self.stores.readers:
            reader.close()
        if self.stores.producer is not None:
            self.stores.producer.flush(_FLUSH_TIMEOUT_S)
        logger.info("Alerter stopped: group %s left", self.settings.group_id)

    def process_one(self, timeout_s: float) -> bool:
        """Read up to one batch of records and move every stage forward once.

        Waits at most `timeout_s`, and less when a group is due sooner.
        Return True if records arrived.

        Raises:
            KafkaException: the consumer hit a fatal error.
            StateError: an alerter topic could not be read after a rebalance.
        """
        # 1. Read and decide.
        records = self.consumer.consume(_BATCH_RECORDS, self._wait_s(timeout_s))
        if self._stopping.is_set():
            # Records left unhandled are not committed, so a restart reads them.
            return False
        for record in records:
            self._handle_record(record)
        if self.stores.silence_reader is not None:
            self.stores.silence_reader.poll()
        if self.stores.producer is not None:
            # librdkafka's log lines reach the log only when the producer is
            # polled, and without writes they would wait, then carry a later time.
            self.stores.producer.poll(0)

        # 2. Review held-back notifications and reminders, then send due groups.
        now_s = time.monotonic()
        if now_s >= self._next_review_s:
            self._next_review_s = now_s + _REVIEW_INTERVAL_S
            self._review(now_s)
        self._flush_groups(now_s)

        # 3. Persist device state, then commit what is settled.
        self._persist_state()
        self._commit()
        self.metrics.pending_records.set(self.ledger.pending_count())
        self.metrics.grouped_items.set(self.grouper.pending_items())
        return bool(records)

    def _handle_record(self, record: Message) -> None:
        error = record.error()
        if error is not None:
            self._handle_consumer_error(error)
            return
        partition, offset = record.partition(), record.offset()
        if partition is None or offset is None or partition not in self._assigned:
            return
        ref = self.ledger.read(partition, offset)
        try:
            event = decode_alert(record.value())
        except InvalidRecord as err:
            self._skip_poison(record, err)
        else:
            self._handle_event(event, partition, ref)
        finally:
            self.ledger.release(ref)

    def _handle_event(self, event: AlertEvent, partition: int, ref: RecordRef) -> None:
        now_s = time.monotonic()
        now_ms = int(time.time() * 1000)

        # Monitoring events concern a partition of the heartbeat topic, not a
        # device: no silences, flapping or reminders, only deduplication.
        if event.type in MONITORING_TYPES:
            if event.event_id in self.recent_ids:
                self.metrics.duplicates_skipped.inc()
            self.recent_ids.add(event.event_id)
            item = Item(kind_of(event), event.event_id, event)
            for route in self.router.routes_for(event):
                self._group(route, item, [ref], now_s)
            return

        silence = self.silences.silencing(event, now_ms)
        decision = self.book.apply(event, partition, now_ms, silence is not None)
        if decision.duplicate:
            self.metrics.duplicates_skipped.inc()
        else:
            self.metrics.events.labels(decision.verdict.value).inc()
            self._log_decision(event, decision.verdict, silence)
        if decision.item is not None:
            for route in self.router.routes_for(event):
                self._group(route, decision.item, [ref], now_s)

    def _review(self, now_s: float) -> None:
        now_ms = int(time.time() * 1000)
        items = self.book.review(
            now_ms,
            owned=self._assigned.__contains__,
            is_silenced=lambda event: (
                self.silences.silencing(event, now_ms) is not None
            ),
            repeat_interval_s=self.router.repeat_interval_s,
        )
        for item in items:
            for route in self._routes_for_item(item):
                self._group(route, item, [], now_s)
            logger.info(
                "Device %s: sending %s notification held back or due (%s)",
                printable(item.event.device_id),
                item.kind.name,
                item.key,
            )
        self._drop_stale_silences(now_ms)

    def _group(
        self, route: Route, item: Item, refs: list[RecordRef], now_s: float
    ) -> None:
        cancelled = self.grouper.add(route, item, refs, now_s)
        if cancelled is None:
            return
        for removed in cancelled.pair + cancelled.stale:
            self.metrics.cancelled.labels(removed.kind.value).inc()
        if cancelled.pair:
            now_ms = int(time.time() * 1000)
            if not self.dispatcher.cancel(route, cancelled.pair, now_ms):
                logger.warning(
                    "The broker did not acknowledge within 10 s that events %s were "
                    "cancelled; continuing, but a restart before they land may send "
                    "them",
                    ", ".join(removed.key for removed in cancelled.pair),
                )
            self._log_cancelled(route, cancelled.pair)

    def _log_cancelled(self, route: Route, pair: tuple[Item, ...]) -> None:
        suppressed = self._log_limit.allow("cancelled")
        if suppressed is None:
            return
        first, second = pair
        logger.info(
            "Device %s: %s event %s and %s event %s both cancelled on route %s, "
            "because the device changed state again before the first was sent; "
            "the last state sent stays true%s",
            printable(first.event.device_id),
            first.kind.name,
            first.key,
            second.kind.name,
            second.key,
            route.name,
            _suppressed_note(suppressed),
        )

    def _routes_for_item(self, item: Item) -> list[Route]:
        routes = self.router.routes_for(item.event)
        if item.kind is Kind.REMINDER:
            return [r for r in routes if r.timing.repeat_interval_s > 0]
        return routes

    def _flush_groups(self, now_s: float) -> None:
        for batch in self.grouper.due(now_s):
            route = self.router.route_named(batch.notification.route)
            queued = 0
            if route is not None:
                queued = self.dispatcher.dispatch(route, batch.notification, batch.refs)
            if queued == 0:
                self.grouper.reopen(batch)
            self.grouper.release(batch)

    def _wait_s(self, timeout_s: float) -> float:
        next_flush_s = self.grouper.next_flush_s()
        if next_flush_s is None:
            return timeout_s
        return max(0.0, min(timeout_s, next_flush_s - time.monotonic()))

    def _persist_state(self) -> None:
        writer = self.stores.state_writer
        for device_id, state in self.book.take_dirty():
            if writer is not None:
                writer.write(device_id, None if state is None else state.encode())

    def _commit(self, force: bool = False) -> None:
        now_s = time.monotonic()
        if not force and now_s < self._next_commit_s:
            return
        self._next_commit_s = now_s + _COMMIT_INTERVAL_S
        positions = self.ledger.committable()
        if not positions:
            return

        # State and sent-log records must reach the broker before the offsets
        # that make their records unreadable after a restart.
        producer = self.stores.producer
        if producer is not None and producer.flush(_FLUSH_TIMEOUT_S) > 0:
            logger.warning(
                "State records were not acknowledged within %.0f s; not committing "
                "offsets yet, will retry",
                _FLUSH_TIMEOUT_S,
            )
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in positions.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            logger.warning(
                "Committing offsets %s of %s failed: %s; will retry. Until a commit "
                "succeeds, a restart reads those records again, and the sent log "
                "keeps their notifications from being sent twice",
                positions,
                self.topic,
                err,
            )
            return
        self.ledger.mark_committed(positions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        logger.info("Assigned partitions: %s", _describe(partitions))
        self.ledger.assign(numbers)
        for reader in (self.stores.state_reader, self.stores.sent_reader):
            if reader is None:
                continue
            if reader.catch_up(_CATCH_UP_TIMEOUT_S, self._stopping) is None:
                # The alerter is stopping, so nothing is decided from a partial state.
                return
        self._assigned.update(numbers)

        # Send again what was decided for these devices before a restart or
        # a rebalance and is not sent yet. Notices that the sent log lists
        # for every lane only rebuild state, so they open no group.
        since_ms = int((time.time() - self.settings.sent_retention_s / 2) * 1000)
        now_s = time.monotonic()
        for item in self.book.notices(numbers, since_ms):
            for route in self._routes_for_item(item):
                if not self.dispatcher.was_sent(route, item):
                    self._group(route, item, [], now_s)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = set(tp.partition for tp in partitions)
        logger.info("Revoked partitions: %s", _describe(partitions))
        self._persist_state()
        self._commit(force=True)
        # NOTE: notifications already queued in lanes still go out from here.
        # The new owner skips them only if their sent-log records reach it
        # before it reads the records again; otherwise they are sent twice.
        # Only a rebalance between two live alerters opens this window.
        dropped = self.grouper.drop_partitions(numbers)
        if dropped:
            logger.info(
                "Dropped %d grouped items of revoked partitions; their new owner "
                "reads them again",
                dropped,
            )
        self.ledger.revoke(list(numbers))
        self._assigned.difference_update(numbers)
        if self.stores.producer is not None:
            self.stores.producer.flush(_FLUSH_TIMEOUT_S)

    def _start_readers(self) -> None:
        stores = self.stores
        if stores.producer is None:
            return
        readers = {
            "state": (self.settings.state_topic, self._apply_state),
            "sent": (self.settings.sent_topic, stores.sent_log.apply),
            "silence": (self.settings.silence_topic, self._apply_silence),
        }
        for name, (topic, apply) in readers.items():
            reader = TopicReader(self.kafka, topic, apply)
            reader.start(_CATCH_UP_TIMEOUT_S)
            count = reader.catch_up(_CATCH_UP_TIMEOUT_S)
            logger.info("Read %d records from topic %s", count, topic)
            setattr(stores, f"{name}_reader", reader)
            stores.readers.append(reader)

    def _apply_state(self, device_id: str, value: bytes | None) -> None:
        if value is None:
            self.book.load(device_id, None)
            return
        try:
            self.book.load(device_id, decode_state(value))
        except (ValueError, KeyError, TypeError) as err:
            logger.warning(
                "Skipping invalid state record of device %s: %s; the device starts "
                "with no alert state",
                printable(device_id),
                err,
            )

    def _apply_silence(self, silence_id: str, value: bytes | None) -> None:
        if value is None:
            self.silences.remove(silence_id)
            return
        try:
            silence = decode_silence(value)
        except ValueError as err:
            self.metrics.invalid_silences.inc()
            logger.warning(
                "Skipping invalid silence record %s: %s; it silences nothing",
                printable(silence_id),
                err,
            )
            return
        # Silences only end earlier over time (expire), so keep the earliest
        # end: an older record read after an expiry must not revive it.
        current = self.silences.get(silence_id)
        if current is not None and current.ends_ms < silence.ends_ms:
            return
        self.silences.put(silence)

    def _drop_stale_silences(self, now_ms: int) -> None:
        for silence_id in self.silences.stale_ids(now_ms):
            self.silences.remove(silence_id)
            if self.stores.silence_writer is not None:
                self.stores.silence_writer.write(silence_id, None)

    def _build_dispatcher(self) -> Dispatcher:
        lanes: dict[str, list[Lane]] = {}
        for name, receiver in self.router.receivers.items():
            lanes[name] = [
                Lane(
                    name,
                    build_channel(channel, self.settings, self.kafka.heartbeat_topic),
                    sent_log=self.stores.sent_log,
                    dead_letters=self.stores.dead_letters,
                    ledger=self.ledger,
                    metrics=self.metrics,
                    backoff=Backoff(
                        self.settings.backoff_initial_s, self.settings.backoff_max_s
                    ),
                    retry_for_s=self.settings.retry_for_s,
                )
                for channel in receiver.channels
            ]
        return Dispatcher(self.router, lanes)

    def _log_decision(
        self, event: AlertEvent, verdict: Verdict, silence: Silence | None
    ) -> None:
        if verdict is Verdict.NOTIFY:
            return
        silence_id = silence.silence_id if silence is not None else "?"
        reason = {
            Verdict.SILENCED: f"silenced by silence {silence_id}; it is sent if the "
            "device is still in this state when the silence ends",
            Verdict.FLAPPING_NOTICE: "the device is flapping; one flapping notice is "
            "sent and its mails are held until it is stable",
            Verdict.HELD_FLAPPING: "held while the device is flapping",
            Verdict.UNNOTIFIED: "its DOWN was never sent, so the recovery is not sent",
        }[verdict]
        logger.info(
            "Event %s (device %s, %s) recorded, not sent now: %s",
            event.event_id,
            printable(event.device_id),
            event.type,
            reason,
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

    def _handle_consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        if error.code() == KafkaError._PARTITION_EOF:
            return
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


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"
