"""The Slack channel: a message for a Slack incoming webhook.

The body has a `text` fallback (shown in notifications) and `blocks`: the
subject as a header, the opening sentence, and the listed devices.
"""

from datetime import datetime
from typing import Any

import orjson

from alerter import digest
from alerter.channels.base import one_unit
from alerter.channels.http import JsonPoster
from alerter.notification import Item, Notification

# Slack limits a section's text to 3,000 characters and a header to 150.
_SECTION_MAX_CHARS = 2_900
_HEADER_MAX_CHARS = 150


def slack_body(
    notification: Notification, now: datetime, heartbeat_topic: str
) -> dict[str, Any]:
    """Return the incoming-webhook JSON for a notification."""
    title = digest.subject(notification, now, heartbeat_topic)
    lines = [
        f"• {digest.item_line(item, notification.kind, now, heartbeat_topic)}"
        for item in digest.listed(notification)
    ]
    more = len(notification.items) - len(digest.listed(notification))
    if more:
        lines.append(f"… and {more:,} more")
    listing = "\n".join(lines)[:_SECTION_MAX_CHARS]
    return {
        "text": title,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": title[:_HEADER_MAX_CHARS]},
            },
            {
                "type": "section",
                "text": {
                    "type": "plain_text",
                    "text": digest.summary(notification, now, heartbeat_topic)[
                        :_SECTION_MAX_CHARS
                    ],
                },
            },
            {"type": "section", "text": {"type": "plain_text", "text": listing}},
        ],
    }


class SlackChannel:
    """POSTs each notification to a Slack incoming-webhook URL."""

    kind = "slack"

    def __init__(self, url: str, timeout_s: float, heartbeat_topic: str) -> None:
        self.url = url
        self.heartbeat_topic = heartbeat_topic
        self.poster = JsonPoster(timeout_s)

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        return one_unit(notification)

    def send(self, notification: Notification, now: datetime) -> None:
        body = slack_body(notification, now, self.heartbeat_topic)
        self.poster.post(self.url, orjson.dumps(body))

    def close(self) -> None:
        self.poster.close()
