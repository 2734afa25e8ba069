"""The alerter worker against the real broker and a real aiosmtpd server.

Tests publish AlertEvent records with a confluent-kafka Producer and drive
AlertWorker.process_one() from the test thread, so each step is visible.
Records that must keep their order go to partition 0.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from alerter.settings import AlerterSettings
from alerter.worker import AlertWorker, build_worker
from hbmon.events import DEVICE_DOWN, AlertEvent, event_id_for
from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox

pytestmark = pytest.mark.integration

WAIT_S = 60.0
LAST_SEEN_MS = 1_714_572_131_000


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[LocalMailbox]:
    with LocalMailbox(tmp_path / "mail", port=0) as box:
        yield box


@pytest.fixture
def alerter_settings(mailbox: LocalMailbox) -> AlerterSettings:
    """Return settings with a group of their own and short backoffs."""
    return AlerterSettings(
        smtp_port=mailbox.port,
        smtp_timeout_s=5.0,
        group_id=f"alerter-test-{uuid.uuid4().hex[:8]}",
        max_attempts=2,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        metrics_port=0,
    )


@pytest.fixture
def producer(kafka_settings: KafkaSettings) -> Producer:
    return Producer(kafka_settings.client_config())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def worker(
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    registry: CollectorRegistry,
) -> Iterator[AlertWorker]:
    alert_worker = build_worker(kafka_settings, alerter_settings, registry)
    alert_worker.start()
    yield alert_worker
    alert_worker.close()


def make_event(device_id: str = "sensor-17", offset_s: int = 0) -> AlertEvent:
    last_seen_ms = LAST_SEEN_MS + offset_s * 1000
    return AlertEvent(
        event_id=event_id_for(DEVICE_DOWN, device_id, last_seen_ms),
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=last_seen_ms,
        deadline_ms=last_seen_ms + 60_000,
        timeout_ms=60_000,
        detected_ms=last_seen_ms + 61_000,
        partition=0,
        message=f"{device_id} sent no heartbeat within its 60 s timeout",
    )


def publish(
    producer: Producer, settings: KafkaSettings, *values: bytes, key: bytes = b"k"
) -> None:
    for value in values:
        producer.produce(settings.alert_topic, value=value, key=key, partition=0)
    assert producer.flush(30) == 0


def drive(worker: AlertWorker, condition: Callable[[], bool], description: str) -> None:
    """Call process_one() until `condition` holds; fail after WAIT_S seconds."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {WAIT_S} s: {description}"
        worker.process_one(0.5)


def committed_offset(settings: KafkaSettings, group_id: str) -> int:
    """Return the group's committed offset on partition 0; negative when none."""
    consumer = Consumer(settings.client_config(group_id=group_id))
    try:
        position = TopicPartition(settings.alert_topic, 0)
        return int(consumer.committed([position], timeout=30)[0].offset)
    finally:
        consumer.close()


def event_ids(mailbox: LocalMailbox) -> list[str]:
    return [str(message["X-Hbmon-Event-Id"]) for message in mailbox.messages()]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"metric {name} {labels} is not registered"
    return value


def test_worker_mails_one_event(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    event = make_event()
    publish(producer, kafka_settings, event.encode())

    drive(worker, lambda: len(mailbox.paths()) == 1, "one mail")

    mail = mailbox.messages()[0]
    assert mail["Subject"] == "[DOWN] sensor-17 silent since 14:02:11Z"
    assert mail["X-Hbmon-Event-Id"] == event.event_id
    assert committed_offset(kafka_settings, alerter_settings.group_id) == 1
    assert metric(registry, "hbmon_alerter_mails_sent_total") == 1


def test_worker_mails_duplicate_event_once(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    first, marker = make_event(offset_s=0), make_event(offset_s=600)
    publish(producer, kafka_settings, first.encode(), first.encode(), marker.encode())

    drive(worker, lambda: marker.event_id in event_ids(mailbox), "the marker mail")

    assert event_ids(mailbox) == [first.event_id, marker.event_id]
    assert metric(registry, "hbmon_alerter_duplicates_skipped_total") == 1
    assert committed_offset(kafka_settings, alerter_settings.group_id) == 3


def test_worker_skips_poison_record(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = make_event()
    caplog.set_level(logging.WARNING, logger="alerter.worker")
    publish(producer, kafka_settings, b"{not json", event.encode())

    drive(worker, lambda: len(mailbox.paths()) == 1, "the mail after the poison")

    assert event_ids(mailbox) == [event.event_id]
    assert metric(registry, "hbmon_alerter_poison_records_total") == 1
    assert committed_offset(kafka_settings, alerter_settings.group_id) == 2
    poison_lines = [r.getMessage() for r in caplog.records if "poison" in r.message]
    assert len(poison_lines) == 1
    assert f"{kafka_settings.alert_topic}[0] at offset 0" in poison_lines[0]


def test_worker_retries_until_server_accepts(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    first, second = make_event(offset_s=0), make_event(offset_s=600)
    mailbox.reject_mail(451)
    publish(producer, kafka_settings, first.encode(), second.encode())

    # max_attempts is 2, so 5 rejections span at least two reads of the record.
    drive(worker, lambda: mailbox.rejected_count >= 5, "five rejected attempts")

    assert mailbox.paths() == []
    assert committed_offset(kafka_settings, alerter_settings.group_id) < 0
    assert metric(registry, "hbmon_alerter_mails_failed_total", kind="transient") >= 5
    assert metric(registry, "hbmon_alerter_mail_retries_total") >= 4

    mailbox.accept_mail()
    drive(worker, lambda: len(mailbox.paths()) == 2, "both mails after recovery")

    assert event_ids(mailbox) == [first.event_id, second.event_id]
    assert committed_offset(kafka_settings, alerter_settings.group_id) == 2
    assert metric(registry, "hbmon_alerter_mails_sent_total") == 2


def test_worker_parks_permanently_rejected_event(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parked, later = make_event(offset_s=0), make_event(offset_s=600)
    mailbox.reject_mail(550, stage="RCPT")
    publish(producer, kafka_settings, parked.encode())

    drive(
        worker,
        lambda: (
            registry.get_sample_value(
                "hbmon_alerter_mails_failed_total", {"kind": "permanent"}
            )
            == 1
        ),
        "one permanent failure",
    )

    assert committed_offset(kafka_settings, alerter_settings.group_id) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert parked.event_id in errors[0]
    assert "Parking the event" in errors[0]

    mailbox.accept_mail()
    publish(producer, kafka_settings, later.encode())
    drive(worker, lambda: len(mailbox.paths()) == 1, "the mail after the parked one")

    assert event_ids(mailbox) == [later.event_id]


def test_restarted_worker_does_not_resend_committed(
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    producer: Producer,
    mailbox: LocalMailbox,
) -> None:
    before, after = make_event(offset_s=0), make_event(offset_s=600)
    publish(producer, kafka_settings, before.encode())
    first_worker = build_worker(kafka_settings, alerter_settings, CollectorRegistry())
    first_worker.start()
    try:
        drive(first_worker, lambda: len(mailbox.paths()) == 1, "the first mail")
    finally:
        first_worker.close()

    publish(producer, kafka_settings, after.encode())
    second_worker = build_worker(kafka_settings, alerter_settings, CollectorRegistry())
    second_worker.start()
    try:
        drive(second_worker, lambda: len(mailbox.paths()) >= 2, "the second mail")
    finally:
        second_worker.close()

    assert event_ids(mailbox) == [before.event_id, after.event_id]


def test_run_returns_after_stop(
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    producer: Producer,
    mailbox: LocalMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="alerter.worker")
    alert_worker = build_worker(kafka_settings, alerter_settings, CollectorRegistry())
    thread = threading.Thread(target=alert_worker.run, args=(0.2,))
    thread.start()
    try:
        publish(producer, kafka_settings, make_event().encode())
        deadline = time.monotonic() + WAIT_S
        while not mailbox.paths() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        alert_worker.stop()
        thread.join(WAIT_S)

    assert len(mailbox.paths()) == 1
    assert not thread.is_alive()
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("Alerter started") for message in messages)
    assert any(message.startswith("Mail sent for event") for message in messages)
    assert any(message.startswith("Alerter stopped") for message in messages)


def test_started_line_names_server_without_credentials(
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = replace(alerter_settings, smtp_user="alerts", smtp_password="s3cret")
    caplog.set_level(logging.INFO, logger="alerter.worker")
    alert_worker = build_worker(kafka_settings, settings, CollectorRegistry())

    alert_worker.start()
    alert_worker.close()

    started = [r.getMessage() for r in caplog.records if "started" in r.message]
    assert len(started) == 1
    assert f"127.0.0.1:{settings.smtp_port}" in started[0]
    assert settings.group_id in started[0]
    assert "s3cret" not in caplog.text
