"""Monitor restarts against the real broker: state survives SIGKILL.

Each test kills monitor processes with SIGKILL and checks the committed
events on the alert topic, read with read_committed.
"""

import re
import threading
import time
import uuid
from email.message import EmailMessage

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED
from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox
from tests.integration.monitor_harness import (
    INTERVAL_S,
    TIMEOUT_S,
    AlertLog,
    Fleet,
    max_gaps_s,
    monitor_env,
    print_logs,
    start_monitor,
    wait_until_owning,
)
from tests.integration.services import Service, free_port, wait_for

pytestmark = pytest.mark.integration


def restored_devices(monitor: Service) -> int:
    """Return the total number of devices that the monitor's restores rebuilt."""
    found = re.findall(r"Restored partitions .*?: (\d+) devices", monitor.log())
    return sum(int(n) for n in found)


@pytest.fixture
def alerts(kafka_settings: KafkaSettings):
    log = AlertLog(kafka_settings)
    yield log
    log.close()


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return {
        "group": f"monitor-{suffix}",
        "transactional_id": f"monitor-{suffix}-0",
        "alerter": f"alerter-{suffix}",
    }


def test_monitor_restart_after_downtime_emits_nothing(
    kafka_settings, alerts, names, tmp_path
):
    env = monitor_env(
        kafka_settings,
        names["group"],
        HBMON_MONITOR_TRANSACTIONAL_ID=names["transactional_id"],
    )
    fleet = Fleet(kafka_settings, [f"steady-{i}" for i in range(20)], INTERVAL_S)
    monitors = [start_monitor(env, tmp_path)]
    fleet.start()
    try:
        wait_until_owning(monitors[0])
        time.sleep(2 * TIMEOUT_S)

        # The monitor is down for three timeouts while devices keep posting.
        monitors[0].kill()
        time.sleep(3 * TIMEOUT_S)
        monitors.append(start_monitor(env, tmp_path))
        wait_until_owning(monitors[1])
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
    finally:
        fleet.stop()
        for monitor in monitors:
            monitor.stop()
        print_logs(monitors)

    downs = alerts.of(DEVICE_DOWN)
    assert restored_devices(monitors[1]) == 20
    assert downs == [], max_gaps_s(kafka_settings, downs)
    assert alerts.of(DEVICE_RECOVERED) == []


def test_monitor_restart_sends_one_recovered(kafka_settings, alerts, names, tmp_path):
    env = monitor_env(
        kafka_settings,
        names["group"],
        HBMON_MONITOR_TRANSACTIONAL_ID=names["transactional_id"],
    )
    devices = ["flaky"] + [f"steady-{i}" for i in range(10)]
    fleet = Fleet(kafka_settings, devices, INTERVAL_S)
    monitors = [start_monitor(env, tmp_path)]
    fleet.start()
    try:
        wait_until_owning(monitors[0])
        fleet.silence("flaky")
        alerts.wait_for(DEVICE_DOWN, "flaky", 60)

        # The device resumes while no monitor runs.
        monitors[0].kill()
        fleet.revive("flaky")
        time.sleep(TIMEOUT_S)
        monitors.append(start_monitor(env, tmp_path))
        alerts.wait_for(DEVICE_RECOVERED, "flaky", 90)
        time.sleep(2 * TIMEOUT_S)
        alerts.settle()
    finally:
        fleet.stop()
        for monitor in monitors:
            monitor.stop()
        print_logs(monitors)

    down = alerts.of(DEVICE_DOWN, "flaky")
    recovered = alerts.of(DEVICE_RECOVERED, "flaky")
    assert len(down) == 1
    assert len(recovered) == 1
    assert recovered[0].last_seen_ms == down[0].last_seen_ms
    assert alerts.duplicate_ids() == []
    assert [e.device_id for e in alerts.device_events()] == ["flaky", "flaky"]


def mails_of(mailbox: LocalMailbox, device_id: str, kind: str) -> list[EmailMessage]:
    return [
        mail
        for mail in mailbox.messages()
        if mail["X-Hbmon-Device-Id"] == device_id and mail["X-Hbmon-Event-Type"] == kind
    ]


def alerter_committed(kafka: KafkaSettings, group_id: str) -> int:
    """Return the sum of the alerter group's committed offsets on the alert topic."""
    consumer = Consumer(kafka.client_config(group_id=group_id))
    try:
        partitions = [
            TopicPartition(kafka.alert_topic, p) for p in range(kafka.alert_partitions)
        ]
        committed = consumer.committed(partitions, timeout=10)
        return sum(max(0, tp.offset) for tp in committed)
    finally:
        consumer.close()


def test_monitor_and_alerter_restart_send_no_second_down(
    kafka_settings, alerts, names, tmp_path
):
    mailbox = LocalMailbox(tmp_path / "mail", port=free_port())
    mailbox.start()
    env = {
        **monitor_env(
            kafka_settings,
            names["group"],
            HBMON_MONITOR_TRANSACTIONAL_ID=names["transactional_id"],
        ),
        "HBMON_ALERTER_GROUP_ID": names["alerter"],
        "HBMON_ALERTER_METRICS_PORT": "0",
        "HBMON_ALERTER_API_PORT": "0",
        "HBMON_SMTP_HOST": "127.0.0.1",
        "HBMON_SMTP_PORT": str(mailbox.port),
        "HBMON_SMTP_SECURITY": "none",
    }
    devices = ["quiet"] + [f"steady-{i}" for i in range(10)]
    fleet = Fleet(kafka_settings, devices, INTERVAL_S)
    services = [start_monitor(env, tmp_path), Service("alerter", env, tmp_path)]
    services[1].start()
    fleet.start()
    try:
        wait_until_owning(services[0])
        fleet.silence("quiet")
        wait_for(lambda: mails_of(mailbox, "quiet", DEVICE_DOWN), 90, "a DOWN mail")
        wait_for(
            lambda: alerter_committed(kafka_settings, names["alerter"]) >= 1,
            30,
            "the alerter to commit the DOWN event's offset",
        )

        # Both restart while the device stays silent.
        for service in services:
            service.kill()
        services = [
            start_monitor(env, tmp_path),
            Service("alerter", env, tmp_path).start(),
        ]
        wait_until_owning(services[0])
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
    finally:
        fleet.stop()
        for service in services:
            service.stop()
        mailbox.stop()
        print_logs(services)

    others = [e for e in alerts.device_events() if e.device_id != "quiet"]
    assert len(alerts.of(DEVICE_DOWN, "quiet")) == 1
    assert len(mails_of(mailbox, "quiet", DEVICE_DOWN)) == 1
    assert alerts.of(DEVICE_RECOVERED, "quiet") == []
    assert others == [], max_gaps_s(kafka_settings, others)


class HttpFleet:
    """Devices that post batches of heartbeats to ingest, ignoring failures."""

    def __init__(self, base_url: str, devices: list[str], interval_s: float) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=2.0)
        self.devices = devices
        self.interval_s = interval_s
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "HttpFleet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def _run(self) -> None:
        batch = [{"device_id": d} for d in self.devices]
        while not self._stop.wait(self.interval_s):
            try:
                response = self.client.post("/v1/heartbeats/batch", json=batch)
            except httpx.HTTPError:
                continue
            if response.status_code == 202:
                self.accepted += 1


def test_ingest_and_monitor_outage_sends_no_down(
    kafka_settings, alerts, names, tmp_path
):
    ingest_port = free_port()
    env = {
        **monitor_env(
            kafka_settings,
            names["group"],
            HBMON_MONITOR_TRANSACTIONAL_ID=names["transactional_id"],
            HBMON_MONITOR_OUTAGE_MIN_DEVICES="10",
        ),
        "HBMON_INGEST_PORT": str(ingest_port),
        "HBMON_INGEST_METRICS_PORT": "0",
    }
    fleet = HttpFleet(
        f"http://127.0.0.1:{ingest_port}",
        [f"site-{i}" for i in range(90)],
        INTERVAL_S,
    )
    services = [Service("ingest", env, tmp_path).start(), start_monitor(env, tmp_path)]
    fleet.start()
    try:
        wait_until_owning(services[1])
        wait_for(lambda: fleet.accepted > 5, 60, "ingest to accept heartbeats")
        time.sleep(2 * TIMEOUT_S)

        # Both stop for twice the timeout; devices resume once ingest is back.
        for service in services:
            service.kill()
        time.sleep(2 * TIMEOUT_S)
        services = [
            Service("ingest", env, tmp_path).start(),
            start_monitor(env, tmp_path),
        ]
        wait_until_owning(services[1])
        accepted = fleet.accepted
        wait_for(lambda: fleet.accepted > accepted, 60, "ingest to accept again")
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
    finally:
        fleet.stop()
        for service in services:
            service.stop()
        print_logs(services)

    assert alerts.of(DEVICE_DOWN) == []
    assert alerts.of(DEVICE_RECOVERED) == []
    assert alerts.duplicate_ids() == []
