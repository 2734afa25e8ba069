"""Grouping: hold items for a short wait, then send each group as one notification.

A group is one route, one notification kind and one value per `group_by`
label. Its first notification leaves `group_wait_s` after its first item;
items that arrive later wait until `group_interval_s` after the previous
notification. A group with nothing new at that time is closed.

Per device and route, notifications keep event order. A DOWN or RECOVERED
item that meets the opposite item of the same device still unsent in a
group cancels it, and neither is sent. The channels never received the
first state, so the last state they received is still true. A RECOVERED
item also drops a reminder of the device that is still unsent.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from alerter.ledger import OffsetLedger, RecordRef
from alerter.notification import Item, Kind, Notification
from alerter.routing import Route

GroupKey = tuple[str, Kind, tuple[tuple[str, str], ...]]

# Kinds that state whether a device is DOWN; they cancel each other while unsent.
_STATE_KINDS = (Kind.DOWN, Kind.RECOVERED)


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
    key: GroupKey | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Unsent items of one device that `Grouper.add` removed from a route.

    `pair` contains a DOWN and a RECOVERED item in event order, or is empty.
    `stale` contains reminders that a RECOVERED item made obsolete.
    """

    route: Route
    pair: tuple[Item, ...] = ()
    stale: tuple[Item, ...] = ()


class Grouper:
    """Open groups keyed by route, kind and labels.

    add() costs O(1); due() costs O(open groups).
    """

    def __init__(self, ledger: OffsetLedger) -> None:
        self.ledger = ledger
        self._groups: dict[GroupKey, _Group] = {}
        # Unsent DOWN, RECOVERED and reminder items by (route, device id).
        self._unsent: dict[tuple[str, str], dict[str, GroupKey]] = {}

    def add(
        self, route: Route, item: Item, refs: Iterable[RecordRef], now_s: float
    ) -> Cancelled | None:
        """Put `item` into its group, opening the group if needed.

        An item whose key the group holds already only adds its records.
        When `item` cancels an unsent item of its device (see the module
        docstring), neither is kept, their records are released, and the
        removed items are returned.
        """
        cancelled = self._cancel_unsent(route, item)
        if cancelled is not None and cancelled.pair:
            return cancelled
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
        if item.kind in _STATE_KINDS or item.kind is Kind.REMINDER:
            unsent = self._unsent.setdefault((route.name, item.event.device_id), {})
            unsent[item.key] = key
        return cancelled

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
            batches.append(Batch(notification, group.refs, group.opened_at_s, key))
            for item in group.items.values():
                self._forget_unsent(group.route.name, item)
            group.items, group.refs = {}, {}
            group.flush_at_s = now_s + group.route.timing.group_interval_s
        return batches

    def reopen(self, batch: Batch) -> None:
        """Close the group of a batch of which no channel queued anything.

        Its items were all sent before (restored after a restart, or read
        again), so no notification left and no group interval starts: the
        group's next item waits `group_wait_s` again.
        """
        if batch.key is None:
            return
        group = self._groups.get(batch.key)
        if group is not None and not group.items:
            del self._groups[batch.key]

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
                    self._forget_unsent(group.route.name, group.items.pop(item_key))
                    dropped += 1
        return dropped

    def pending_items(self) -> int:
        return sum(len(group.items) for group in self._groups.values())

    def _cancel_unsent(self, route: Route, item: Item) -> Cancelled | None:
        if item.kind not in _STATE_KINDS:
            return None
        unsent = self._unsent.get((route.name, item.event.device_id))
        if not unsent:
            return None
        pair: list[Item] = []
        stale: list[Item] = []
        for key, group_key in list(unsent.items()):
            kind = group_key[1]
            if kind in _STATE_KINDS and kind is not item.kind:
                pair.append(self._remove(group_key, key))
            elif kind is Kind.REMINDER and item.kind is Kind.RECOVERED:
                stale.append(self._remove(group_key, key))
        if pair:
            pair.append(item)
        if not pair and not stale:
            return None
        return Cancelled(route, tuple(pair), tuple(stale))

    def _remove(self, group_key: GroupKey, item_key: str) -> Item:
        group = self._groups[group_key]
        item = group.items.pop(item_key)
        for ref in group.refs.pop(item_key, []):
            self.ledger.release(ref)
        self._forget_unsent(group.route.name, item)
        return item

    def _forget_unsent(self, route_name: str, item: Item) -> None:
        key = (route_name, item.event.device_id)
        unsent = self._unsent.get(key)
        if unsent is None:
            return
        unsent.pop(item.key, None)
        if not unsent:
            del self._unsent[key]
