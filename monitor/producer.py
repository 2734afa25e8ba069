"""The monitor's output: alerts and changelog records, committed with offsets.

TransactionalProducer commits alerts, changelog records and consumer
offsets in one Kafka transaction, so a crash loses or repeats none of them.
PlainProducer flushes the same records and then commits the offsets; it is
at-least-once and exists as the baseline that the exactly-once cost is
measured against.
"""

import logging
from collections.abc import Callable

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hbmon.kafka import KafkaSettings
from monitor.errors import MonitorError

logger = logging.getLogger(__name__)

# How long one transactional call waits for the broker before it raises a
# retriable error; the worker retries on its next step.
CALL_TIMEOUT_S = 5.0
LINGER_MS = 5


class MonitorProducer:
    """Common produce path of both output kinds."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.delivery_failures = 0

    def produce(
        self, topic: str, key: bytes, value: bytes | None, partition: int = -1
    ) -> None:
        """Queue one record, waiting for room when the local queue is full."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=key,
                    value=value,
                    partition=partition,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def poll(self) -> None:
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self.delivery_failures += 1
        logger.warning(
            "Record for %s[%s] key %r was not delivered: %s; the commit will fail "
            "and the work since the last commit will be redone",
            message.topic(),
            message.partition(),
            message.key(),
            error,
        )


class TransactionalProducer(MonitorProducer):
    """Alerts, changelog records and offsets in one transaction per commit."""

    def __init__(
        self, kafka: KafkaSettings, transactional_id: str, transaction_timeout_ms: int
    ) -> None:
        super().__init__(
            Producer(
                kafka.client_config(
                    transactional_id=transactional_id,
                    transaction_timeout_ms=transaction_timeout_ms,
                    linger_ms=LINGER_MS,
                    # The coordinator returns CONCURRENT_TRANSACTIONS until the
                    # markers of the previous commit are written, and the
                    # client retries after this backoff (default 100 ms). At
                    # 10 ms a commit took 6 ms instead of 22 ms (median,
                    # measured on the local single-node broker).
                    retry_backoff_ms=10,
                )
            )
        )
        self.transactional_id = transactional_id
        # Set while commit_transaction failed with a retriable error. Only a
        # retry of that call is allowed then.
        self._committing = False

    def start(self) -> None:
        """Fence older producers with the same id and open the first transaction.

        Raises:
            MonitorError: the broker did not respond or rejected the id.
        """
        self._call("init_transactions", self._producer.init_transactions)
        self._producer.begin_transaction()

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        """Commit the open transaction with `offsets`, then open the next one.

        Raises:
            MonitorError: retriable, abort-required or fatal, as its flags tell.
        """
        if not self._committing:
            self._call(
                "send_offsets_to_transaction",
                lambda: self._producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), CALL_TIMEOUT_S
                ),
            )
        self._committing = True
        self._call(
            "commit_transaction",
            lambda: self._producer.commit_transaction(CALL_TIMEOUT_S),
        )
        self._committing = False
        self._producer.begin_transaction()

    def abort(self) -> None:
        """Abort the open transaction and open the next one.

        Raises:
            MonitorError: the abort failed; fatal unless retriable.
        """
        self._committing = False
        self._call(
            "abort_transaction",
            lambda: self._producer.abort_transaction(CALL_TIMEOUT_S),
        )
        self._producer.begin_transaction()

    def close(self) -> None:
        """Abort what is still open (nothing, after a final commit)."""
        try:
            self._producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as err:
            logger.warning("Aborting the last transaction on close failed: %s", err)

    def _call(self, name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except KafkaException as err:
            error = err.args[0]
            raise MonitorError(
                f"{name} failed for transactional id {self.transactional_id}: {error}",
                retriable=error.retriable(),
                abort_required=error.txn_requires_abort(),
            ) from err


class PlainProducer(MonitorProducer):
    """Idempotent producer; offsets are committed after the records are flushed."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(
            Producer(
                kafka.client_config(
                    acks="all", enable_idempotence=True, linger_ms=LINGER_MS
                )
            )
        )

    def start(self) -> None:
        """Nothing to set up; present so both kinds start the same way."""

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        """Flush every queued record, then commit `offsets` synchronously.

        Raises:
            MonitorError: retriable when records are still queued or the
                offset commit failed.
        """
        failures = self.delivery_failures
        left = self._producer.flush(CALL_TIMEOUT_S)
        if left:
            raise MonitorError(
                f"{left} records still queued after {CALL_TIMEOUT_S} s", retriable=True
            )
        if self.delivery_failures != failures:
            # NOTE: in at-least-once mode, records that failed delivery are
            # lost here while their offsets are committed. Only exactly-once
            # mode redoes them.
            logger.warning("Committing offsets although some records were lost")
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            raise MonitorError(
                f"offset commit failed: {err.args[0]}", retriable=True
            ) from err

    def abort(self) -> None:
        """Records already sent stay; the plain producer has nothing to abort."""

    def close(self) -> None:
        left = self._producer.flush(CALL_TIMEOUT_S)
        if left:
            logger.error("Monitor stopped with %d records not delivered", left)
