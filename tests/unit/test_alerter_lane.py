"""A channel lane's unit of work, deliver_one(), with a scripted channel."""

from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from alerter.backoff import Backoff
from alerter.channels.base import DeliveryError, one_unit
from alerter.deadletter import DeadLetters, split_by_size
from alerter.dispatch import Lane
from alerter.ledger import OffsetLedger
from alerter.metrics import AlerterMetrics
from alerter.notification import Item, Kind, Notification
from alerter.sentlog import SentLog
from hbmon.events import DEVICE_DOWN, AlertEvent


class ScriptedChannel:
    """Fails with the queued errors first, then accepts; records what it sent."""

    kind = "email"

    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.sent: list[list[str]] = []

    def units(self, notification: Notification) -> list[tuple[Item, ...]]:
        return one_unit(notification)

    def send(self, notification: Notification, now: datetime) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append([item.key for item in notification.items])

    def close(self) -> None:
        return


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def notification(*keys: str) -> Notification:
    items = tuple(
        Item(
            Kind.DOWN,
            key,
            AlertEvent(key, DEVICE_DOWN, key, "critical", 0, 0, 0, 0, 0, "m"),
        )
        for key in keys
    )
    return Notification(Kind.DOWN, "r", (), items, 10)


TRANSIENT = DeliveryError("451 try later", retriable=True, code=451)
PERMANENT = DeliveryError("550 no such user", retriable=False, code=550)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_lane(
    channel: ScriptedChannel,
    registry: CollectorRegistry,
    clock: Clock,
    sent_log: SentLog | None = None,
    ledger: OffsetLedger | None = None,
) -> Lane:
    return Lane(
        "oncall",
        channel,
        sent_log=SentLog(None) if sent_log is None else sent_log,
        dead_letters=DeadLetters(None),
        ledger=OffsetLedger() if ledger is None else ledger,
        metrics=AlerterMetrics(registry),
        backoff=Backoff(1.0, 4.0),
        retry_for_s=60.0,
        clock=clock,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(
        name, {"receiver": "oncall", "channel": "email", **labels}
    )
    assert value is not None
    return value


def test_lane_sends_records_and_settles(registry: CollectorRegistry) -> None:
    channel, clock, sent_log, ledger = (
        ScriptedChannel(),
        Clock(),
        SentLog(None),
        OffsetLedger(),
    )
    ledger.assign([0])
    ref = ledger.read(0, 0)
    lane = make_lane(channel, registry, clock, sent_log, ledger)
    lane.submit(notification("a", "b"), {"a": [ref]})
    ledger.release(ref)

    more = lane.deliver_one(0.0)

    assert channel.sent == [["a", "b"]]
    assert not more
    assert sent_log.was_sent("oncall/email", "a")
    assert ledger.committable() == {0: 1}
    assert sample(registry, "hbmon_alerter_notifications_sent_total") == 1


def test_lane_drops_items_already_sent(registry: CollectorRegistry) -> None:
    sent_log = SentLog(None)
    sent_log.record("oncall/email", ["a"], "n", 0)
    lane = make_lane(ScriptedChannel(), registry, Clock(), sent_log)

    assert lane.submit(notification("a"), {}) == 0
    assert lane.submit(notification("a", "b"), {}) == 1


def test_lane_queues_an_item_once(registry: CollectorRegistry) -> None:
    ledger = OffsetLedger()
    ledger.assign([0])
    first, second = ledger.read(0, 0), ledger.read(0, 1)
    lane = make_lane(ScriptedChannel(), registry, Clock(), ledger=ledger)
    lane.submit(notification("a"), {"a": [first]})

    queued = lane.submit(notification("a"), {"a": [second]})
    ledger.release(first)
    ledger.release(second)

    assert queued == 0
    assert lane.depth() == 1
    assert ledger.committable() == {}
    lane.deliver_one(0.0)
    assert ledger.committable() == {0: 2}


def test_lane_retries_transient_failure_after_backoff(
    registry: CollectorRegistry,
) -> None:
    channel, clock = ScriptedChannel(TRANSIENT), Clock()
    lane = make_lane(channel, registry, clock)
    lane.submit(notification("a"), {})

    lane.deliver_one(0.0)
    waiting = lane.deliver_one(0.0)
    clock.now_s = 1.0
    lane.deliver_one(0.0)

    assert waiting
    assert channel.sent == [["a"]]
    assert (
        sample(registry, "hbmon_alerter_notifications_failed_total", kind="transient")
        == 1
    )
    assert sample(registry, "hbmon_alerter_notifications_retried_total") == 1


def test_lane_failure_log_counts_unlogged_failures(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    channel, clock = ScriptedChannel(*[TRANSIENT] * 3), Clock()
    lane = make_lane(channel, registry, clock)
    lane.submit(notification("a"), {})

    # The log limit's interval is 10 s: the failure at 5 s is not logged.
    with caplog.at_level("WARNING", logger="alerter.dispatch"):
        for _ in range(3):
            lane.deliver_one(0.0)
            clock.now_s += 5.0

    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    assert "not logged" not in failures[0]
    assert "(1 earlier failure via this channel not logged)" in failures[1]


def test_lane_parks_permanent_failure_and_goes_on(
    registry: CollectorRegistry,
) -> None:
    channel = ScriptedChannel(PERMANENT)
    lane = make_lane(channel, registry, Clock())
    lane.submit(notification("a"), {})
    lane.submit(notification("b"), {})

    lane.deliver_one(0.0)
    lane.deliver_one(0.0)

    assert channel.sent == [["b"]]
    assert sample(registry, "hbmon_alerter_notifications_parked_total") == 1
    assert (
        sample(registry, "hbmon_alerter_notifications_failed_total", kind="permanent")
        == 1
    )


def test_lane_parks_after_retrying_for_too_long(registry: CollectorRegistry) -> None:
    channel, clock = ScriptedChannel(*[TRANSIENT] * 100), Clock()
    lane = make_lane(channel, registry, clock)
    lane.submit(notification("a"), {})

    while lane.depth():
        lane.deliver_one(0.0)
        clock.now_s += 5.0

    assert channel.sent == []
    assert clock.now_s >= 60.0
    assert sample(registry, "hbmon_alerter_notifications_parked_total") == 1


def test_lane_records_parked_items_as_handled(
    registry: CollectorRegistry,
) -> None:
    sent_log = SentLog(None)
    channel, clock = ScriptedChannel(PERMANENT, *[TRANSIENT] * 100), Clock()
    lane = make_lane(channel, registry, clock, sent_log)
    lane.submit(notification("permanent"), {})
    lane.submit(notification("timed-out"), {})

    while lane.depth():
        lane.deliver_one(0.0)
        clock.now_s += 5.0
    # A restart submits the notices of its devices again.
    queued_again = lane.submit(notification("permanent", "timed-out"), {})

    assert channel.sent == []
    assert sample(registry, "hbmon_alerter_notifications_parked_total") == 2
    assert sent_log.was_sent("oncall/email", "permanent")
    assert sent_log.was_sent("oncall/email", "timed-out")
    assert queued_again == 0


def test_lane_reports_depth_and_oldest_age(registry: CollectorRegistry) -> None:
    clock = Clock()
    lane = make_lane(ScriptedChannel(), registry, clock)
    lane.submit(notification("a"), {})
    clock.now_s = 7.5

    assert sample(registry, "hbmon_alerter_queue_depth") == 1
    assert sample(registry, "hbmon_alerter_oldest_pending_seconds") == 7.5


class RejectingDeadLetters(DeadLetters):
    """A dead-letter writer that fails its first `rejections` parkings.

    A broker that is away fails them the same way.
    """

    def __init__(self, rejections: int, clock: Clock | None = None) -> None:
        super().__init__(None)
        self.rejections = rejections
        self.parked: list[str] = []
        self.attempts: list[tuple[object, ...]] = []
        self.clock = clock

    def park(self, lane: str, notification: Notification, *args: object) -> bool:
        self.attempts.append(args[1:])
        if self.clock is not None:
            # The wait for the broker's acknowledgement.
            self.clock.now_s += 10.0
        if self.rejections:
            self.rejections -= 1
            return False
        self.parked.append(notification.notification_id)
        return True


def test_lane_keeps_notification_whose_parking_failed(
    registry: CollectorRegistry,
) -> None:
    # The channel would accept a second send, so the lane must not make one.
    channel, clock = ScriptedChannel(PERMANENT), Clock()
    lane = make_lane(channel, registry, clock)
    lane.dead_letters = letters = RejectingDeadLetters(rejections=1)
    lane.submit(notification("a"), {})

    lane.deliver_one(0.0)
    assert lane.depth() == 1
    assert letters.parked == []
    clock.now_s += 5.0
    lane.deliver_one(0.0)

    assert lane.depth() == 0
    assert channel.sent == []
    assert len(letters.parked) == 1
    assert len(letters.attempts) == 2
    assert letters.attempts[0] == letters.attempts[1]
    assert sample(registry, "hbmon_alerter_notifications_parked_total") == 1
    assert (
        sample(registry, "hbmon_alerter_notifications_failed_total", kind="permanent")
        == 1
    )


def test_lane_backoff_after_slow_parking(
    registry: CollectorRegistry,
) -> None:
    channel, clock = ScriptedChannel(PERMANENT), Clock()
    lane = make_lane(channel, registry, clock)
    lane.dead_letters = letters = RejectingDeadLetters(rejections=2, clock=clock)
    lane.submit(notification("a"), {})

    lane.deliver_one(0.0)
    lane.deliver_one(0.0)

    assert len(letters.attempts) == 1
    assert lane.depth() == 1


@pytest.mark.parametrize(
    ("sizes", "groups"),
    [
        ([], [[]]),
        ([3, 3, 3], [[3, 3], [3]]),
        ([10], [[10]]),
        ([2, 10, 2], [[2], [10], [2]]),
    ],
)
def test_split_by_size(sizes: list[int], groups: list[list[int]]) -> None:
    encoded = [b"x" * size for size in sizes]
    split = split_by_size(encoded, 7)
    assert [[len(event) for event in group] for group in split] == groups
