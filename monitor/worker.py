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
from collections.abc import Sequence

import orjson
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
    decode_heartbeat,
)
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from monitor.alerts import partition_subject
from monitor.clock import PartitionClock
from monitor.contact import STATS_INTERVAL_MS, BrokerContact
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.outage import OutageRule
from monitor.partition import PartitionState
from monitor.pool import OutagePool
from monitor.producer import PlainProducer, TransactionalProducer, transaction_error
from monitor.restore import restore_partitions
from monitor.settings import MonitorSettings
from monitor.shard import Shard
from monitor.stall import CallStalled
from monitor.watchdog import StallWatchdog

logger = logging.getLogger(__name__)

CONSUME_BATCH = 5000
# Pause between retries of a commit that failed with a retriable error.
COMMIT_RETRY_S = 0.5
# Attempts at a commit inside a rebalance callback or on close, before the
# monitor gives up on it and aborts.
COMMIT_ATTEMPTS = 5
# Commits and aborts in a row that may fail with a retriable error before
# the transactional producer is replaced.
RESTART_AFTER_FAILURES = 6
# Producer replacements in a row, with no commit in between, before the
# monitor gives up and exits.
MAX_RESTARTS = 3
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
    and is what tests drive; `run()` loops over it until stopped.
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
        # Set when the open transaction must be aborted, and when every owned
        # partition must be restored, before the next record is read.
        self._abort_needed = False
        self._reset_needed = False
        # Set while a commit failed with a retriable error and must be
        # retried before anything else.
        self._commit_pending = False
        # Commits and aborts in a row that failed with a retriable error.
        self._retriable_failures = 0
        # While the transactional producer must be replaced: the reason
        # (a metric label) and, once replaced, whether it still must start.
        self._restart_reason: str | None = None
        self._restart_starting = False
        self._restarts_in_a_row = 0
        self._log_limit = RateLimitedLog()
        self._watchdog = StallWatchdog(
            max(60.0, 3 * settings.transaction_timeout_ms / 1000)
        )
        self._consumer: Consumer | None = None
        self._producer: TransactionalProducer | PlainProducer | None = None
        self._contact = BrokerContact(kafka.heartbeat_topic, wall_clock_ms())
        self._contact_lost = False
        self._contact_checked_ms = 0

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
        if self.settings.exactly_once:
            producer: TransactionalProducer | PlainProducer = TransactionalProducer(
                self.kafka,
                self.settings.transactional_id_or_fresh(),
                self.settings.transaction_timeout_ms,
            )
        else:
            producer = PlainProducer(self.kafka)
        producer.start()
        self._producer = producer
        self._contact = BrokerContact(self.kafka.heartbeat_topic, wall_clock_ms())
        config = self.kafka.client_config(
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_partition_eof=True,
            partition_assignment_strategy="cooperative-sticky",
            session_timeout_ms=self.settings.session_timeout_ms,
            statistics_interval_ms=STATS_INTERVAL_MS,
        )
        config["stats_cb"] = self._on_stats
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
        if not commit:
            # Revoking in consumer.close() must not commit either.
            self._reset_needed = True
        if self._consumer is not None:
            if self.partitions and not self._reset_needed:
                self._commit_with_retries("close")
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        logger.info("Monitor stopped")

    # Unit of work

    def step(self) -> bool:
        """Read one batch of heartbeats, then tick and commit when due.

        Returns whether a full batch was read, so more may be waiting.

        Raises:
            MonitorError: a fatal error; the process should exit.
        """
        assert self._consumer is not None and self._producer is not None
        # NOTE: while an abort or commit keeps failing, nothing is read. A
        # broker outage longer than max.poll.interval.ms (300 s) makes the
        # member leave the group. It rejoins and restores when it is back.
        self._check_producer()
        if self._restart_reason is not None and not self._restart_producer():
            time.sleep(COMMIT_RETRY_S)
            return False
        if self._reset_needed and not self._reset():
            time.sleep(COMMIT_RETRY_S)
            return False
        if self._commit_pending and not self.commit():
            time.sleep(COMMIT_RETRY_S)
            return False
        wait_s = max(0.0, (self._next_tick_ms - wall_clock_ms()) / 1000)
        messages = self._consumer.consume(CONSUME_BATCH, timeout=min(wait_s, 0.2))
        self._check_contact(wall_clock_ms())
        self._apply(messages)
        now_ms = wall_clock_ms()
        if now_ms >= self._next_tick_ms:
            self.tick(now_ms)
            self._next_tick_ms = now_ms + self.settings.tick_ms
        if now_ms >= self._next_commit_ms and not self._reset_needed:
            self.commit()
            self._next_commit_ms = now_ms + self.settings.commit_interval_ms
        self._producer.poll()
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
                    "Partition %d: %d events at clock %d (%d DOWNs held)",
                    partition,
                    len(events),
                    state.clock.now_ms,
                    len(state.held_downs),
                )
        self.metrics.scan_seconds.observe(time.perf_counter() - started)
        self._update_gauges()

    # Heartbeats

    def _apply(self, messages: Sequence[Message]) -> None:
        consumed = 0
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
            self._apply_one(state, message)
        self.metrics.records_consumed.inc(consumed)

    def _apply_one(self, state: PartitionState, message: Message) -> None:
        timestamp_type, record_ms = message.timestamp()
        try:
            if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
                raise InvalidRecord("timestamp", "the record has no timestamp")
            record = decode_heartbeat(message.value())
            if record.device_id.startswith("\x00"):
                raise InvalidRecord("device_id", "must not start with a NUL character")
        except InvalidRecord as err:
            self._skip_invalid(message, err)
            return
        timeout_ms = self.settings.declared_timeout_ms(
            record.timeout_s, record.interval_s
        )
        events = state.observe(record.device_id, record_ms, timeout_ms, record.attrs)
        for event in events:
            self._emit(state.partition, event)

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

    # Contact with the broker

    def _on_stats(self, stats_json: str) -> None:
        # Called from consume(), so on the thread that runs step().
        try:
            stats = orjson.loads(stats_json)
            self._contact.update(stats)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
            if self._log_limit.allow("stats") is not None:
                logger.warning(
                    "Consumer statistics could not be read: %s; partition clocks "
                    "wait for the next report",
                    err,
                )

    def _check_contact(self, wall_ms: int) -> None:
        """Pause judging while no leader was heard from for the contact timeout.

        The clocks already stop at the last contact. Pausing also makes each
        device silent since before the loss wait one full timeout after
        contact returns, because its heartbeats may never have been appended.
        Runs before each batch is applied. A loop that did not run for the
        contact timeout (a commit retried while the broker was down, a long
        restore) counts as lost contact too, because the statistics that
        would have shown the loss were not read meanwhile.
        """
        timeout_ms = self.settings.contact_timeout_ms
        stalled_ms = 0
        if self._contact_checked_ms:
            stalled_ms = wall_ms - self._contact_checked_ms
        self._contact_checked_ms = wall_ms
        silent_ms = self._contact.silent_ms(wall_ms)
        lost = silent_ms is not None and silent_ms > timeout_ms
        if not self._contact_lost and (lost or stalled_ms > timeout_ms):
            self._lose_contact(silent_ms, stalled_ms)
        if self._contact_lost and not lost:
            self._regain_contact()

    def _lose_contact(self, silent_ms: int | None, stalled_ms: int) -> None:
        self._contact_lost = True
        self.metrics.broker_contact_lost.set(1)
        self.metrics.broker_contact_losses.inc()
        logger.warning(
            "Lost contact with the brokers leading partitions %s (last response "
            "%s ms ago, previous check %d ms ago); judging no deadline until "
            "they respond again",
            sorted(self.partitions),
            silent_ms,
            stalled_ms,
        )
        for state in self.partitions.values():
            state.lose_contact()

    def _regain_contact(self) -> None:
        self._contact_lost = False
        self.metrics.broker_contact_lost.set(0)
        logger.info(
            "Brokers respond again; devices silent since before are judged one "
            "full timeout from %d",
            self._contact.heard_ms,
        )
        for state in self.partitions.values():
            state.regain_contact(self._contact.heard_ms)

    # Commits

    def commit(self) -> bool:
        """Commit alerts, changelog records and offsets, and return whether it did.

        A retriable failure leaves the commit pending for the next step. An
        abort-required failure aborts and schedules a restore.

        Raises:
            MonitorError: a fatal error.
        """
        assert self._consumer is not None and self._producer is not None
        started = time.perf_counter()
        if not self._commit_pending:
            self._write_changelog()
        try:
            with self._watchdog.guard("The transaction commit"):
                self._producer.commit(self._positions(), self._consumer)
        except MonitorError as err:
            return self._commit_failed(err)
        self._commit_pending = False
        self._retriable_failures = 0
        self._restarts_in_a_row = 0
        self.metrics.commits.labels("committed").inc()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        return True

    def _commit_failed(self, err: MonitorError) -> bool:
        if err.restart_required:
            self._schedule_restart(err)
            return False
        if err.retriable:
            self._commit_pending = True
            self.metrics.commits.labels("retried").inc()
            if self._note_retriable_failure(err):
                return False
            if self._log_limit.allow("commit") is not None:
                logger.warning("Commit failed: %s; will retry", err)
            return False
        if err.abort_required:
            logger.warning(
                "Commit failed: %s; aborting the transaction and restoring "
                "partitions %s from the state topic",
                err,
                sorted(self.partitions),
            )
            self._abort()
            return False
        logger.error("Commit failed: %s. Exiting.", err)
        raise err

    def _commit_with_retries(self, why: str) -> None:
        for _ in range(COMMIT_ATTEMPTS):
            if self.commit():
                return
            if not self._commit_pending:
                return
            time.sleep(COMMIT_RETRY_S)
        logger.warning(
            "Commit before %s failed %d times; aborting, so partitions %s "
            "resume from their last commit",
            why,
            COMMIT_ATTEMPTS,
            sorted(self.partitions),
        )
        self._abort()

    def _write_changelog(self) -> None:
        assert self._producer is not None
        topic = self.kafka.state_topic_name
        written = 0
        for partition, state in self.partitions.items():
            for key, value in state.changelog_records():
                self._producer.produce(topic, key, value, partition)
                written += 1
        self.metrics.changelog_records_written.inc(written)

    def _positions(self) -> list[TopicPartition]:
        """Return the next offset to read of each owned partition that has one."""
        assert self._consumer is not None
        owned = [
            TopicPartition(self.kafka.heartbeat_topic, partition)
            for partition in self.partitions
        ]
        if not owned:
            return []
        return [tp for tp in self._consumer.position(owned) if tp.offset >= 0]

    def _abort(self) -> None:
        """Abort the open transaction and restore every partition at the next step."""
        self._commit_pending = False
        self._reset_needed = True
        if self._restart_reason is not None:
            # The new producer's start aborts the open transaction.
            return
        self._abort_needed = True
        self.metrics.commits.labels("aborted").inc()
        self._try_abort()

    def _try_abort(self) -> bool:
        assert self._producer is not None
        try:
            self._producer.abort()
        except MonitorError as err:
            if err.restart_required:
                self._schedule_restart(err)
                return False
            if not err.retriable:
                logger.error("Abort failed: %s. Exiting.", err)
                raise
            if self._note_retriable_failure(err):
                return False
            if self._log_limit.allow("abort") is not None:
                logger.warning("Abort failed: %s; will retry", err)
            return False
        self._abort_needed = False
        self._retriable_failures = 0
        return True

    # Producer restarts

    def _note_retriable_failure(self, err: MonitorError) -> bool:
        """Count a retriable failure; return whether it scheduled a restart."""
        self._retriable_failures += 1
        if self._retriable_failures < RESTART_AFTER_FAILURES:
            return False
        if not isinstance(self._producer, TransactionalProducer):
            return False
        self._schedule_restart(
            err,
            "repeated_timeouts",
            f"{self._retriable_failures} calls in a row failed, the last: {err}",
        )
        return True

    def _check_producer(self) -> None:
        """Schedule a restart when the producer reported a fatal error.

        Raises:
            MonitorError: the producer was fenced by another one.
        """
        producer = self._producer
        if not isinstance(producer, TransactionalProducer):
            return
        if producer.fatal_error is None or self._restart_reason is not None:
            return
        err = transaction_error(
            "the producer", producer.transactional_id, producer.fatal_error
        )
        if err.fatal:
            logger.error("%s. Exiting.", err)
            raise err
        self._schedule_restart(err)

    def _schedule_restart(
        self, err: MonitorError, reason: str = "", why: str = ""
    ) -> None:
        """Replace the producer and restore the partitions at the next step.

        Raises:
            MonitorError: fatal, after MAX_RESTARTS replacements in a row
                without a commit in between.
        """
        if self._restarts_in_a_row >= MAX_RESTARTS:
            logger.error(
                "Transactional producer failed again after %d replacements "
                "without a commit: %s. Exiting.",
                self._restarts_in_a_row,
                err,
            )
            raise MonitorError(
                f"transactional producer replaced {self._restarts_in_a_row} times "
                f"in a row without a commit; the last error: {err}"
            ) from err
        self._restarts_in_a_row += 1
        if not reason:
            stalled = isinstance(err.__cause__, CallStalled)
            reason = "stalled_call" if stalled else "fatal_error"
        self._restart_reason = reason
        self._restart_starting = False
        self._commit_pending = False
        self._abort_needed = False
        self._reset_needed = True
        self._retriable_failures = 0
        self.metrics.commits.labels("aborted").inc()
        self.metrics.producer_restarts.labels(reason).inc()
        logger.warning(
            "Transactional producer failed (%s): %s; replacing it with a new one "
            "of the same transactional id, which aborts the open transaction, "
            "then restoring partitions %s from the state topic",
            reason,
            why or err,
            sorted(self.partitions),
        )

    def _restart_producer(self) -> bool:
        """Replace the producer and start the new one; return whether it started.

        Raises:
            MonitorError: a fatal error, such as the producer being fenced.
        """
        producer = self._producer
        assert isinstance(producer, TransactionalProducer)
        if not self._restart_starting:
            producer.restart()
            self._restart_starting = True
        try:
            producer.start()
        except MonitorError as err:
            if err.restart_required:
                self._schedule_restart(err)
                return False
            if not err.retriable:
                logger.error("Starting the new producer failed: %s. Exiting.", err)
                raise
            if self._log_limit.allow("restart") is not None:
                logger.warning("Starting the new producer failed: %s; will retry", err)
            return False
        self._restart_reason = None
        self._restart_starting = False
        logger.info(
            "New producer of transactional id %s started", producer.transactional_id
        )
        return True

    def _reset(self) -> bool:
        """Restore every owned partition and read again from its committed offset.

        What the aborted transaction contained (alerts, changelog records and
        offsets) is invisible to read_committed readers. Reading the same
        records again re-creates those alerts with the same event ids.
        Returns False while the abort before it still fails.
        """
        if self._abort_needed and not self._try_abort():
            return False
        partitions = sorted(self.partitions)
        self.partitions = {p: self.new_state(p) for p in partitions}
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
        self._reset_needed = False
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
        if self._contact_lost:
            for state in states.values():
                state.lose_contact()
        self.partitions.update(states)
        self.metrics.partitions_owned.set(len(self.partitions))
        logger.info(
            "Assigned partitions %s; now owning %s",
            sorted(states),
            sorted(self.partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions if tp.partition in self.partitions]
        if revoked and not self._reset_needed:
            # Commit first, so nothing done for the revoked partitions is lost.
            self._commit_with_retries("revoking partitions")
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
        self._abort()

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
        assert self._producer is not None
        key = event.device_id or partition_subject(partition)
        self._producer.produce(self.kafka.alert_topic, key.encode(), event.encode())
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
