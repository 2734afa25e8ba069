"""Parking: notifications that a receiver rejected for good go to a dead-letter topic.

Each record names the receiver and channel, the reason, and carries the
events, so an operator can read why it failed and replay it. A notification
whose events would make a record over DEAD_LETTER_MAX_BYTES is written as
several records, each with a share of the events and `part` of `parts`.
"""

from dataclasses import asdict

import orjson
from confluent_kafka import KafkaException

from alerter.notification import Item, Notification
from alerter.tables import TopicWriter

# Half of the producer's and the broker's default limit of about 1 MB per
# record, which leaves room for the fields around the events.
DEAD_LETTER_MAX_BYTES = 524_288


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
        """Write the dead-letter records of a notification and wait for the broker.

        Return False when the producer refused a record or the broker did
        not acknowledge them all in time.
        """
        if self.writer is None:
            return True
        head = {
            "notification_id": notification.notification_id,
            "lane": lane,
            "route": notification.route,
            "kind": notification.kind.value,
            "reason": reason,
            "code": code,
            "parked_ms": parked_ms,
        }
        events = [
            orjson.dumps(
                {"key": item.key, "kind": item.kind.value, "event": asdict(item.event)}
            )
            for item in items
        ]
        parts = split_by_size(events, DEAD_LETTER_MAX_BYTES)
        try:
            for number, part in enumerate(parts, start=1):
                value = orjson.dumps(
                    {
                        **head,
                        "part": number,
                        "parts": len(parts),
                        "items": [orjson.Fragment(event) for event in part],
                    }
                )
                self.writer.write(notification.notification_id, value)
        except (KafkaException, BufferError):
            return False
        return self.writer.flush(10.0)


def split_by_size(encoded: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """Group encoded events in order, each group at most `max_bytes` in all.

    An event longer than `max_bytes` makes a group of its own. There is
    always at least one group, so a notification without events still
    gets a record.
    """
    groups: list[list[bytes]] = [[]]
    size = 0
    for event in encoded:
        if groups[-1] and size + len(event) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(event)
        size += len(event) + 1
    return groups
