"""The shard: device state, DOWN and RECOVERED, against a brute-force model."""

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.shard import DOWN, RECOVERED, DeviceState, Shard, Transition

TICK_MS = 1000
MIN_MS, DEFAULT_MS, MAX_MS = 2_000, 5_000, 20_000
# Eight slots make the horizon 8 s, so long timeouts use the sorted index.
SLOTS = 8
T0 = 1_700_000_000_000

# Enough examples to reach rare orderings while the core tests stay under a minute.
thorough = settings(max_examples=1000, deadline=None)


def new_shard() -> Shard:
    return Shard(
        3,
        default_timeout_ms=DEFAULT_MS,
        min_timeout_ms=MIN_MS,
        max_timeout_ms=MAX_MS,
        tick_ms=TICK_MS,
        wheel_slots=SLOTS,
    )


@dataclass
class ModelShard:
    """Dicts scanned in full on every expire, with the shard's documented rules."""

    last_seen_ms: dict[str, int] = field(default_factory=dict)
    timeout_ms: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    clock_ms: int | None = None

    def observe(self, device_id: str, seen_ms: int, timeout_ms: int | None) -> list:
        last_seen_ms = self.last_seen_ms.get(device_id)
        if last_seen_ms is not None and seen_ms <= last_seen_ms:
            return []
        transitions = []
        if last_seen_ms is not None and device_id in self.down:
            self.down.remove(device_id)
            timeout = self.timeout_ms[device_id]
            transitions.append(
                Transition(
                    RECOVERED,
                    device_id,
                    last_seen_ms,
                    last_seen_ms + timeout,
                    timeout,
                    seen_ms,
                )
            )
        self.last_seen_ms[device_id] = seen_ms
        if timeout_ms is not None:
            self.timeout_ms[device_id] = min(max(timeout_ms, MIN_MS), MAX_MS)
        else:
            self.timeout_ms.setdefault(device_id, DEFAULT_MS)
        return transitions

    def expire(self, now_ms: int) -> list[Transition]:
        if self.clock_ms is None or now_ms > self.clock_ms:
            self.clock_ms = now_ms
        reached_ms = self.clock_ms - self.clock_ms % TICK_MS
        transitions = []
        for device_id, last_seen_ms in self.last_seen_ms.items():
            deadline_ms = last_seen_ms + self.timeout_ms[device_id]
            if device_id not in self.down and deadline_ms <= reached_ms:
                self.down.add(device_id)
                transitions.append(
                    Transition(
                        DOWN,
                        device_id,
                        last_seen_ms,
                        deadline_ms,
                        self.timeout_ms[device_id],
                        self.clock_ms,
                    )
                )
        return transitions

    def restore(self, device_id: str, last_seen_ms: int, timeout_ms: int, down: bool):
        self.last_seen_ms[device_id] = last_seen_ms
        self.timeout_ms[device_id] = min(max(timeout_ms, MIN_MS), MAX_MS)
        self.down.discard(device_id)
        if down:
            self.down.add(device_id)

    def forget(self, device_id: str) -> None:
        self.last_seen_ms.pop(device_id, None)
        self.timeout_ms.pop(device_id, None)
        self.down.discard(device_id)

    def device(self, device_id: str) -> DeviceState | None:
        if device_id not in self.last_seen_ms:
            return None
        last_seen_ms = self.last_seen_ms[device_id]
        timeout_ms = self.timeout_ms[device_id]
        return DeviceState(
            last_seen_ms, last_seen_ms + timeout_ms, timeout_ms, device_id in self.down
        )

    def next_deadline_ms(self) -> int | None:
        deadlines = [
            last_seen_ms + self.timeout_ms[device_id]
            for device_id, last_seen_ms in self.last_seen_ms.items()
            if device_id not in self.down
        ]
        return min(deadlines, default=None)


def assert_same(shard: Shard, model: ModelShard) -> None:
    shard._check()
    assert len(shard) == len(model.last_seen_ms)
    assert shard.down_count == len(model.down)
    assert shard.clock_ms == model.clock_ms
    for device_id in DEVICES:
        assert shard.device(device_id) == model.device(device_id), device_id


def by_device(transitions: list[Transition]) -> list[Transition]:
    return sorted(transitions, key=lambda t: (t.device_id, t.kind))


DEVICES = ["d0", "d1", "d2", "d3", "d4"]
devices = st.sampled_from(DEVICES)
declared_timeouts = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from([MIN_MS - 1_000, MIN_MS, 3_500, DEFAULT_MS, 12_000, MAX_MS + 1]),
)
# Heartbeat times relative to the test's time cursor; negative ones are late.
seen_offsets_ms = st.integers(min_value=-6 * TICK_MS, max_value=2 * TICK_MS)
heartbeats = st.tuples(devices, seen_offsets_ms, declared_timeouts)
advances_ms = st.one_of(
    st.integers(min_value=0, max_value=2 * TICK_MS),
    st.integers(min_value=0, max_value=2 * TICK_MS),
    st.integers(min_value=0, max_value=3 * MAX_MS),
)
steps_without_restore = st.one_of(
    st.tuples(st.just("observe"), heartbeats),
    st.tuples(st.just("observe_many"), st.lists(heartbeats, max_size=8)),
    st.tuples(st.just("advance"), advances_ms),
    st.tuples(st.just("advance"), advances_ms),
    st.tuples(st.just("rewind"), st.integers(1, 3 * TICK_MS)),
    st.tuples(st.just("next_deadline"), st.just(0)),
)
restores = st.tuples(
    st.just("restore"),
    st.tuples(devices, seen_offsets_ms, st.integers(0, 2 * MAX_MS), st.booleans()),
)
steps_with_restore = st.one_of(
    steps_without_restore, restores, st.tuples(st.just("forget"), devices)
)


def run_steps(steps: list, check: bool = True) -> list[Transition]:
    """Drive a shard and the model with the same steps and return the transitions."""
    shard, model = new_shard(), ModelShard()
    cursor_ms = T0
    log: list[Transition] = []
    for action, argument in steps:
        if action == "observe":
            device_id, offset_ms, timeout_ms = argument
            recovered = shard.observe(device_id, cursor_ms + offset_ms, timeout_ms)
            expected = model.observe(device_id, cursor_ms + offset_ms, timeout_ms)
            assert ([recovered] if recovered else []) == expected
            log += expected
        elif action == "observe_many":
            batch = [(d, cursor_ms + offset_ms, t) for d, offset_ms, t in argument]
            expected = [t for beat in batch for t in model.observe(*beat)]
            assert shard.observe_many(batch) == expected
            log += expected
        elif action in ("advance", "rewind"):
            cursor_ms += argument if action == "advance" else -argument
            downs = shard.expire(cursor_ms)
            expected = model.expire(cursor_ms)
            assert by_device(downs) == by_device(expected)
            log += expected
        elif action == "next_deadline":
            assert shard.next_deadline_ms() == model.next_deadline_ms()
        elif action == "restore":
            device_id, offset_ms, timeout_ms, down = argument
            shard.restore(device_id, cursor_ms + offset_ms, timeout_ms, down)
            model.restore(device_id, cursor_ms + offset_ms, timeout_ms, down)
        else:
            shard.forget(argument)
            model.forget(argument)
        if check:
            assert_same(shard, model)
    return log


@thorough
@given(st.lists(steps_with_restore, max_size=60))
def test_shard_matches_model(steps: list) -> None:
    run_steps(steps)


@thorough
@given(st.lists(steps_without_restore, max_size=80))
def test_shard_transitions_alternate(steps: list) -> None:
    log = run_steps(steps, check=False)
    for device_id in DEVICES:
        kinds = [t.kind for t in log if t.device_id == device_id]
        assert kinds == [DOWN, RECOVERED] * (len(kinds) // 2) + [DOWN] * (
            len(kinds) % 2
        ), device_id


@thorough
@given(st.lists(st.tuples(devices, seen_offsets_ms, declared_timeouts), max_size=40))
def test_shard_batch_equals_single_observes(beats: list) -> None:
    one_by_one, batched = new_shard(), new_shard()
    batch = [(d, T0 + offset_ms, t) for d, offset_ms, t in beats]
    expected = [one_by_one.observe(*beat) for beat in batch]
    assert batched.observe_many(batch) == [t for t in expected if t is not None]
    for device_id in DEVICES:
        assert batched.device(device_id) == one_by_one.device(device_id)


# Examples, one rule each.


def test_shard_new_device_uses_default_timeout() -> None:
    shard = new_shard()
    assert shard.observe("pump", T0) is None
    assert shard.device("pump") == DeviceState(T0, T0 + DEFAULT_MS, DEFAULT_MS, False)
    assert len(shard) == 1
    assert shard.down_count == 0


def test_shard_old_heartbeat_keeps_last_seen() -> None:
    shard = new_shard()
    shard.observe("pump", T0 + 500)
    shard.observe("pump", T0, timeout_ms=MAX_MS)
    assert shard.device("pump") == DeviceState(
        T0 + 500, T0 + 500 + DEFAULT_MS, DEFAULT_MS, False
    )


def test_shard_down_on_tick_that_equals_deadline() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    assert shard.expire(T0 + DEFAULT_MS - 1) == []
    assert shard.expire(T0 + DEFAULT_MS) == [
        Transition(DOWN, "pump", T0, T0 + DEFAULT_MS, DEFAULT_MS, T0 + DEFAULT_MS)
    ]


def test_shard_down_at_first_tick_after_deadline() -> None:
    shard = new_shard()
    shard.observe("pump", T0 + 1)
    assert shard.expire(T0 + DEFAULT_MS + 999) == []
    (down,) = shard.expire(T0 + DEFAULT_MS + 1000)
    assert down.deadline_ms == T0 + DEFAULT_MS + 1
    assert down.at_ms - down.deadline_ms == 999


def test_shard_down_reported_once() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    assert len(shard.expire(T0 + DEFAULT_MS)) == 1
    assert shard.expire(T0 + 10 * MAX_MS) == []
    assert shard.down_count == 1
    assert shard.device("pump") == DeviceState(T0, T0 + DEFAULT_MS, DEFAULT_MS, True)


def test_shard_heartbeats_postpone_down() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    for second in range(1, 30):
        shard.observe("pump", T0 + second * 1000)
        assert shard.expire(T0 + second * 1000) == []
    (down,) = shard.expire(T0 + 29_000 + DEFAULT_MS)
    assert down.last_seen_ms == T0 + 29_000


def test_shard_recovered_repeats_down_fields() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=3_000)
    (down,) = shard.expire(T0 + 3_000)
    recovered = shard.observe("pump", T0 + 9_000)
    assert recovered == Transition(RECOVERED, "pump", T0, T0 + 3_000, 3_000, T0 + 9_000)
    assert (down.last_seen_ms, down.deadline_ms, down.timeout_ms) == (
        T0,
        T0 + 3_000,
        3_000,
    )
    assert shard.device("pump") == DeviceState(T0 + 9_000, T0 + 12_000, 3_000, False)


def test_shard_stale_heartbeat_keeps_down() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.expire(T0 + DEFAULT_MS)
    assert shard.observe("pump", T0) is None
    assert shard.observe("pump", T0 - 1, timeout_ms=MIN_MS) is None
    assert shard.device("pump") == DeviceState(T0, T0 + DEFAULT_MS, DEFAULT_MS, True)


def test_shard_late_heartbeat_recovers() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.expire(T0 + DEFAULT_MS)
    shard.observe("valve", T0 + 60_000)
    recovered = shard.observe("pump", T0 + 1)
    assert recovered is not None
    assert recovered.kind == RECOVERED
    assert recovered.at_ms == T0 + 1


def test_shard_overdue_recovery_goes_down_again() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.expire(T0 + 60_000)
    recovered = shard.observe("pump", T0 + 1_000)
    assert recovered is not None
    assert recovered.kind == RECOVERED
    (down,) = shard.expire(T0 + 60_000)
    assert down == Transition(
        DOWN, "pump", T0 + 1_000, T0 + 1_000 + DEFAULT_MS, DEFAULT_MS, T0 + 60_000
    )


@pytest.mark.parametrize(
    ("declared_ms", "applied_ms"),
    [(1, MIN_MS), (MIN_MS, MIN_MS), (7_000, 7_000), (MAX_MS * 10, MAX_MS)],
)
def test_shard_declared_timeout_is_clamped(declared_ms: int, applied_ms: int) -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=declared_ms)
    state = shard.device("pump")
    assert state is not None
    assert state.timeout_ms == applied_ms


def test_shard_missing_timeout_keeps_declared_one() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=12_000)
    shard.observe("pump", T0 + 1_000)
    state = shard.device("pump")
    assert state is not None
    assert state.timeout_ms == 12_000


def test_shard_declared_timeout_survives_down() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=12_000)
    shard.expire(T0 + 12_000)
    shard.observe("pump", T0 + 20_000)
    state = shard.device("pump")
    assert state is not None
    assert state.timeout_ms == 12_000


def test_shard_shorter_timeout_moves_down_earlier() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=MAX_MS)
    shard.observe("pump", T0 + 1_000, timeout_ms=MIN_MS)
    assert shard.expire(T0 + 2_999) == []
    (down,) = shard.expire(T0 + 3_000)
    assert down.timeout_ms == MIN_MS


def test_shard_longer_timeout_delays_down() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.observe("pump", T0 + 1_000, timeout_ms=MAX_MS)
    assert shard.expire(T0 + 20_999) == []
    (down,) = shard.expire(T0 + 21_000)
    assert down.deadline_ms == T0 + 21_000


def test_shard_timeout_beyond_horizon_is_tracked() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=MAX_MS)
    assert MAX_MS > SLOTS * TICK_MS
    assert shard.next_deadline_ms() == T0 + MAX_MS
    assert shard.expire(T0 + MAX_MS - 1) == []
    shard._check()
    assert len(shard.expire(T0 + MAX_MS)) == 1


def test_shard_restore_emits_nothing() -> None:
    shard = new_shard()
    shard.restore("pump", T0, 12_000, down=True)
    assert shard.expire(T0 + 60_000) == []
    assert shard.observe("pump", T0) is None
    recovered = shard.observe("pump", T0 + 61_000)
    assert recovered == Transition(
        RECOVERED, "pump", T0, T0 + 12_000, 12_000, T0 + 61_000
    )


def test_shard_restored_overdue_device_goes_down() -> None:
    shard = new_shard()
    shard.expire(T0 + 60_000)
    shard.restore("pump", T0, DEFAULT_MS, down=False)
    (down,) = shard.expire(T0)
    assert down.at_ms == T0 + 60_000
    assert down.deadline_ms == T0 + DEFAULT_MS


def test_shard_restore_replaces_existing_state() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=MAX_MS)
    shard.restore("pump", T0 - 5_000, MIN_MS, down=False)
    assert shard.device("pump") == DeviceState(T0 - 5_000, T0 - 3_000, MIN_MS, False)
    shard._check()
    assert len(shard.expire(T0)) == 1


def test_shard_forget_drops_device() -> None:
    shard = new_shard()
    shard.observe("pump", T0, timeout_ms=MAX_MS)
    shard.observe("valve", T0)
    shard.expire(T0 + DEFAULT_MS)
    shard.forget("pump")
    shard.forget("valve")
    shard.forget("never-seen")
    assert len(shard) == 0
    assert shard.device("pump") is None
    assert shard.expire(T0 + 10 * MAX_MS) == []
    shard._check()


def test_shard_next_deadline_follows_heartbeats() -> None:
    shard = new_shard()
    assert shard.next_deadline_ms() is None
    shard.observe("pump", T0)
    shard.observe("valve", T0 + 2_000)
    shard.observe("pump", T0 + 4_000)
    assert shard.next_deadline_ms() == T0 + 2_000 + DEFAULT_MS
    shard._check()


def test_shard_next_deadline_ignores_down_devices() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.expire(T0 + DEFAULT_MS)
    assert shard.next_deadline_ms() is None


def test_shard_earlier_now_keeps_clock() -> None:
    shard = new_shard()
    shard.observe("pump", T0)
    shard.expire(T0 + 3_000)
    assert shard.expire(T0 + 1_000) == []
    assert shard.clock_ms == T0 + 3_000


def test_shard_batch_returns_recoveries_in_order() -> None:
    shard = new_shard()
    shard.observe_many([("pump", T0, None), ("valve", T0, None)])
    shard.expire(T0 + DEFAULT_MS)
    transitions = shard.observe_many(
        [
            ("valve", T0 + 6_000, None),
            ("fan", T0 + 6_000, None),
            ("pump", T0 + 7_000, 3_000),
        ]
    )
    assert [(t.kind, t.device_id) for t in transitions] == [
        (RECOVERED, "valve"),
        (RECOVERED, "pump"),
    ]
    assert len(shard) == 3


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ((0, 0, 10), "min_timeout_ms must be positive"),
        ((5, 4, 10), "min_timeout_ms <= default_timeout_ms <= max_timeout_ms"),
        ((5, 11, 10), "min_timeout_ms <= default_timeout_ms <= max_timeout_ms"),
    ],
)
def test_shard_rejects_unordered_timeouts(
    bounds: tuple[int, int, int], message: str
) -> None:
    low, default, high = bounds
    with pytest.raises(ValueError, match=message):
        Shard(0, default_timeout_ms=default, min_timeout_ms=low, max_timeout_ms=high)


@pytest.mark.parametrize(
    ("tick_ms", "slots", "message"),
    [(0, 8, "tick_ms must be positive"), (1000, 0, "wheel_slots must be positive")],
)
def test_shard_rejects_invalid_wheel(tick_ms: int, slots: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard(
            0,
            default_timeout_ms=DEFAULT_MS,
            min_timeout_ms=MIN_MS,
            max_timeout_ms=MAX_MS,
            tick_ms=tick_ms,
            wheel_slots=slots,
        )
