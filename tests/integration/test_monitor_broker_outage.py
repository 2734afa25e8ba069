"""The broker stops responding for several timeouts while devices keep posting.

One test freezes the broker process with SIGSTOP, so connections stay open
but nothing responds, then thaws it with SIGCONT. The other stops it with
`deploy/kafka.sh stop` (SIGTERM, so connections close) and starts it again.
Both need the broker's data dir: the session broker of the test run, or the
one that HBMON_TEST_KAFKA_DIR names when HBMON_TEST_BOOTSTRAP is set.
"""

import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, MONITORING_DEGRADED, AlertEvent
from hbmon.kafka import KafkaSettings, ensure_topics
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker
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


def contact_lost_gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("hbmon_monitor_broker_contact_lost")


def step_until(
    worker: MonitorWorker, condition: Callable[[], bool], timeout_s: float, what: str
) -> None:
    """Step the worker until `condition` holds, stepping on after retriable errors.

    While the broker is down, a restore gives up after the restore timeout
    with a retriable MonitorError. The monitor process would exit and be
    started again; here the worker retries the restore at its next step.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            worker.step()
        except MonitorError as err:
            if not err.retriable:
                raise
        if condition():
            return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_contact_lost_shows_during_outage(kafka_settings, restartable_broker, caplog):
    registry = CollectorRegistry()
    settings = MonitorSettings(
        group_id=f"monitor-{uuid.uuid4().hex[:8]}",
        default_timeout_s=TIMEOUT_S,
        tick_ms=100,
        commit_interval_ms=300,
        transaction_timeout_ms=5000,
        contact_timeout_ms=5000,
        restore_timeout_s=5.0,
        metrics_port=0,
    )
    worker = MonitorWorker(kafka_settings, settings, MonitorMetrics(registry))
    worker.start()
    try:
        step_until(worker, lambda: len(worker.partitions) == 3, 60, "an assignment")
        # A few statistics reports, so that the last contact is known.
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            worker.step()
        assert contact_lost_gauge(registry) == 0

        # The gauge and the warning come while the broker is still stopped.
        restartable_broker.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monitor.contact_watch"):
            step_until(
                worker,
                lambda: contact_lost_gauge(registry) == 1,
                60,
                "the contact-lost gauge during the outage",
            )
        # Judging stays paused until the broker responds again.
        assert all(state.contact_lost for state in worker.partitions.values())
        warnings = [r.getMessage() for r in caplog.records]
        assert any(
            "Lost contact with the brokers leading partitions [0, 1, 2]" in line
            for line in warnings
        ), warnings

        restartable_broker.start()
        step_until(
            worker,
            lambda: contact_lost_gauge(registry) == 0,
            120,
            "the contact-lost gauge after the broker returned",
        )
    finally:
        restartable_broker.start()
        worker.close(commit=False)
