"""Notifications: the messages the alerter sends people, built from alert events.

A notification holds one or more items of one kind for one route and
group. Each item has a key that stays the same across restarts, so the
sent log can record per channel which items were delivered.
"""

import enum
import uuid
from dataclasses import dataclass, replace

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    AlertEvent,
)

_NOTIFICATION_NAMESPACE = uuid.UUID("a3c1f0de-6b7e-4d5a-8f21-9c0e4b7d2a55")


class Kind(enum.StrEnum):
    """Kind of a notification; the value is the subject tag of a mail."""

    DOWN = "DOWN"
    RECOVERED = "RECOVERED"
    REMINDER = "STILL DOWN"
    FLAPPING = "FLAPPING"
    DEGRADED = "MONITORING DEGRADED"
    RESTORED = "MONITORING RESTORED"


_KIND_OF_TYPE = {
    DEVICE_DOWN: Kind.DOWN,
    DEVICE_RECOVERED: Kind.RECOVERED,
    MONITORING_DEGRADED: Kind.DEGRADED,
    MONITORING_RESTORED: Kind.RESTORED,
}


def kind_of(event: AlertEvent) -> Kind:
    """Return the kind of the notification that an event produces by itself."""
    return _KIND_OF_TYPE[event.type]


@dataclass(frozen=True, slots=True)
class Item:
    """One event to notify about, with a key unique per notified fact.

    The key of a DOWN or RECOVERED item is the event id, so a replayed
    record finds its earlier delivery in the sent log. Reminders and
    flapping notices derive their keys from the DOWN event they are about.
    `flips` counts the state changes behind a flapping notice.
    """

    kind: Kind
    key: str
    event: AlertEvent
    flips: int = 0


@dataclass(frozen=True, slots=True)
class Notification:
    """Items of one kind for one route and one group of that route."""

    kind: Kind
    route: str
    labels: tuple[tuple[str, str], ...]
    items: tuple[Item, ...]
    digest_threshold: int = 10

    @property
    def notification_id(self) -> str:
        """Return an id that is the same for the same route, kind and items."""
        keys = ",".join(sorted(item.key for item in self.items))
        name = f"{self.route}|{self.kind}|{keys}"
        return str(uuid.uuid5(_NOTIFICATION_NAMESPACE, name))

    @property
    def is_digest(self) -> bool:
        return len(self.items) > self.digest_threshold

    def with_items(self, items: tuple[Item, ...]) -> "Notification":
        return replace(self, items=items)


def reminder_key(down: AlertEvent, number: int) -> str:
    return f"{down.event_id}#reminder-{number}"


def flapping_key(event: AlertEvent) -> str:
    return f"{event.event_id}#flapping"
