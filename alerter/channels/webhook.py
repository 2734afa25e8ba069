"""The generic webhook channel: a JSON body signed with HMAC-SHA256.

Headers: `X-Hbmon-Timestamp` is the send time in Unix seconds, and
`X-Hbmon-Signature` is `sha256=` followed by the hex HMAC-SHA256, keyed by
the receiver's secret, of `<timestamp>.<body>`. A receiver recomputes it,
compares in constant time, and rejects old timestamps to stop replays.
"""

import hashlib
import hmac
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson

from alerter import digest
from alerter.channels.base import one_unit
from alerter.channels.http import JsonPoster
from alerter.message import format_utc
from alerter.notification import Item, Notification

SIGNATURE_HEADER = "X-Hbmon-Signature"
TIMESTAMP_HEADER = "X-Hbmon-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the `sha256=<hex>` signature of a body sent at `timestamp`."""
    digest_ = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"sha256={digest_}"


def webhook_body(
    notification: Notification, now: datetime, heartbeat_topic: str
) -> dict[str, Any]:
    """Return the JSON document of a notification, with every event in full."""
    return {
        "notification_id": notification.notification_id,
        "kind": notification.kind.name,
        "route": notification.route,
        "group": dict(notification.labels),
        "count": len(notification.items),
        "subject": digest.subject(notification, now, heartbeat_topic),
        "sent_at": format_utc(int(now.timestamp() * 1000), "now"),
        "items": [
            {"key": item.key, "flips": item.flips, "event": asdict(item.event)}
            for item in notification.items
        ],
    }


class WebhookChannel:
    """POSTs each notification as one signed JSON document."""

    kind = "webhook"

    def __init__(
        self, url: str, secret: str, timeout_s: float, heartbeat_topic: str
    ) -> None:
        self.url = url
        self.secret = secret
        self.heartbeat_topic = heartbeat_topic
        self.poster = JsonPoster(timeout_s)

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        return one_unit(notification)

    def send(self, notification: Notification, now: datetime) -> None:
        body = orjson.dumps(webhook_body(notification, now, self.heartbeat_topic))
        headers = {}
        if self.secret:
            timestamp = str(int(now.timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, body)
        self.poster.post(self.url, body, headers)

    def close(self) -> None:
        self.poster.close()
