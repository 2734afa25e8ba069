"""The broker stops responding for several timeouts while devices keep posting.

One test freezes the broker process with SIGSTOP, so connections stay open
but nothing responds, then thaws it with SIGCONT. The other stops it with
`deploy/kafka.sh stop` (SIGTERM, so connections close) and starts it again.
Both need the broker's data dir: the session broker of the test run, or the
one that HBMON_TEST_KAFKA_DIR names when HBMON_TEST_BOOTSTRAP is set.
"""

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, MONITORING_DEGRADED, AlertEvent
from hbmon.kafka import KafkaSettings, ensure_topics
from tests.conftest import KAFKA_SCRIPT, TEST_BROKER_ENV
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

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def broker_data_dir() -> Path | None:
    if os.environ.get("HBMON_TEST_BOOTSTRAP"):
        name = os.environ.get("HBMON_TEST_KAFKA_DIR")
        if not name:
            return None
    else:
        name = TEST_BROKER_ENV["HBMON_KAFKA_DIR"]
    return Path(name) if Path(name).is_absolute() else ROOT / name


def broker_pid() -> int | None:
    data_dir = broker_data_dir()
    if data_dir is None:
        return None
    try:
        return int((data_dir / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class LocalBroker:
    """The test broker, stopped and started through deploy/kafka.sh.

    The ports come from the data dir's server.properties, so the broker
    starts again exactly as it ran.
    """

    def __init__(self, data_dir: Path) -> None:
        properties = (data_dir / "server.properties").read_text()
        match = re.search(
            r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)$",
            properties,
            re.MULTILINE,
        )
        if match is None:
            raise AssertionError(f"no listeners line in {data_dir}/server.properties")
        self.env = {
            **os.environ,
            "HBMON_KAFKA_DIR": str(data_dir),
            "HBMON_KAFKA_PORT": match.group(1),
            "HBMON_KAFKA_CONTROLLER_PORT": match.group(2),
        }

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")

    def _run(self, command: str) -> None:
        subprocess.run(
            [str(KAFKA_SCRIPT), command], env=self.env, check=True, timeout=180
        )


@pytest.fixture
def frozen_broker(kafka_bootstrap: str) -> Iterator[int]:
    """Return the broker's pid; make sure it runs again after the test."""
    pid = broker_pid()
    if pid is None:
        pytest.skip("the broker's pid is unknown; set HBMON_TEST_KAFKA_DIR")
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def stoppable_broker(kafka_bootstrap: str) -> Iterator[LocalBroker]:
    """Return the test broker; make sure it runs again after the test."""
    data_dir = broker_data_dir()
    if data_dir is None or not (data_dir / "server.properties").is_file():
        pytest.skip("the broker's data dir is unknown; set HBMON_TEST_KAFKA_DIR")
    broker = LocalBroker(data_dir)
    try:
        yield broker
    finally:
        broker.start()


@dataclass
class OutageRun:
    """What a monitor emitted around a broker outage, and how it ended."""

    during: list[AlertEvent]
    gaps_s: dict[str, float]
    alerts: AlertLog
    exit_code: int | None
    log: str


def run_outage(
    kafka: KafkaSettings,
    env: dict[str, str],
    devices: int,
    outage: Callable[[], None],
    log_dir: Path,
) -> OutageRun:
    """Run a monitor and a fleet through `outage`, then silence site-0.

    `during` contains the events up to three timeouts after the outage, and
    `gaps_s` the longest heartbeat gap of each device in them.
    """
    fleet = Fleet(kafka, [f"site-{i}" for i in range(devices)], INTERVAL_S)
    alerts = AlertLog(kafka)
    monitor = start_monitor(env, log_dir)
    fleet.start()
    try:
        wait_until_owning(monitor)
        time.sleep(2 * TIMEOUT_S)
        outage()
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
        during = list(alerts.events)
        gaps_s = max_gaps_s(kafka, alerts.device_events())

        # Detection works as before afterwards.
        fleet.silence("site-0")
        alerts.wait_for(DEVICE_DOWN, "site-0", 90)
        time.sleep(2 * TIMEOUT_S)
        alerts.settle()
        exit_code = monitor.process.poll() if monitor.process else None
        log = monitor.log()
    finally:
        fleet.stop()
        monitor.stop()
        alerts.close()
        print_logs([monitor])
    return OutageRun(during, gaps_s, alerts, exit_code, log)


def test_broker_outage_sends_no_down_then_detects(
    kafka_settings, frozen_broker, tmp_path
):
    env = monitor_env(
        kafka_settings,
        f"monitor-{uuid.uuid4().hex[:8]}",
        HBMON_MONITOR_OUTAGE_MIN_DEVICES="10",
    )

    def freeze_broker() -> None:
        # The broker is frozen for four timeouts.
        os.kill(frozen_broker, signal.SIGSTOP)
        time.sleep(4 * TIMEOUT_S)
        os.kill(frozen_broker, signal.SIGCONT)

    run = run_outage(kafka_settings, env, 90, freeze_broker, tmp_path)

    assert run.exit_code is None
    device_events = [e for e in run.during if e.type in (DEVICE_DOWN, DEVICE_RECOVERED)]
    assert device_events == [], run.gaps_s
    degraded = [e.partition for e in run.during if e.type == MONITORING_DEGRADED]
    assert len(degraded) == len(set(degraded))
    assert len(run.alerts.of(DEVICE_DOWN, "site-0")) == 1
    assert run.alerts.of(DEVICE_DOWN) == run.alerts.of(DEVICE_DOWN, "site-0")
    assert run.alerts.duplicate_ids() == []


def test_broker_stop_sends_no_down_to_small_partitions(
    kafka_settings, stoppable_broker, tmp_path
):
    # About 100 devices over 6 partitions: each partition has fewer devices
    # than the default HBMON_MONITOR_OUTAGE_MIN_DEVICES (20).
    suffix = uuid.uuid4().hex[:8]
    kafka = replace(
        kafka_settings,
        heartbeat_topic=f"iot-data-{suffix}",
        alert_topic=f"device-alerts-{suffix}",
        heartbeat_partitions=6,
    )
    ensure_topics(kafka)
    # NOTE: at-least-once mode, because the transactional producer can
    # block after a broker restart until the stall watchdog ends the monitor.
    # The session outlasts the outage, because a member whose session expired
    # retries its offset commit forever without rejoining the group.
    env = monitor_env(
        kafka,
        f"monitor-{suffix}",
        HBMON_MONITOR_EXACTLY_ONCE="false",
        HBMON_MONITOR_SESSION_TIMEOUT_MS="45000",
    )
    assert "HBMON_MONITOR_OUTAGE_MIN_DEVICES" not in env

    def stop_broker() -> None:
        # Down for four timeouts, more while it stops and starts. The
        # fleet's producer keeps its heartbeats meanwhile.
        stoppable_broker.stop()
        time.sleep(4 * TIMEOUT_S)
        stoppable_broker.start()

    run = run_outage(kafka, env, 100, stop_broker, tmp_path)

    assert run.exit_code is None
    assert "Lost contact with the brokers" in run.log
    assert [e for e in run.during if e.type == DEVICE_DOWN] == [], run.gaps_s
    assert [e for e in run.during if e.type == DEVICE_RECOVERED] == [], run.gaps_s
    assert [e for e in run.during if e.type == MONITORING_DEGRADED] == []
    assert len(run.alerts.of(DEVICE_DOWN, "site-0")) == 1
    assert run.alerts.of(DEVICE_DOWN) == run.alerts.of(DEVICE_DOWN, "site-0")
    assert run.alerts.of(DEVICE_RECOVERED) == []
    assert run.alerts.duplicate_ids() == []
