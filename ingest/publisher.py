"""The Kafka producer behind ingest, and the broker health that decides 503s.

The broker counts as reachable from the last successful contact: a
delivery report without error, or a statistics report that shows a broker
connection in state UP. It counts as lost from the start of the process
until the first contact, and from an `_ALL_BROKERS_DOWN` error until the
next contact. A `_TRANSPORT` error alone does not count, because it names
one broker connection while others may still work; librdkafka logs it.
Statistics arrive every `stats_interval_ms` even when no heartbeat flows,
so an idle service notices that the broker came back.
"""

import logging
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog
from ingest.errors import IngestError
from ingest.heartbeat import TS_FLAGS
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

TS_FLAG_HEADER = "device_ts_flag"
_FLAG_HEADERS: dict[str, list[tuple[str, str | bytes | None]]] = {
    flag: [(TS_FLAG_HEADER, flag.encode())] for flag in TS_FLAGS
}


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

    def close(self, timeout_s: float) -> int:
        """Flush the producer for up to `timeout_s` and return the records left unsent.

        Blocks the calling thread, so async callers run it in a worker thread.
        """
        if self._producer is None:
            return 0
        left = self._producer.flush(timeout_s)
        self._producer = None
        return int(left)

    def queue_length(self) -> int:
        """Return librdkafka's out-queue length.

        It counts records not yet acknowledged by Kafka, plus delivery reports
        and callbacks not yet served.
        """
        producer = self._producer
        return len(producer) if producer is not None else 0

    def poll(self) -> int:
        """Serve pending delivery, error and statistics callbacks without blocking.

        Returns the number of callbacks served, so a caller can poll again
        at once when it was not zero.
        """
        producer = self._producer
        if producer is None:
            return 0
        served = int(producer.poll(0))
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
        return served

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
            or len(producer) + count > self._settings.queue_max_messages
        ):
            raise self._unavailable("queue_full", "the producer queue is full")

    def publish(self, device_id: str, value: bytes, ts_flag: str | None) -> None:
        """Queue one record keyed by `device_id`, with the device_ts_flag header.

        Raises:
            IngestError: 503 when the producer queue is full or the producer
                rejects the record.
        """
        producer = self._producer
        if producer is None:
            raise self._unavailable("producer_error", "the producer is not running")
        # Most records have no header, and a keyword argument costs time.
        try:
            if ts_flag is None:
                producer.produce(self._topic, value, device_id)
            else:
                flag_headers = _FLAG_HEADERS[ts_flag]
                producer.produce(self._topic, value, device_id, headers=flag_headers)
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
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        config["stats_cb"] = self._on_stats
        return config

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered = True
            return
        self._metrics.delivery_failures.inc()
        suppressed = self._log.allow("delivery")
        if suppressed is not None:
            key = msg.key()
            logger.error(
                "Delivery of a heartbeat for device %s to %s failed: %s; the "
                "record is lost (%d similar failures not logged)",
                key.decode("utf-8", "replace") if key else "?",
                msg.topic(),
                err.str(),
                suppressed,
            )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            logger.critical(
                "Kafka producer failed: %s; responding with 503 until the "
                "service restarts",
                err.str(),
            )
            return
        if err.code() == KafkaError._TRANSPORT:
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                logger.warning(
                    "Lost contact with Kafka at %s: %s; responding with 503 if "
                    "it lasts over %s s",
                    self._kafka.bootstrap_servers,
                    err.str(),
                    self._settings.unreachable_s,
                )
            return
        self._log_producer_error(err)

    def _on_stats(self, stats_json: str) -> None:
        brokers = orjson.loads(stats_json).get("brokers", {})
        if any(broker.get("state") == "UP" for broker in brokers.values()):
            self._mark_contact()

    def _mark_contact(self) -> None:
        now = time.monotonic()
        lost_since = self._lost_since
        first = self._last_contact is None
        self._last_contact = now
        if lost_since is None:
            return
        self._lost_since = None
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
