"""Heartbeat bodies that the ingest benchmarks send.

The same shapes as bench/wrk/heartbeats.lua builds, so every load
generator sends the same request:

- "basic": device_id, seq and ts (device time in seconds since the epoch).
- "full": also interval_s and a small attrs object.
"""

import orjson

PAYLOADS = ("basic", "full")
DEVICE_ID_FORMAT = "bench-{:07d}"


def heartbeat(device_index: int, seq: int, payload: str, ts: int) -> dict[str, object]:
    """Return one heartbeat as a dict, in the key order of the Lua script."""
    item: dict[str, object] = {
        "device_id": DEVICE_ID_FORMAT.format(device_index),
        "seq": seq,
        "ts": ts,
    }
    if payload == "full":
        item["interval_s"] = 10
        item["attrs"] = {"fw": "2.4.1", "battery_pct": 87}
    return item


def heartbeat_body(device_index: int, seq: int, payload: str, ts: int) -> bytes:
    return orjson.dumps(heartbeat(device_index, seq, payload, ts))


def batch_body(
    first_device: int, count: int, devices: int, seq: int, payload: str, ts: int
) -> bytes:
    """Return a JSON array of `count` heartbeats for consecutive device indexes."""
    items = [
        heartbeat((first_device + offset) % devices, seq, payload, ts)
        for offset in range(count)
    ]
    return orjson.dumps(items)
