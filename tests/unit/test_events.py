"""The record formats on the heartbeat and alert topics."""

import orjson
import pytest

from hbmon.events import (
    DEVICE_DOWN,
    AlertEvent,
    HeartbeatRecord,
    InvalidRecord,
    decode_alert,
    decode_heartbeat,
    decode_heartbeats,
    event_id_for,
)


def make_alert(**changes: object) -> dict[str, object]:
    event = {
        "event_id": event_id_for(DEVICE_DOWN, "d1", 1000),
        "type": DEVICE_DOWN,
        "device_id": "d1",
        "severity": "critical",
        "last_seen_ms": 1000,
        "deadline_ms": 31000,
        "timeout_ms": 30000,
        "detected_ms": 31200,
        "partition": 2,
        "message": "Device d1 is DOWN.",
        "downtime_ms": None,
    }
    event.update(changes)
    return event


def test_heartbeat_round_trip_keeps_fields():
    record = HeartbeatRecord("d1", 1234, device_ts="2026-01-01T00:00:00Z", seq=7)

    decoded = decode_heartbeat(record.encode())

    assert decoded == record


def test_heartbeats_of_bundle_decoded_one_by_one():
    good = HeartbeatRecord("d1", 5, device_ts=1.5, device_ts_flag="past", seq=2)
    bundle = b"[%s, 7, {}, %s]" % (good.encode(), HeartbeatRecord("d2", 6).encode())

    decoded = decode_heartbeats(bundle)

    assert len(decoded) == 4
    assert decoded[0] == good
    assert isinstance(decoded[1], InvalidRecord)
    assert decoded[1].field == "[1]"
    assert isinstance(decoded[2], InvalidRecord)
    assert decoded[2].field == "[2].device_id"
    assert decoded[3] == HeartbeatRecord("d2", 6)


def test_heartbeats_of_single_record_and_empty_bundle():
    assert decode_heartbeats(HeartbeatRecord("d1", 5).encode()) == [
        HeartbeatRecord("d1", 5)
    ]
    assert decode_heartbeats(b"[]") == []


@pytest.mark.parametrize("value", [None, b"[not json", b"{}", b"nope"])
def test_heartbeats_invalid_value_raises(value):
    with pytest.raises(InvalidRecord):
        decode_heartbeats(value)


def test_heartbeat_encode_leaves_out_absent_fields():
    assert orjson.loads(HeartbeatRecord("d1", 5).encode()) == {
        "device_id": "d1",
        "received_ms": 5,
    }


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (None, "value"),
        (b"not json", "value"),
        (b"[1, 2]", "value"),
        (b"{}", "device_id"),
        (b'{"device_id": ""}', "device_id"),
        (b'{"device_id": 5}', "device_id"),
        (b'{"device_id": "%s"}' % (b"d" * 1025), "device_id"),
        (b'{"device_id": "d", "received_ms": "x"}', "received_ms"),
        (b'{"device_id": "d", "timeout_s": -1}', "timeout_s"),
        (b'{"device_id": "d", "interval_s": true}', "interval_s"),
    ],
)
def test_heartbeat_decode_names_bad_field(value, field):
    with pytest.raises(InvalidRecord) as caught:
        decode_heartbeat(value)

    assert caught.value.field == field


def test_alert_round_trip_keeps_fields():
    event = AlertEvent(**make_alert())

    assert decode_alert(event.encode()) == event


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"type": "DEVICE_SAD"}, "type"),
        ({"event_id": ""}, "event_id"),
        ({"device_id": None}, "device_id"),
        ({"last_seen_ms": "soon"}, "last_seen_ms"),
        ({"timeout_ms": True}, "timeout_ms"),
        ({"downtime_ms": "long"}, "downtime_ms"),
    ],
)
def test_alert_decode_names_bad_field(changes, field):
    with pytest.raises(InvalidRecord) as caught:
        decode_alert(orjson.dumps(make_alert(**changes)))

    assert caught.value.field == field


def test_event_id_is_stable_for_the_same_transition():
    assert event_id_for(DEVICE_DOWN, "d1", 1000) == event_id_for(
        DEVICE_DOWN, "d1", 1000
    )


def test_event_id_differs_between_episodes():
    assert event_id_for(DEVICE_DOWN, "d1", 1000) != event_id_for(
        DEVICE_DOWN, "d1", 2000
    )
