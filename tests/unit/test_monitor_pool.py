"""The outage rule across the small partitions of one monitor, without a broker.

Times are ms. Devices have a 1000 ms timeout, the shard ticks every 100 ms,
and the rule applies to at least 4 devices, so partitions of 1 to 3 devices
are small and are judged as one pool.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from hbmon.events import DEVICE_DOWN, MONITORING_DEGRADED, MONITORING_RESTORED
from monitor.clock import PartitionClock
from monitor.outage import OutageRule
from monitor.partition import PartitionState
from monitor.pool import OutagePool
from monitor.shard import Shard

TIMEOUT_MS = 1000
RULE = OutageRule(share=0.5, min_devices=4)


def new_pool(sizes: list[int], large: int = 0) -> tuple[OutagePool, list[list[str]]]:
    """Return a pool with one partition per size, plus one of `large` devices if set."""
    pool = OutagePool(RULE)
    fleets = []
    for partition, size in enumerate([*sizes, large] if large else sizes):
        shard = Shard(
            partition,
            default_timeout_ms=TIMEOUT_MS,
            min_timeout_ms=100,
            max_timeout_ms=60_000,
            tick_ms=100,
        )
        state = PartitionState(shard, PartitionClock(partition, 0), RULE, pool)
        pool.partitions[partition] = state
        fleets.append([f"p{partition}-d{i}" for i in range(size)])
    return pool, fleets


def heartbeats(pool: OutagePool, fleets: list[list[str]], at_ms: int) -> list:
    events = []
    for partition, devices in enumerate(fleets):
        for index, device_id in enumerate(devices):
            events += pool.partitions[partition].observe(device_id, at_ms + index, None)
    return events


def only(fleets: list[list[str]], *partitions: int) -> list[list[str]]:
    """Return the fleets with every partition not named left silent."""
    return [devices if p in partitions else [] for p, devices in enumerate(fleets)]


def judge_all(pool: OutagePool, wall_ms: int) -> list:
    """Advance every clock to `wall_ms`, as for caught-up partitions, and judge."""
    events = []
    for state in pool.partitions.values():
        state.follow_wall_clock(wall_ms)
        events += state.judge(state.clock.now_ms)
    return events


def types(events: list) -> list[str]:
    return [event.type for event in events]


def test_small_partition_down_confirmed_by_other_partition():
    pool, fleets = new_pool([2, 2, 2])
    heartbeats(pool, fleets, 1000)
    silent = pool.partitions[0]

    held = judge_all(pool, 1600) + silent.judge(2100)
    heartbeats(pool, only(fleets, 1, 2), 2200)
    confirmed = judge_all(pool, 2300)

    assert held == []
    assert types(confirmed) == [DEVICE_DOWN, DEVICE_DOWN]
    assert {e.device_id for e in confirmed} == set(fleets[0])


def test_small_partition_holds_down_without_any_later_record():
    pool, fleets = new_pool([2, 2, 2])
    heartbeats(pool, fleets, 1000)
    heartbeats(pool, only(fleets, 1, 2), 1500)

    events = judge_all(pool, 2100)

    assert events == []
    assert len(pool.partitions[0].held_downs) == 2


def test_small_pool_announces_at_judge_time():
    pool, fleets = new_pool([1, 2])
    heartbeats(pool, fleets, 1000)

    events = judge_all(pool, 2100)

    assert types(events) == [DEVICE_DOWN] * 3
    assert all(e.detected_ms == 2100 for e in events)


def test_silent_pool_degrades_without_downs():
    pool, fleets = new_pool([3, 3, 3])
    heartbeats(pool, fleets, 1000)

    events = judge_all(pool, 2100) + judge_all(pool, 2500) + judge_all(pool, 9000)

    assert DEVICE_DOWN not in types(events)
    assert types(events) == [MONITORING_DEGRADED] * 3
    assert sorted(e.partition for e in events) == [0, 1, 2]


def test_pool_outage_counts_partitions_judged_before():
    pool, fleets = new_pool([3, 3, 3])
    heartbeats(pool, fleets, 1000)

    # The first partition alone has too few due DOWNs for an outage.
    first, second = pool.partitions[0], pool.partitions[1]
    first.follow_wall_clock(2100)
    first_events = first.judge(2100)
    second.follow_wall_clock(2100)
    second_events = second.judge(2100)

    assert first_events == []
    assert types(second_events) == [MONITORING_DEGRADED]
    assert second_events[0].devices == 3


def test_degraded_pool_restores_on_record_of_any_partition():
    pool, fleets = new_pool([3, 3, 3])
    heartbeats(pool, fleets, 1000)
    judge_all(pool, 2100)
    judge_all(pool, 2200)

    # Only partition 2 hears from its devices again.
    restored = heartbeats(pool, only(fleets, 2), 8000)
    others = judge_all(pool, 8100)

    assert types(restored) == [MONITORING_RESTORED]
    assert types(others) == [MONITORING_RESTORED, MONITORING_RESTORED]
    assert all(state.degraded is None for state in pool.partitions.values())


def test_restored_pool_judges_silent_devices_after_full_timeout():
    pool, fleets = new_pool([3, 3, 3])
    heartbeats(pool, fleets, 1000)
    judge_all(pool, 2100)
    judge_all(pool, 2200)
    heartbeats(pool, only(fleets, 2), 8000)
    judge_all(pool, 8100)

    before = []
    for at_ms in range(8300, 9000, 300):
        heartbeats(pool, only(fleets, 2), at_ms)
        before += judge_all(pool, at_ms + 50)
    heartbeats(pool, only(fleets, 2), 9050)
    after = judge_all(pool, 9100)

    assert before == []
    # Six silent devices of nine are more than the share, but records of
    # partition 2 confirm them, so they are DOWN and not an outage.
    assert types(after) == [DEVICE_DOWN] * 6
    assert all(e.last_seen_ms <= 1002 for e in after)


def test_large_partition_ignores_other_partitions_records():
    pool, fleets = new_pool([2], large=8)
    heartbeats(pool, fleets, 1000)
    heartbeats(pool, [[], fleets[1][1:]], 1500)
    large = pool.partitions[1]

    large.judge(2100)
    heartbeats(pool, [fleets[0], []], 2200)
    events = large.judge(2300)

    assert events == []
    assert large.held_downs.judge_ms(fleets[1][0]) == 1000 + TIMEOUT_MS


def test_large_partitions_stay_out_of_pool():
    pool, fleets = new_pool([3], large=8)
    heartbeats(pool, fleets, 1000)
    small = pool.partitions[0]

    assert pool.devices(small) == 3
    assert pool.is_small(small)
    assert not pool.is_small(pool.partitions[1])


def test_lost_contact_judges_nothing():
    pool, fleets = new_pool([2, 2, 2])
    heartbeats(pool, fleets, 1000)
    for state in pool.partitions.values():
        state.lose_contact()

    events = judge_all(pool, 5000)

    assert events == []
    assert all(state.clock.now_ms < 2000 for state in pool.partitions.values())


def test_regained_contact_waits_one_full_timeout():
    pool, fleets = new_pool([2, 2, 2])
    heartbeats(pool, fleets, 1000)
    for state in pool.partitions.values():
        state.lose_contact()
    judge_all(pool, 5000)
    for state in pool.partitions.values():
        state.regain_contact(6000)

    # Only partitions 1 and 2 send again; partition 0 is really silent.
    before = []
    for at_ms in range(6100, 7000, 300):
        heartbeats(pool, only(fleets, 1, 2), at_ms)
        before += judge_all(pool, at_ms + 50)
    heartbeats(pool, only(fleets, 1, 2), 7050)
    after = judge_all(pool, 7100)

    assert before == []
    assert types(after) == [DEVICE_DOWN, DEVICE_DOWN]
    assert {e.device_id for e in after} == set(fleets[0])


def test_regained_contact_marks_held_devices_dirty():
    pool, fleets = new_pool([2, 2, 2])
    heartbeats(pool, fleets, 1000)
    heartbeats(pool, only(fleets, 1, 2), 1500)
    judge_all(pool, 2100)
    silent = pool.partitions[0]
    silent.changelog_records()
    silent.lose_contact()

    silent.regain_contact(6000)

    keys = {key for key, _ in silent.changelog_records()}
    assert {d.encode() for d in fleets[0]} <= keys
    assert silent.held_downs.judge_ms(fleets[0][0]) == 6000 + TIMEOUT_MS


def test_clock_stops_at_last_contact():
    clock = PartitionClock(0, grace_ms=500)

    clock.follow_wall_clock(10_000, contact_ms=7000)

    assert clock.now_ms == 7000


def test_clock_keeps_grace_when_contact_is_recent():
    clock = PartitionClock(0, grace_ms=500)

    clock.follow_wall_clock(10_000, contact_ms=9900)

    assert clock.now_ms == 9500


# Property: with fewer dead devices than min_devices, so never an outage,
# each dead device gets exactly one DOWN and no live device gets one, in
# whatever small partitions the devices sit.

partition_sizes = st.lists(st.integers(1, 3), min_size=2, max_size=4).filter(
    lambda sizes: sum(sizes) >= RULE.min_devices
)


@st.composite
def fleets_with_deaths(draw: st.DrawFn) -> tuple[list[int], dict[str, int]]:
    sizes = draw(partition_sizes)
    devices = [f"p{p}-d{i}" for p, size in enumerate(sizes) for i in range(size)]
    # The last device always lives, so some partition keeps sending.
    dead = draw(
        st.lists(
            st.sampled_from(devices[:-1]),
            max_size=RULE.min_devices - 1,
            unique=True,
        )
    )
    stops = {
        d: draw(st.integers(1000, 3000).map(lambda ms: ms // 100 * 100)) for d in dead
    }
    return sizes, stops


@settings(max_examples=200, deadline=None)
@given(fleets_with_deaths())
def test_pool_reports_each_dead_device_once(case):
    sizes, stops = case
    pool, fleets = new_pool(sizes)
    events = []
    for at_ms in range(0, 6000, 100):
        if at_ms % 300 == 0:
            live = [
                [d for d in devices if stops.get(d, 10**9) > at_ms]
                for devices in fleets
            ]
            events += heartbeats(pool, live, at_ms)
        events += judge_all(pool, at_ms + 50)

    downs = [e.device_id for e in events if e.type == DEVICE_DOWN]
    assert sorted(downs) == sorted(stops)
    assert MONITORING_DEGRADED not in types(events)
