"""The open transaction of the monitor's output, up to its commit or abort."""

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.pool import OutagePool
from monitor.producer import PlainProducer, TransactionalProducer
from monitor.restarts import ProducerRestarts
from monitor.settings import MonitorSettings
from monitor.watchdog import StallWatchdog

logger = logging.getLogger(__name__)

# Pause between retries of a commit that failed with a retriable error.
COMMIT_RETRY_S = 0.5
# Attempts at a commit inside a rebalance callback or on close, before the
# monitor gives up on it and aborts.
COMMIT_ATTEMPTS = 5
# The consumer's request timeout (socket.timeout.ms). librdkafka sends an
# offset commit up to three times, each send bounded by this timeout. When
# the coordinator is lost, it defers the commit for up to one session
# timeout and then sends it up to three times more (rdkafka_cgrp.c,
# rd_kafka_cgrp_defer_offset_commit). A commit sent as the broker stops can
# block for all of that.
CONSUMER_REQUEST_TIMEOUT_MS = 10_000
OFFSET_COMMIT_SENDS = 6
# The shortest time a commit may block before the watchdog ends the process.
WATCHDOG_MIN_S = 60.0


def commit_limit_s(settings: MonitorSettings) -> float:
    """Return how long a commit may block before the watchdog ends the process.

    The limit is 1.5 times the longest that librdkafka can block an offset
    commit, and at least three transaction timeouts, so the watchdog ends
    only a call that would never return.
    """
    offset_commit_s = (
        OFFSET_COMMIT_SENDS * CONSUMER_REQUEST_TIMEOUT_MS + settings.session_timeout_ms
    ) / 1000
    return max(
        WATCHDOG_MIN_S,
        3 * settings.transaction_timeout_ms / 1000,
        1.5 * offset_commit_s,
    )


class OutputTransaction:
    """Alerts, changelog records and offsets since the last commit, and their fate.

    It owns the producer, its ProducerRestarts, and the flags that carry a
    failure from one step to the next: a commit to retry and an abort to
    retry. It also owns `reset_needed`, which is set while the worker must
    restore every owned partition of `pool` before it reads on. The worker
    passes in the consumer whose positions and group metadata each commit
    includes. In at-least-once mode the producer is a PlainProducer, whose
    abort keeps the records it already sent.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: MonitorSettings,
        metrics: MonitorMetrics,
        pool: OutagePool,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.metrics = metrics
        self.pool = pool
        self.producer: TransactionalProducer | PlainProducer | None = None
        self.restarts = ProducerRestarts(metrics, pool, self._discard)
        # Set when the open transaction must be aborted, and when every owned
        # partition must be restored, before the next record is read.
        self.abort_needed = False
        self.reset_needed = False
        # Set while a commit failed with a retriable error and must be
        # retried before anything else.
        self.commit_pending = False
        self._log_limit = RateLimitedLog()
        self._watchdog = StallWatchdog(commit_limit_s(settings))

    def start(self) -> None:
        """Create the producer of the configured kind and start it.

        Raises:
            MonitorError: the transactional producer did not start.
        """
        if self.settings.exactly_once:
            producer: TransactionalProducer | PlainProducer = TransactionalProducer(
                self.kafka,
                self.settings.transactional_id_or_fresh(),
                self.settings.transaction_timeout_ms,
            )
        else:
            producer = PlainProducer(self.kafka)
        producer.start()
        self.producer = producer

    def close(self) -> None:
        """Stop the producer, which aborts what a transaction still holds."""
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    def commit(self, consumer: Consumer) -> bool:
        """Commit alerts, changelog records and offsets, and return whether it did.

        A retriable failure leaves the commit pending for the next step. An
        abort-required failure aborts and schedules a restore.

        Raises:
            MonitorError: a fatal error.
        """
        assert self.producer is not None
        started = time.perf_counter()
        if not self.commit_pending:
            self._write_changelog()
        try:
            with self._watchdog.guard("The transaction commit"):
                self.producer.commit(self._positions(consumer), consumer)
        except MonitorError as err:
            return self._commit_failed(err)
        self.commit_pending = False
        self.restarts.note_success(committed=True)
        self.metrics.commits.labels("committed").inc()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        return True

    def _commit_failed(self, err: MonitorError) -> bool:
        assert self.producer is not None
        if err.restart_required:
            self.restarts.schedule(err)
            return False
        if err.retriable:
            self.commit_pending = True
            self.metrics.commits.labels("retried").inc()
            if self.restarts.note_retriable_failure(err, self.producer):
                return False
            if self._log_limit.allow("commit") is not None:
                logger.warning("Commit failed: %s; will retry", err)
            return False
        if err.abort_required:
            logger.warning(
                "Commit failed: %s; aborting the transaction and restoring "
                "partitions %s from the state topic",
                err,
                sorted(self.pool.partitions),
            )
            self.abort()
            return False
        logger.error("Commit failed: %s. Exiting.", err)
        raise err

    def commit_with_retries(self, consumer: Consumer, why: str) -> None:
        """Commit, retrying for a while, and abort when that keeps failing.

        Raises:
            MonitorError: a fatal error.
        """
        for _ in range(COMMIT_ATTEMPTS):
            if self.commit(consumer):
                return
            if not self.commit_pending:
                return
            time.sleep(COMMIT_RETRY_S)
        logger.warning(
            "Commit before %s failed %d times; aborting, so partitions %s "
            "resume from their last commit",
            why,
            COMMIT_ATTEMPTS,
            sorted(self.pool.partitions),
        )
        self.abort()

    def _write_changelog(self) -> None:
        assert self.producer is not None
        topic = self.kafka.state_topic_name
        written = 0
        for partition, state in self.pool.partitions.items():
            for key, value in state.changelog_records():
                self.producer.produce(topic, key, value, partition)
                written += 1
        self.metrics.changelog_records_written.inc(written)

    def _positions(self, consumer: Consumer) -> list[TopicPartition]:
        """Return the next offset to read of each owned partition that has one."""
        owned = [
            TopicPartition(self.kafka.heartbeat_topic, partition)
            for partition in self.pool.partitions
        ]
        if not owned:
            return []
        return [tp for tp in consumer.position(owned) if tp.offset >= 0]

    def abort(self) -> None:
        """Abort the open transaction and restore every partition at the next step.

        Raises:
            MonitorError: the abort failed with a fatal error.
        """
        self.commit_pending = False
        self.reset_needed = True
        if self.restarts.pending:
            # The new producer's start aborts the open transaction.
            return
        self.abort_needed = True
        self.metrics.commits.labels("aborted").inc()
        self.try_abort()

    def try_abort(self) -> bool:
        """Abort the open transaction; return False while that fails retriably.

        Raises:
            MonitorError: the abort failed with a fatal error.
        """
        assert self.producer is not None
        try:
            self.producer.abort()
        except MonitorError as err:
            if err.restart_required:
                self.restarts.schedule(err)
                return False
            if not err.retriable:
                logger.error("Abort failed: %s. Exiting.", err)
                raise
            if self.restarts.note_retriable_failure(err, self.producer):
                return False
            if self._log_limit.allow("abort") is not None:
                logger.warning("Abort failed: %s; will retry", err)
            return False
        self.abort_needed = False
        self.restarts.note_success(committed=False)
        return True

    def _discard(self) -> None:
        """Drop the open transaction, which the producer restart aborts."""
        self.commit_pending = False
        self.abort_needed = False
        self.reset_needed = True
        self.metrics.commits.labels("aborted").inc()
