"""The timer wheel, checked against a brute-force model and at its boundaries."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.timerwheel import TimerWheel

TICK_MS = 1000
SLOTS = 8
HORIZON_MS = TICK_MS * SLOTS

# Enough examples to reach rare orderings while the core tests stay under a minute.
thorough = settings(max_examples=1000, deadline=None)


def ceil_to_tick(time_ms: int, tick_ms: int = TICK_MS) -> int:
    return -(-time_ms // tick_ms) * tick_ms


class ModelWheel:
    """Dict of deadlines, queried by full scans."""

    def __init__(self, tick_ms: int, start_ms: int) -> None:
        self.tick_ms = tick_ms
        self.now_ms = start_ms
        self.deadlines: dict[int, int] = {}

    def due_ms(self, key: int) -> int:
        last_expired_ms = self.now_ms - self.now_ms % self.tick_ms
        return max(ceil_to_tick(self.deadlines[key], self.tick_ms), last_expired_ms)

    def expire(self, now_ms: int) -> set[int]:
        self.now_ms = max(self.now_ms, now_ms)
        due = {
            key
            for key, deadline_ms in self.deadlines.items()
            if ceil_to_tick(deadline_ms, self.tick_ms) <= self.now_ms
        }
        for key in due:
            del self.deadlines[key]
        return due


def assert_same(wheel: TimerWheel[int], model: ModelWheel) -> None:
    wheel._check()
    assert len(wheel) == len(model.deadlines)
    assert wheel.now_ms == model.now_ms
    for key in model.deadlines:
        assert wheel.due_ms(key) == model.due_ms(key), key


keys = st.integers(min_value=0, max_value=7)
# Deadlines relative to the clock: mostly in the ring, some in the past or beyond.
offsets_ms = st.one_of(
    st.integers(min_value=-TICK_MS, max_value=HORIZON_MS),
    st.integers(min_value=-TICK_MS, max_value=HORIZON_MS),
    st.integers(min_value=-3 * TICK_MS, max_value=3 * HORIZON_MS),
)
# Mostly steps of a tick or two, sometimes past the horizon, rarely huge jumps.
advances_ms = st.one_of(
    st.integers(min_value=0, max_value=2 * TICK_MS),
    st.integers(min_value=0, max_value=2 * TICK_MS),
    st.integers(min_value=0, max_value=4 * HORIZON_MS),
    st.integers(min_value=0, max_value=10**12),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), keys, offsets_ms),
        st.tuples(st.just("schedule"), keys, offsets_ms),
        st.tuples(
            st.just("schedule_many"), st.lists(st.tuples(keys, offsets_ms)), st.just(0)
        ),
        st.tuples(st.just("cancel"), keys, st.just(0)),
        st.tuples(st.just("advance"), st.just(0), advances_ms),
        st.tuples(st.just("rewind"), st.just(0), st.integers(1, 5 * TICK_MS)),
        st.tuples(st.just("peek"), st.just(0), st.integers(1, 20)),
    ),
    max_size=150,
)


@thorough
@given(start_ms=st.integers(0, 10**13), steps=operations)
def test_wheel_matches_model(start_ms: int, steps: list[tuple[str, Any, int]]) -> None:
    wheel: TimerWheel[int] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=start_ms)
    model = ModelWheel(TICK_MS, start_ms)
    for action, key, value in steps:
        if action == "schedule":
            wheel.schedule(key, model.now_ms + value)
            model.deadlines[key] = model.now_ms + value
        elif action == "schedule_many":
            entries = [(k, model.now_ms + offset_ms) for k, offset_ms in key]
            wheel.schedule_many(entries)
            model.deadlines.update(entries)
        elif action == "cancel":
            assert wheel.cancel(key) == (model.deadlines.pop(key, None) is not None)
        elif action == "advance":
            now_ms = model.now_ms + value
            expected = model.expire(now_ms)
            got = wheel.expire(now_ms)
            assert sorted(got) == sorted(expected)
        elif action == "rewind":
            now_ms = model.now_ms - value
            assert sorted(wheel.expire(now_ms)) == sorted(model.expire(now_ms))
        else:
            assert_peeks_match(wheel, model, limit=value)
        assert_same(wheel, model)


def assert_peeks_match(wheel: TimerWheel[int], model: ModelWheel, limit: int) -> None:
    expected = sorted((model.due_ms(key), key) for key in model.deadlines)
    got = wheel.next_due(limit)
    assert [due_ms for due_ms, _ in got] == [due_ms for due_ms, _ in expected[:limit]]
    for due_ms, key in got:
        assert model.due_ms(key) == due_ms

    earliest = wheel.earliest_due()
    if not expected:
        assert earliest is None
        return
    assert earliest is not None
    first_ms = expected[0][0]
    assert earliest[0] == first_ms
    assert sorted(earliest[1]) == [
        key for due_ms, key in expected if due_ms == first_ms
    ]


@thorough
@given(
    start_tick=st.integers(0, 10**6),
    deadlines=st.lists(st.integers(0, 5 * HORIZON_MS), max_size=60),
    step_ms=st.sampled_from([100, 250, 500, 1000]),
)
def test_wheel_expiry_under_one_tick_late(
    start_tick: int, deadlines: list[int], step_ms: int
) -> None:
    # Steps that divide the tick make expire run on every tick boundary.
    start_ms = start_tick * TICK_MS
    wheel: TimerWheel[int] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=start_ms)
    for key, offset_ms in enumerate(deadlines):
        wheel.schedule(key, start_ms + offset_ms)
    for now_ms in range(start_ms, start_ms + 6 * HORIZON_MS, step_ms):
        due = wheel.expire(now_ms)
        due_ticks = [ceil_to_tick(start_ms + deadlines[key]) for key in due]
        assert due_ticks == sorted(due_ticks)
        for key in due:
            lateness_ms = now_ms - (start_ms + deadlines[key])
            assert 0 <= lateness_ms < TICK_MS
    assert len(wheel) == 0
    wheel._check()


def test_wheel_deadline_on_tick_expires_at_that_tick() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("on-tick", 3000)
    assert wheel.expire(2999) == []
    assert wheel.expire(3000) == ["on-tick"]


def test_wheel_deadline_after_tick_expires_at_next_tick() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("after-tick", 3001)
    assert wheel.due_ms("after-tick") == 4000
    assert wheel.expire(3999) == []
    assert wheel.expire(4000) == ["after-tick"]


def test_wheel_far_deadline_moves_into_ring_then_expires() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("far", 20_000)
    assert wheel.horizon_ms == 9000
    assert ("far", 20_000) in [(key, due) for due, key in wheel.next_due(1)]
    wheel._check()

    assert wheel.expire(13_000) == []
    wheel._check()
    assert wheel.horizon_ms == 22_000
    assert wheel._filed["far"] >= 0

    assert wheel.expire(19_999) == []
    assert wheel.expire(20_000) == ["far"]
    wheel._check()


def test_wheel_huge_jump_expires_in_order() -> None:
    wheel: TimerWheel[int] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    deadlines = [500, 7_000, 8_500, 40_000, 10**9]
    for key, deadline_ms in reversed(list(enumerate(deadlines))):
        wheel.schedule(key, deadline_ms)

    assert wheel.expire(10**15) == [0, 1, 2, 3, 4]
    assert len(wheel) == 0
    wheel._check()


def test_wheel_clock_jump_onto_far_deadline_expires_it() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("far", 50_000)
    wheel.schedule("next", 50_001)

    assert wheel.expire(50_000) == ["far"]
    wheel._check()
    assert wheel.expire(51_000) == ["next"]


def test_wheel_huge_clock_jump_keeps_later_deadlines() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("soon", 2_000)
    wheel.schedule("later", 10**12 + 5_000)
    wheel.schedule("much-later", 10**12 + 50_000)

    assert wheel.expire(10**12) == ["soon"]
    wheel._check()
    assert wheel.due_ms("later") == 10**12 + 5_000
    assert wheel.due_ms("much-later") == 10**12 + 50_000


def test_wheel_many_entries_in_one_slot_expire_together() -> None:
    wheel: TimerWheel[int] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    for key in range(10_000):
        wheel.schedule(key, 4_000 - key % TICK_MS)
    wheel._check()

    assert wheel.expire(3_999) == []
    due = wheel.expire(4_000)
    assert sorted(due) == list(range(10_000))
    assert len(wheel) == 0


def test_wheel_reschedule_leaves_one_live_entry() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    for deadline_ms in (5_000, 2_000, 30_000, 3_000, 3_000, -50):
        wheel.schedule("device", deadline_ms)
        wheel._check()
    assert len(wheel) == 1
    assert wheel.due_ms("device") == 0

    assert wheel.expire(1) == ["device"]
    assert wheel.expire(40_000) == []


def test_wheel_stale_copy_keeps_later_deadline() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("device", 2_000)
    wheel.schedule("device", 6_000)

    assert wheel.expire(3_000) == []
    wheel._check()
    assert wheel.due_ms("device") == 6_000
    assert wheel.expire(6_000) == ["device"]


def test_wheel_cancelled_key_scheduled_again_expires_once() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("device", 3_000)
    assert wheel.cancel("device")
    assert not wheel.cancel("device")
    wheel.schedule("device", 3_000)
    wheel._check()

    assert wheel.expire(3_000) == ["device"]
    assert wheel.expire(10_000) == []


def test_wheel_past_deadline_expires_on_next_call() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.expire(10_500)
    wheel.schedule("late", 4_000)
    assert wheel.due_ms("late") == 10_000

    assert wheel.expire(9_000) == ["late"]
    assert wheel.now_ms == 10_500


def test_wheel_clock_never_moves_back() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.expire(5_000)
    wheel.schedule("device", 5_500)
    assert wheel.expire(1_000) == []
    assert wheel.now_ms == 5_000
    assert wheel.expire(6_000) == ["device"]


def test_wheel_earliest_due_skips_stale_slots() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.schedule("moved", 2_000)
    wheel.schedule("stays", 5_000)
    wheel.schedule("moved", 6_000)

    assert wheel.earliest_due() == (5_000, ["stays"])
    wheel._check()
    assert wheel.cancel("stays")
    assert wheel.earliest_due() == (6_000, ["moved"])
    assert wheel.cancel("moved")
    assert wheel.earliest_due() is None


def test_wheel_next_due_orders_overdue_ring_and_far() -> None:
    wheel: TimerWheel[str] = TimerWheel(tick_ms=TICK_MS, slots=SLOTS, start_ms=0)
    wheel.expire(2_000)
    wheel.schedule("far", 50_000)
    wheel.schedule("ring", 4_000)
    wheel.schedule("overdue", 1_000)

    assert wheel.next_due(10) == [
        (2_000, "overdue"),
        (4_000, "ring"),
        (50_000, "far"),
    ]
    assert wheel.next_due(1) == [(2_000, "overdue")]


@pytest.mark.parametrize(
    ("tick_ms", "slots", "message"),
    [(0, 8, "tick_ms must be positive"), (1000, 0, "slots must be positive")],
)
def test_wheel_rejects_invalid_arguments(
    tick_ms: int, slots: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TimerWheel(tick_ms=tick_ms, slots=slots, start_ms=0)
