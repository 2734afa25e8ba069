"""Rebuild partition state from the state topic before judging anything."""

import logging
import time
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from hbmon.events import InvalidRecord
from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.partition import PartitionState

logger = logging.getLogger(__name__)

RESTORE_BATCH = 10_000
# The reader never joins this group, because it is assigned its partitions
# and commits nothing. confluent-kafka requires a group id for every consumer.
READER_GROUP_ID = "hbmon-monitor-restore"


def restore_partitions(
    kafka: KafkaSettings,
    states: Mapping[int, PartitionState],
    metrics: MonitorMetrics,
    timeout_s: float,
) -> int:
    """Read the state partitions of `states` from the start to their end.

    The reader uses read_committed, so it stops at the last stable offset
    and never reads records of an open or aborted transaction. Returns the
    number of records applied. Cost: O(records in the state partitions).

    Raises:
        MonitorError: retriable, when the end was not reached in `timeout_s`
            or the reader hit a fatal error.
    """
    if not states:
        return 0
    started = time.monotonic()
    topic = kafka.state_topic_name
    reader = Consumer(
        kafka.client_config(
            group_id=READER_GROUP_ID,
            enable_auto_commit=False,
            isolation_level="read_committed",
            enable_partition_eof=True,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_wait_max_ms=10,
        )
    )
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in states])
        applied = _read_to_end(reader, topic, states, metrics, started + timeout_s)
    finally:
        reader.close()
    elapsed_s = time.monotonic() - started
    devices = sum(len(states[p].shard) for p in states)
    metrics.restore_seconds.observe(elapsed_s)
    metrics.devices_restored.inc(devices)
    logger.info(
        "Restored partitions %s from %s: %d devices from %d records in %.2f s",
        sorted(states),
        topic,
        devices,
        applied,
        elapsed_s,
    )
    return applied


def _read_to_end(
    reader: Consumer,
    topic: str,
    states: Mapping[int, PartitionState],
    metrics: MonitorMetrics,
    deadline: float,
) -> int:
    pending = set(states)
    invalid_log = RateLimitedLog()
    applied = 0
    while pending:
        if time.monotonic() > deadline:
            raise MonitorError(
                f"restoring {topic} partitions {sorted(pending)} did not reach "
                "their end in time",
                retriable=True,
            )
        for message in reader.consume(RESTORE_BATCH, timeout=0.05):
            error = message.error()
            partition = message.partition()
            assert partition is not None
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif error.fatal():
                    raise MonitorError(f"state reader failed: {error}")
                elif invalid_log.allow(f"error:{error.code()}") is not None:
                    logger.warning("State reader error: %s; will keep reading", error)
                continue
            try:
                states[partition].load(message.key(), message.value())
            except InvalidRecord as err:
                metrics.changelog_records_invalid.inc()
                suppressed = invalid_log.allow("invalid")
                if suppressed is not None:
                    logger.warning(
                        "Skipping invalid state record at %s[%d]@%d: %s "
                        "(%d more skipped since the last line)",
                        topic,
                        partition,
                        message.offset(),
                        err,
                        suppressed,
                    )
                continue
            applied += 1
    return applied
