"""librdkafka's log lines go through Python logging, rate-limited."""

import logging
import socket
import time
import uuid

import pytest
from confluent_kafka import Producer

from hbmon.kafka import LIBRDKAFKA_LOG, KafkaSettings
from hbmon.logs import LibrdkafkaLog


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_client_config_sets_shared_logger():
    config = KafkaSettings().client_config()

    assert config["logger"] is LIBRDKAFKA_LOG


def test_refused_connection_logs_through_logger(caplog):
    caplog.set_level(logging.DEBUG, logger="hbmon.librdkafka")
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    config = settings.client_config(
        reconnect_backoff_ms=10, reconnect_backoff_max_ms=50
    )
    # A limiter of its own: the shared one may have just passed a FAIL line
    # of another test's client, and would then drop this one.
    config["logger"] = LibrdkafkaLog(logging.getLogger("hbmon.librdkafka"))
    # Clients of earlier tests may still log to the same logger.
    client_id = f"log-test-{uuid.uuid4().hex[:8]}"
    config["client.id"] = client_id
    producer = Producer(config)
    try:
        # librdkafka retries the connection many times in these 3 s.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            producer.poll(0.1)
    finally:
        producer.flush(0)

    refused = [
        r
        for r in caplog.records
        if "Connection refused" in r.getMessage() and client_id in r.getMessage()
    ]
    assert refused, caplog.text
    assert all(r.name == "hbmon.librdkafka" for r in refused)
    assert len(refused) == 1, caplog.text


def test_repeated_lines_are_limited_per_facility(caplog):
    caplog.set_level(logging.DEBUG, logger="test.librdkafka")
    log = LibrdkafkaLog(logging.getLogger("test.librdkafka"), interval_s=60)

    for _ in range(100):
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "refused")
    log.log(logging.ERROR, "%s [%s] %s", "ERROR", "rdkafka#consumer-1", "all down")

    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "FAIL [rdkafka#consumer-1] refused",
        "ERROR [rdkafka#consumer-1] all down",
    ]


def test_next_line_counts_dropped_ones(caplog):
    caplog.set_level(logging.DEBUG, logger="test.librdkafka")
    log = LibrdkafkaLog(logging.getLogger("test.librdkafka"), interval_s=0.2)

    for _ in range(5):
        log.log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "down")
    time.sleep(0.3)
    log.log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "down")

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1] == (
        "FAIL [rdkafka#producer-1] down (4 more FAIL lines dropped since the last one)"
    )


def test_old_broker_guess_gets_a_note(caplog):
    caplog.set_level(logging.DEBUG, logger="test.librdkafka")
    log = LibrdkafkaLog(logging.getLogger("test.librdkafka"), interval_s=60)
    line = (
        "127.0.0.1:9092/1: ApiVersionRequest failed: Local: Timed out: probably "
        "due to broker version < 0.10 (see api.version.request configuration)"
    )

    log.log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", line)

    message = caplog.records[0].getMessage()
    assert message.startswith("FAIL [rdkafka#consumer-1] 127.0.0.1:9092/1: ")
    assert message.endswith("when a broker restarts or is frozen, whatever its version")


@pytest.mark.parametrize(
    "line",
    [
        "[thrd:main]: Failed to acquire idempotence PID from broker "
        "127.0.0.1:9092/1: Broker: Coordinator load in progress: retrying",
        "[thrd:main]: Failed to acquire transactional PID from broker "
        "TxnCoordinator/1: Broker: Not coordinator: retrying",
    ],
)
def test_starting_coordinator_is_info(caplog, line):
    caplog.set_level(logging.DEBUG, logger="test.librdkafka")
    log = LibrdkafkaLog(logging.getLogger("test.librdkafka"), interval_s=60)

    log.log(logging.WARNING, "%s [%s] %s", "GETPID", "hbmon-ingest#producer-1", line)

    record = caplog.records[0]
    assert record.levelno == logging.INFO
    assert record.getMessage().endswith(
        "retrying; usual for a few seconds after the broker starts"
    )
