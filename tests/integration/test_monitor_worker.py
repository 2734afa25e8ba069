"""The monitor worker against the real broker, driven step by step."""

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    AlertEvent,
    HeartbeatRecord,
    decode_alert,
)
from hbmon.kafka import KafkaSettings
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker

pytestmark = pytest.mark.integration


class AlertReader:
    """Collects the events on the alert topic."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer(
            kafka.client_config(
                group_id=f"reader-{uuid.uuid4().hex[:8]}",
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
        )
        self.consumer.subscribe([kafka.alert_topic])
        self.events: list[AlertEvent] = []

    def poll(self) -> list[AlertEvent]:
        for message in self.consumer.consume(100, timeout=0.05):
            if message.error() is None:
                self.events.append(decode_alert(message.value()))
        return self.events

    def of(self, device_id: str, kind: str) -> list[AlertEvent]:
        return [e for e in self.events if e.device_id == device_id and e.type == kind]


@pytest.fixture
def worker(kafka_settings: KafkaSettings) -> Iterator[MonitorWorker]:
    settings = MonitorSettings(
        group_id=f"monitor-{uuid.uuid4().hex[:8]}",
        default_timeout_s=2.0,
        tick_ms=100,
        fetch_grace_ms=500,
        metrics_port=0,
    )
    worker = MonitorWorker(
        kafka_settings, settings, MonitorMetrics(CollectorRegistry())
    )
    worker.start()
    yield worker
    worker.close()


@pytest.fixture
def producer(kafka_settings: KafkaSettings) -> Iterator[Producer]:
    producer = Producer(kafka_settings.client_config())
    yield producer
    producer.flush(10)


@pytest.fixture
def alerts(kafka_settings: KafkaSettings) -> Iterator[AlertReader]:
    reader = AlertReader(kafka_settings)
    yield reader
    reader.consumer.close()


def send(producer: Producer, topic: str, device_id: str, value: bytes) -> None:
    producer.produce(topic, key=device_id.encode(), value=value)
    producer.flush(10)


def heartbeat(device_id: str) -> bytes:
    return HeartbeatRecord(device_id, int(time.time() * 1000)).encode()


def run_until(
    worker: MonitorWorker,
    alerts: AlertReader,
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.step()
        alerts.poll()
        if condition():
            return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_worker_emits_down_then_recovered(
    worker, producer, alerts, kafka_settings, caplog
):
    topic = kafka_settings.heartbeat_topic
    send(producer, topic, "d-1", heartbeat("d-1"))

    run_until(worker, alerts, lambda: alerts.of("d-1", DEVICE_DOWN), 60, "DOWN")
    send(producer, topic, "d-1", heartbeat("d-1"))
    with caplog.at_level("INFO", logger="monitor.worker"):
        run_until(
            worker, alerts, lambda: alerts.of("d-1", DEVICE_RECOVERED), 60, "RECOVERED"
        )

    down = alerts.of("d-1", DEVICE_DOWN)[0]
    recovered = alerts.of("d-1", DEVICE_RECOVERED)[0]
    assert down.deadline_ms == down.last_seen_ms + 2000
    assert down.detected_ms >= down.deadline_ms
    assert recovered.last_seen_ms == down.last_seen_ms
    assert recovered.downtime_ms is not None and recovered.downtime_ms > 2000
    assert recovered.event_id != down.event_id
    assert "emitted on heartbeats read: 1 DEVICE_RECOVERED" in caplog.text


def test_worker_skips_invalid_record_and_keeps_going(
    worker, producer, alerts, kafka_settings
):
    topic = kafka_settings.heartbeat_topic
    send(producer, topic, "d-2", b"{not json")
    send(producer, topic, "d-2", heartbeat("d-2"))

    run_until(worker, alerts, lambda: alerts.of("d-2", DEVICE_DOWN), 60, "DOWN")

    registry = worker.metrics.registry
    assert registry.get_sample_value("hbmon_monitor_records_invalid_total") == 1
    assert len(alerts.of("d-2", DEVICE_DOWN)) == 1


def test_worker_declared_timeout_overrides_default(
    worker, producer, alerts, kafka_settings
):
    record = HeartbeatRecord("d-3", int(time.time() * 1000), timeout_s=1.0)
    send(producer, kafka_settings.heartbeat_topic, "d-3", record.encode())

    run_until(worker, alerts, lambda: alerts.of("d-3", DEVICE_DOWN), 60, "DOWN")

    assert alerts.of("d-3", DEVICE_DOWN)[0].timeout_ms == 1000


def test_worker_applies_each_heartbeat_of_a_bundle(
    worker, producer, alerts, kafka_settings
):
    # A bundle as ingest writes it for a gateway batch: one record, no key,
    # one heartbeat per item. The bad items are skipped one by one.
    now_ms = int(time.time() * 1000)
    bundle = b"[%s,%s,%s,%s]" % (
        HeartbeatRecord("d-4", now_ms).encode(),
        b'{"seq": 1}',
        b'"junk"',
        HeartbeatRecord("d-5", now_ms, timeout_s=1.0).encode(),
    )
    producer.produce(kafka_settings.heartbeat_topic, value=bundle, partition=0)
    producer.flush(10)

    run_until(
        worker,
        alerts,
        lambda: alerts.of("d-4", DEVICE_DOWN) and alerts.of("d-5", DEVICE_DOWN),
        60,
        "DOWN of both devices in the bundle",
    )

    assert alerts.of("d-5", DEVICE_DOWN)[0].timeout_ms == 1000
    assert alerts.of("d-4", DEVICE_DOWN)[0].timeout_ms == 2000
    registry = worker.metrics.registry
    assert registry.get_sample_value("hbmon_monitor_records_invalid_total") == 2
