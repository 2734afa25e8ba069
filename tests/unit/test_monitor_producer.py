"""How the monitor treats transactional producer errors, without a broker.

The clients here are real confluent-kafka producers pointed at a closed
port on 127.0.0.1, so no call reaches a broker.
"""

import logging
from dataclasses import replace

import pytest
from confluent_kafka import KafkaError, Message
from prometheus_client import CollectorRegistry

from hbmon.kafka import KafkaSettings
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.producer import PlainProducer, TransactionalProducer, transaction_error
from monitor.restarts import MAX_RESTARTS, RESTART_AFTER_FAILURES
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker
from tests.integration.services import free_port

TXN_ID = "monitor-test-0"


@pytest.fixture
def kafka() -> KafkaSettings:
    return replace(KafkaSettings(), bootstrap_servers=f"127.0.0.1:{free_port()}")


@pytest.fixture
def worker(kafka):
    settings = replace(
        MonitorSettings(), transactional_id=TXN_ID, transaction_timeout_ms=1000
    )
    registry = CollectorRegistry()
    worker = MonitorWorker(kafka, settings, MonitorMetrics(registry))
    worker._transaction.producer = TransactionalProducer(kafka, TXN_ID, 1000)
    return worker


def restarts(worker: MonitorWorker, reason: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "hbmon_monitor_producer_restarts_total", {"reason": reason}
    )
    return value or 0.0


def test_transaction_error_fenced_is_fatal():
    error = KafkaError(KafkaError._FENCED, "fenced by a newer epoch", fatal=True)

    assert transaction_error("commit_transaction", TXN_ID, error).fatal


def test_transaction_error_missing_permission_is_fatal():
    error = KafkaError(
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "not authorized", fatal=True
    )

    assert transaction_error("init_transactions", TXN_ID, error).fatal


def test_transaction_error_other_fatal_requires_restart():
    error = KafkaError(
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "skipped sequence numbers", fatal=True
    )
    err = transaction_error("commit_transaction", TXN_ID, error)

    assert err.restart_required
    assert not err.fatal


def test_transaction_error_abortable_requires_abort():
    error = KafkaError(
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        "skipped sequence numbers",
        txn_requires_abort=True,
    )
    err = transaction_error("commit_transaction", TXN_ID, error)

    assert err.abort_required
    assert not err.restart_required


def test_transaction_error_timeout_is_retriable():
    error = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
    err = transaction_error("send_offsets_to_transaction", TXN_ID, error)

    assert err.retriable
    assert not err.restart_required


def test_start_without_broker_fails_retriably(kafka):
    producer = TransactionalProducer(kafka, TXN_ID, 1000)

    with pytest.raises(MonitorError) as failed:
        producer.start()

    assert failed.value.retriable


def test_restart_keeps_transactional_id(kafka):
    producer = TransactionalProducer(kafka, TXN_ID, 1000)
    old_client = producer._producer

    producer.restart()

    assert producer._producer is not old_client
    assert producer.transactional_id == TXN_ID


def test_worker_restarts_producer_after_repeated_failures(worker):
    transaction = worker._transaction
    producer = transaction.producer
    err = MonitorError("commit_transaction timed out", retriable=True)
    for _ in range(RESTART_AFTER_FAILURES - 1):
        assert not transaction.restarts.note_retriable_failure(err, producer)

    assert transaction.restarts.note_retriable_failure(err, producer)
    assert transaction.restarts.reason == "repeated_timeouts"
    assert transaction.reset_needed
    assert restarts(worker, "repeated_timeouts") == 1


def test_worker_restarts_producer_after_fatal_error(worker, caplog):
    worker._transaction.producer.fatal_error = KafkaError(
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "skipped sequence numbers", fatal=True
    )

    worker._transaction.restarts.check(worker._transaction.producer)

    assert worker._transaction.restarts.reason == "fatal_error"
    assert restarts(worker, "fatal_error") == 1
    assert "replacing it with a new one of the same transactional id" in caplog.text


def test_worker_exits_when_producer_is_fenced(worker):
    worker._transaction.producer.fatal_error = KafkaError(
        KafkaError._FENCED, "fenced by a newer epoch", fatal=True
    )

    with pytest.raises(MonitorError) as failed:
        worker._transaction.restarts.check(worker._transaction.producer)

    assert failed.value.fatal
    assert worker._transaction.restarts.reason is None


def test_worker_exits_after_restarts_without_commit(worker):
    err = MonitorError("the producer failed", restart_required=True)
    for _ in range(MAX_RESTARTS):
        worker._transaction.restarts.schedule(err)

    with pytest.raises(MonitorError) as failed:
        worker._transaction.restarts.schedule(err)

    assert failed.value.fatal
    assert restarts(worker, "fatal_error") == MAX_RESTARTS


def test_failed_deliveries_log_once_per_interval(kafka, caplog):
    producer = PlainProducer(kafka)
    message = Message(topic="alerts", partition=0, key=b"site-1", value=b"{}")
    error = KafkaError(KafkaError._MSG_TIMED_OUT)
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.producer"):
            for _ in range(50):
                producer._on_delivery(error, message)
    finally:
        producer.close()

    lines = [r.getMessage() for r in caplog.records]
    lines = [line for line in lines if "not delivered" in line]
    assert producer.delivery_failures == 50
    assert len(lines) == 1
    assert "the record is lost once the next commit goes through" in lines[0]
