"""The PagerDuty channel: Events API v2, one event per device.

DOWN and flapping notices trigger, RECOVERED resolves, with the dedup key
`hbmon-device-<device id>`, so PagerDuty keeps one incident per device.
Monitoring events use `hbmon-partition-<n>`. Reminders are not sent:
PagerDuty escalates open incidents by itself. The endpoint URL is always
taken from the routes file; nothing here points at PagerDuty by default.
"""

import hashlib
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson

from alerter import digest
from alerter.channels.http import JsonPoster
from alerter.message import format_utc, printable
from alerter.notification import Item, Kind, Notification

_RESOLVING = (Kind.RECOVERED, Kind.RESTORED)
_SEVERITY = {
    Kind.DOWN: "critical",
    Kind.FLAPPING: "warning",
    Kind.DEGRADED: "warning",
}
# PagerDuty limits a summary to 1,024 characters and a dedup key to 255.
_SUMMARY_MAX_CHARS = 1024
_DEDUP_KEY_MAX_CHARS = 255


def dedup_key(item: Item) -> str:
    """Return the dedup key of the incident an item belongs to."""
    event = item.event
    if item.kind in (Kind.DEGRADED, Kind.RESTORED):
        return f"hbmon-partition-{event.partition}"
    key = f"hbmon-device-{event.device_id}"
    if len(key) > _DEDUP_KEY_MAX_CHARS or not key.isprintable():
        key = (
            "hbmon-device-sha256-"
            + hashlib.sha256(event.device_id.encode()).hexdigest()
        )
    return key


def pagerduty_event(
    item: Item, notification: Notification, routing_key: str, now: datetime, topic: str
) -> dict[str, Any]:
    """Return the Events API v2 body for one item."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if item.kind in _RESOLVING else "trigger",
        "dedup_key": dedup_key(item),
    }
    if item.kind in _RESOLVING:
        return body
    single = notification.with_items((item,))
    event = item.event
    source = printable(event.device_id) or f"{topic} partition {event.partition}"
    body["payload"] = {
        "summary": digest.subject(single, now, topic)[:_SUMMARY_MAX_CHARS],
        "source": source,
        "severity": _SEVERITY.get(item.kind, "info"),
        "timestamp": format_utc(event.detected_ms, "detected_ms"),
        "component": source,
        "group": notification.route,
        "class": event.type,
        "custom_details": asdict(event),
    }
    return body


class PagerDutyChannel:
    """POSTs one Events API v2 event per item to the configured URL."""

    kind = "pagerduty"

    def __init__(
        self, url: str, routing_key: str, timeout_s: float, heartbeat_topic: str
    ) -> None:
        self.url = url
        self.routing_key = routing_key
        self.heartbeat_topic = heartbeat_topic
        self.poster = JsonPoster(timeout_s)

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        """Return one unit per item; reminders produce none."""
        return [
            (item,) for item in notification.items if item.kind is not Kind.REMINDER
        ]

    def send(self, notification: Notification, now: datetime) -> None:
        for item in notification.items:
            body = pagerduty_event(
                item, notification, self.routing_key, now, self.heartbeat_topic
            )
            self.poster.post(self.url, orjson.dumps(body))

    def close(self) -> None:
        self.poster.close()
