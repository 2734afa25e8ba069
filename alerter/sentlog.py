"""The sent log: which items each channel handled, kept in a compacted topic.

An item is handled once its channel delivered it or parked it on the
dead-letter topic. After a restart the alerter reads again the records
whose offsets were not committed and sends again the notices of its
devices. Before sending, each channel drops the items that the sent log
lists for it, so a restart sends nothing twice and nothing that was parked.

NOTE: an SMTP or HTTP accept and the write to the sent log cannot be made
atomic. If the alerter dies after the receiver accepted a notification
and before the broker acknowledged its sent-log records (one produce
round trip, normally milliseconds), the notification is sent again after
the restart. Messages carry a stable Message-ID or notification id, so
receivers can drop such a copy.
"""

import threading

import orjson

from alerter.tables import TopicWriter

_SEPARATOR = "|"


def sent_key(lane: str, item_key: str) -> str:
    return f"{lane}{_SEPARATOR}{item_key}"


class SentLog:
    """Delivered (lane, item key) pairs, in memory and in the sent topic.

    Lookups cost O(1). Memory grows with the entries kept by the topic's
    retention. Thread-safe: every channel lane records into it.
    """

    def __init__(self, writer: TopicWriter | None) -> None:
        self.writer = writer
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def was_sent(self, lane: str, item_key: str) -> bool:
        return sent_key(lane, item_key) in self

    def record(
        self,
        lane: str,
        item_keys: list[str],
        notification_id: str,
        sent_ms: int,
        outcome: str = "sent",
    ) -> bool:
        """Record settled items and wait for the broker; return False on timeout.

        `outcome` is "sent" for delivered items, "parked" for items written
        to the dead-letter topic, and "cancelled" for items that must never
        be sent (see Grouper.add). Lanes skip all three alike.
        """
        value = orjson.dumps(
            {"notification_id": notification_id, "sent_ms": sent_ms, "outcome": outcome}
        )
        keys = [sent_key(lane, item_key) for item_key in item_keys]
        with self._lock:
            self._keys.update(keys)
        if self.writer is None:
            return True
        for key in keys:
            self.writer.write(key, value)
        return self.writer.flush(10.0)

    def apply(self, key: str, value: bytes | None) -> None:
        """Take in one record of the sent topic (TopicReader callback)."""
        with self._lock:
            if value is None:
                self._keys.discard(key)
            else:
                self._keys.add(key)
