"""Record format of the state topic, the compacted changelog of device state.

The state topic has as many partitions as the heartbeat topic, and the
monitor writes the state of heartbeat partition p to state partition p. A
device record is keyed by the device id. Its value is a compact JSON object:

    {"last_seen_ms": 1700000000000, "timeout_ms": 30000, "down": false}

with `held_ms` for a DOWN that is not announced yet (the time from which it
may be announced) and `attrs` for the device's routing attributes. A
tombstone (no value) removes the device. One record per partition, keyed by
PARTITION_KEY, holds the partition clock and outage state. Compaction keeps
the newest record per key, so reading a partition from the start to its end
rebuilds the state of the last commit.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from hbmon.events import InvalidRecord
from monitor.outage import Degraded

# The worker rejects heartbeats whose device id starts with NUL, so no
# device record has this key.
PARTITION_KEY = b"\x00partition"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """The state of one device as the changelog stores it."""

    last_seen_ms: int
    timeout_ms: int
    down: bool
    held_ms: int | None = None
    attrs: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """The clock and outage state of one partition as the changelog stores it."""

    clock_ms: int
    last_record_ms: int
    restored_ms: int = 0
    degraded: Degraded | None = None


def encode_device(record: DeviceRecord) -> bytes:
    value: dict[str, Any] = {
        "last_seen_ms": record.last_seen_ms,
        "timeout_ms": record.timeout_ms,
        "down": record.down,
    }
    if record.held_ms is not None:
        value["held_ms"] = record.held_ms
    if record.attrs:
        value["attrs"] = record.attrs
    return orjson.dumps(value)


def decode_device(value: bytes) -> DeviceRecord:
    """Decode a device record value.

    Raises:
        InvalidRecord: the value is not a JSON object with integer
            `last_seen_ms` and `timeout_ms` and a boolean `down`.
    """
    data = _load_object(value)
    last_seen_ms = data.get("last_seen_ms")
    timeout_ms = data.get("timeout_ms")
    down = data.get("down")
    held_ms = data.get("held_ms")
    attrs = data.get("attrs")
    if not isinstance(last_seen_ms, int) or isinstance(last_seen_ms, bool):
        raise InvalidRecord("last_seen_ms", "must be an integer")
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool):
        raise InvalidRecord("timeout_ms", "must be a positive integer")
    if timeout_ms <= 0:
        raise InvalidRecord("timeout_ms", "must be a positive integer")
    if not isinstance(down, bool):
        raise InvalidRecord("down", "must be true or false")
    if held_ms is not None and not (_is_int(held_ms) and down):
        raise InvalidRecord("held_ms", "must be an integer, and only when down")
    if attrs is not None and not _is_string_map(attrs):
        raise InvalidRecord("attrs", "must be an object of strings")
    return DeviceRecord(last_seen_ms, timeout_ms, down, held_ms, attrs or None)


def encode_partition(record: PartitionRecord) -> bytes:
    value: dict[str, Any] = {
        "clock_ms": record.clock_ms,
        "last_record_ms": record.last_record_ms,
        "restored_ms": record.restored_ms,
        "degraded": None,
    }
    if record.degraded is not None:
        value["degraded"] = {
            "since_ms": record.degraded.since_ms,
            "last_record_ms": record.degraded.last_record_ms,
            "devices": record.degraded.devices,
        }
    return orjson.dumps(value)


def decode_partition(value: bytes) -> PartitionRecord:
    """Decode the partition record value.

    Raises:
        InvalidRecord: the value is not a JSON object with integer times
            and a `degraded` object or null.
    """
    data = _load_object(value)
    for name in ("clock_ms", "last_record_ms", "restored_ms"):
        if not _is_int(data.get(name)):
            raise InvalidRecord(name, "must be an integer")
    degraded = data.get("degraded")
    if degraded is not None:
        if not isinstance(degraded, dict) or not all(
            _is_int(degraded.get(name))
            for name in ("since_ms", "last_record_ms", "devices")
        ):
            raise InvalidRecord(
                "degraded", "must be null or an object of integer times and devices"
            )
        degraded = Degraded(
            degraded["since_ms"], degraded["last_record_ms"], degraded["devices"]
        )
    return PartitionRecord(
        data["clock_ms"], data["last_record_ms"], data["restored_ms"], degraded
    )


def _load_object(value: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidRecord("value", f"is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise InvalidRecord("value", "must be a JSON object")
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
