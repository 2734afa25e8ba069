"""DeviceBook: what to tell about each event, and what to tell later."""

from alerter.config import Flapping
from alerter.devices import DeviceBook, Verdict, decode_state
from alerter.notification import Kind
from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, AlertEvent, event_id_for

T0_MS = 1_714_572_131_000
FLAPPING = Flapping(max_flips=3, window_s=600.0, stable_s=60.0)


def event(kind: str, last_seen_ms: int = T0_MS, device_id: str = "d-1") -> AlertEvent:
    return AlertEvent(
        event_id=event_id_for(kind, device_id, last_seen_ms),
        type=kind,
        device_id=device_id,
        severity="critical",
        last_seen_ms=last_seen_ms,
        deadline_ms=last_seen_ms + 60_000,
        timeout_ms=60_000,
        detected_ms=last_seen_ms + 61_000,
        partition=0,
        message="m",
    )


def never(event: AlertEvent) -> bool:
    return False


def no_reminders(event: AlertEvent) -> float:
    return 0.0


def review(book: DeviceBook, now_ms: int, silenced=never, repeat=no_reminders):
    return book.review(now_ms, lambda p: True, silenced, repeat)


def test_down_then_recovered_notifies_both() -> None:
    book = DeviceBook(FLAPPING)

    down = book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)
    up = book.apply(event(DEVICE_RECOVERED), 0, T0_MS, silenced=False)

    assert down.verdict is Verdict.NOTIFY
    assert down.item is not None and down.item.kind is Kind.DOWN
    assert up.verdict is Verdict.NOTIFY
    assert up.item is not None and up.item.kind is Kind.RECOVERED


def test_same_event_twice_is_duplicate_with_same_item() -> None:
    book = DeviceBook(FLAPPING)
    first = book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)

    again = book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)

    assert again.duplicate
    assert again.item == first.item


def test_silenced_down_notified_once_after_silence() -> None:
    book = DeviceBook(FLAPPING)
    decision = book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=True)

    during = review(book, T0_MS + 1_000, silenced=lambda e: True)
    after = review(book, T0_MS + 2_000)
    later = review(book, T0_MS + 3_000)

    assert decision.verdict is Verdict.SILENCED
    assert during == []
    assert [item.kind for item in after] == [Kind.DOWN]
    assert later == []


def test_recovery_of_unnotified_down_is_silent() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=True)

    up = book.apply(event(DEVICE_RECOVERED), 0, T0_MS, silenced=True)

    assert up.verdict is Verdict.SILENCED
    assert review(book, T0_MS + 10_000_000) == []


def test_recovery_of_notified_down_after_silence() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)
    book.apply(event(DEVICE_RECOVERED), 0, T0_MS, silenced=True)

    items = review(book, T0_MS + 1_000)

    assert [item.kind for item in items] == [Kind.RECOVERED]


def test_flapping_sends_one_notice_then_settled_state() -> None:
    book = DeviceBook(FLAPPING)
    kinds = [DEVICE_DOWN, DEVICE_RECOVERED] * 3 + [DEVICE_DOWN]
    verdicts = [
        book.apply(event(kind, T0_MS + (n // 2) * 1000), 0, T0_MS, False).verdict
        for n, kind in enumerate(kinds)
    ]

    held = review(book, T0_MS + 61_000 + 3_000 + 1_000)
    settled = review(book, T0_MS + 61_000 + 3_000 + 61_000)

    assert verdicts == [
        Verdict.NOTIFY,
        Verdict.NOTIFY,
        Verdict.NOTIFY,
        Verdict.FLAPPING_NOTICE,
        Verdict.HELD_FLAPPING,
        Verdict.HELD_FLAPPING,
        Verdict.HELD_FLAPPING,
    ]
    assert held == []
    assert [item.kind for item in settled] == [Kind.DOWN]
    assert settled[0].event.last_seen_ms == T0_MS + 3_000


def test_reminder_after_repeat_interval_while_down() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)

    early = review(book, T0_MS + 59_000, repeat=lambda e: 60.0)
    first = review(book, T0_MS + 60_000, repeat=lambda e: 60.0)
    second = review(book, T0_MS + 120_000, repeat=lambda e: 60.0)

    assert early == []
    assert [item.kind for item in first] == [Kind.REMINDER]
    assert first[0].key != second[0].key


def test_review_skips_devices_of_other_partitions() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 5, T0_MS, silenced=True)

    items = book.review(T0_MS + 1_000, lambda p: p != 5, never, no_reminders)

    assert items == []


def test_recovered_device_leaves_the_book_after_the_window() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 0, T0_MS, silenced=False)
    book.apply(event(DEVICE_RECOVERED), 0, T0_MS, silenced=False)

    review(book, T0_MS + 61_000 + 601_000)

    assert book.states == {}
    assert ("d-1", None) in book.take_dirty()


def test_state_survives_encoding() -> None:
    book = DeviceBook(FLAPPING)
    book.apply(event(DEVICE_DOWN), 2, T0_MS, silenced=False)
    state = book.states["d-1"]

    decoded = decode_state(state.encode())

    assert decoded == state
