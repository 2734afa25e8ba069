"""The broker stops responding for several timeouts while devices keep posting.

One test freezes the broker process with SIGSTOP, so connections stay open
but nothing responds, then thaws it with SIGCONT. The other stops it with
`deploy/kafka.sh stop` (SIGTERM, so connections close) and starts it again.
Both need the broker's data dir: the session broker of the test run, or the
one that HBMON_TEST_KAFKA_DIR names when HBMON_TEST_BOOTSTRAP is set.
"""

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, MONITORING_DEGRADED, AlertEvent
from hbmon.kafka import KafkaSettings, ensure_topics
from tests.integration.broker import find_broker
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


@pytest.fixture
def frozen_broker(kafka_bootstrap: str) -> Iterator[int]:
    """Return the broker's pid; make sure it runs again after the test."""
    broker = find_broker(kafka_bootstrap)
    pid = broker.pid() if broker is not None else None
    if pid is None:
        pytest.skip("the broker's pid is unknown; set HBMON_TEST_KAFKA_DIR")
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


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
    kafka_settings, restartable_broker, tmp_path
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
    env = monitor_env(kafka, f"monitor-{suffix}")
    assert "HBMON_MONITOR_OUTAGE_MIN_DEVICES" not in env

    def stop_broker() -> None:
        # Down for four timeouts, more while it stops and starts. The
        # fleet's producer keeps its heartbeats meanwhile.
        restartable_broker.stop()
        time.sleep(4 * TIMEOUT_S)
        restartable_broker.start()

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
