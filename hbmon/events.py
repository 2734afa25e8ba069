"""Record formats on the two topics: heartbeats on iot-data, alerts on device-alerts.

Both are JSON objects encoded with orjson and keyed by device id. Decoders
raise InvalidRecord naming the field and the rule, so a consumer can log,
count and skip a bad record without stopping.
"""

import math
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson

DEVICE_DOWN = "DEVICE_DOWN"
DEVICE_RECOVERED = "DEVICE_RECOVERED"
# A whole partition fell silent at once, so the monitor suspects the pipeline
# (ingest, broker, network) rather than the devices and withholds their DOWNs.
MONITORING_DEGRADED = "MONITORING_DEGRADED"
MONITORING_RESTORED = "MONITORING_RESTORED"
DEVICE_TYPES = (DEVICE_DOWN, DEVICE_RECOVERED)
MONITORING_TYPES = (MONITORING_DEGRADED, MONITORING_RESTORED)
ALERT_TYPES = DEVICE_TYPES + MONITORING_TYPES
SEVERITY = {
    DEVICE_DOWN: "critical",
    DEVICE_RECOVERED: "info",
    MONITORING_DEGRADED: "warning",
    MONITORING_RESTORED: "info",
}

# Event ids are UUIDv5 names in this namespace, so replaying the same
# transition after a restart yields the same id and the alerter drops it.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c7e-58a4-4c36-9d0b-2a8e61c9f4b1")


# Ingest allows 128 characters. Longer ids from other producers are skipped,
# because each alert event repeats the id and must fit in one Kafka record.
RECORD_DEVICE_ID_MAX_CHARS = 1024


class InvalidRecord(ValueError):
    """A record on a topic cannot be decoded or lacks a required field."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    """One heartbeat as ingest publishes it to the heartbeat topic.

    A record's value is one heartbeat, or a bundle: a JSON array of them,
    all of devices in the record's partition (see `decode_heartbeats`).
    """

    device_id: str
    received_ms: int
    device_ts: float | str | None = None
    # "future", "past" or "unparseable" when device_ts cannot be trusted.
    device_ts_flag: str | None = None
    seq: int | None = None
    timeout_s: float | None = None
    interval_s: float | None = None
    attrs: dict[str, Any] | None = None

    def encode(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return orjson.dumps(fields)


def decode_heartbeat(value: bytes | None) -> HeartbeatRecord:
    """Decode a heartbeat record value.

    Raises:
        InvalidRecord: the value is not a JSON object with a non-empty
            string `device_id` and numeric optional fields.
    """
    return _heartbeat_from(_load_object(value))


def decode_heartbeats(value: bytes | None) -> list[HeartbeatRecord | InvalidRecord]:
    """Decode a record value that contains one heartbeat or a bundle of them.

    A bundle is a JSON array of heartbeat objects, which ingest writes for
    the heartbeats of one partition that it accepted since its last poll. Each item
    is decoded on its own, so one bad item takes nothing else with it: it
    comes back as the InvalidRecord that names the field and rule, in its place.

    Raises:
        InvalidRecord: the value as a whole cannot be decoded.
    """
    if value is None or value[:1] != b"[":
        return [decode_heartbeat(value)]
    try:
        items = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidRecord("value", f"is not valid JSON ({err})") from err
    decoded: list[HeartbeatRecord | InvalidRecord] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            decoded.append(InvalidRecord(f"[{index}]", "must be a JSON object"))
            continue
        try:
            decoded.append(_heartbeat_from(item))
        except InvalidRecord as err:
            decoded.append(InvalidRecord(f"[{index}].{err.field}", err.rule))
    return decoded


def _heartbeat_from(data: dict[str, Any]) -> HeartbeatRecord:
    device_id = data.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise InvalidRecord("device_id", "must be a non-empty string")
    if len(device_id) > RECORD_DEVICE_ID_MAX_CHARS:
        raise InvalidRecord(
            "device_id", f"must be at most {RECORD_DEVICE_ID_MAX_CHARS} characters"
        )
    received_ms = data.get("received_ms", 0)
    if not _is_int(received_ms):
        raise InvalidRecord("received_ms", "must be an integer")
    return HeartbeatRecord(
        device_id=device_id,
        received_ms=received_ms,
        device_ts=data.get("device_ts"),
        device_ts_flag=_optional_str(data, "device_ts_flag"),
        seq=data.get("seq") if _is_int(data.get("seq")) else None,
        timeout_s=_optional_positive(data, "timeout_s"),
        interval_s=_optional_positive(data, "interval_s"),
        attrs=data.get("attrs") if isinstance(data.get("attrs"), dict) else None,
    )


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An event on the alert topic.

    Times are milliseconds since the Unix epoch, taken from broker append
    times of heartbeats, never from device clocks. `detected_ms` is the
    monitor's partition clock when it saw the deadline pass (DOWN) or the
    time of the heartbeat that ended the episode (RECOVERED).

    Device events carry the device's routing attributes from its last
    heartbeat (`attrs`, string values only). Monitoring events have an empty
    `device_id`, concern the whole `partition`, and count the devices whose
    DOWN they hold back in `devices`.
    """

    event_id: str
    type: str
    device_id: str
    severity: str
    last_seen_ms: int
    deadline_ms: int
    timeout_ms: int
    detected_ms: int
    partition: int
    message: str
    downtime_ms: int | None = None
    attrs: dict[str, str] | None = None
    devices: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))


def event_id_for(kind: str, device_id: str, last_seen_ms: int) -> str:
    """Return the stable id of a transition.

    A DOWN and the RECOVERED that ends it share `last_seen_ms` (the last
    heartbeat before the silence) and differ by kind.
    """
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{kind}|{device_id}|{last_seen_ms}"))


def decode_alert(value: bytes | None) -> AlertEvent:
    """Decode an alert event.

    Raises:
        InvalidRecord: the value is not a JSON object, or a field is
            missing or of the wrong type.
    """
    data = _load_object(value)
    for name in ("event_id", "severity", "message"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise InvalidRecord(name, "must be a non-empty string")
    if data.get("type") not in ALERT_TYPES:
        raise InvalidRecord("type", f"must be one of {', '.join(ALERT_TYPES)}")
    device_id = data.get("device_id")
    if not isinstance(device_id, str):
        raise InvalidRecord("device_id", "must be a string")
    if data["type"] in DEVICE_TYPES and not device_id:
        raise InvalidRecord("device_id", f"must not be empty in {data['type']}")
    for name in ("last_seen_ms", "deadline_ms", "timeout_ms", "detected_ms"):
        if not _is_int(data.get(name)):
            raise InvalidRecord(name, "must be an integer")
    partition = data.get("partition", -1)
    downtime_ms = data.get("downtime_ms")
    if downtime_ms is not None and not _is_int(downtime_ms):
        raise InvalidRecord("downtime_ms", "must be an integer or null")
    devices = data.get("devices")
    if devices is not None and not _is_int(devices):
        raise InvalidRecord("devices", "must be an integer or null")
    attrs = data.get("attrs")
    if attrs is not None and not (
        isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())
    ):
        raise InvalidRecord("attrs", "must be an object of strings or null")
    return AlertEvent(
        event_id=data["event_id"],
        type=data["type"],
        device_id=data["device_id"],
        severity=data["severity"],
        last_seen_ms=data["last_seen_ms"],
        deadline_ms=data["deadline_ms"],
        timeout_ms=data["timeout_ms"],
        detected_ms=data["detected_ms"],
        partition=partition if _is_int(partition) else -1,
        message=data["message"],
        downtime_ms=downtime_ms,
        attrs=attrs,
        devices=devices,
    )


def _load_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidRecord("value", "is missing (tombstone)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidRecord("value", f"is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise InvalidRecord("value", "must be a JSON object")
    return data


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_positive(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(name, "must be a positive number of seconds")
    if not 0 < value < math.inf:
        raise InvalidRecord(name, "must be a positive, finite number of seconds")
    return float(value)
