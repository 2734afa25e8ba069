"""The monitor process: one consumer-group member on the heartbeat topic.

The member keeps one PartitionState per assigned partition, restored from
the state topic before anything is judged. It feeds heartbeats into them,
and on every tick judges the deadlines that each partition's own clock has
passed. Alert events, changelog records and consumer offsets commit
together, in one Kafka transaction per commit interval in exactly-once mode.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from hbmon.events import (
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    AlertEvent,
    InvalidRecord,
    decode_heartbeats,
)
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from monitor.alerts import partition_subject
from monitor.clock import PartitionClock
from monitor.contact import STATS_INTERVAL_MS
from monitor.contact_watch import ContactWatch
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.outage import OutageRule
from monitor.partition import PartitionState
from monitor.pool import OutagePool
from monitor.restore import restore_partitions
from monitor.settings import MonitorSettings
from monitor.shard import Shard
from monitor.transaction import (
    COMMIT_RETRY_S,
    CONSUMER_REQUEST_TIMEOUT_MS,
    OutputTransaction,
)

logger = logging.getLogger(__name__)

CONSUME_BATCH = 5000
KAFKA_TIMEOUT_S = 10.0
# Errors of the group coordinator that last only until it is elected or loaded.
_COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def position_of(message: Message) -> tuple[int, int]:
    """Return the partition and offset of a record or partition-EOF event."""
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None
    return partition, offset


class MonitorWorker:
    """One member of the monitor consumer group.

    `step()` does one unit of work (read a batch, tick and commit when due)
    and is what tests drive; `run()` loops over it until stopped. The worker
    owns the consumer and the partition states. The OutputTransaction owns
    the producer, commits, aborts and producer restarts, and the
    ContactWatch pauses judging while the partition leaders are unreachable.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: MonitorSettings,
        metrics: MonitorMetrics,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.metrics = metrics
        self.rule = OutageRule(settings.outage_share, settings.outage_min_devices)
        self.pool = OutagePool(self.rule)
        self._next_offsets: dict[int, int] = {}
        self._next_tick_ms = 0
        self._next_commit_ms = 0
        self._transaction = OutputTransaction(kafka, settings, metrics, self.pool)
        self._log_limit = RateLimitedLog()
        self._consumer: Consumer | None = None
        self._contact = ContactWatch(
            kafka.heartbeat_topic,
            wall_clock_ms(),
            settings.contact_timeout_ms,
            metrics,
            self.pool,
        )

    @property
    def partitions(self) -> dict[int, PartitionState]:
        """The owned partitions, which are also the members of the outage pool."""
        return self.pool.partitions

    @partitions.setter
    def partitions(self, states: dict[int, PartitionState]) -> None:
        self.pool.partitions = states

    # Lifecycle

    def start(self) -> None:
        """Check the state topic, start the producer and join the group.

        Raises:
            MonitorError: the state topic is missing or has too few
                partitions, or the transactional producer did not start.
        """
        self._check_state_topic()
        self._transaction.start()
        self._contact.follow_consumer(wall_clock_ms())
        config = self.kafka.client_config(
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_partition_eof=True,
            partition_assignment_strategy="cooperative-sticky",
            session_timeout_ms=self.settings.session_timeout_ms,
            socket_timeout_ms=CONSUMER_REQUEST_TIMEOUT_MS,
            statistics_interval_ms=STATS_INTERVAL_MS,
        )
        config["stats_cb"] = self._contact.on_stats
        self._consumer = Consumer(config)
        self._consumer.subscribe(
            [self.kafka.heartbeat_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info(
            "Monitor started: group %s, topic %s, alerts to %s, state in %s, "
            "%s, broker %s",
            self.settings.group_id,
            self.kafka.heartbeat_topic,
            self.kafka.alert_topic,
            self.kafka.state_topic_name,
            self._mode(),
            self.kafka.bootstrap_servers,
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def close(self, commit: bool = True) -> None:
        """Commit the work done so far, leave the group and stop the producer.

        With `commit` false, the open transaction is aborted instead.
        """
        transaction = self._transaction
        if not commit:
            # Revoking in consumer.close() must not commit either.
            transaction.reset_needed = True
        if self._consumer is not None:
            if self.partitions and not transaction.reset_needed:
                transaction.commit_with_retries(self._consumer, "close")
            self._consumer.close()
            self._consumer = None
        transaction.close()
        logger.info("Monitor stopped")

    # Unit of work

    def step(self) -> bool:
        """Read one batch of heartbeats, then tick and commit when due.

        Returns whether a full batch was read, so more may be waiting.

        Raises:
            MonitorError: a fatal error; the process should exit.
        """
        transaction = self._transaction
        producer = transaction.producer
        assert self._consumer is not None and producer is not None
        # Checked before the retries below, which return early for as long
        # as the brokers are away, so that the loss shows within about the
        # contact timeout. No statistics arrive without consume(), so the
        # last contact stays where it was and contact stays lost until then.
        self._contact.check(wall_clock_ms())
        # NOTE: while an abort or commit keeps failing, nothing is read. A
        # broker outage longer than max.poll.interval.ms (300 s) makes the
        # member leave the group. It rejoins and restores when it is back.
        transaction.restarts.check(producer)
        if transaction.restarts.pending and not transaction.restarts.restart(producer):
            time.sleep(COMMIT_RETRY_S)
            return False
        if transaction.reset_needed and not self._reset():
            time.sleep(COMMIT_RETRY_S)
            return False
        if transaction.commit_pending and not self.commit():
            time.sleep(COMMIT_RETRY_S)
            return False
        wait_s = max(0.0, (self._next_tick_ms - wall_clock_ms()) / 1000)
        messages = self._consumer.consume(CONSUME_BATCH, timeout=min(wait_s, 0.2))
        self._contact.check(wall_clock_ms())
        self._apply(messages)
        now_ms = wall_clock_ms()
        if now_ms >= self._next_tick_ms:
            self.tick(now_ms)
            self._next_tick_ms = now_ms + self.settings.tick_ms
        if now_ms >= self._next_commit_ms and not transaction.reset_needed:
            self.commit()
            self._next_commit_ms = now_ms + self.settings.commit_interval_ms
        producer.poll()
        return len(messages) == CONSUME_BATCH

    def tick(self, wall_ms: int) -> None:
        """Advance each partition clock and judge the deadlines it passed."""
        started = time.perf_counter()
        self._advance_caught_up_clocks(wall_ms)
        for partition, state in self.partitions.items():
            events = state.judge(state.clock.now_ms)
            for event in events:
                self._emit(partition, event)
            if events:
                logger.info(
                    "Partition %d judged at clock %d ms: %s; %d DOWNs held",
                    partition,
                    state.clock.now_ms,
                    describe_counts(Counter(event.type for event in events)),
                    len(state.held_downs),
                )
        self.metrics.scan_seconds.observe(time.perf_counter() - started)
        self._update_gauges()

    # Heartbeats

    def _apply(self, messages: Sequence[Message]) -> None:
        consumed = 0
        emitted: dict[int, Counter[str]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._note_consumer_error(message, error)
                continue
            partition, offset = position_of(message)
            self._next_offsets[partition] = offset + 1
            state = self.partitions.get(partition)
            if state is None:
                continue
            consumed += 1
            types = self._apply_one(state, message)
            if types:
                emitted.setdefault(partition, Counter()).update(types)
        self.metrics.records_consumed.inc(consumed)
        for partition, counts in sorted(emitted.items()):
            logger.info(
                "Partition %d emitted on heartbeats read: %s",
                partition,
                describe_counts(counts),
            )

    def _apply_one(self, state: PartitionState, message: Message) -> list[str]:
        """Apply the heartbeat in a record, or each heartbeat of a bundle record.

        All heartbeats of a bundle take the record's timestamp (the broker's
        append time). Ingest bundles what it accepted between two polls of
        its producer, a few milliseconds apart. Returns the type of each
        event emitted, such as DEVICE_RECOVERED.
        """
        timestamp_type, record_ms = message.timestamp()
        try:
            if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
                raise InvalidRecord("timestamp", "the record has no timestamp")
            records = decode_heartbeats(message.value())
        except InvalidRecord as err:
            self._skip_invalid(message, err)
            return []
        types: list[str] = []
        for record in records:
            if isinstance(record, InvalidRecord):
                self._skip_invalid(message, record)
                continue
            if record.device_id.startswith("\x00"):
                self._skip_invalid(
                    message,
                    InvalidRecord("device_id", "must not start with a NUL character"),
                )
                continue
            timeout_ms = self.settings.declared_timeout_ms(
                record.timeout_s, record.interval_s
            )
            events = state.observe(
                record.device_id, record_ms, timeout_ms, record.attrs
            )
            for event in events:
                self._emit(state.partition, event)
                types.append(event.type)
        return types

    def _skip_invalid(self, message: Message, err: InvalidRecord) -> None:
        # The offset already counts as read, so the next commit moves past it.
        self.metrics.records_invalid.inc()
        suppressed = self._log_limit.allow("invalid")
        if suppressed is None:
            return
        logger.warning(
            "Skipping invalid heartbeat at %s[%d]@%d: %s "
            "(%d more skipped since the last line)",
            message.topic(),
            message.partition(),
            message.offset(),
            err,
            suppressed,
        )

    def _note_consumer_error(self, message: Message, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            partition, offset = position_of(message)
            self._next_offsets[partition] = offset
            return
        if error.fatal():
            raise MonitorError(f"consumer failed: {error}")
        if self._log_limit.allow(f"consumer:{error.code()}") is not None:
            logger.warning("Consumer error: %s; will keep polling", error)

    # Clocks

    def _advance_caught_up_clocks(self, wall_ms: int) -> None:
        assert self._consumer is not None
        for partition, state in self.partitions.items():
            tp = TopicPartition(self.kafka.heartbeat_topic, partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = self._next_offsets.get(partition)
            if position is not None and high >= 0:
                self.metrics.lag_records.labels(str(partition)).set(
                    max(0, high - position)
                )
                if position >= high:
                    state.follow_wall_clock(wall_ms, self._contact.heard_ms)
            now_ms = state.clock.now_ms
            self.metrics.clock_delay_seconds.labels(str(partition)).set(
                max(0, wall_ms - now_ms) / 1000 if now_ms else 0
            )

    # Commits

    def commit(self) -> bool:
        """Commit alerts, changelog records and offsets, and return whether it did.

        Raises:
            MonitorError: a fatal error.
        """
        assert self._consumer is not None
        return self._transaction.commit(self._consumer)

    # Restores

    def _reset(self) -> bool:
        """Restore every owned partition and read again from its committed offset.

        What the aborted transaction contained (alerts, changelog records and
        offsets) is invisible to read_committed readers. Reading the same
        records again re-creates those alerts with the same event ids.
        Returns False while the abort before it still fails.
        """
        transaction = self._transaction
        if transaction.abort_needed and not transaction.try_abort():
            return False
        partitions = sorted(self.partitions)
        self.partitions = {p: self.new_state(p) for p in partitions}
        # The new states must not judge while the brokers are still away.
        self._contact.pause_if_lost(list(self.partitions.values()))
        for partition in partitions:
            self._next_offsets.pop(partition, None)
        restore_partitions(
            self.kafka,
            self.partitions,
            self.metrics,
            self.settings.restore_timeout_s,
        )
        try:
            self._seek_to_committed(partitions)
        except MonitorError as err:
            if err.fatal:
                raise
            if self._log_limit.allow("seek") is not None:
                logger.warning("%s; will restore and retry", err)
            return False
        transaction.reset_needed = False
        return True

    def _seek_to_committed(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        if not partitions:
            return
        topic = self.kafka.heartbeat_topic
        try:
            committed = self._consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=KAFKA_TIMEOUT_S
            )
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self._consumer.seek(TopicPartition(topic, tp.partition, offset))
        except KafkaException as err:
            # A broker that just came back replies NOT_COORDINATOR or times
            # out for a while. That clears up, so only other errors are fatal.
            error = err.args[0]
            raise MonitorError(
                f"seeking partitions {partitions} back to their committed offsets "
                f"failed: {error}",
                retriable=error.retriable() or error.code() in _COORDINATOR_ERRORS,
            ) from err
        logger.info(
            "Partitions %s read again from offsets %s",
            partitions,
            [tp.offset for tp in committed],
        )

    # Rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        states = {tp.partition: self.new_state(tp.partition) for tp in partitions}
        restore_partitions(
            self.kafka, states, self.metrics, self.settings.restore_timeout_s
        )
        self._contact.pause_if_lost(list(states.values()))
        self.partitions.update(states)
        self.metrics.partitions_owned.set(len(self.partitions))
        logger.info(
            "Assigned partitions %s; now owning %s",
            sorted(states),
            sorted(self.partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions if tp.partition in self.partitions]
        if revoked and not self._transaction.reset_needed:
            # Commit first, so nothing done for the revoked partitions is lost.
            self._transaction.commit_with_retries(consumer, "revoking partitions")
        self._drop(revoked)
        logger.info(
            "Revoked partitions %s; now owning %s", revoked, sorted(self.partitions)
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group gave the partitions away already, so committing offsets
        # for them would fail. Abort, and restore what is still owned.
        lost = [tp.partition for tp in partitions if tp.partition in self.partitions]
        self._drop(lost)
        logger.warning(
            "Lost partitions %s; aborting the open transaction and restoring "
            "partitions %s",
            lost,
            sorted(self.partitions),
        )
        self._transaction.abort()

    def _drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
            self._next_offsets.pop(partition, None)
            self._forget_partition_metrics(partition)
        self.metrics.partitions_owned.set(len(self.partitions))
        self._update_gauges()

    def _forget_partition_metrics(self, partition: int) -> None:
        for gauge in (self.metrics.lag_records, self.metrics.clock_delay_seconds):
            try:
                gauge.remove(str(partition))
            except KeyError:
                pass

    def new_state(self, partition: int) -> PartitionState:
        s = self.settings
        shard = Shard(
            partition,
            default_timeout_ms=int(s.default_timeout_s * 1000),
            min_timeout_ms=int(s.min_timeout_s * 1000),
            max_timeout_ms=int(s.max_timeout_s * 1000),
            tick_ms=s.tick_ms,
        )
        clock = PartitionClock(partition, s.fetch_grace_ms)
        return PartitionState(shard, clock, self.rule, self.pool)

    # Alerts

    def _emit(self, partition: int, event: AlertEvent) -> None:
        producer = self._transaction.producer
        assert producer is not None
        key = event.device_id or partition_subject(partition)
        producer.produce(self.kafka.alert_topic, key.encode(), event.encode())
        self.metrics.alerts_emitted.labels(event.type).inc()
        if event.type == MONITORING_DEGRADED:
            logger.warning(
                "Partition %d DEGRADED: %s devices missed their deadlines with no "
                "record read since %d; holding their DOWN alerts until a record "
                "arrives (event %s)",
                partition,
                event.devices,
                event.last_seen_ms,
                event.event_id,
            )
        elif event.type == MONITORING_RESTORED:
            logger.info(
                "Partition %d RESTORED at %d: %s silent devices get one full "
                "timeout from then (event %s)",
                partition,
                event.detected_ms,
                event.devices,
                event.event_id,
            )
        else:
            logger.debug(
                "Emitted %s for %s (%s)", event.type, event.device_id, event.event_id
            )

    # Checks and gauges

    def _check_state_topic(self) -> None:
        admin = AdminClient(self.kafka.client_config())
        topics = admin.list_topics(timeout=KAFKA_TIMEOUT_S).topics
        name = self.kafka.state_topic_name
        state = topics.get(name)
        heartbeat = topics.get(self.kafka.heartbeat_topic)
        if state is None or state.error is not None:
            raise MonitorError(
                f"state topic {name} is not found; create it with `hbmon topics`"
            )
        if heartbeat is not None and len(state.partitions) < len(heartbeat.partitions):
            raise MonitorError(
                f"state topic {name} has {len(state.partitions)} partitions but "
                f"{self.kafka.heartbeat_topic} has {len(heartbeat.partitions)}; "
                "it needs at least as many, so recreate it"
            )

    def _update_gauges(self) -> None:
        states = self.partitions.values()
        self.metrics.devices_tracked.set(sum(len(s.shard) for s in states))
        self.metrics.devices_down.set(sum(s.devices_down for s in states))
        self.metrics.alerts_held.set(sum(len(s.held_downs) for s in states))
        self.metrics.partitions_degraded.set(
            sum(1 for s in states if s.degraded is not None)
        )

    def _mode(self) -> str:
        if self.settings.exactly_once:
            return f"exactly-once every {self.settings.commit_interval_ms} ms"
        return f"at-least-once every {self.settings.commit_interval_ms} ms"


def describe_counts(counts: Counter[str]) -> str:
    """Return counts by event type for a log line, such as "2 DEVICE_DOWN"."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
