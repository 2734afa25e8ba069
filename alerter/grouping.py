"""Grouping: hold items for a short wait, then send each group as one notification.

A group is one route, one notification kind and one value per `group_by`
label. Its first notification leaves `group_wait_s` after its first item;
items that arrive later wait until `group_interval_s` after the previous
notification. A group with nothing new at that time is closed.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from alerter.ledger import OffsetLedger, RecordRef
from alerter.notification import Item, Kind, Notification
from alerter.routing import Route

GroupKey = tuple[str, Kind, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class _Group:
    route: Route
    kind: Kind
    labels: tuple[tuple[str, str], ...]
    flush_at_s: float
    items: dict[str, Item] = field(default_factory=dict)
    refs: dict[str, list[RecordRef]] = field(default_factory=dict)
    opened_at_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Batch:
    """A notification ready to send, and the records each of its items came from.

    The grouper holds every listed record until the caller calls
    `Grouper.release(batch)`, after it handed the batch to the channels.
    """

    notification: Notification
    refs: dict[str, list[RecordRef]]
    opened_at_s: float


class Grouper:
    """Open groups keyed by route, kind and labels.

    add() costs O(1); due() costs O(open groups).
    """

    def __init__(self, ledger: OffsetLedger) -> None:
        self.ledger = ledger
        self._groups: dict[GroupKey, _Group] = {}

    def add(
        self, route: Route, item: Item, refs: Iterable[RecordRef], now_s: float
    ) -> None:
        """Put `item` into its group, opening the group if needed.

        An item whose key the group holds already only adds its records.
        """
        labels = route.group_labels(item.event)
        key = (route.name, item.kind, labels)
        group = self._groups.get(key)
        if group is None:
            group = _Group(route, item.kind, labels, now_s + route.timing.group_wait_s)
            self._groups[key] = group
        if not group.items:
            group.opened_at_s = now_s
        group.items.setdefault(item.key, item)
        held = group.refs.setdefault(item.key, [])
        for ref in refs:
            self.ledger.hold(ref)
            held.append(ref)

    def due(self, now_s: float) -> list[Batch]:
        """Return the notifications whose group time has come, and close idle groups."""
        batches = []
        for key, group in list(self._groups.items()):
            if group.flush_at_s > now_s:
                continue
            if not group.items:
                del self._groups[key]
                continue
            notification = Notification(
                kind=group.kind,
                route=group.route.name,
                labels=group.labels,
                items=tuple(group.items.values()),
                digest_threshold=group.route.timing.digest_threshold,
            )
            batches.append(Batch(notification, group.refs, group.opened_at_s))
            group.items, group.refs = {}, {}
            group.flush_at_s = now_s + group.route.timing.group_interval_s
        return batches

    def release(self, batch: Batch) -> None:
        """Drop the grouper's holds on the records of a batch it returned."""
        for refs in batch.refs.values():
            for ref in refs:
                self.ledger.release(ref)

    def next_flush_s(self) -> float | None:
        """Return the earliest time at which due() has work, or None."""
        return min((g.flush_at_s for g in self._groups.values()), default=None)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Remove items that came from records of `partitions`; return how many.

        Used when partitions are revoked: their new owner reads those
        records again. Items without records, such as reminders, stay.
        """
        dropped = 0
        for group in self._groups.values():
            for item_key, refs in list(group.refs.items()):
                if refs and all(ref.partition in partitions for ref in refs):
                    for ref in refs:
                        self.ledger.release(ref)
                    del group.refs[item_key]
                    del group.items[item_key]
                    dropped += 1
        return dropped

    def pending_items(self) -> int:
        return sum(len(group.items) for group in self._groups.values())
