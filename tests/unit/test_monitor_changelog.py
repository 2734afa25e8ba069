"""State topic records: encoding, and restoring a partition from them."""

import orjson
import pytest

from hbmon.events import DEVICE_DOWN, MONITORING_RESTORED, InvalidRecord
from monitor.changelog import (
    PARTITION_KEY,
    DeviceRecord,
    PartitionRecord,
    decode_device,
    decode_partition,
    encode_device,
    encode_partition,
)
from monitor.clock import PartitionClock
from monitor.outage import Degraded, OutageRule
from monitor.partition import ROUTING_ATTRS_MAX_CHARS, PartitionState
from monitor.shard import Shard


def new_state(min_devices: int = 4) -> PartitionState:
    shard = Shard(
        0,
        default_timeout_ms=1000,
        min_timeout_ms=100,
        max_timeout_ms=60_000,
        tick_ms=100,
    )
    return PartitionState(shard, PartitionClock(0, 0), OutageRule(0.5, min_devices))


def copy_through_changelog(state: PartitionState) -> PartitionState:
    copy = new_state(state.rule.min_devices)
    for key, value in state.changelog_records():
        copy.load(key, value)
    return copy


def test_device_record_round_trip():
    record = DeviceRecord(
        1_700_000_000_000, 30_000, True, 1_700_000_031_000, {"site": "x"}
    )

    assert decode_device(encode_device(record)) == record


def test_device_record_is_compact_json():
    value = encode_device(DeviceRecord(5, 30_000, False))

    assert orjson.loads(value) == {
        "last_seen_ms": 5,
        "timeout_ms": 30_000,
        "down": False,
    }


def test_partition_record_round_trip():
    record = PartitionRecord(9000, 8000, 7000, Degraded(6000, 5000, 42))

    assert decode_partition(encode_partition(record)) == record


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b"not json", "value"),
        (b"[]", "value"),
        (b'{"timeout_ms": 1, "down": false}', "last_seen_ms"),
        (b'{"last_seen_ms": 1, "timeout_ms": 0, "down": false}', "timeout_ms"),
        (b'{"last_seen_ms": 1, "timeout_ms": 5, "down": 1}', "down"),
        (
            b'{"last_seen_ms": 1, "timeout_ms": 5, "down": false, "held_ms": 9}',
            "held_ms",
        ),
        (
            b'{"last_seen_ms": 1, "timeout_ms": 5, "down": false, "attrs": {"a": 1}}',
            "attrs",
        ),
    ],
)
def test_invalid_device_record_names_field(value, field):
    with pytest.raises(InvalidRecord) as raised:
        decode_device(value)

    assert raised.value.field == field


def test_invalid_partition_record_names_field():
    with pytest.raises(InvalidRecord) as raised:
        decode_partition(b'{"clock_ms": 1, "last_record_ms": 1, "restored_ms": "x"}')

    assert raised.value.field == "restored_ms"


def test_load_rejects_missing_key():
    with pytest.raises(InvalidRecord):
        new_state().load(None, b"{}")


def test_restore_reproduces_device_states():
    state = new_state(min_devices=100)
    state.observe("up", 1000, None, {"site": "berlin", "count": 3})
    state.observe("slow", 1000, 5000)
    state.observe("gone", 500, None)
    state.judge(1600)

    copy = copy_through_changelog(state)

    for device_id in ("up", "slow", "gone"):
        assert copy.shard.device(device_id) == state.shard.device(device_id)
    assert copy.attrs == {"up": {"site": "berlin"}}
    assert copy.devices_down == 1


def test_routing_attrs_capped_in_size():
    state = new_state()
    attrs = {"site": "berlin", "blob": "x" * ROUTING_ATTRS_MAX_CHARS, "rack": "7"}
    state.observe("big", 1000, None, attrs)

    assert state.attrs == {"big": {"site": "berlin"}}


def test_restore_resumes_clock_without_jump():
    state = new_state()
    state.observe("a", 1000, None)
    state.follow_wall_clock(1500)

    copy = copy_through_changelog(state)

    assert copy.clock.now_ms == 1500
    assert copy.clock.last_record_ms == 1000


def test_restore_keeps_held_down_to_announce_once():
    state = new_state()
    for index in range(8):
        state.observe(f"d-{index}", 1000, None)
    for index in range(1, 8):
        state.observe(f"d-{index}", 1500, None)
    assert state.judge(2100) == []

    copy = copy_through_changelog(state)
    copy.observe("d-1", 2200, None)
    events = copy.judge(2200)

    assert [e.type for e in events] == [DEVICE_DOWN]
    assert copy.judge(2300) == []


def test_restore_keeps_degraded_state():
    state = new_state()
    for index in range(8):
        state.observe(f"d-{index}", 1000, None)
    state.judge(2100)

    copy = copy_through_changelog(state)
    assert copy.degraded == state.degraded
    events = copy.observe("d-0", 9000, None)

    assert copy.degraded is None
    assert [e.type for e in events] == [MONITORING_RESTORED]


def test_tombstone_forgets_device():
    state = new_state()
    state.load(b"a", encode_device(DeviceRecord(1000, 1000, False)))

    state.load(b"a", None)

    assert state.shard.device("a") is None


def test_partition_key_cannot_be_a_device_id():
    assert PARTITION_KEY.startswith(b"\x00")
