"""Parking: notifications that a receiver rejected for good go to a dead-letter topic.

Each record names the receiver and channel, the reason, and carries the
events, so an operator can read why it failed and replay it.
"""

from dataclasses import asdict

import orjson

from alerter.notification import Item, Notification
from alerter.tables import TopicWriter


class DeadLetters:
    """Writes parked notifications to the dead-letter topic."""

    def __init__(self, writer: TopicWriter | None) -> None:
        self.writer = writer

    def park(
        self,
        lane: str,
        notification: Notification,
        items: tuple[Item, ...],
        reason: str,
        code: int | None,
        parked_ms: int,
    ) -> bool:
        """Write one dead-letter record and wait for the broker.

        Return False when the broker did not acknowledge it in time.
        """
        if self.writer is None:
            return True
        value = orjson.dumps(
            {
                "notification_id": notification.notification_id,
                "lane": lane,
                "route": notification.route,
                "kind": notification.kind.value,
                "reason": reason,
                "code": code,
                "parked_ms": parked_ms,
                "items": [
                    {
                        "key": item.key,
                        "kind": item.kind.value,
                        "event": asdict(item.event),
                    }
                    for item in items
                ],
            }
        )
        self.writer.write(notification.notification_id, value)
        return self.writer.flush(10.0)
