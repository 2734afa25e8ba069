"""The outage rule on one partition, without a broker.

Times are ms. Devices have a 1000 ms timeout, the shard ticks every 100 ms,
and the rule applies to partitions of at least 4 devices.
"""

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
)
from monitor.clock import PartitionClock
from monitor.outage import HeldDowns, OutageRule
from monitor.partition import PartitionState
from monitor.shard import DOWN, Shard, Transition

TIMEOUT_MS = 1000


def new_state(min_devices: int = 4, share: float = 0.5) -> PartitionState:
    shard = Shard(
        0,
        default_timeout_ms=TIMEOUT_MS,
        min_timeout_ms=100,
        max_timeout_ms=60_000,
        tick_ms=100,
    )
    return PartitionState(shard, PartitionClock(0, 0), OutageRule(share, min_devices))


def heartbeats(state: PartitionState, devices: list[str], at_ms: int) -> list:
    events = []
    for index, device_id in enumerate(devices):
        events.extend(state.observe(device_id, at_ms + index, None))
    return events


def types(events: list) -> list[str]:
    return [event.type for event in events]


FLEET = [f"d-{i}" for i in range(8)]


def test_small_partition_announces_down_at_deadline():
    state = new_state(min_devices=4)
    heartbeats(state, ["a", "b"], 1000)

    events = state.judge(2100)

    assert types(events) == [DEVICE_DOWN, DEVICE_DOWN]
    assert events[0].detected_ms == 2100


def test_large_partition_holds_down_until_later_record():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    heartbeats(state, FLEET[1:], 1500)

    held = state.judge(2100)
    state.observe("d-1", 2200, None)
    confirmed = state.judge(2300)

    assert held == []
    assert types(confirmed) == [DEVICE_DOWN]
    assert confirmed[0].device_id == "d-0"


def test_held_down_that_recovers_emits_nothing():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    heartbeats(state, FLEET[1:], 1500)

    state.judge(2100)
    recovered = state.observe("d-0", 2150, None)
    later = state.judge(2200)

    assert recovered == []
    assert later == []
    assert state.devices_down == 0


def test_silent_partition_degrades_once_without_downs():
    state = new_state()
    heartbeats(state, FLEET, 1000)

    events = state.judge(2100) + state.judge(5000) + state.judge(9000)

    assert types(events) == [MONITORING_DEGRADED]
    assert events[0].devices == len(FLEET)
    assert events[0].message.startswith(
        "Heartbeat partition 0 received nothing for 1 s, so 8 devices missed"
    )
    assert events[0].device_id == ""
    assert state.clock.now_ms < 5000


def test_degraded_partition_restores_on_next_record():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    state.judge(2100)

    events = state.observe("d-0", 8000, None)

    assert types(events) == [MONITORING_RESTORED]
    assert events[0].detected_ms == 8000
    assert state.degraded is None


def test_restored_partition_judges_after_full_timeout():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    state.judge(2100)
    heartbeats(state, FLEET[1:], 8000)
    heartbeats(state, FLEET[1:], 8800)

    before = state.judge(8900)
    state.observe("d-1", 9100, None)
    after = state.judge(9100)

    assert before == []
    assert types(after) == [DEVICE_DOWN]
    assert after[0].device_id == "d-0"
    assert after[0].last_seen_ms == 1000


def test_backlog_after_gap_degrades_like_live():
    state = new_state()
    heartbeats(state, FLEET, 1000)

    # No tick between the records before and after a long gap, as when a
    # restarted monitor reads a backlog in one batch.
    events = heartbeats(state, FLEET, 6000)

    assert types(events) == [MONITORING_DEGRADED, MONITORING_RESTORED]
    assert state.judge(6500) == []


def test_partial_silence_below_share_is_announced():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    heartbeats(state, FLEET[3:], 1800)

    state.judge(2100)
    state.observe("d-4", 2200, None)
    events = state.judge(2200)

    assert types(events) == [DEVICE_DOWN] * 3


def test_share_above_threshold_needs_min_devices():
    rule = OutageRule(share=0.5, min_devices=20)

    assert not rule.is_outage(due=19, devices=20)
    assert rule.is_outage(due=20, devices=20)
    assert not rule.is_outage(due=20, devices=40)
    assert rule.is_outage(due=21, devices=40)


def test_down_then_recovered_after_confirmation():
    state = new_state()
    heartbeats(state, FLEET, 1000)
    heartbeats(state, FLEET[1:], 1500)
    heartbeats(state, FLEET[1:], 2200)
    assert types(state.judge(2300)) == [DEVICE_DOWN]

    events = state.observe("d-0", 2400, None)

    assert types(events) == [DEVICE_RECOVERED]
    assert events[0].downtime_ms == 1400


def test_held_downs_pop_in_judge_order():
    held = HeldDowns()
    for device_id, judge_ms in (("b", 300), ("a", 100), ("c", 200)):
        held.add(Transition(DOWN, device_id, 0, judge_ms, judge_ms, judge_ms), judge_ms)

    assert held.count_until(200) == 2
    assert [t.device_id for t in held.pop_until(200)] == ["a", "c"]
    assert len(held) == 1


def test_held_downs_postpone_to_full_timeout():
    held = HeldDowns()
    held.add(Transition(DOWN, "a", 0, 1000, 1000, 1000), 1000)

    held.postpone(5000)

    assert held.judge_ms("a") == 6000


def test_backlog_in_one_batch_judges_deadline_between_records():
    state = new_state(min_devices=4)
    events = state.observe("a", 1000, None) + state.observe("b", 1000, None)

    # Read as one backlog, with no tick: "a" is silent past its deadline.
    for at_ms in (1500, 2000, 2500):
        events += state.observe("b", at_ms, None)
    events += state.observe("a", 2600, None)

    assert types(events) == [DEVICE_DOWN, DEVICE_RECOVERED]
    assert events[0].device_id == "a"


def test_mass_failure_downs_follow_one_restore():
    state = new_state()
    # Six devices fall silent at once, and their deadlines pass together.
    events = [e for d in FLEET for e in state.observe(d, 1000, None)]
    for at_ms in range(1100, 6000, 100):
        events += heartbeats(state, FLEET[6:], at_ms)
        events += state.judge(at_ms + 50)

    kinds = types(events)
    assert events[0].message.startswith(
        "6 devices of heartbeat partition 0 missed their deadlines at once."
    )
    assert kinds[:2] == [MONITORING_DEGRADED, MONITORING_RESTORED]
    assert kinds[2:] == [DEVICE_DOWN] * 6
    assert sorted(event.device_id for event in events[2:]) == FLEET[:6]


def test_pipeline_back_briefly_degrades_again():
    state = new_state()
    events = heartbeats(state, FLEET, 1000)
    events += state.judge(2100)
    events += heartbeats(state, FLEET[:1], 5000)
    for at_ms in range(5100, 9000, 100):
        events += state.judge(at_ms)
    events += heartbeats(state, FLEET, 9000)

    assert types(events) == [
        MONITORING_DEGRADED,
        MONITORING_RESTORED,
        MONITORING_DEGRADED,
        MONITORING_RESTORED,
    ]


def test_cut_soon_after_restore_degrades_again():
    # Devices with a 400 ms timeout: d-0 to d-4 fail at 1000, d-5 sends every
    # 100 ms, d-6 and d-7 every 300 ms. No record arrives between 1400 and
    # 1800: less than half the default timeout, more than half theirs.
    state = new_state()
    events = [e for d in FLEET for e in state.observe(d, 1000, 400)]
    for at_ms in range(1100, 4500, 100):
        if not 1500 <= at_ms < 1800:
            senders = ["d-5"] + (["d-6", "d-7"] if at_ms % 300 == 100 else [])
            events += [e for d in senders for e in state.observe(d, at_ms, 400)]
        events += state.judge(at_ms + 50)

    downs = sorted(e.device_id for e in events if e.type == DEVICE_DOWN)
    assert types(events)[:4] == [
        MONITORING_DEGRADED,
        MONITORING_RESTORED,
        MONITORING_DEGRADED,
        MONITORING_RESTORED,
    ]
    assert downs == FLEET[:5]
