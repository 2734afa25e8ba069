"""Read a compacted topic into memory, and write to the alerter's topics.

The sent log, the device state and the silences live in compacted topics.
A TopicReader reads one from the beginning to its end at startup and after
each rebalance (catch_up), and can then follow new records (poll).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hbmon.kafka import KafkaSettings

logger = logging.getLogger(__name__)

Apply = Callable[[str, bytes | None], None]
# Errors that pass once the partitions' leaders are known again: while a new
# topic's leaders are elected, or after a broker restart.
_LEADER_ERRORS = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    # librdkafka's own error while its metadata lacks the partition, as
    # after a broker restart, until the next metadata refresh.
    KafkaError._UNKNOWN_PARTITION,
    # One request's own time limit, which _end_offsets keeps short.
    KafkaError._TIMED_OUT,
)


class StateError(Exception):
    """Reading or writing an alerter topic failed.

    `retriable` is True when the broker may recover (a timeout); a
    restart of the alerter is then the retry.
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def create_producer(kafka: KafkaSettings) -> Producer:
    """Create the idempotent producer that writes every alerter topic."""
    return Producer(
        kafka.client_config(
            client_id="hbmon-alerter-state",
            acks="all",
            enable_idempotence=True,
            # Lanes wait for each sent-log write, so batching would only add
            # latency to every notification.
            linger_ms=0,
        )
    )


class TopicWriter:
    """Writes keyed records to one topic through a shared producer. Thread-safe.

    Delivery failures are counted in `failures`; flush() reports whether
    everything written so far reached the broker.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.failures = 0
        self._lock = threading.Lock()

    def write(self, key: str, value: bytes | None) -> None:
        """Queue one record; None writes a tombstone."""
        self.producer.produce(
            self.topic, key=key.encode(), value=value, on_delivery=self._delivered
        )
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> bool:
        """Wait until queued records are acknowledged; return False on timeout."""
        return self.producer.flush(timeout_s) == 0

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is None:
            return
        with self._lock:
            self.failures += 1
        logger.error(
            "Writing key %r to topic %s failed: %s; the record is lost, so a "
            "restart may repeat what it recorded",
            message.key(),
            self.topic,
            err,
        )


class TopicReader:
    """Reads every partition of one topic from the beginning, passing records on.

    `apply(key, value)` gets each record in partition order; a tombstone
    has value None. Records without a key are skipped.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, apply: Apply) -> None:
        self.topic = topic
        self.apply = apply
        self._consumer = Consumer(
            kafka.client_config(
                group_id=f"hbmon-alerter-reader-{uuid.uuid4().hex[:12]}",
                client_id="hbmon-alerter-reader",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
        )
        self._partitions: list[TopicPartition] = []

    def start(self, timeout_s: float) -> None:
        """Assign all partitions of the topic from their first offset.

        Raises:
            StateError: the topic does not exist, or the broker timed out.
        """
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as err:
            raise StateError(
                f"reading topic {self.topic} failed: {err}", retriable=True
            ) from err
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise StateError(
                f"topic {self.topic} does not exist; the alerter creates it at "
                "startup, so check the broker's permissions",
                retriable=False,
            )
        self._partitions = [
            TopicPartition(self.topic, partition, OFFSET_BEGINNING)
            for partition in sorted(topic.partitions)
        ]
        self._consumer.assign(self._partitions)

    def catch_up(
        self, timeout_s: float, stop: threading.Event | None = None
    ) -> int | None:
        """Read until every partition's end as of this call; return records read.

        Returns None without reaching the end once `stop` is set, which a
        broker that just came back can otherwise delay for `timeout_s`.

        Raises:
            StateError: the end was not reached within `timeout_s`.
        """
        ends = self._end_offsets(timeout_s, stop)
        if ends is None:
            return None
        count = 0
        deadline = time.monotonic() + timeout_s
        while not self._reached(ends):
            if stop is not None and stop.is_set():
                return None
            if time.monotonic() > deadline:
                raise StateError(
                    f"reading topic {self.topic} to its end took over {timeout_s} s",
                    retriable=True,
                )
            count += self.poll(max_records=1000, timeout_s=0.2)
        return count

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived since the last call; return how many."""
        records = self._consumer.consume(max_records, timeout_s)
        applied = 0
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning(
                        "Reading topic %s failed: %s; will keep reading",
                        self.topic,
                        error,
                    )
                continue
            key = record.key()
            if key is None:
                continue
            self.apply(key.decode("utf-8", errors="replace"), record.value())
            applied += 1
        return applied

    def close(self) -> None:
        self._consumer.close()

    def _end_offsets(
        self, timeout_s: float, stop: threading.Event | None
    ) -> dict[int, tuple[int, int]] | None:
        """Return (low, high) watermarks per partition, or None once `stop` is set.

        Retriable broker errors, such as NOT_LEADER_FOR_PARTITION right after
        the topic was created, are retried every 0.2 s until `timeout_s`.
        Each request waits at most 1 s, so that `stop` is seen.
        """
        deadline = time.monotonic() + timeout_s
        ends = {}
        for tp in self._partitions:
            while True:
                if stop is not None and stop.is_set():
                    return None
                try:
                    ends[tp.partition] = self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, tp.partition),
                        timeout=min(1.0, max(0.1, deadline - time.monotonic())),
                    )
                    break
                except KafkaException as err:
                    error = err.args[0]
                    retriable = error.retriable() or error.code() in _LEADER_ERRORS
                    if not retriable or time.monotonic() > deadline:
                        raise StateError(
                            f"reading the end offsets of topic {self.topic} "
                            f"failed: {err}",
                            retriable=retriable,
                        ) from err
                    time.sleep(0.2)
        return ends

    def _reached(self, ends: dict[int, tuple[int, int]]) -> bool:
        positions = self._consumer.position(
            [TopicPartition(self.topic, partition) for partition in ends]
        )
        for tp in positions:
            low, high = ends[tp.partition]
            if high <= low:
                continue
            if tp.offset < high:
                return False
        return True
