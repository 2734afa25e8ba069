"""Grouping of items into notifications, and the offset ledger behind it."""

from dataclasses import replace

from alerter.grouping import Batch, Grouper
from alerter.ledger import OffsetLedger
from alerter.matchers import Matcher
from alerter.notification import Item, Kind
from alerter.routing import Route, Timing
from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, AlertEvent

ROUTE = Route(
    "plant",
    Matcher(),
    ("oncall",),
    Timing(
        group_wait_s=5.0,
        group_interval_s=60.0,
        repeat_interval_s=0.0,
        digest_threshold=10,
        group_by=("site",),
    ),
)


def item(device_id: str, site: str = "plant-3", kind: Kind = Kind.DOWN) -> Item:
    event = AlertEvent(
        event_id=f"id-{device_id}",
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=0,
        deadline_ms=0,
        timeout_ms=0,
        detected_ms=0,
        partition=0,
        message="m",
        attrs={"site": site},
    )
    return Item(kind, event.event_id, event)


def test_group_waits_then_sends_everything_as_one() -> None:
    grouper = Grouper(OffsetLedger())
    for n in range(1000):
        grouper.add(ROUTE, item(f"d-{n}"), [], now_s=100.0 + n / 1000)

    early = grouper.due(104.9)
    batches = grouper.due(105.0)

    assert early == []
    assert len(batches) == 1
    assert len(batches[0].notification.items) == 1000
    assert batches[0].notification.labels == (("site", "plant-3"),)
    assert batches[0].notification.is_digest


def test_late_items_wait_for_group_interval() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, item("a"), [], now_s=0.0)
    grouper.due(5.0)
    grouper.add(ROUTE, item("b"), [], now_s=6.0)

    assert grouper.due(64.9) == []
    assert [b.notification.items[0].event.device_id for b in grouper.due(65.0)] == ["b"]


def test_idle_group_is_closed_after_interval() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, item("a"), [], now_s=0.0)
    grouper.due(5.0)

    grouper.due(65.0)

    assert grouper.next_flush_s() is None


def test_groups_split_by_label_and_kind() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, item("a", site="plant-3"), [], now_s=0.0)
    grouper.add(ROUTE, item("b", site="plant-7"), [], now_s=0.0)
    grouper.add(ROUTE, item("c", kind=Kind.RECOVERED), [], now_s=0.0)

    assert len(grouper.due(5.0)) == 3


def test_same_key_twice_is_one_item() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, item("a"), [], now_s=0.0)
    grouper.add(ROUTE, item("a"), [], now_s=1.0)

    assert len(grouper.due(5.0)[0].notification.items) == 1


def test_ledger_commits_below_lowest_unsettled_offset() -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    refs = [ledger.read(0, offset) for offset in range(5)]
    for ref in refs:
        ledger.hold(ref)
        ledger.release(ref)  # the reader's own hold
    ledger.release(refs[0])
    ledger.release(refs[1])
    ledger.release(refs[3])

    assert ledger.committable() == {0: 2}

    ledger.release(refs[2])
    ledger.release(refs[4])
    assert ledger.committable() == {0: 5}


def test_ledger_commits_nothing_while_first_record_unsettled() -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    ref = ledger.read(0, 7)

    assert ledger.committable() == {}

    ledger.release(ref)
    assert ledger.committable() == {0: 8}
    ledger.mark_committed({0: 8})
    assert ledger.committable() == {}


def test_ledger_ignores_holds_from_before_reassignment() -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    old = ledger.read(0, 0)
    ledger.revoke([0])
    ledger.assign([0])
    new = ledger.read(0, 0)

    ledger.release(old)

    assert ledger.committable() == {}
    ledger.release(new)
    assert ledger.committable() == {0: 1}


def test_grouper_holds_records_until_released() -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    ref = ledger.read(0, 0)
    grouper = Grouper(ledger)
    grouper.add(ROUTE, item("a"), [ref], now_s=0.0)
    ledger.release(ref)

    batch = grouper.due(5.0)[0]
    assert ledger.committable() == {}

    grouper.release(batch)
    assert ledger.committable() == {0: 1}


def test_drop_partitions_releases_their_items() -> None:
    ledger = OffsetLedger()
    ledger.assign([0, 1])
    keep, drop = ledger.read(0, 0), ledger.read(1, 0)
    grouper = Grouper(ledger)
    grouper.add(ROUTE, item("a"), [keep], now_s=0.0)
    grouper.add(ROUTE, item("b"), [drop], now_s=0.0)

    dropped = grouper.drop_partitions({1})

    assert dropped == 1
    assert [i.event.device_id for i in grouper.due(5.0)[0].notification.items] == ["a"]


def state_item(device_id: str, kind: Kind, episode: int = 1) -> Item:
    """Return a DOWN, RECOVERED or reminder item of one episode of a device."""
    event_type = DEVICE_DOWN if kind is Kind.DOWN else DEVICE_RECOVERED
    event = replace(item(device_id).event, type=event_type)
    return Item(kind, f"{device_id}-{kind.name}-{episode}", event)


def sent_devices(batches: list[Batch]) -> list[tuple[str, str]]:
    return [
        (batch.notification.kind.name, i.event.device_id)
        for batch in batches
        for i in batch.notification.items
    ]


def test_recovered_cancels_down_waiting_for_interval() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, state_item("k-06", Kind.DOWN), [], now_s=0.0)
    first = grouper.due(5.0)
    grouper.add(ROUTE, state_item("k-05", Kind.DOWN), [], now_s=6.0)

    cancelled = grouper.add(ROUTE, state_item("k-05", Kind.RECOVERED), [], now_s=17.0)
    later = grouper.due(22.0) + grouper.due(65.0)

    assert sent_devices(first) == [("DOWN", "k-06")]
    assert cancelled is not None
    assert [i.kind for i in cancelled.pair] == [Kind.DOWN, Kind.RECOVERED]
    assert sent_devices(later) == []
    assert grouper.pending_items() == 0


def test_recovered_after_sent_down_is_sent() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, state_item("a", Kind.DOWN), [], now_s=0.0)
    grouper.due(5.0)

    cancelled = grouper.add(ROUTE, state_item("a", Kind.RECOVERED), [], now_s=6.0)

    assert cancelled is None
    assert sent_devices(grouper.due(11.0)) == [("RECOVERED", "a")]


def test_down_cancels_unsent_recovered_of_previous_episode() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, state_item("a", Kind.RECOVERED, 1), [], now_s=0.0)
    grouper.due(5.0)
    grouper.add(ROUTE, state_item("b", Kind.RECOVERED, 1), [], now_s=6.0)

    cancelled = grouper.add(ROUTE, state_item("b", Kind.DOWN, 2), [], now_s=7.0)

    assert cancelled is not None
    assert [i.kind for i in cancelled.pair] == [Kind.RECOVERED, Kind.DOWN]
    assert sent_devices(grouper.due(12.0) + grouper.due(65.0)) == []


def test_recovered_drops_unsent_reminder() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, state_item("a", Kind.DOWN), [], now_s=0.0)
    grouper.due(5.0)
    grouper.add(ROUTE, state_item("a", Kind.REMINDER), [], now_s=6.0)

    cancelled = grouper.add(ROUTE, state_item("a", Kind.RECOVERED), [], now_s=7.0)

    assert cancelled is not None
    assert cancelled.pair == ()
    assert [i.kind for i in cancelled.stale] == [Kind.REMINDER]
    assert sent_devices(grouper.due(12.0)) == [("RECOVERED", "a")]


def test_cancelled_pair_releases_its_records() -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    down_ref, recovered_ref = ledger.read(0, 0), ledger.read(0, 1)
    grouper = Grouper(ledger)
    grouper.add(ROUTE, state_item("a", Kind.DOWN), [down_ref], now_s=0.0)
    ledger.release(down_ref)

    grouper.add(ROUTE, state_item("a", Kind.RECOVERED), [recovered_ref], now_s=1.0)
    ledger.release(recovered_ref)

    assert ledger.committable() == {0: 2}


def test_reopened_group_waits_group_wait_again() -> None:
    grouper = Grouper(OffsetLedger())
    grouper.add(ROUTE, state_item("restored", Kind.DOWN), [], now_s=0.0)
    batch = grouper.due(5.0)[0]
    grouper.reopen(batch)

    grouper.add(ROUTE, state_item("new", Kind.DOWN), [], now_s=6.0)

    assert sent_devices(grouper.due(11.0)) == [("DOWN", "new")]
