"""The alerter worker against the real broker, a real aiosmtpd server and local
HTTP receivers.

Tests publish AlertEvent records with a confluent-kafka Producer and drive
AlertWorker.process_one() from the test thread; channel lanes deliver in
their own threads. Waits are scaled down by configuration: group waits of
a fraction of a second, and an SMTP outage of HBMON_TEST_SMTP_OUTAGE_S
seconds (8 by default; 600 runs the full ten-minute scenario).
"""

import csv
import io
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from alerter.api import ApiServer, create_app
from alerter.config import RoutingConfig, parse_config
from alerter.deadletter import DeadLetters
from alerter.notification import Item, Kind, Notification
from alerter.settings import AlerterSettings
from alerter.tables import TopicWriter
from alerter.worker import AlertWorker, build_worker
from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    AlertEvent,
    event_id_for,
)
from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox
from tests.unit.test_alerter_channels import HttpReceiver

pytestmark = pytest.mark.integration

WAIT_S = 60.0
OUTAGE_S = float(os.environ.get("HBMON_TEST_SMTP_OUTAGE_S", "8"))
DEFAULT_ROUTES = """
[defaults]
group_by = ["device_id"]
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[LocalMailbox]:
    with LocalMailbox(tmp_path / "mail", port=0) as box:
        yield box


@pytest.fixture
def alerter_settings(
    mailbox: LocalMailbox, kafka_settings: KafkaSettings
) -> AlerterSettings:
    """Return settings with a group and topics of their own and short waits."""
    suffix = kafka_settings.alert_topic.rsplit("-", 1)[-1]
    return AlerterSettings(
        smtp_port=mailbox.port,
        smtp_timeout_s=5.0,
        group_id=f"alerter-test-{uuid.uuid4().hex[:8]}",
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        metrics_port=0,
        api_port=0,
        group_wait_s=0.2,
        group_interval_s=1.0,
        dead_letter_topic=f"alerts-dead-letter-{suffix}",
        sent_topic=f"alerts-sent-{suffix}",
        state_topic=f"alerts-state-{suffix}",
        silence_topic=f"alerts-silences-{suffix}",
    )


@pytest.fixture
def producer(kafka_settings: KafkaSettings) -> Producer:
    return Producer(kafka_settings.client_config())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def routes(text: str, settings: AlerterSettings, **environ: str) -> RoutingConfig:
    return parse_config(text, settings, environ)


@pytest.fixture
def make_worker(
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    registry: CollectorRegistry,
) -> Iterator[Callable[..., AlertWorker]]:
    workers: list[AlertWorker] = []

    def make(text: str = DEFAULT_ROUTES, **environ: str) -> AlertWorker:
        config = routes(text, alerter_settings, **environ)
        worker = build_worker(kafka_settings, alerter_settings, registry, config)
        worker.start()
        workers.append(worker)
        drive(worker, lambda: bool(worker.assigned_partitions), "an assignment")
        return worker

    yield make
    for worker in workers:
        worker.close()


def make_event(
    device_id: str = "sensor-17",
    kind: str = DEVICE_DOWN,
    last_seen_ms: int | None = None,
    **attrs: str,
) -> AlertEvent:
    last_seen_ms = last_seen_ms or int(time.time() * 1000) - 61_000
    return AlertEvent(
        event_id=event_id_for(kind, device_id, last_seen_ms),
        type=kind,
        device_id=device_id,
        severity="critical" if kind == DEVICE_DOWN else "info",
        last_seen_ms=last_seen_ms,
        deadline_ms=last_seen_ms + 60_000,
        timeout_ms=60_000,
        detected_ms=last_seen_ms + 61_000,
        partition=0,
        message=f"{device_id} sent no heartbeat within its 60 s timeout",
        downtime_ms=None if kind == DEVICE_DOWN else 61_000,
        attrs=attrs or None,
    )


def publish(
    producer: Producer, settings: KafkaSettings, *events: AlertEvent | bytes
) -> None:
    for event in events:
        if isinstance(event, AlertEvent):
            value, key = event.encode(), event.device_id.encode()
        else:
            value, key = event, b"poison"
        producer.produce(settings.alert_topic, value=value, key=key, partition=0)
    assert producer.flush(30) == 0


def drive(
    worker: AlertWorker,
    condition: Callable[[], bool],
    description: str,
    timeout_s: float = WAIT_S,
) -> None:
    """Call process_one() until `condition` holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, (
            f"timed out after {timeout_s} s: {description}"
        )
        worker.process_one(0.1)


def drive_for(worker: AlertWorker, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.process_one(0.1)


def committed_offset(settings: KafkaSettings, group_id: str) -> int:
    """Return the group's committed offset on partition 0; negative when none."""
    consumer = Consumer(settings.client_config(group_id=group_id))
    try:
        position = TopicPartition(settings.alert_topic, 0)
        return int(consumer.committed([position], timeout=30)[0].offset)
    finally:
        consumer.close()


def devices_in(mail: EmailMessage) -> list[str]:
    """Return the devices a mail is about: its header, or its CSV attachment."""
    if mail["X-Hbmon-Device-Id"]:
        return [str(mail["X-Hbmon-Device-Id"])]
    for part in mail.iter_attachments():
        if part.get_filename() == "devices.csv":
            content = part.get_content()
            text = content.decode() if isinstance(content, bytes) else content
            return [row["device_id"] for row in csv.DictReader(io.StringIO(text))]
    body = mail.get_body(("plain",))
    assert body is not None
    lines = str(body.get_content()).splitlines()
    return [line[2:].split(":")[0] for line in lines if line.startswith("- ")]


def mails_about(mailbox: LocalMailbox, device_id: str) -> list[EmailMessage]:
    return [mail for mail in mailbox.messages() if device_id in devices_in(mail)]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"metric {name} {labels} is not registered"
    return value


ONCALL = {"receiver": "oncall", "channel": "email"}


def test_worker_mails_one_event(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker()
    event = make_event(last_seen_ms=1_714_572_131_000)
    publish(producer, kafka_settings, event)

    drive(worker, lambda: len(mailbox.paths()) == 1, "one mail")
    group = alerter_settings.group_id
    drive(worker, lambda: committed_offset(kafka_settings, group) == 1, "commit")

    mail = mailbox.messages()[0]
    assert mail["Subject"] == "[DOWN] sensor-17 silent since 14:02:11Z"
    assert mail["X-Hbmon-Event-Id"] == event.event_id
    assert mail["X-RcptTo"] == "oncall@example.com"
    assert metric(registry, "hbmon_alerter_notifications_sent_total", **ONCALL) == 1


def test_worker_mails_duplicate_event_once(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker()
    first, marker = make_event("sensor-1"), make_event("sensor-2")
    publish(producer, kafka_settings, first, first, marker)

    drive(worker, lambda: len(mailbox.paths()) == 2, "two mails")
    group = alerter_settings.group_id
    drive(worker, lambda: committed_offset(kafka_settings, group) == 3, "commit")
    drive_for(worker, 1.0)

    assert sorted(m["X-Hbmon-Event-Id"] for m in mailbox.messages()) == sorted(
        [first.event_id, marker.event_id]
    )
    assert metric(registry, "hbmon_alerter_duplicates_skipped_total") == 1


def test_worker_skips_poison_record(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make_worker()
    caplog.set_level(logging.WARNING, logger="alerter.worker")
    publish(producer, kafka_settings, b"{not json", make_event())

    drive(worker, lambda: len(mailbox.paths()) == 1, "the mail after the poison")
    group = alerter_settings.group_id
    drive(worker, lambda: committed_offset(kafka_settings, group) == 2, "commit")

    assert metric(registry, "hbmon_alerter_poison_records_total") == 1
    poison_lines = [r.getMessage() for r in caplog.records if "poison" in r.message]
    assert len(poison_lines) == 1
    assert f"{kafka_settings.alert_topic}[0] at offset 0" in poison_lines[0]


def test_worker_retries_until_server_accepts(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker()
    mailbox.reject_mail(451)
    publish(producer, kafka_settings, make_event("sensor-1"), make_event("sensor-2"))

    drive(worker, lambda: mailbox.rejected_count >= 5, "five rejected attempts")

    group = alerter_settings.group_id
    failed = metric(
        registry, "hbmon_alerter_notifications_failed_total", kind="transient", **ONCALL
    )
    assert mailbox.paths() == []
    assert committed_offset(kafka_settings, group) < 0
    assert failed >= 5
    assert metric(registry, "hbmon_alerter_notifications_retried_total", **ONCALL) >= 4

    mailbox.accept_mail()
    drive(worker, lambda: len(mailbox.paths()) == 2, "both mails after recovery")
    drive(worker, lambda: committed_offset(kafka_settings, group) == 2, "commit")


def test_worker_parks_permanent_rejection_on_dead_letter_topic(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker()
    parked = make_event("sensor-1")
    mailbox.reject_mail(550, stage="RCPT")
    publish(producer, kafka_settings, parked)

    parked_total = "hbmon_alerter_notifications_parked_total"
    drive(worker, lambda: metric(registry, parked_total, **ONCALL) == 1, "parking")
    group = alerter_settings.group_id
    drive(worker, lambda: committed_offset(kafka_settings, group) == 1, "commit")

    letters = read_topic(kafka_settings, alerter_settings.dead_letter_topic, 1)
    assert letters[0]["lane"] == "oncall/email"
    assert letters[0]["code"] == 550
    assert "550" in letters[0]["reason"]
    assert letters[0]["items"][0]["event"]["event_id"] == parked.event_id

    mailbox.accept_mail()
    later = make_event("sensor-2")
    publish(producer, kafka_settings, later)
    drive(worker, lambda: len(mailbox.paths()) == 1, "the mail after the parked one")
    assert mailbox.messages()[0]["X-Hbmon-Event-Id"] == later.event_id


def test_large_notification_parks_in_parts(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    alerter_settings: AlerterSettings,
    kafka_settings: KafkaSettings,
) -> None:
    # One record with every event would exceed the broker's 1 MB limit.
    make_worker()  # creates the topics
    items = tuple(
        Item(Kind.DOWN, f"event-{n}", make_event(f"device-{n:05d}"))
        for n in range(5000)
    )
    notification = Notification(Kind.DOWN, "oncall", (), items, 1)
    letters = DeadLetters(TopicWriter(producer, alerter_settings.dead_letter_topic))

    written = letters.park("oncall/email", notification, items, "550 no", 550, 1)

    assert written
    first = read_topic(kafka_settings, alerter_settings.dead_letter_topic, 1)[0]
    parts = read_topic(
        kafka_settings, alerter_settings.dead_letter_topic, first["parts"]
    )
    assert first["parts"] > 1
    assert [part["part"] for part in parts] == list(range(1, first["parts"] + 1))
    keys = [item["key"] for part in parts for item in part["items"]]
    assert keys == [item.key for item in items]
    assert all(len(orjson.dumps(part)) <= 1_000_000 for part in parts)


def read_topic(settings: KafkaSettings, topic: str, count: int) -> list[dict]:
    consumer = Consumer(
        settings.client_config(
            group_id=f"reader-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest"
        )
    )
    consumer.subscribe([topic])
    values: list[dict] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(values) < count and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and record.error() is None:
                values.append(orjson.loads(record.value()))
    finally:
        consumer.close()
    return values


STORM_ROUTES = """
[defaults]
group_wait_s = 1.0
group_interval_s = 3.0
digest_threshold = 20
group_by = ["site"]
[receivers.oncall]
email = ["oncall@example.com", "lead@example.com"]
[default_route]
receivers = ["oncall"]
"""


def test_storm_of_1000_devices_mails_at_most_two_per_recipient(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
) -> None:
    worker = make_worker(STORM_ROUTES)
    devices = [f"plant3-{n:04d}" for n in range(1000)]
    downs = [make_event(d, site="plant-3") for d in devices]
    publish(producer, kafka_settings, *downs)

    def covered(kind: str) -> set[str]:
        return {
            device
            for mail in mailbox.messages()
            if mail["X-Hbmon-Event-Type"] == kind
            for device in devices_in(mail)
        }

    drive(worker, lambda: covered(DEVICE_DOWN) == set(devices), "all 1,000 DOWN")
    drive_for(worker, 4.0)
    down_mails = [
        m for m in mailbox.messages() if m["X-Hbmon-Event-Type"] == DEVICE_DOWN
    ]
    per_recipient = Counter(
        rcpt.strip() for m in down_mails for rcpt in str(m["X-RcptTo"]).split(",")
    )
    assert per_recipient["oncall@example.com"] <= 2
    assert per_recipient["lead@example.com"] <= 2
    assert str(down_mails[0]["Subject"]).startswith("[DOWN] ")
    assert "devices (site plant-3) silent since" in str(down_mails[0]["Subject"])

    recoveries = [
        replace(
            make_event(d, DEVICE_RECOVERED, down.last_seen_ms, site="plant-3"),
        )
        for d, down in zip(devices, downs, strict=True)
    ]
    publish(producer, kafka_settings, *recoveries)

    drive(worker, lambda: covered(DEVICE_RECOVERED) == set(devices), "1,000 RECOVERED")
    drive_for(worker, 4.0)
    up_mails = [
        m for m in mailbox.messages() if m["X-Hbmon-Event-Type"] == DEVICE_RECOVERED
    ]
    per_recipient = Counter(
        rcpt.strip() for m in up_mails for rcpt in str(m["X-RcptTo"]).split(",")
    )
    assert per_recipient["oncall@example.com"] <= 2
    assert per_recipient["lead@example.com"] <= 2


ROUTING_ROUTES = """
[defaults]
group_wait_s = 0.5
group_by = ["site"]
[receivers.plant3]
email = ["plant3@example.com"]
[receivers.pumps]
email = ["pumps@example.com"]
webhook = { url = "URL", secret_env = "HOOK_SECRET" }
[receivers.oncall]
email = ["oncall@example.com"]
[[routes]]
name = "plant-3"
attrs = { site = "plant-3" }
receivers = ["plant3"]
[[routes]]
name = "pumps"
device_prefix = "pump-"
receivers = ["pumps"]
[default_route]
receivers = ["oncall"]
"""


def test_routing_sends_each_group_to_its_receivers_only(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
) -> None:
    with HttpReceiver() as hook:
        worker = make_worker(
            ROUTING_ROUTES.replace("URL", hook.url), HOOK_SECRET="s3cret"
        )
        expected = {
            "plant3@example.com": {"p3-a", "p3-b", "pump-9"},
            "pumps@example.com": {"pump-1", "pump-2"},
            "oncall@example.com": {"other-1", "other-2"},
        }
        publish(
            producer,
            kafka_settings,
            make_event("p3-a", site="plant-3"),
            make_event("p3-b", site="plant-3"),
            # The first matching route wins: plant-3 comes before pumps.
            make_event("pump-9", site="plant-3"),
            make_event("pump-1", site="plant-7"),
            make_event("pump-2"),
            make_event("other-1", site="plant-7"),
            make_event("other-2"),
        )

        def received() -> dict[str, set[str]]:
            result: dict[str, set[str]] = {}
            for mail in mailbox.messages():
                result.setdefault(str(mail["X-RcptTo"]), set()).update(devices_in(mail))
            return result

        drive(worker, lambda: received() == expected, "mail for every route")
        drive(worker, lambda: len(hook.requests) >= 1, "the webhook")
        drive_for(worker, 2.0)

        assert received() == expected
        hooked = {
            item["event"]["device_id"]
            for body in hook.bodies()
            for item in body["items"]
        }
        assert hooked == {"pump-1", "pump-2"}
        assert all(body["route"] == "pumps" for body in hook.bodies())


def test_silenced_device_mails_once_when_silence_ends(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker()
    server = ApiServer(
        create_app(worker.silences, worker.stores.silence_writer), "127.0.0.1", 0
    )
    server.start()
    try:
        response = httpx.post(
            f"http://127.0.0.1:{server.port}/silences",
            json={
                "device_glob": "quiet-*",
                "duration_s": 4,
                "comment": "firmware update",
                "created_by": "test",
            },
            timeout=10,
        )
    finally:
        server.stop()
    assert response.status_code == 201, response.text
    publish(producer, kafka_settings, make_event("quiet-1"), make_event("loud-1"))

    drive(worker, lambda: mails_about(mailbox, "loud-1") != [], "the unsilenced mail")
    drive_for(worker, 1.0)
    assert mails_about(mailbox, "quiet-1") == []
    assert metric(registry, "hbmon_alerter_events_total", verdict="silenced") == 1

    drive(worker, lambda: mails_about(mailbox, "quiet-1") != [], "mail after silence")
    drive_for(worker, 3.0)
    assert len(mails_about(mailbox, "quiet-1")) == 1
    assert len(mails_about(mailbox, "loud-1")) == 1


OUTAGE_ROUTES = """
[defaults]
group_wait_s = 0.2
group_by = ["device_id"]
[receivers.oncall]
email = ["oncall@example.com"]
[receivers.pumps]
webhook = { url = "URL" }
[[routes]]
name = "pumps"
device_prefix = "pump-"
receivers = ["pumps"]
[default_route]
receivers = ["oncall"]
"""


def test_smtp_outage_delays_but_loses_nothing(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    with HttpReceiver() as hook:
        worker = make_worker(OUTAGE_ROUTES.replace("URL", hook.url))
        devices = [f"sensor-{n:02d}" for n in range(20)]
        mailbox.stop()  # connections are now refused
        publish(producer, kafka_settings, *[make_event(d) for d in devices])
        outage_ends = time.monotonic() + OUTAGE_S

        # During the outage, the webhook lane still delivers.
        drive_for(worker, 1.0)
        publish(producer, kafka_settings, make_event("pump-1"))
        drive(worker, lambda: len(hook.requests) == 1, "the webhook during the outage")
        assert time.monotonic() < outage_ends
        drive_for(worker, outage_ends - time.monotonic())

        failed = metric(
            registry,
            "hbmon_alerter_notifications_failed_total",
            kind="transient",
            **ONCALL,
        )
        assert failed >= 2
        assert metric(registry, "hbmon_alerter_queue_depth", **ONCALL) == 20
        assert metric(registry, "hbmon_alerter_oldest_pending_seconds", **ONCALL) > 1
        group = alerter_settings.group_id
        assert committed_offset(kafka_settings, group) < 0

        mailbox.start()
        drive(
            worker,
            lambda: (
                {d for m in mailbox.messages() for d in devices_in(m)} == set(devices)
            ),
            "all 20 mails after the outage",
            timeout_s=WAIT_S + alerter_settings.backoff_max_s,
        )
        drive(worker, lambda: committed_offset(kafka_settings, group) == 21, "commit")

    counts = Counter(d for m in mailbox.messages() for d in devices_in(m))
    assert all(counts[d] == 1 for d in devices)
    assert metric(registry, "hbmon_alerter_notifications_parked_total", **ONCALL) == 0


def test_monitoring_degraded_mail_names_partition_and_devices(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
) -> None:
    worker = make_worker()
    event = replace(
        make_event(""),
        event_id=str(uuid.uuid4()),
        type=MONITORING_DEGRADED,
        severity="warning",
        partition=4,
        devices=1234,
    )
    publish(producer, kafka_settings, event)

    drive(worker, lambda: len(mailbox.paths()) == 1, "the monitoring mail")

    mail = mailbox.messages()[0]
    body = mail.get_body(("plain",))
    assert body is not None
    assert str(mail["Subject"]) == (
        f"[MONITORING DEGRADED] partition 4 of {kafka_settings.heartbeat_topic} "
        "silent, 1,234 devices not judged"
    )
    assert str(body.get_content()).startswith(
        f"Monitoring degraded: partition 4 of {kafka_settings.heartbeat_topic} went "
        "silent; 1,234 devices are not being judged."
    )


FLAPPING_ROUTES = """
[defaults]
group_wait_s = 0.2
group_interval_s = 0.5
repeat_interval_s = 2.0
group_by = ["device_id"]
[flapping]
max_flips = 3
window_s = 600
stable_s = 2
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


def test_flapping_device_gets_one_notice_then_its_final_state(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
) -> None:
    worker = make_worker(FLAPPING_ROUTES)

    def kinds() -> list[str]:
        return [str(m["X-Hbmon-Notification"]) for m in mailbox.messages()]

    last_seen_ms = 0
    for flip in range(7):
        # A DOWN starts an episode; its RECOVERED carries the same last seen.
        if flip % 2 == 0:
            last_seen_ms = int(time.time() * 1000) - 61_000
        kind = DEVICE_DOWN if flip % 2 == 0 else DEVICE_RECOVERED
        publish(producer, kafka_settings, make_event("flappy", kind, last_seen_ms))
        if flip < 4:  # flips 1-3 are mailed, and the 4th is the flapping notice
            drive(worker, lambda n=flip: len(kinds()) == n + 1, f"mail {flip + 1}")
        else:
            drive_for(worker, 0.3)

    drive(worker, lambda: kinds().count("DOWN") == 3, "the final DOWN once stable")
    drive(worker, lambda: "REMINDER" in kinds(), "a reminder while still DOWN")

    # Flips 1-3 are mailed, the 4th is the notice, the rest wait for stability.
    assert kinds()[:4] == ["DOWN", "RECOVERED", "DOWN", "FLAPPING"]
    assert kinds().count("RECOVERED") == 1
    reminder = next(
        m for m in mailbox.messages() if m["X-Hbmon-Notification"] == "REMINDER"
    )
    assert str(reminder["Subject"]).startswith("[STILL DOWN] flappy silent for")


# A long group interval, so that a notification held by it is easy to tell
# from one that leaves after the group wait.
ORDER_ROUTES = """
[defaults]
group_wait_s = 1
group_interval_s = 10
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


def subjects(mailbox: LocalMailbox) -> list[str]:
    return [str(mail["Subject"]) for mail in mailbox.messages()]


def start_worker(
    kafka_settings: KafkaSettings, alerter_settings: AlerterSettings, text: str
) -> AlertWorker:
    """Start a worker with metrics of its own, for tests that close it to restart."""
    config = routes(text, alerter_settings)
    worker = build_worker(kafka_settings, alerter_settings, CollectorRegistry(), config)
    worker.start()
    drive(worker, lambda: bool(worker.assigned_partitions), "an assignment")
    return worker


def flip_while_down_group_waits(
    worker: AlertWorker,
    producer: Producer,
    kafka_settings: KafkaSettings,
    mailbox: LocalMailbox,
) -> None:
    """Mail k-06's DOWN, then publish k-05's DOWN and, 1 s later, its RECOVERED.

    k-06's mail starts the DOWN group's interval, so k-05's DOWN waits in
    the group when its RECOVERED is read.
    """
    publish(producer, kafka_settings, make_event("k-06"))
    drive(worker, lambda: len(mailbox.paths()) == 1, "the DOWN mail of k-06")
    last_seen_ms = int(time.time() * 1000) - 11_000
    publish(producer, kafka_settings, make_event("k-05", DEVICE_DOWN, last_seen_ms))
    drive_for(worker, 1.0)
    recovered = make_event("k-05", DEVICE_RECOVERED, last_seen_ms)
    publish(producer, kafka_settings, recovered)


def test_recovery_before_down_is_sent_cancels_both(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
    registry: CollectorRegistry,
) -> None:
    worker = make_worker(ORDER_ROUTES)
    flip_while_down_group_waits(worker, producer, kafka_settings, mailbox)
    drive_for(worker, 13.0)

    assert mails_about(mailbox, "k-05") == [], subjects(mailbox)
    cancelled = "hbmon_alerter_notifications_cancelled_total"
    assert metric(registry, cancelled, kind="DOWN") == 1
    assert metric(registry, cancelled, kind="RECOVERED") == 1
    group = alerter_settings.group_id
    drive(worker, lambda: committed_offset(kafka_settings, group) == 3, "commit")


def test_cancelled_pair_stays_unsent_after_restart(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
) -> None:
    first = start_worker(kafka_settings, alerter_settings, ORDER_ROUTES)
    try:
        flip_while_down_group_waits(first, producer, kafka_settings, mailbox)
        group = alerter_settings.group_id
        drive(first, lambda: committed_offset(kafka_settings, group) == 3, "commit")
    finally:
        first.close()

    second = make_worker(ORDER_ROUTES)
    drive_for(second, 13.0)

    assert mails_about(mailbox, "k-05") == [], subjects(mailbox)


def test_restart_keeps_group_wait_for_new_down(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
) -> None:
    slow_interval = ORDER_ROUTES.replace(
        "group_interval_s = 10", "group_interval_s = 120"
    )
    first = start_worker(kafka_settings, alerter_settings, slow_interval)
    try:
        publish(producer, kafka_settings, make_event("before-restart"))
        drive(first, lambda: len(mailbox.paths()) == 1, "the mail before the restart")
        group = alerter_settings.group_id
        drive(first, lambda: committed_offset(kafka_settings, group) == 1, "commit")
    finally:
        first.close()

    # The restored notice of "before-restart" was sent, so it must not start
    # the DOWN group's 120 s interval: the new DOWN, read after the group wait
    # of the restored notice, leaves after its own 1 s wait.
    second = make_worker(slow_interval)
    drive_for(second, 3.0)
    publish(producer, kafka_settings, make_event("after-restart"))
    drive(
        second,
        lambda: mails_about(mailbox, "after-restart") != [],
        "the new DOWN mail within its group wait, not the 120 s interval",
        timeout_s=40.0,
    )
    assert len(mails_about(mailbox, "before-restart")) == 1


def test_stopping_worker_leaves_records_unhandled(
    make_worker: Callable[..., AlertWorker],
    producer: Producer,
    kafka_settings: KafkaSettings,
    alerter_settings: AlerterSettings,
    mailbox: LocalMailbox,
) -> None:
    first = start_worker(kafka_settings, alerter_settings, DEFAULT_ROUTES)
    position = TopicPartition(kafka_settings.alert_topic, 0)
    try:
        first.stop()
        publish(producer, kafka_settings, make_event("read-while-stopping"))
        drive(
            first,
            lambda: first.consumer.position([position])[0].offset == 1,
            "the stopping worker reading the record",
        )
        # With a 0.2 s group wait, a record it handled would be mailed by now.
        drive_for(first, 3.0)
    finally:
        first.close()

    assert mailbox.paths() == []
    assert committed_offset(kafka_settings, alerter_settings.group_id) < 1
    second = make_worker()
    drive(
        second,
        lambda: len(mails_about(mailbox, "read-while-stopping")) == 1,
        "the mail about the record the stopped worker left",
    )
