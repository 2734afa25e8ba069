"""The monitor's output: alerts and changelog records, committed with offsets.

TransactionalProducer commits alerts, changelog records and consumer
offsets in one Kafka transaction, so a crash loses or repeats none of them.
PlainProducer flushes the same records and then commits the offsets; it is
at-least-once and exists as the baseline that the exactly-once cost is
measured against.
"""

import logging
import threading
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
from hbmon.logs import RateLimitedLog
from monitor.errors import MonitorError
from monitor.stall import CallStalled, call_with_limit

logger = logging.getLogger(__name__)

# How long one transactional call waits for the broker before it raises a
# retriable error; the worker retries on its next step.
CALL_TIMEOUT_S = 5.0
# A transactional call that has not returned this long after its own
# timeout counts as stalled, and its client is replaced.
STALL_GRACE_S = 5.0
# Replaced clients whose stalled call has still not returned. At this
# many, the process exits instead, so that blocked threads do not pile up.
MAX_STALLED_CLIENTS = 3
LINGER_MS = 5
# Offset commit errors of a consumer that is no longer a member of its
# group, for example after its session expired during a broker outage.
_LEFT_GROUP = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
# Fatal errors that a new client would not clear. When another producer
# took over the transactional id, a new client would fence that one in
# turn. A missing permission fails a new client too.
_PERMANENT = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def transaction_error(
    name: str, transactional_id: str, error: KafkaError
) -> MonitorError:
    """Return the MonitorError of transactional call `name` failing with `error`.

    A fatal error ends only the client, so it requires a new client,
    unless another producer with the same transactional id fenced this one
    or a permission is missing.
    """
    permanent = error.code() in _PERMANENT
    return MonitorError(
        f"{name} failed for transactional id {transactional_id}: {error}",
        retriable=error.retriable(),
        abort_required=error.txn_requires_abort(),
        restart_required=error.fatal() and not permanent,
    )


class MonitorProducer:
    """Common produce path of both output kinds."""

    # What a failed delivery means for the output, in the log line about it.
    LOST_RECORD_OUTCOME = (
        "the commit will fail and the work since the last commit will be redone"
    )

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.delivery_failures = 0
        self._delivery_log = RateLimitedLog()

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
        dropped = self._delivery_log.allow("delivery")
        if dropped is None:
            return
        logger.warning(
            "Record for %s[%s] key %r was not delivered: %s; %s (%d similar "
            "failures not logged)",
            message.topic(),
            message.partition(),
            message.key(),
            error,
            self.LOST_RECORD_OUTCOME,
            dropped,
        )


class TransactionalProducer(MonitorProducer):
    """Alerts, changelog records and offsets in one transaction per commit.

    When its client fails fatally or a call stalls, `restart()` replaces
    the client with a new one of the same transactional id.
    """

    def __init__(
        self, kafka: KafkaSettings, transactional_id: str, transaction_timeout_ms: int
    ) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        # The fatal error that the current client reported, if any.
        self.fatal_error: KafkaError | None = None
        self._generation = 0
        # Threads still blocked in a call on a replaced client, and the
        # client of the last call that stalled.
        self._stalled: list[threading.Thread] = []
        self._stalled_client: Producer | None = None
        super().__init__(self._new_client())
        # Set while commit_transaction failed with a retriable error. Only a
        # retry of that call is allowed then.
        self._committing = False

    def _new_client(self) -> Producer:
        config = self.kafka.client_config(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.transaction_timeout_ms,
            linger_ms=LINGER_MS,
            # The coordinator returns CONCURRENT_TRANSACTIONS until the
            # markers of the previous commit are written, and the client
            # retries after this backoff (default 100 ms). At 10 ms a
            # commit took 6 ms instead of 22 ms (median, measured on the
            # local single-node broker).
            retry_backoff_ms=10,
        )
        generation = self._generation
        config["error_cb"] = lambda error: self._on_error(generation, error)
        return Producer(config)

    def _on_error(self, generation: int, error: KafkaError) -> None:
        # A replaced client may still report; only the current one counts.
        if generation == self._generation and error.fatal():
            self.fatal_error = self.fatal_error or error

    @property
    def stalled_clients(self) -> int:
        """Return how many replaced clients are still blocked in a call."""
        self._stalled = [t for t in self._stalled if t.is_alive()]
        return len(self._stalled)

    def restart(self) -> None:
        """Replace the client with a new one; `start()` must follow.

        The new client's init_transactions fences the old one and aborts
        its open transaction.

        Raises:
            MonitorError: fatal, when too many replaced clients are still
                blocked in a call.
        """
        if self.stalled_clients >= MAX_STALLED_CLIENTS:
            raise MonitorError(
                f"{self.stalled_clients} replaced producers of transactional id "
                f"{self.transactional_id} are still blocked in a call"
            )
        old = self._producer
        self._generation += 1
        self.fatal_error = None
        self._committing = False
        self._producer = self._new_client()
        if old is not self._stalled_client:
            # Drop what it still holds; no delivery report is served.
            old.purge(in_queue=True, in_flight=True, blocking=False)
        self._stalled_client = None

    def start(self) -> None:
        """Fence older producers with the same id and open the first transaction.

        Raises:
            MonitorError: the broker did not respond or rejected the id.
        """
        # librdkafka's own default: twice the transaction timeout.
        timeout_s = 2 * self.transaction_timeout_ms / 1000
        self._call(
            "init_transactions",
            lambda: self._producer.init_transactions(timeout_s),
            timeout_s,
        )
        self._producer.begin_transaction()

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        """Commit the open transaction with `offsets`, then open the next one.

        Raises:
            MonitorError: retriable, abort-required or fatal, as its flags tell.
        """
        if not self._committing:
            # Read the group metadata in this thread. Read in the call's
            # thread, it blocked for 10 s after the process got SIGTERM
            # (confluent-kafka 2.16.1, in the broker restart test).
            group = consumer.consumer_group_metadata()
            self._call(
                "send_offsets_to_transaction",
                lambda: self._producer.send_offsets_to_transaction(
                    offsets, group, CALL_TIMEOUT_S
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
            self._call(
                "abort_transaction",
                lambda: self._producer.abort_transaction(CALL_TIMEOUT_S),
            )
        except MonitorError as err:
            logger.warning("Aborting the last transaction on close failed: %s", err)

    def _call(
        self, name: str, call: Callable[[], object], timeout_s: float = CALL_TIMEOUT_S
    ) -> None:
        try:
            call_with_limit(call, name, timeout_s + STALL_GRACE_S)
        except CallStalled as err:
            # The thread keeps the client alive until the call returns.
            self._stalled.append(err.thread)
            self._stalled_client = self._producer
            raise MonitorError(
                f"{name} stalled for transactional id {self.transactional_id}: {err}",
                restart_required=True,
            ) from err
        except KafkaException as err:
            raise transaction_error(name, self.transactional_id, err.args[0]) from err


class PlainProducer(MonitorProducer):
    """Idempotent producer; offsets are committed after the records are flushed."""

    LOST_RECORD_OUTCOME = "the record is lost once the next commit goes through"

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
                offset commit failed; abort-required when the consumer left
                its group.
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
            error = err.args[0]
            # A member that left the group cannot commit until it rejoins,
            # and it rejoins only while the worker reads, so retrying the
            # commit would block forever. The worker reads again from the
            # last committed offsets instead.
            left_group = error.code() in _LEFT_GROUP
            raise MonitorError(
                f"offset commit failed: {error}",
                retriable=not left_group,
                abort_required=left_group,
            ) from err

    def abort(self) -> None:
        """Records already sent stay; the plain producer has nothing to abort."""

    def close(self) -> None:
        left = self._producer.flush(CALL_TIMEOUT_S)
        if left:
            logger.error("Monitor stopped with %d records not delivered", left)
