"""The broker stops responding for several timeouts while devices keep posting.

The test freezes the broker process with SIGSTOP, so connections stay open
but nothing responds, then thaws it with SIGCONT. It needs to know the
broker's process: the session broker of the test run, or the one whose data
dir HBMON_TEST_KAFKA_DIR names when HBMON_TEST_BOOTSTRAP is set.
"""

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, MONITORING_DEGRADED
from tests.integration.broker import find_broker
from tests.integration.monitor_harness import (
    INTERVAL_S,
    TIMEOUT_S,
    AlertLog,
    Fleet,
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


def test_broker_outage_sends_no_down_then_detects(
    kafka_settings, frozen_broker, tmp_path
):
    suffix = uuid.uuid4().hex[:8]
    env = monitor_env(
        kafka_settings,
        f"monitor-{suffix}",
        HBMON_MONITOR_OUTAGE_MIN_DEVICES="10",
    )
    fleet = Fleet(kafka_settings, [f"site-{i}" for i in range(90)], INTERVAL_S)
    alerts = AlertLog(kafka_settings)
    monitor = start_monitor(env, tmp_path)
    fleet.start()
    try:
        wait_until_owning(monitor)
        time.sleep(2 * TIMEOUT_S)

        # The broker is frozen for four timeouts.
        os.kill(frozen_broker, signal.SIGSTOP)
        time.sleep(4 * TIMEOUT_S)
        os.kill(frozen_broker, signal.SIGCONT)
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
        during = list(alerts.events)

        # Detection works as before afterwards.
        fleet.silence("site-0")
        alerts.wait_for(DEVICE_DOWN, "site-0", 90)
        time.sleep(2 * TIMEOUT_S)
        alerts.settle()
        exit_code = monitor.process.poll() if monitor.process else None
    finally:
        fleet.stop()
        monitor.stop()
        alerts.close()
        print_logs([monitor])

    assert exit_code is None
    assert [e for e in during if e.type in (DEVICE_DOWN, DEVICE_RECOVERED)] == []
    degraded = [e.partition for e in during if e.type == MONITORING_DEGRADED]
    assert len(degraded) == len(set(degraded))
    assert len(alerts.of(DEVICE_DOWN, "site-0")) == 1
    assert alerts.of(DEVICE_DOWN) == alerts.of(DEVICE_DOWN, "site-0")
    assert alerts.duplicate_ids() == []
