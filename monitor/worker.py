"""The monitor process: one consumer-group member on the heartbeat topic.

The member keeps one shard and one partition clock per assigned partition,
feeds heartbeats into the shards, and on every tick expires the deadlines
that each partition's own clock has passed. Transitions go to the alert
topic as DEVICE_DOWN and DEVICE_RECOVERED events keyed by device id.
"""

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    SEVERITY,
    AlertEvent,
    InvalidRecord,
    decode_heartbeat,
    event_id_for,
)
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from monitor.clock import PartitionClock
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.shard import DOWN, Shard, Transition

logger = logging.getLogger(__name__)

CONSUME_BATCH = 5000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MonitorWorker:
    """One member of the monitor consumer group.

    `step()` does one unit of work (read a batch, tick if due) and is what
    tests drive; `run()` loops over it until stopped.
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
        self.shards: dict[int, Shard] = {}
        self.clocks: dict[int, PartitionClock] = {}
        self._next_offsets: dict[int, int] = {}
        self._next_tick_ms = 0
        self._bad_record_log = RateLimitedLog()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # Lifecycle

    def start(self) -> None:
        self._producer = Producer(
            self.kafka.client_config(
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )
        )
        self._consumer = Consumer(
            self.kafka.client_config(
                group_id=self.settings.group_id,
                enable_auto_commit=True,
                auto_offset_reset="earliest",
                enable_partition_eof=True,
                partition_assignment_strategy="cooperative-sticky",
            )
        )
        self._consumer.subscribe(
            [self.kafka.heartbeat_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        logger.info(
            "Monitor started: group %s, topic %s, alerts to %s, broker %s",
            self.settings.group_id,
            self.kafka.heartbeat_topic,
            self.kafka.alert_topic,
            self.kafka.bootstrap_servers,
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def close(self, flush_timeout_s: float = 10.0) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            left = self._producer.flush(flush_timeout_s)
            if left:
                logger.error(
                    "Monitor stopped with %d alert events not delivered; they are lost",
                    left,
                )
            self._producer = None
        logger.info("Monitor stopped")

    # Unit of work

    def step(self) -> bool:
        """Read one batch of heartbeats and tick if a tick is due.

        Returns whether a full batch was read, so more may be waiting.
        """
        assert self._consumer is not None and self._producer is not None
        wait_s = max(0.0, (self._next_tick_ms - wall_clock_ms()) / 1000)
        messages = self._consumer.consume(CONSUME_BATCH, timeout=min(wait_s, 0.2))
        self._apply(messages)
        now_ms = wall_clock_ms()
        if now_ms >= self._next_tick_ms:
            self.tick(now_ms)
            self._next_tick_ms = now_ms + self.settings.tick_ms
        self._producer.poll(0)
        return len(messages) == CONSUME_BATCH

    def tick(self, wall_ms: int) -> None:
        """Advance each partition clock and emit DOWN for what it expired."""
        started = time.perf_counter()
        self._advance_caught_up_clocks(wall_ms)
        for partition, shard in self.shards.items():
            expired = shard.expire(self.clocks[partition].now_ms)
            for transition in expired:
                self._emit(partition, transition)
            if expired:
                logger.info(
                    "Partition %d: %d devices DOWN (clock %d)",
                    partition,
                    len(expired),
                    self.clocks[partition].now_ms,
                )
        self.metrics.scan_seconds.observe(time.perf_counter() - started)
        self.metrics.devices_tracked.set(sum(len(s) for s in self.shards.values()))
        self.metrics.devices_down.set(sum(s.down_count for s in self.shards.values()))

    # Heartbeats

    def _apply(self, messages: Sequence[Message]) -> None:
        for message in messages:
            partition = message.partition()
            error = message.error()
            if error is not None:
                self._note_consumer_error(message, error)
                continue
            self._next_offsets[partition] = message.offset() + 1
            shard = self.shards.get(partition)
            if shard is None:
                continue
            self.metrics.records_consumed.inc()
            self._apply_one(partition, shard, message)

    def _apply_one(self, partition: int, shard: Shard, message: Message) -> None:
        timestamp_type, record_ms = message.timestamp()
        try:
            if timestamp_type == TIMESTAMP_NOT_AVAILABLE:
                raise InvalidRecord("timestamp", "the record has no timestamp")
            record = decode_heartbeat(message.value())
        except InvalidRecord as err:
            self._skip_invalid(message, err)
            return
        timeout_ms = self.settings.declared_timeout_ms(
            record.timeout_s, record.interval_s
        )
        self.clocks[partition].observe(record_ms)
        transition = shard.observe(record.device_id, record_ms, timeout_ms)
        if transition is not None:
            self._emit(partition, transition)

    def _skip_invalid(self, message: Message, err: InvalidRecord) -> None:
        self.metrics.records_invalid.inc()
        suppressed = self._bad_record_log.allow("invalid")
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
            self._next_offsets[message.partition()] = message.offset()
            return
        if self._bad_record_log.allow(f"consumer:{error.code()}") is not None:
            logger.warning("Consumer error: %s; will keep polling", error)

    # Clocks

    def _advance_caught_up_clocks(self, wall_ms: int) -> None:
        assert self._consumer is not None
        for partition, clock in self.clocks.items():
            tp = TopicPartition(self.kafka.heartbeat_topic, partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = self._next_offsets.get(partition)
            if position is not None and high >= 0:
                self.metrics.lag_records.labels(str(partition)).set(
                    max(0, high - position)
                )
                if position >= high:
                    clock.follow_wall_clock(wall_ms)
            self.metrics.clock_delay_seconds.labels(str(partition)).set(
                max(0, wall_ms - clock.now_ms) / 1000 if clock.now_ms else 0
            )

    # Rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.shards[tp.partition] = self._new_shard(tp.partition)
            self.clocks[tp.partition] = PartitionClock(
                tp.partition, self.settings.fetch_grace_ms
            )
        self.metrics.partitions_owned.set(len(self.shards))
        logger.info(
            "Assigned partitions %s; now owning %s",
            sorted(tp.partition for tp in partitions),
            sorted(self.shards),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.shards.pop(tp.partition, None)
            self.clocks.pop(tp.partition, None)
            self._next_offsets.pop(tp.partition, None)
            self._forget_partition_metrics(tp.partition)
        self.metrics.partitions_owned.set(len(self.shards))
        logger.info(
            "Revoked partitions %s; now owning %s",
            sorted(tp.partition for tp in partitions),
            sorted(self.shards),
        )

    def _forget_partition_metrics(self, partition: int) -> None:
        for gauge in (self.metrics.lag_records, self.metrics.clock_delay_seconds):
            try:
                gauge.remove(str(partition))
            except KeyError:
                pass

    def _new_shard(self, partition: int) -> Shard:
        s = self.settings
        return Shard(
            partition,
            default_timeout_ms=int(s.default_timeout_s * 1000),
            min_timeout_ms=int(s.min_timeout_s * 1000),
            max_timeout_ms=int(s.max_timeout_s * 1000),
            tick_ms=s.tick_ms,
        )

    # Alerts

    def _emit(self, partition: int, transition: Transition) -> None:
        assert self._producer is not None
        event = alert_event(partition, transition)
        self._producer.produce(
            self.kafka.alert_topic,
            key=event.device_id.encode(),
            value=event.encode(),
            on_delivery=self._on_delivery,
        )
        self.metrics.alerts_emitted.labels(event.type).inc()
        logger.debug(
            "Emitted %s for %s (%s)", event.type, event.device_id, event.event_id
        )

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self.metrics.alert_delivery_failures.inc()
        logger.error(
            "Alert event for %r was not delivered: %s; it is lost",
            message.key(),
            error,
        )


def alert_event(partition: int, transition: Transition) -> AlertEvent:
    """Build the alert event for a shard transition."""
    kind = DEVICE_DOWN if transition.kind == DOWN else DEVICE_RECOVERED
    timeout_s = transition.timeout_ms / 1000
    if kind == DEVICE_DOWN:
        downtime_ms = None
        message = (
            f"Device {transition.device_id} sent no heartbeat within its "
            f"{timeout_s:g} s timeout and is DOWN."
        )
    else:
        downtime_ms = transition.at_ms - transition.last_seen_ms
        message = (
            f"Device {transition.device_id} is sending heartbeats again after "
            f"{downtime_ms / 1000:.0f} s of silence."
        )
    return AlertEvent(
        event_id=event_id_for(kind, transition.device_id, transition.last_seen_ms),
        type=kind,
        device_id=transition.device_id,
        severity=SEVERITY[kind],
        last_seen_ms=transition.last_seen_ms,
        deadline_ms=transition.deadline_ms,
        timeout_ms=transition.timeout_ms,
        detected_ms=transition.at_ms,
        partition=partition,
        message=message,
        downtime_ms=downtime_ms,
    )
