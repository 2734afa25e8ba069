"""Channel lanes: one queue, retry timer and thread per channel of each receiver.

A lane sends its notifications in order. A transient failure delays its
own queue only, with backoff and jitter, so a receiver whose server is down
holds up no other receiver, no other channel and no reading of records.
Items that the sent log lists for the lane are dropped before queueing;
an item already queued only adds its records to the queued notification.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alerter.backoff import Backoff
from alerter.channels.base import Channel, DeliveryError
from alerter.channels.email import EmailChannel
from alerter.channels.pagerduty import PagerDutyChannel
from alerter.channels.slack import SlackChannel
from alerter.channels.webhook import WebhookChannel
from alerter.deadletter import DeadLetters
from alerter.ledger import OffsetLedger, RecordRef
from alerter.message import count_of
from alerter.metrics import AlerterMetrics
from alerter.notification import Item, Notification
from alerter.routing import ChannelConfig, Route, Router
from alerter.sentlog import SentLog
from alerter.settings import AlerterSettings
from hbmon.logs import RateLimitedLog

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Task:
    """A notification in a lane's queue, with the units still to send."""

    notification: Notification
    units: list[tuple[Item, ...]]
    refs: list[RecordRef]
    queued_s: float
    next_attempt_s: float = 0.0
    failures: int = 0
    first_failure_s: float | None = None
    keys: list[str] = field(default_factory=list)
    # Set once the head unit is to be parked: its reason, reply code and
    # parking time, which every attempt to write its records reuses.
    parking: tuple[str, int | None, int] | None = None


class Lane:
    """The queue of one receiver's channel, worked by its own thread.

    submit() is called by the worker thread; deliver_one() by the lane's
    thread. Both are thread-safe.
    """

    def __init__(
        self,
        receiver: str,
        channel: Channel,
        *,
        sent_log: SentLog,
        dead_letters: DeadLetters,
        ledger: OffsetLedger,
        metrics: AlerterMetrics,
        backoff: Backoff,
        retry_for_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.receiver = receiver
        self.channel = channel
        self.name = f"{receiver}/{channel.kind}"
        self.sent_log = sent_log
        self.dead_letters = dead_letters
        self.ledger = ledger
        self.metrics = metrics
        self.backoff = backoff
        self.retry_for_s = retry_for_s
        self.clock = clock
        self._queue: collections.deque[Task] = collections.deque()
        self._pending: dict[str, Task] = {}
        self._wakeup = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_limit = RateLimitedLog(clock=clock)
        metrics.add_channel(receiver, channel.kind, self.depth, self.oldest_s)

    def submit(
        self, notification: Notification, refs: Mapping[str, list[RecordRef]]
    ) -> int:
        """Queue the items not yet sent or queued; return how many were queued."""
        with self._wakeup:
            fresh = []
            for item in notification.items:
                if self.sent_log.was_sent(self.name, item.key):
                    continue
                queued = self._pending.get(item.key)
                if queued is not None:
                    self._hold(queued, refs.get(item.key, []))
                    continue
                fresh.append(item)
            if not fresh:
                return 0
            subset = notification.with_items(tuple(fresh))
            task = Task(subset, self.channel.units(subset), [], self.clock())
            task.keys = [item.key for item in fresh]
            for item in fresh:
                self._hold(task, refs.get(item.key, []))
                self._pending[item.key] = task
            self._queue.append(task)
            self._wakeup.notify()
            return len(fresh)

    def has_item(self, item_key: str) -> bool:
        """Return True if the item was sent, or is queued, on this lane."""
        with self._wakeup:
            queued = item_key in self._pending
        return queued or self.sent_log.was_sent(self.name, item_key)

    def deliver_one(self, wait_s: float) -> bool:
        """Make one delivery attempt if the head of the queue is due.

        Waits up to `wait_s` for work. Return True when more work waits.
        """
        with self._wakeup:
            if not self._queue:
                self._wakeup.wait(wait_s)
                if not self._queue:
                    return False
            task = self._queue[0]
            delay_s = task.next_attempt_s - self.clock()
            if delay_s > 0:
                self._wakeup.wait(min(delay_s, wait_s))
                return True
        if task.units:
            self._attempt(task)
        if not task.units:
            self._finish(task)
        with self._wakeup:
            return bool(self._queue)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"lane-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the thread after its current attempt, then close the channel."""
        self._stopping.set()
        with self._wakeup:
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.channel.close()

    def depth(self) -> float:
        with self._wakeup:
            return float(len(self._queue))

    def oldest_s(self) -> float:
        with self._wakeup:
            if not self._queue:
                return 0.0
            return max(0.0, self.clock() - self._queue[0].queued_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_one(0.5)
            except Exception:
                # A bug in one channel must not stop the lane for good.
                logger.exception(
                    "Lane %s failed unexpectedly; will retry in 1 s", self.name
                )
                self._stopping.wait(1.0)

    def _attempt(self, task: Task) -> None:
        unit = task.units[0]
        notification = task.notification.with_items(unit)
        if task.parking is not None:
            # The channel gave up on it, so only the dead-letter write is retried.
            self._park(task, notification)
            return
        now = datetime.now(UTC)
        if task.failures:
            self.metrics.retried.labels(self.receiver, self.channel.kind).inc()
        try:
            self.channel.send(notification, now)
        except DeliveryError as err:
            self._failed(task, notification, err)
            return

        now_ms = int(now.timestamp() * 1000)
        recorded = self.sent_log.record(
            self.name, [i.key for i in unit], notification.notification_id, now_ms
        )
        task.units.pop(0)
        task.failures, task.first_failure_s = 0, None
        self.metrics.record_sent(self.receiver, self.channel.kind)
        logger.info(
            "Sent %s notification %s (%s, route %s) via %s",
            notification.kind.name,
            notification.notification_id,
            count_of(len(unit), "event"),
            notification.route,
            self.name,
        )
        if not recorded:
            logger.warning(
                "The broker did not acknowledge the sent-log records of notification "
                "%s within 10 s; continuing, but a restart before they land sends it "
                "again",
                notification.notification_id,
            )

    def _failed(
        self, task: Task, notification: Notification, err: DeliveryError
    ) -> None:
        now_s = self.clock()
        if task.first_failure_s is None:
            task.first_failure_s = now_s
        gave_up = now_s - task.first_failure_s >= self.retry_for_s
        if err.retriable and not gave_up:
            task.failures += 1
            task.next_attempt_s = now_s + self.backoff.delay_s(task.failures)
            self.metrics.failed.labels(
                self.receiver, self.channel.kind, "transient"
            ).inc()
            self._log_transient(notification, err, task)
            return

        reason = str(err)
        if err.retriable:
            reason = f"transient failures for {self.retry_for_s:g} s; last: {err}"
        self.metrics.failed.labels(self.receiver, self.channel.kind, "permanent").inc()
        task.parking = (reason, err.code, int(time.time() * 1000))
        self._park(task, notification)

    def _park(self, task: Task, notification: Notification) -> None:
        """Write the head unit to the dead-letter topic, or retry after the backoff.

        A retry writes the same records, parking time included, so a write
        that the broker acknowledged late leaves identical copies.
        """
        assert task.parking is not None
        reason, code, parked_ms = task.parking
        if not self.dead_letters.park(
            self.name, notification, notification.items, reason, code, parked_ms
        ):
            # Dropping it now could lose it, so the lane tries it again. The
            # write may have waited 10 s, so the backoff starts after it.
            now_s = self.clock()
            task.failures += 1
            task.next_attempt_s = now_s + self.backoff.delay_s(task.failures)
            logger.error(
                "Could not park %s notification %s (%s, route %s) for %s: the "
                "dead-letter records were refused or not acknowledged within "
                "10 s. It stays in the lane and is tried again in %.0f s; %s",
                notification.kind.name,
                notification.notification_id,
                count_of(len(notification.items), "event"),
                notification.route,
                self.name,
                task.next_attempt_s - now_s,
                reason,
            )
            return
        self.metrics.parked.labels(self.receiver, self.channel.kind).inc()
        # Items count as handled, so that a restart skips them, only once the
        # broker has the dead-letter records. A crash between the two writes
        # sends the notification again after a restart instead of losing it.
        recorded = self.sent_log.record(
            self.name,
            [item.key for item in notification.items],
            notification.notification_id,
            parked_ms,
            outcome="parked",
        )
        logger.error(
            "Parking %s notification %s (%s, route %s) for %s: %s. It is "
            "written to the dead-letter topic and the sent log%s, and the lane "
            "goes on with the next",
            notification.kind.name,
            notification.notification_id,
            count_of(len(notification.items), "event"),
            notification.route,
            self.name,
            reason,
            "" if recorded else " (the sent log NOT acknowledged within 10 s)",
        )
        task.units.pop(0)
        task.failures, task.first_failure_s, task.parking = 0, None, None

    def _finish(self, task: Task) -> None:
        with self._wakeup:
            if self._queue and self._queue[0] is task:
                self._queue.popleft()
            for key in task.keys:
                if self._pending.get(key) is task:
                    del self._pending[key]
            refs, task.refs = task.refs, []
        for ref in refs:
            self.ledger.release(ref)

    def _hold(self, task: Task, refs: list[RecordRef]) -> None:
        for ref in refs:
            self.ledger.hold(ref)
            task.refs.append(ref)

    def _log_transient(
        self, notification: Notification, err: DeliveryError, task: Task
    ) -> None:
        suppressed = self._log_limit.allow("transient")
        if suppressed is None:
            return
        unlogged = ""
        if suppressed:
            # The limit is per channel, so the count covers every notification.
            earlier = count_of(suppressed, "earlier failure")
            unlogged = f" ({earlier} via this channel not logged)"
        logger.warning(
            "Delivery of %s notification %s via %s failed: %s; failure %d, will "
            "retry in %.2f s%s",
            notification.kind.name,
            notification.notification_id,
            self.name,
            err,
            task.failures,
            task.next_attempt_s - self.clock(),
            unlogged,
        )


def build_channel(
    config: ChannelConfig, settings: AlerterSettings, heartbeat_topic: str
) -> Channel:
    """Create the channel client for one channel of a receiver."""
    if config.kind == "email":
        return EmailChannel(settings, config.addresses, heartbeat_topic)
    if config.kind == "webhook":
        return WebhookChannel(
            config.url, config.secret, settings.http_timeout_s, heartbeat_topic
        )
    if config.kind == "slack":
        return SlackChannel(config.url, settings.http_timeout_s, heartbeat_topic)
    if config.kind == "pagerduty":
        return PagerDutyChannel(
            config.url, config.routing_key, settings.http_timeout_s, heartbeat_topic
        )
    raise ValueError(f"channel kind {config.kind!r} is unknown")


class Dispatcher:
    """The lanes of every receiver in the router, and dispatch to a route's lanes."""

    def __init__(self, router: Router, lanes: dict[str, list[Lane]]) -> None:
        self.router = router
        self.lanes = lanes

    def dispatch(
        self,
        route: Route,
        notification: Notification,
        refs: Mapping[str, list[RecordRef]],
    ) -> int:
        """Queue a notification on every channel of the route's receivers.

        Return the number of (lane, item) pairs queued.
        """
        queued = 0
        for lane in self.route_lanes(route):
            queued += lane.submit(notification, refs)
        return queued

    def route_lanes(self, route: Route) -> list[Lane]:
        return [lane for r in route.receivers for lane in self.lanes.get(r, [])]

    def was_sent(self, route: Route, item: Item) -> bool:
        """Return True if every lane of the route has sent or settled the item."""
        lanes = self.route_lanes(route)
        return bool(lanes) and all(
            lane.sent_log.was_sent(lane.name, item.key) for lane in lanes
        )

    def cancel(self, route: Route, pair: tuple[Item, ...], now_ms: int) -> bool:
        """Record a cancelled pair in the sent log of each lane of the route.

        So a restart or a record read again never sends either item. A lane
        that has the pair's first item already (a route sharing the lane sent
        it) records nothing, because the second item must still reach it. Return
        False if the broker did not acknowledge within 10 s.
        """
        keys = [item.key for item in pair]
        acknowledged = True
        for lane in self.route_lanes(route):
            if lane.has_item(keys[0]):
                continue
            acknowledged &= lane.sent_log.record(
                lane.name, keys, "", now_ms, outcome="cancelled"
            )
        return acknowledged

    def all_lanes(self) -> list[Lane]:
        return [lane for lanes in self.lanes.values() for lane in lanes]

    def start(self) -> None:
        for lane in self.all_lanes():
            lane.start()

    def stop(self, timeout_s: float) -> None:
        for lane in self.all_lanes():
            lane.stop(timeout_s)

    def queued(self) -> int:
        return int(sum(lane.depth() for lane in self.all_lanes()))
