"""A simulated fleet, monitor processes and an alert reader for monitor tests.

Times in these tests are short: devices time out after TIMEOUT_S and send a
heartbeat every INTERVAL_S. Waits are generous, and no assertion depends on
how fast something happened.
"""

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    AlertEvent,
    HeartbeatRecord,
    decode_alert,
)
from hbmon.kafka import KafkaSettings
from tests.integration.services import Service, kafka_env, wait_for

TIMEOUT_S = 2.0
INTERVAL_S = 0.4


def monitor_env(kafka: KafkaSettings, group_id: str, **extra: str) -> dict[str, str]:
    """Return the environment of a monitor process with the tests' short times."""
    return {
        **kafka_env(kafka),
        "HBMON_MONITOR_GROUP_ID": group_id,
        "HBMON_MONITOR_DEFAULT_TIMEOUT_S": str(TIMEOUT_S),
        "HBMON_MONITOR_TICK_MS": "100",
        "HBMON_MONITOR_FETCH_GRACE_MS": "500",
        "HBMON_MONITOR_COMMIT_INTERVAL_MS": "300",
        "HBMON_MONITOR_TRANSACTION_TIMEOUT_MS": "5000",
        "HBMON_MONITOR_SESSION_TIMEOUT_MS": "6000",
        "HBMON_MONITOR_METRICS_PORT": "0",
        "HBMON_LOG_LEVEL": "INFO",
        **extra,
    }


class Fleet:
    """Devices that send heartbeats straight to the heartbeat topic.

    A background thread sends one heartbeat per live device every interval.
    Devices can be silenced and revived.
    """

    def __init__(
        self, kafka: KafkaSettings, devices: Iterable[str], interval_s: float
    ) -> None:
        self.topic = kafka.heartbeat_topic
        self.devices = list(devices)
        self.interval_s = interval_s
        self.silent: set[str] = set()
        self.sent: Counter[str] = Counter()
        self._producer = Producer(kafka.client_config(linger_ms=5))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> "Fleet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._producer.flush(30)

    def silence(self, device_id: str) -> None:
        with self._lock:
            self.silent.add(device_id)

    def revive(self, device_id: str) -> None:
        with self._lock:
            self.silent.discard(device_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                live = [d for d in self.devices if d not in self.silent]
            for device_id in live:
                value = HeartbeatRecord(device_id, int(time.time() * 1000))
                self._producer.produce(
                    self.topic, key=device_id.encode(), value=value.encode()
                )
                self.sent[device_id] += 1
            self._producer.poll(0)
            elapsed_s = time.monotonic() - started
            self._stop.wait(max(0.0, self.interval_s - elapsed_s))


class AlertLog:
    """Every committed event on the alert topic, read with read_committed."""

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

    def poll(self, timeout_s: float = 0.5) -> list[AlertEvent]:
        """Read what is committed so far, for up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for message in self.consumer.consume(500, timeout=0.1):
                if message.error() is None:
                    self.events.append(decode_alert(message.value()))
            if time.monotonic() >= deadline:
                return self.events

    def of(self, kind: str, device_id: str | None = None) -> list[AlertEvent]:
        return [
            e
            for e in self.events
            if e.type == kind and (device_id is None or e.device_id == device_id)
        ]

    def device_events(self) -> list[AlertEvent]:
        return [e for e in self.events if e.type in (DEVICE_DOWN, DEVICE_RECOVERED)]

    def wait_for(self, kind: str, device_id: str | None, timeout_s: float) -> None:
        wait_for(
            lambda: bool(self.poll(0.2) and self.of(kind, device_id)),
            timeout_s,
            f"{kind} for {device_id or 'any device'}",
        )

    def settle(self, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
        """Read until no new event arrived for `quiet_s`."""
        deadline = time.monotonic() + timeout_s
        count = -1
        while time.monotonic() < deadline and count != len(self.events):
            count = len(self.events)
            self.poll(quiet_s)

    def duplicate_ids(self) -> list[str]:
        counts = Counter(e.event_id for e in self.events)
        return [event_id for event_id, n in counts.items() if n > 1]

    def close(self) -> None:
        self.consumer.close()


def heartbeat_times(kafka: KafkaSettings) -> dict[str, list[int]]:
    """Return each device's heartbeat append times, read from the topic."""
    consumer = Consumer(
        kafka.client_config(
            group_id=f"truth-{uuid.uuid4().hex[:8]}", enable_partition_eof=True
        )
    )
    partitions = range(kafka.heartbeat_partitions)
    consumer.assign(
        [TopicPartition(kafka.heartbeat_topic, p, OFFSET_BEGINNING) for p in partitions]
    )
    times: dict[str, list[int]] = defaultdict(list)
    pending = set(partitions)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            key = message.key()
            assert key is not None
            times[key.decode()].append(message.timestamp()[1])
    consumer.close()
    assert not pending, f"heartbeat partitions {pending} not read to the end"
    return times


def max_gaps_s(kafka: KafkaSettings, events: list[AlertEvent]) -> dict[str, float]:
    """Return the longest heartbeat gap in the topic of each device in `events`.

    Assertions print it. A gap longer than the timeout means that the fleet
    itself stalled (on a very busy machine), so the DOWN was a true one.
    """
    times = heartbeat_times(kafka)
    gaps = {}
    for device_id in {e.device_id for e in events}:
        ordered = sorted(times.get(device_id, []))
        pairs = zip(ordered, ordered[1:], strict=False)
        gaps[device_id] = max((b - a for a, b in pairs), default=0) / 1000
    return gaps


def start_monitor(env: dict[str, str], log_dir: Path) -> Service:
    return Service("monitor", env, log_dir).start()


def wait_until_owning(monitor: Service, timeout_s: float = 60.0) -> None:
    """Wait until the monitor has restored the partitions of an assignment."""
    wait_for(
        lambda: "Restored partitions" in monitor.log(),
        timeout_s,
        f"{monitor.log_path.name} to restore its partitions",
    )


def print_logs(services: Iterable[Service]) -> None:
    for service in services:
        print(f"----- {service.log_path.name} -----\n{service.log()[-6000:]}")
