"""The broker is stopped for several transaction timeouts, then started again.

Unlike test_monitor_broker_outage.py, which freezes the broker, this test
stops it with deploy/kafka.sh (SIGTERM), so every connection closes and
the clients bootstrap again when it is back. The monitor must keep running
and commit again afterwards, with no alert lost or repeated.
"""

import time
import uuid

import pytest

from hbmon.events import DEVICE_DOWN
from monitor.producer import CALL_TIMEOUT_S, STALL_GRACE_S
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

# Well over the transaction timeout (5 s) and the call timeout (5 s) of the
# monitor in these tests.
STOPPED_S = 25.0
# A transactional call's timeout plus the grace before it counts as stalled.
STALL_LIMIT_S = CALL_TIMEOUT_S + STALL_GRACE_S


@pytest.mark.parametrize("exactly_once", [True, False])
def test_broker_restart_keeps_monitor_committing(
    kafka_settings, restartable_broker, tmp_path, exactly_once
):
    # The outage outlasts the tests' 6 s session timeout, so the member
    # leaves its group and must rejoin in both modes.
    suffix = uuid.uuid4().hex[:8]
    env = monitor_env(
        kafka_settings,
        f"monitor-{suffix}",
        HBMON_MONITOR_TRANSACTIONAL_ID=f"monitor-{suffix}-0",
        HBMON_MONITOR_OUTAGE_MIN_DEVICES="10",
        HBMON_MONITOR_EXACTLY_ONCE=str(exactly_once).lower(),
    )
    fleet = Fleet(kafka_settings, [f"site-{i}" for i in range(60)], INTERVAL_S)
    alerts = AlertLog(kafka_settings)
    monitor = start_monitor(env, tmp_path)
    fleet.start()
    try:
        wait_until_owning(monitor)
        time.sleep(2 * TIMEOUT_S)

        # The broker is stopped while devices keep posting.
        restartable_broker.stop()
        time.sleep(STOPPED_S)
        restartable_broker.start()
        time.sleep(3 * TIMEOUT_S)

        # Detection works as before afterwards, also after a call that
        # stalls on the restarted broker has had time to be given up on.
        fleet.silence("site-0")
        alerts.wait_for(DEVICE_DOWN, "site-0", 60)
        time.sleep(2 * STALL_LIMIT_S)
        fleet.silence("site-1")
        alerts.wait_for(DEVICE_DOWN, "site-1", 60)
        time.sleep(2 * TIMEOUT_S)
        alerts.settle()
        exit_code = monitor.process.poll() if monitor.process else None
    finally:
        fleet.stop()
        monitor.stop()
        alerts.close()
        print_logs([monitor])

    assert exit_code is None
    if exactly_once:
        assert len(alerts.of(DEVICE_DOWN, "site-0")) == 1
        assert len(alerts.of(DEVICE_DOWN, "site-1")) == 1
        assert alerts.duplicate_ids() == []
    else:
        # At least once: an event may repeat, with the same event id.
        assert len({e.event_id for e in alerts.of(DEVICE_DOWN, "site-0")}) == 1
        assert len({e.event_id for e in alerts.of(DEVICE_DOWN, "site-1")}) == 1
