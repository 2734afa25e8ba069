"""Per-device alert state: what was notified, silences, flapping, reminders.

The book decides, for each DOWN or RECOVERED event, whether to notify now
or hold the notification back (silenced, flapping, or a recovery from a
DOWN that was never notified). A periodic review then notifies what was
held back once the reason is gone: a device still DOWN when its silence
ends gets one DOWN notification, and a flapping device that became stable
gets one notification of its final state. The review also sends reminders.

Flip windows use event times (`detected_ms`), so a backlog read after an
outage is judged by when the flips happened, not by when they were read.
"""

import enum
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from alerter.config import Flapping
from alerter.notification import Item, Kind, flapping_key, kind_of, reminder_key
from hbmon.events import DEVICE_DOWN, AlertEvent, decode_alert

# Event ids remembered per device to recognise a record read twice.
_RECENT_IDS = 16


class Verdict(enum.StrEnum):
    """The decision of the book for one event."""

    NOTIFY = "notify"
    FLAPPING_NOTICE = "flapping-notice"
    HELD_FLAPPING = "held-flapping"
    SILENCED = "silenced"
    UNNOTIFIED = "unnotified-recovery"


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict and, for NOTIFY and FLAPPING_NOTICE, the item to send.

    `duplicate` is True when the event was applied before. Its item is then
    the same as the first time, so channels that sent it skip it.
    """

    verdict: Verdict
    item: Item | None = None
    duplicate: bool = False


@dataclass(slots=True)
class DeviceState:
    """Alert state of one device: its episode, flips, and what was notified.

    `notified_down` is True while the last notification about the device
    said it is DOWN. `notice` is the last item decided for the device. It is
    sent again after a restart unless the sent log lists it as delivered or
    cancelled.
    """

    device_id: str
    alert_partition: int
    down: AlertEvent | None = None
    last: AlertEvent | None = None
    notified_down: bool = False
    notified_at_ms: int = 0
    reminders: int = 0
    flips: list[int] = field(default_factory=list)
    flapping: bool = False
    recent: dict[str, str] = field(default_factory=dict)
    notice: Item | None = None
    notice_at_ms: int = 0

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "device_id": self.device_id,
            "alert_partition": self.alert_partition,
            "down": _event_json(self.down),
            "last": _event_json(self.last),
            "notified_down": self.notified_down,
            "notified_at_ms": self.notified_at_ms,
            "reminders": self.reminders,
            "flips": self.flips,
            "flapping": self.flapping,
            "recent": self.recent,
            "notice": None,
            "notice_at_ms": self.notice_at_ms,
        }
        if self.notice is not None:
            data["notice"] = {
                "kind": self.notice.kind.value,
                "key": self.notice.key,
                "event": _event_json(self.notice.event),
                "flips": self.notice.flips,
            }
        return orjson.dumps(data)


def decode_state(value: bytes) -> DeviceState:
    """Decode a state record written by DeviceState.encode().

    Raises:
        ValueError: the value is not a state record.
    """
    data = orjson.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("device_id"), str):
        raise ValueError("a device state record must be an object with device_id")
    notice = data.get("notice")
    item = None
    if isinstance(notice, dict):
        event = _event_from(notice.get("event"))
        if event is not None:
            item = Item(
                Kind(notice["kind"]), str(notice["key"]), event, int(notice["flips"])
            )
    return DeviceState(
        device_id=data["device_id"],
        alert_partition=int(data.get("alert_partition", -1)),
        down=_event_from(data.get("down")),
        last=_event_from(data.get("last")),
        notified_down=bool(data.get("notified_down")),
        notified_at_ms=int(data.get("notified_at_ms", 0)),
        reminders=int(data.get("reminders", 0)),
        flips=[int(flip) for flip in data.get("flips", [])],
        flapping=bool(data.get("flapping")),
        recent={str(k): str(v) for k, v in data.get("recent", {}).items()},
        notice=item,
        notice_at_ms=int(data.get("notice_at_ms", 0)),
    )


class DeviceBook:
    """Alert state of the devices with an open episode or recent flips.

    apply() costs O(1) plus O(flips in the window). review() costs
    O(devices in the book). Not thread-safe: the worker thread owns it.
    """

    def __init__(self, flapping: Flapping) -> None:
        self.flapping = flapping
        self.states: dict[str, DeviceState] = {}
        self._dirty: set[str] = set()

    def apply(
        self, event: AlertEvent, alert_partition: int, now_ms: int, silenced: bool
    ) -> Decision:
        """Record a DOWN or RECOVERED event and decide what to tell."""
        state = self.states.get(event.device_id)
        if state is not None and event.event_id in state.recent:
            verdict = Verdict(state.recent[event.event_id])
            return Decision(verdict, self._item_for(state, event, verdict), True)

        # 1. Update the episode and the flips in the window.
        is_new = state is None
        if state is None:
            state = DeviceState(event.device_id, alert_partition)
            self.states[event.device_id] = state
        state.alert_partition = alert_partition
        state.flips.append(event.detected_ms)
        self._prune_flips(state, event.detected_ms)
        state.last = event
        if event.type == DEVICE_DOWN:
            state.down = event
            state.reminders = 0
        else:
            state.down = None

        # 2. Decide: flapping first, then silences, then what was notified before.
        if state.flapping:
            verdict = Verdict.HELD_FLAPPING
        elif len(state.flips) > self.flapping.max_flips:
            state.flapping = True
            verdict = Verdict.FLAPPING_NOTICE
        elif silenced:
            verdict = Verdict.SILENCED
        elif event.type == DEVICE_DOWN:
            verdict = Verdict.NOTIFY
            state.notified_down, state.notified_at_ms = True, now_ms
        elif state.notified_down or is_new:
            verdict = Verdict.NOTIFY
            state.notified_down = False
        else:
            verdict = Verdict.UNNOTIFIED

        # 3. Remember the decision, so a record read twice gets the same one.
        item = self._item_for(state, event, verdict)
        if item is not None:
            state.notice, state.notice_at_ms = item, now_ms
        state.recent[event.event_id] = verdict.value
        while len(state.recent) > _RECENT_IDS:
            del state.recent[next(iter(state.recent))]
        self._dirty.add(event.device_id)
        return Decision(verdict, item)

    def review(
        self,
        now_ms: int,
        owned: Callable[[int], bool],
        is_silenced: Callable[[AlertEvent], bool],
        repeat_interval_s: Callable[[AlertEvent], float],
    ) -> list[Item]:
        """Return what to tell now about devices in owned alert partitions.

        That is the state a flapping device settled in, a DOWN
        or RECOVERED held back by a silence that has ended, and reminders
        for devices still DOWN. Devices with nothing left to track are
        dropped from the book.
        """
        items = []
        for device_id, state in list(self.states.items()):
            if not owned(state.alert_partition):
                continue
            item = self._review_one(state, now_ms, is_silenced, repeat_interval_s)
            if item is not None:
                state.notice, state.notice_at_ms = item, now_ms
                items.append(item)
                self._dirty.add(device_id)
            if self._is_idle(state):
                del self.states[device_id]
                self._dirty.add(device_id)
        return items

    def notices(self, partitions: Iterable[int], since_ms: int) -> list[Item]:
        """Return the last item decided per device of `partitions` since `since_ms`."""
        wanted = set(partitions)
        return [
            state.notice
            for state in self.states.values()
            if state.notice is not None
            and state.alert_partition in wanted
            and state.notice_at_ms >= since_ms
        ]

    def load(self, device_id: str, state: DeviceState | None) -> None:
        """Replace a device's state with one read from the state topic."""
        if state is None:
            self.states.pop(device_id, None)
        else:
            self.states[device_id] = state

    def take_dirty(self) -> list[tuple[str, DeviceState | None]]:
        """Return the states changed since the last call; None means deleted."""
        changed = [(device, self.states.get(device)) for device in self._dirty]
        self._dirty.clear()
        return changed

    def _review_one(
        self,
        state: DeviceState,
        now_ms: int,
        is_silenced: Callable[[AlertEvent], bool],
        repeat_interval_s: Callable[[AlertEvent], float],
    ) -> Item | None:
        self._prune_flips(state, now_ms)
        settled = False
        if state.flapping:
            quiet_ms = now_ms - state.flips[-1] if state.flips else None
            if quiet_ms is not None and quiet_ms < self.flapping.stable_s * 1000:
                return None
            state.flapping, settled = False, True
            state.flips.clear()
            self._dirty.add(state.device_id)
        current = state.down or state.last
        if current is None or is_silenced(current):
            return None

        # The flapping notice promised one mail with the state it settled in.
        if settled:
            state.notified_down = state.down is not None
            state.notified_at_ms, state.reminders = now_ms, 0
            return Item(kind_of(current), current.event_id, current)

        # Tell what was held back, or remind of a device that stays DOWN.
        if state.down is not None and not state.notified_down:
            state.notified_down, state.notified_at_ms, state.reminders = True, now_ms, 0
            return Item(Kind.DOWN, state.down.event_id, state.down)
        if state.down is None and state.notified_down:
            state.notified_down = False
            return Item(Kind.RECOVERED, current.event_id, current)
        if state.down is not None:
            repeat_s = repeat_interval_s(state.down)
            if repeat_s > 0 and now_ms - state.notified_at_ms >= repeat_s * 1000:
                state.reminders += 1
                state.notified_at_ms = now_ms
                key = reminder_key(state.down, state.reminders)
                return Item(Kind.REMINDER, key, state.down)
        return None

    def _item_for(
        self, state: DeviceState, event: AlertEvent, verdict: Verdict
    ) -> Item | None:
        if verdict is Verdict.NOTIFY:
            return Item(kind_of(event), event.event_id, event)
        if verdict is Verdict.FLAPPING_NOTICE:
            flips = max(len(state.flips), self.flapping.max_flips + 1)
            return Item(Kind.FLAPPING, flapping_key(event), event, flips)
        return None

    def _prune_flips(self, state: DeviceState, now_ms: int) -> None:
        oldest_ms = now_ms - self.flapping.window_s * 1000
        if state.flips and state.flips[0] < oldest_ms:
            state.flips = [flip for flip in state.flips if flip >= oldest_ms]

    def _is_idle(self, state: DeviceState) -> bool:
        return (
            state.down is None
            and not state.notified_down
            and not state.flapping
            and not state.flips
        )


def _event_json(event: AlertEvent | None) -> dict[str, Any] | None:
    return None if event is None else asdict(event)


def _event_from(data: object) -> AlertEvent | None:
    if not isinstance(data, dict):
        return None
    return decode_alert(orjson.dumps(data))
