"""The Kafka producer behind ingest, and the broker health that decides 503s.

The broker counts as reachable from the last successful contact: a
delivery report without error, or a statistics report that shows a broker
connection in state UP. It counts as lost from the start of the process
until the first contact, from an `_ALL_BROKERS_DOWN` error until the next
contact, and when every connected broker has left requests unanswered for
longer than `unreachable_s`, as a frozen broker does (then from the last
byte it sent). A `_TRANSPORT` error alone does not count, because it names
one broker connection while others may still work; librdkafka logs it.
Statistics arrive every `stats_interval_ms` even when no heartbeat flows,
so an idle service notices that the broker came back.

Heartbeats go out in bundle records once the partition count of the
heartbeat topic is known, from the broker's metadata or the statistics.
Each accepted heartbeat's record joins a list for its partition, and every
poll (and the end of every batch request) encodes each list as one record,
a JSON array, and hands it to the producer. A produce call and a delivery
report per heartbeat cost about as much as the rest of ingest's work on
it. Until the count is known, each heartbeat is its own record, keyed by
its device id.
"""

import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Any
from zlib import crc32

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from ingest.errors import IngestError
from ingest.heartbeat import TS_FLAGS, Record, encode_record
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

TS_FLAG_HEADER = "device_ts_flag"
_FLAG_HEADERS: dict[str, list[tuple[str, str | bytes | None]]] = {
    flag: [(TS_FLAG_HEADER, flag.encode())] for flag in TS_FLAGS
}
# Bundle records stay well under the producer's and the broker's default
# limit of about 1 MB per record.
BUNDLE_MAX_BYTES = 262_144


class Publisher:
    """Publish heartbeat records and track whether the broker is reachable.

    Callbacks from librdkafka run only inside `poll` and `close`, on the
    thread that calls them, so the state here needs no lock.
    """

    def __init__(
        self,
        settings: IngestSettings,
        kafka: KafkaSettings,
        metrics: IngestMetrics,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._metrics = metrics
        self._topic = kafka.heartbeat_topic
        self._retry_after = [(b"retry-after", str(settings.retry_after_s).encode())]
        self._producer: Producer | None = None
        self._lost_since: float | None = None
        self._lost_logged = False
        self._last_contact: float | None = None
        self._delivered = False
        self._fatal: str | None = None
        # False from startup until the first contact, while the broker is
        # lost, and after a fatal error, which is when check_available has
        # something to check.
        self.healthy = False
        # The heartbeat topic's partitions as librdkafka last reported them
        # in its statistics; 0 until then.
        self.partitions = 0
        # Records not yet handed to the producer, by partition.
        self._pending: list[list[Record]] = []
        self._pending_count = 0
        # Heartbeats handed to the producer whose delivery report has not
        # been served yet, which a flush that times out loses.
        self.unacknowledged = 0
        # The max heartbeats that may wait. It is 0 from the moment the
        # producer rejected a bundle until all waiting ones went out.
        self._room = settings.queue_max_messages
        self._log = RateLimitedLog()

    def start(self) -> None:
        """Create the producer. The broker counts as lost until the first contact."""
        self._lost_since = time.monotonic()
        self._producer = Producer(self._config())
        logger.info(
            "Producing heartbeats to topic %s on %s",
            self._topic,
            self._kafka.bootstrap_servers,
        )

    def reached(self) -> bool:
        """Return whether the broker has responded since startup."""
        return self._last_contact is not None

    def partition_count(self, timeout_s: float) -> int:
        """Ask the broker for the heartbeat topic's partition count; 0 if unknown.

        Blocks for up to `timeout_s`, so async callers run it in a worker
        thread and pass the result to `use_partitions` on the loop.
        """
        producer = self._producer
        if producer is None:
            return 0
        try:
            metadata = producer.list_topics(self._topic, timeout=timeout_s)
        except KafkaException as err:
            logger.info(
                "Partition count of %s not known yet (%s); it comes with the "
                "producer's statistics",
                self._topic,
                err,
            )
            return 0
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None:
            return 0
        return len(topic.partitions)

    def close(self, timeout_s: float) -> tuple[int, int, int]:
        """Flush everything for up to `timeout_s`; return what was left unsent.

        Returns the records left in the producer, the heartbeats in them and
        the heartbeats never handed to it. Blocks the calling thread, so
        async callers run it in a worker thread.
        """
        producer = self._producer
        if producer is None:
            return 0, 0, 0
        deadline = time.monotonic() + timeout_s
        self.send_pending()
        while self._pending_count and time.monotonic() < deadline:
            producer.poll(0.1)
            self.send_pending()
        left = producer.flush(max(0.0, deadline - time.monotonic()))
        self._producer = None
        return int(left), self.unacknowledged, self._pending_count

    def waiting(self) -> int:
        """Return the heartbeats waiting to be handed to the producer in a bundle."""
        return self._pending_count

    def queue_length(self) -> int:
        """Return the heartbeats waiting for a bundle plus librdkafka's out-queue.

        The out-queue counts records not yet acknowledged by Kafka, plus
        delivery reports and callbacks not yet served.
        """
        producer = self._producer
        queued = len(producer) if producer is not None else 0
        return queued + self._pending_count

    def poll(self) -> None:
        """Serve pending delivery, error and statistics callbacks without blocking."""
        producer = self._producer
        if producer is None:
            return
        self.send_pending()
        producer.poll(0)
        if self._delivered:
            self._delivered = False
            self._mark_contact()
        lost_since = self._lost_since
        if lost_since is not None and not self._lost_logged:
            lost_s = time.monotonic() - lost_since
            if lost_s > self._settings.unreachable_s:
                self._lost_logged = True
                logger.warning(
                    "Kafka at %s unreachable for %.1f s; responding with 503 "
                    "until it is reached",
                    self._kafka.bootstrap_servers,
                    lost_s,
                )

    def check_available(self, now: float) -> None:
        """Raise a 503 IngestError if the broker has been lost for too long.

        `now` is a time.monotonic() reading.
        """
        if self._fatal is not None:
            raise self._unavailable(
                "producer_error",
                "the Kafka producer failed and the service must be restarted",
            )
        lost_since = self._lost_since
        if lost_since is not None and now - lost_since > self._settings.unreachable_s:
            raise self._unavailable(
                "broker_unreachable",
                f"Kafka has been unreachable for {now - lost_since:.0f} s",
            )

    def check_room(self, count: int) -> None:
        """Raise a 503 IngestError unless the queue has room for `count` records."""
        producer = self._producer
        if (
            producer is None
            or not self._room
            or len(producer) + self._pending_count + count
            > self._settings.queue_max_messages
        ):
            raise self._unavailable("queue_full", "the producer queue is full")

    def publish(self, device_id: str, record: Record, ts_flag: str | None) -> None:
        """Queue one heartbeat record for the producer.

        Once the partition count is known, the record joins its partition's
        next bundle, which `send_pending` hands to the producer. Until then
        it goes to the producer at once, keyed by `device_id`, with the
        device_ts_flag header.

        Raises:
            IngestError: 503 when the producer queue is full or the producer
                rejects the record.
        """
        partitions = self.partitions
        if partitions and self._pending_count < self._room:
            # partition_for, inline: a call costs about 0.05 µs here.
            self._pending[crc32(device_id.encode()) % partitions].append(record)
            self._pending_count += 1
            return
        value = encode_record(record)
        producer = self._producer
        if producer is None:
            raise self._unavailable("producer_error", "the producer is not running")
        if partitions:
            raise self._unavailable("queue_full", "the producer queue is full")
        # Most records have no header, and a keyword argument costs time.
        try:
            if ts_flag is None:
                producer.produce(self._topic, value, device_id)
            else:
                flag_headers = _FLAG_HEADERS[ts_flag]
                producer.produce(self._topic, value, device_id, headers=flag_headers)
            self.unacknowledged += 1
            return
        except BufferError:
            # Serve delivery reports, which may free room, and try once more.
            producer.poll(0)
        except KafkaException as err:
            self._log_producer_error(err)
            raise self._unavailable("producer_error", "the producer failed") from err
        headers = _FLAG_HEADERS[ts_flag] if ts_flag is not None else None
        try:
            producer.produce(self._topic, value, device_id, headers=headers)
        except BufferError as err:
            raise self._unavailable("queue_full", "the producer queue is full") from err
        self.unacknowledged += 1

    def send_pending(self) -> None:
        """Hand each partition's waiting heartbeats to the producer as bundles.

        A bundle record has no key: each item names its device, and the
        partition is where `hbmon.kafka.partition_for` puts each device's
        own key. When the producer queue is full, what is left waits for
        the next call, and `publish` raises a 503 IngestError until then.
        """
        producer = self._producer
        if not self._pending_count or producer is None:
            return
        topic = self._topic
        for partition, records in enumerate(self._pending):
            if not records:
                continue
            sent = 0
            try:
                for value, count in bundle_values(records):
                    # The bundle's callback gets the number of heartbeats
                    # that its delivery report settles.
                    producer.produce(
                        topic,
                        value,
                        None,
                        partition,
                        on_delivery=partial(self._on_bundle_delivery, count),
                    )
                    sent += count
                    self.unacknowledged += count
            except BufferError:
                del records[:sent]
                self._pending_count -= sent
                self._room = 0
                return
            except KafkaException as err:
                self._log_producer_error(err)
                self._metrics.delivery_failures.inc()
                logger.error(
                    "The producer rejected a bundle of %d heartbeats for "
                    "partition %d, so they are lost",
                    len(records) - sent,
                    partition,
                )
            self._pending_count -= len(records)
            records.clear()
        self._room = self._settings.queue_max_messages

    def readiness(self, now: float) -> str | None:
        """Return why the service is not ready, or None when it is.

        Ready means the broker was reached within the unreachable bound or
        two statistics intervals, whichever is longer, and is not lost.
        """
        if self._fatal is not None:
            return f"the Kafka producer failed: {self._fatal}"
        last = self._last_contact
        if last is None:
            return f"Kafka at {self._kafka.bootstrap_servers} not reached yet"
        window_s = max(
            self._settings.unreachable_s, 2 * self._settings.stats_interval_ms / 1000
        )
        if self._lost_since is not None or now - last > window_s:
            return (
                f"no contact with Kafka at {self._kafka.bootstrap_servers} "
                f"for {now - last:.0f} s"
            )
        return None

    def _config(self) -> dict[str, Any]:
        settings = self._settings
        config = self._kafka.client_config(
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            compression_type=settings.compression,
            queue_buffering_max_messages=settings.queue_max_messages,
            queue_buffering_max_kbytes=settings.queue_max_kbytes,
            message_timeout_ms=settings.delivery_timeout_ms,
            statistics_interval_ms=settings.stats_interval_ms,
        )
        # Keys with underscores of their own cannot go through client_config.
        config["batch.size"] = settings.batch_size_bytes
        config["client.id"] = "hbmon-ingest"
        config["log.connection.close"] = False
        # partition_for mirrors this partitioner for bundle records.
        config["partitioner"] = "consistent_random"
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        config["stats_cb"] = self._on_stats
        return config

    def _on_bundle_delivery(
        self, count: int, err: KafkaError | None, msg: Message
    ) -> None:
        self.unacknowledged -= count
        self._report_delivery(err, msg)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # A record with a key contains one heartbeat, and bundles have
        # callbacks of their own.
        self.unacknowledged -= 1
        self._report_delivery(err, msg)

    def _report_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered = True
            return
        self._metrics.delivery_failures.inc()
        suppressed = self._log.allow("delivery")
        if suppressed is not None:
            key = msg.key()
            logger.error(
                "Delivery of %s to %s (partition %s) failed: %s; the record is "
                "lost (%d similar failures not logged)",
                f"a heartbeat of device {key.decode('utf-8', 'replace')}"
                if key
                else f"a bundle of {_bundle_size(msg.value())} heartbeats",
                msg.topic(),
                msg.partition(),
                err.str(),
                suppressed,
            )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            self.healthy = False
            logger.critical(
                "Kafka producer failed: %s; responding with 503 until the "
                "service restarts",
                err.str(),
            )
            return
        if err.code() == KafkaError._TRANSPORT:
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._lose_contact(err.str(), time.monotonic())
            return
        self._log_producer_error(err)

    def _on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        brokers = stats.get("brokers", {})
        silent_s = unanswered_s(brokers)
        if silent_s is not None and silent_s > self._settings.unreachable_s:
            # Connected but sending no responses, as a frozen broker does.
            self._lose_contact(
                f"no response to waiting requests for {silent_s:.0f} s",
                time.monotonic() - silent_s,
            )
        elif any(broker.get("state") == "UP" for broker in brokers.values()):
            self._mark_contact()
        # The topic appears once a record went to it. Partition "-1" is the
        # queue of records not yet partitioned, and partitions marked
        # "unknown" are not in the broker's metadata.
        topic = stats.get("topics", {}).get(self._topic)
        if topic is not None:
            self.use_partitions(
                sum(
                    1
                    for partition in topic.get("partitions", {}).values()
                    if partition.get("partition", -1) >= 0
                    and not partition.get("unknown", False)
                )
            )

    def use_partitions(self, count: int) -> None:
        """Bundle by `count` partitions from now on.

        Heartbeats already waiting were placed by the old count and go out
        to those partitions, which still exist: Kafka only adds partitions.
        """
        if count <= 0 or count == self.partitions:
            return
        if self.partitions:
            logger.info(
                "Topic %s has %d partitions instead of %d; bundling by the new count",
                self._topic,
                count,
                self.partitions,
            )
        self.send_pending()
        while len(self._pending) < count:
            self._pending.append([])
        self.partitions = count

    def _lose_contact(self, reason: str, since: float) -> None:
        """Count the broker as lost from `since` (a monotonic time) on."""
        if self._lost_since is not None:
            return
        self._lost_since = since
        self.healthy = False
        logger.warning(
            "Lost contact with Kafka at %s: %s; responding with 503 if it lasts "
            "over %s s",
            self._kafka.bootstrap_servers,
            reason,
            self._settings.unreachable_s,
        )

    def _mark_contact(self) -> None:
        now = time.monotonic()
        lost_since = self._lost_since
        first = self._last_contact is None
        self._last_contact = now
        if lost_since is None:
            return
        self._lost_since = None
        self.healthy = self._fatal is None
        self._lost_logged = False
        if first:
            logger.info("Reached Kafka at %s", self._kafka.bootstrap_servers)
            return
        logger.info(
            "Reached Kafka at %s again after %.1f s without contact",
            self._kafka.bootstrap_servers,
            now - lost_since,
        )

    def _log_producer_error(self, err: KafkaError | KafkaException) -> None:
        kafka_error = err.args[0] if isinstance(err, KafkaException) else err
        code = kafka_error.name() if isinstance(kafka_error, KafkaError) else "other"
        suppressed = self._log.allow(f"error:{code}")
        if suppressed is not None:
            logger.warning(
                "Kafka producer error: %s; the producer retries on its own "
                "(%d similar errors not logged)",
                err,
                suppressed,
            )

    def _unavailable(self, reason: str, cause: str) -> IngestError:
        retry_after_s = self._settings.retry_after_s
        return IngestError(
            503,
            "",
            f"{cause}; retry after {retry_after_s} s",
            retriable=True,
            reason=reason,
            headers=self._retry_after,
        )


def _bundle_size(value: bytes | None) -> int:
    try:
        return len(orjson.loads(value or b"[]"))
    except orjson.JSONDecodeError:
        return 0


def unanswered_s(brokers: dict[str, Any]) -> float | None:
    """Return how long connected brokers have left requests unanswered, or None.

    `brokers` is the "brokers" object of librdkafka's statistics. Only
    brokers with a node id (not the bootstrap entry) in state UP count. It
    is None unless each of them has requests waiting for a response
    (`waitresp_cnt`), because an idle connection proves nothing. Then it is
    the shortest time since one of them sent a byte (`rxidle`), in seconds.
    """
    silent_s: list[float] = []
    for broker in brokers.values():
        if broker.get("state") != "UP" or int(broker.get("nodeid", -1)) < 0:
            continue
        rxidle_us = int(broker.get("rxidle", -1))
        if not broker.get("waitresp_cnt", 0) or rxidle_us < 0:
            return None
        silent_s.append(rxidle_us / 1_000_000)
    return min(silent_s) if silent_s else None


def bundle_values(records: list[Record]) -> Iterator[tuple[bytes, int]]:
    """Encode heartbeat records into bundle values of at most BUNDLE_MAX_BYTES.

    Yields each bundle, a JSON array, with the number of heartbeats in it,
    in the order of `records`. A list that encodes too long is split in
    halves until each half fits. A record longer than the limit alone still
    makes a bundle of one. Encoding does not fail: the records' values come
    from orjson.loads, and orjson.dumps encodes all of them (it decodes
    integers beyond 64 bits as floats, and attrs are already bytes).
    """
    value = encode_record(records)
    if len(value) <= BUNDLE_MAX_BYTES or len(records) == 1:
        yield value, len(records)
        return
    half = len(records) // 2
    yield from bundle_values(records[:half])
    yield from bundle_values(records[half:])
