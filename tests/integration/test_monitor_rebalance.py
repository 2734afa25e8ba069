"""Partitions move between three monitor processes while devices heartbeat.

Members join one by one and two are then killed with SIGKILL, so their open
transactions are left for the broker to abort. Every member has its own
fresh transactional id, as in a default deployment.
"""

import time
import uuid

import pytest

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED
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
from tests.integration.services import wait_for

pytestmark = pytest.mark.integration


def test_rebalance_sends_no_false_or_duplicate_events(kafka_settings, tmp_path):
    env = monitor_env(kafka_settings, f"monitor-{uuid.uuid4().hex[:8]}")
    steady = [f"steady-{i}" for i in range(40)]
    fleet = Fleet(kafka_settings, ["flap"] + steady, INTERVAL_S)
    alerts = AlertLog(kafka_settings)
    monitors = [start_monitor(env, tmp_path)]
    fleet.start()
    try:
        # 1. Members join one at a time.
        wait_until_owning(monitors[0])
        for _ in range(2):
            time.sleep(2 * TIMEOUT_S)
            monitors.append(start_monitor(env, tmp_path))
            wait_until_owning(monitors[-1])

        # 2. One device is DOWN and recovers while members are killed.
        fleet.silence("flap")
        time.sleep(TIMEOUT_S)
        monitors[0].kill()
        time.sleep(2 * TIMEOUT_S)
        fleet.revive("flap")
        time.sleep(2 * TIMEOUT_S)
        monitors[1].kill()

        # 3. The last member takes over every partition.
        wait_for(
            # Partitions may arrive one by one or together, so check what the
            # member owns rather than how many restores it logged.
            lambda: "now owning [0, 1, 2]" in monitors[2].log(),
            90,
            "the last member to take over the killed members' partitions",
        )
        alerts.wait_for(DEVICE_RECOVERED, "flap", 90)
        time.sleep(3 * TIMEOUT_S)
        alerts.settle()
    finally:
        fleet.stop()
        for monitor in monitors:
            monitor.stop()
        alerts.close()
        print_logs(monitors)

    assert len(alerts.of(DEVICE_DOWN, "flap")) == 1
    assert len(alerts.of(DEVICE_RECOVERED, "flap")) == 1
    others = [e for e in alerts.device_events() if e.device_id != "flap"]
    assert others == [], max_gaps_s(kafka_settings, others)
    assert alerts.duplicate_ids() == []
