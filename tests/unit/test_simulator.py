"""The simulated fleet's plan: which devices fall silent and what progress shows."""

from collections import Counter

from hbmon.simulator import FleetPlan, FleetProgress, format_progress


def test_plan_silences_the_given_share():
    plan = FleetPlan(devices=20, silent_share=0.1)

    assert plan.silent_ids() == {"sim-device-0000", "sim-device-0001"}


def test_plan_silences_at_least_one_device_when_share_is_positive():
    plan = FleetPlan(devices=3, silent_share=0.01)

    assert len(plan.silent_ids()) == 1


def test_plan_silences_nobody_at_zero_share():
    assert FleetPlan(devices=3, silent_share=0).silent_ids() == set()


def test_progress_line_counts_statuses():
    progress = FleetProgress(statuses=Counter({"202": 40, "503": 2}), silent_now=2)

    line = format_progress(FleetPlan(devices=20), progress, elapsed=12.0)

    assert "heartbeats 42 (202:40 503:2)" in line
    assert "2 silent" in line
