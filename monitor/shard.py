"""Device state of one partition: last seen, deadline, timeout, UP or DOWN.

A device's deadline is its last seen time plus its timeout. The shard reports
a DOWN transition when a deadline passes without a newer heartbeat, and a
RECOVERED transition for the first heartbeat after that. Per device, DOWN and
RECOVERED strictly alternate, and the first one is a DOWN.

Times are integer ms since the Unix epoch, taken from the Kafka record
timestamp, never from the device clock. The shard clock is the latest
``now_ms`` passed to ``expire``.

A heartbeat costs about one dict write, because the shard stores the new last
seen time and nothing else. The timer wheel keeps each UP device filed at the
tick of a deadline that is never later than its true one. When that tick
comes due, ``expire`` compares the filed device with its stored last seen
time and files it again at its true deadline, or reports it DOWN. A device is
filed again only after heartbeats have moved its deadline, so one that sends
heartbeats much more often than its timeout is filed about once per timeout.

Memory per UP device: one entry in ``_last_seen_ms`` with its int, one entry
in the wheel's index and one reference in a wheel slot. Declared timeouts
that differ from the default add a dict entry, and a DOWN device holds a
small tuple in place of its last seen entry.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from monitor.timerwheel import TimerWheel

DOWN = "DOWN"
RECOVERED = "RECOVERED"


@dataclass(frozen=True, slots=True)
class Transition:
    """DOWN or RECOVERED change of one device.

    ``last_seen_ms``, ``deadline_ms`` and ``timeout_ms`` describe the heartbeat
    before the device went DOWN and are the same in the DOWN and the RECOVERED
    of one episode. ``at_ms`` is the shard clock at detection for a DOWN, and
    the time of the heartbeat that ended the episode for a RECOVERED.
    """

    kind: str
    device_id: str
    last_seen_ms: int
    deadline_ms: int
    timeout_ms: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Snapshot of one device, as needed to restore it after a restart."""

    last_seen_ms: int
    deadline_ms: int
    timeout_ms: int
    down: bool


class Shard:
    """Devices of one partition, with a timer wheel over their deadlines.

    ``observe_many`` is the fast path: a heartbeat from an UP device that
    keeps its timeout and is not older than any heartbeat seen before costs
    one membership test and one dict write, and does not touch the wheel.
    Heartbeats of new, DOWN and re-timed devices cost O(1) plus a wheel
    update.

    >>> shard = Shard(
    ...     0, default_timeout_ms=30_000, min_timeout_ms=5_000, max_timeout_ms=600_000
    ... )
    >>> shard.observe("pump-7", 1_000)
    >>> [t.kind for t in shard.expire(31_000)]
    ['DOWN']
    >>> shard.observe("pump-7", 40_000).kind
    'RECOVERED'
    """

    def __init__(
        self,
        partition: int,
        *,
        default_timeout_ms: int,
        min_timeout_ms: int,
        max_timeout_ms: int,
        tick_ms: int = 1000,
        wheel_slots: int = 4096,
    ) -> None:
        """Create an empty shard.

        ``wheel_slots`` times ``tick_ms`` is the wheel's horizon. Devices whose
        timeout is longer wait in the wheel's sorted index, which costs
        O(log n) per filing and, estimated from object sizes, about 140 more
        bytes per device. The default, 4096 slots of 1 s, covers timeouts up
        to 68 minutes.

        Raises:
            ValueError: a timeout bound is not positive, the bounds are not
                ordered ``min <= default <= max``, or ``tick_ms`` or
                ``wheel_slots`` is not positive.
        """
        if min_timeout_ms <= 0:
            raise ValueError(f"min_timeout_ms must be positive, got {min_timeout_ms}")
        if not min_timeout_ms <= default_timeout_ms <= max_timeout_ms:
            raise ValueError(
                "timeouts must satisfy min_timeout_ms <= default_timeout_ms <= "
                f"max_timeout_ms, got {min_timeout_ms}, {default_timeout_ms}, "
                f"{max_timeout_ms}"
            )
        if tick_ms <= 0:
            raise ValueError(f"tick_ms must be positive, got {tick_ms}")
        if wheel_slots <= 0:
            raise ValueError(f"wheel_slots must be positive, got {wheel_slots}")
        self.partition = partition
        self.default_timeout_ms = default_timeout_ms
        self.min_timeout_ms = min_timeout_ms
        self.max_timeout_ms = max_timeout_ms
        self.tick_ms = tick_ms
        self.wheel_slots = wheel_slots
        # UP devices only. A DOWN device moves to _down.
        self._last_seen_ms: dict[str, int] = {}
        # DOWN devices: (last seen, timeout) of the heartbeat before the DOWN.
        self._down: dict[str, tuple[int, int]] = {}
        # Declared timeouts after clamping. Devices on the default have no entry.
        self._timeout_ms: dict[str, int] = {}
        # Newest heartbeat time seen, so no last seen time is later than it.
        self._newest_seen_ms = -(2**63)
        self._clock_ms: int | None = None
        # Created at the first heartbeat, restore or expire, so that its clock
        # starts near the times in the data.
        self._wheel: TimerWheel[str] | None = None

    def __len__(self) -> int:
        return len(self._last_seen_ms) + len(self._down)

    @property
    def down_count(self) -> int:
        """Number of devices currently DOWN."""
        return len(self._down)

    @property
    def clock_ms(self) -> int | None:
        """Shard clock: the latest ``now_ms`` passed to ``expire``, or None."""
        return self._clock_ms

    def observe(
        self, device_id: str, seen_ms: int, timeout_ms: int | None = None
    ) -> Transition | None:
        """Record one heartbeat and return the RECOVERED transition if it ends a DOWN.

        ``seen_ms`` is the record timestamp. A heartbeat not newer than the
        device's last seen time changes nothing: last seen never moves back,
        and its declared timeout is ignored.

        A DOWN device recovers on the first heartbeat newer than its last seen
        time before the DOWN, even one older than heartbeats of other devices
        or than the shard clock. If the shard clock has already reached that
        heartbeat's own deadline, the next ``expire`` reports a new DOWN.

        ``timeout_ms`` is clamped into the shard's bounds and applies from this
        heartbeat on. None keeps the device's previous declared timeout, or
        the default. Cost: O(1). See ``observe_many`` for the fast path.
        """
        if (
            seen_ms >= self._newest_seen_ms
            and timeout_ms is None
            and device_id in self._last_seen_ms
        ):
            self._newest_seen_ms = seen_ms
            self._last_seen_ms[device_id] = seen_ms
            return None
        return self._observe_full(device_id, seen_ms, timeout_ms)

    def observe_many(
        self, heartbeats: Iterable[tuple[str, int, int | None]]
    ) -> list[Transition]:
        """Record ``(device_id, seen_ms, timeout_ms)`` heartbeats in order.

        The rules of ``observe`` apply. Returns the RECOVERED transitions in order.
        A heartbeat from an UP device that declares no timeout, or the one the
        device already has, changes only last seen. If it is not older than any
        heartbeat the shard has seen, which holds for most broker append times
        of one partition, that costs one membership test and one dict write.
        An older one also reads the stored time, to keep last seen from moving
        back. Other heartbeats take ``observe``'s full path.
        """
        transitions: list[Transition] = []
        last_seen = self._last_seen_ms
        timeouts = self._timeout_ms
        default_ms = self.default_timeout_ms
        newest_ms = self._newest_seen_ms
        for device_id, seen_ms, timeout_ms in heartbeats:
            # The fast path. No stored last seen time is newer than newest_ms.
            if seen_ms >= newest_ms and timeout_ms is None and device_id in last_seen:
                newest_ms = seen_ms
                last_seen[device_id] = seen_ms
                continue

            # An UP device that keeps its timeout changes only its last seen time.
            if device_id in last_seen and (
                timeout_ms is None or timeout_ms == timeouts.get(device_id, default_ms)
            ):
                if seen_ms >= newest_ms:
                    newest_ms = seen_ms
                    last_seen[device_id] = seen_ms
                elif seen_ms > last_seen[device_id]:
                    last_seen[device_id] = seen_ms
                continue

            self._newest_seen_ms = newest_ms
            transition = self._observe_full(device_id, seen_ms, timeout_ms)
            newest_ms = self._newest_seen_ms
            if transition is not None:
                transitions.append(transition)
        self._newest_seen_ms = newest_ms
        return transitions

    def expire(self, now_ms: int) -> list[Transition]:
        """Advance the shard clock to ``now_ms`` and return a DOWN per overdue device.

        A device is reported by the first call whose ``now_ms`` reaches its
        deadline rounded up to a multiple of ``tick_ms``. So it is never
        reported before its deadline and, when ``expire`` runs at least once
        per tick, less than one tick after it. The clock never moves back: an
        earlier ``now_ms`` counts as the current clock. Cost: O(d + r) for d
        devices reported and r devices filed again, plus O(log slots) per
        non-empty wheel slot crossed. It does not grow with the number of
        devices.
        """
        if self._clock_ms is None or now_ms > self._clock_ms:
            self._clock_ms = now_ms
        now_ms = self._clock_ms
        wheel = self._wheel
        if wheel is None:
            wheel = self._wheel_starting_at(now_ms)
        last_seen = self._last_seen_ms
        timeouts = self._timeout_ms
        default_ms = self.default_timeout_ms
        # A deadline counts as reached at the first tick boundary at or after it,
        # so the deadlines reached by now_ms are those up to its tick boundary.
        reached_ms = now_ms - now_ms % self.tick_ms
        transitions: list[Transition] = []
        # Devices filed for an older deadline, whose true one is not reached.
        refile: list[tuple[str, int]] = []
        for device_id in wheel.expire(now_ms):
            last_seen_ms = last_seen[device_id]
            timeout_ms = timeouts.get(device_id, default_ms)
            deadline_ms = last_seen_ms + timeout_ms
            if deadline_ms > reached_ms:
                refile.append((device_id, deadline_ms))
                continue
            del last_seen[device_id]
            self._down[device_id] = (last_seen_ms, timeout_ms)
            transitions.append(
                Transition(
                    DOWN, device_id, last_seen_ms, deadline_ms, timeout_ms, now_ms
                )
            )
        if refile:
            wheel.schedule_many(refile)
        return transitions

    def next_deadline_ms(self) -> int | None:
        """Return the earliest deadline of an UP device, or None if there is none.

        The result may be earlier than the shard clock for a device that the
        next ``expire`` will report. Devices whose filed deadline is out of
        date are filed again on the way, which is work ``expire`` would
        otherwise do. Cost: O(k) for k devices filed at the earliest tick, plus
        the devices filed again.
        """
        if self._wheel is None:
            return None
        while True:
            earliest = self._wheel.earliest_due()
            if earliest is None:
                return None
            due_ms, device_ids = earliest
            found_ms: int | None = None
            for device_id in device_ids:
                deadline_ms = self._deadline_ms(device_id)
                if deadline_ms > due_ms:
                    self._wheel.schedule(device_id, deadline_ms)
                elif found_ms is None or deadline_ms < found_ms:
                    found_ms = deadline_ms
            if found_ms is not None:
                return found_ms

    def device(self, device_id: str) -> DeviceState | None:
        """Return the state of one device, or None if the shard does not track it.

        For a DOWN device, the fields are those of the heartbeat before the
        DOWN. Cost: O(1).
        """
        last_seen_ms = self._last_seen_ms.get(device_id)
        if last_seen_ms is not None:
            timeout_ms = self._timeout_ms.get(device_id, self.default_timeout_ms)
            return DeviceState(
                last_seen_ms, last_seen_ms + timeout_ms, timeout_ms, down=False
            )
        down = self._down.get(device_id)
        if down is None:
            return None
        last_seen_ms, timeout_ms = down
        return DeviceState(last_seen_ms, last_seen_ms + timeout_ms, timeout_ms, True)

    def restore(
        self, device_id: str, last_seen_ms: int, timeout_ms: int, down: bool
    ) -> None:
        """Put a device back after a restart, replacing any state it has.

        Emits nothing. The timeout is clamped into the current bounds. An UP
        device whose deadline has already passed is reported by the next
        ``expire``. Cost: O(1), plus O(log n) when the deadline is beyond the
        wheel's horizon.
        """
        self.forget(device_id)
        timeout_ms = self._clamp(timeout_ms)
        if timeout_ms != self.default_timeout_ms:
            self._timeout_ms[device_id] = timeout_ms
        if last_seen_ms > self._newest_seen_ms:
            self._newest_seen_ms = last_seen_ms
        if down:
            self._down[device_id] = (last_seen_ms, timeout_ms)
            return
        self._last_seen_ms[device_id] = last_seen_ms
        wheel = self._wheel_starting_at(last_seen_ms)
        wheel.schedule(device_id, last_seen_ms + timeout_ms)

    def forget(self, device_id: str) -> None:
        """Stop tracking a device, UP or DOWN. An unknown device is ignored.

        Cost: O(1), plus O(log n) when its deadline is beyond the horizon.
        """
        self._last_seen_ms.pop(device_id, None)
        self._down.pop(device_id, None)
        self._timeout_ms.pop(device_id, None)
        if self._wheel is not None:
            self._wheel.cancel(device_id)

    def _observe_full(
        self, device_id: str, seen_ms: int, timeout_ms: int | None
    ) -> Transition | None:
        """Record a heartbeat that the fast path cannot take."""
        if seen_ms > self._newest_seen_ms:
            self._newest_seen_ms = seen_ms

        # For an UP device, move last seen forward, then apply a declared timeout.
        last_seen_ms = self._last_seen_ms.get(device_id)
        if last_seen_ms is not None:
            if seen_ms <= last_seen_ms:
                return None
            self._last_seen_ms[device_id] = seen_ms
            if timeout_ms is not None:
                self._declare_timeout(device_id, timeout_ms, seen_ms)
            return None

        # A DOWN device recovers only on a heartbeat after its DOWN's last seen.
        down = self._down.get(device_id)
        if down is not None and seen_ms <= down[0]:
            return None

        # Store a new or recovering device as UP and file its deadline.
        if timeout_ms is not None:
            self._store_timeout(device_id, self._clamp(timeout_ms))
        self._last_seen_ms[device_id] = seen_ms
        deadline_ms = seen_ms + self._timeout_ms.get(device_id, self.default_timeout_ms)
        wheel = self._wheel
        if wheel is None:
            wheel = self._wheel_starting_at(seen_ms)
        wheel.schedule(device_id, deadline_ms)
        if down is None:
            return None
        del self._down[device_id]
        down_last_seen_ms, down_timeout_ms = down
        return Transition(
            RECOVERED,
            device_id,
            down_last_seen_ms,
            down_last_seen_ms + down_timeout_ms,
            down_timeout_ms,
            seen_ms,
        )

    def _declare_timeout(self, device_id: str, timeout_ms: int, seen_ms: int) -> None:
        """Apply a declared timeout to an UP device whose last seen is ``seen_ms``."""
        timeout_ms = self._clamp(timeout_ms)
        previous_ms = self._timeout_ms.get(device_id, self.default_timeout_ms)
        if timeout_ms == previous_ms:
            return
        self._store_timeout(device_id, timeout_ms)
        if timeout_ms < previous_ms:
            # The deadline moved earlier than where the wheel may have it filed.
            assert self._wheel is not None
            self._wheel.schedule(device_id, seen_ms + timeout_ms)

    def _store_timeout(self, device_id: str, timeout_ms: int) -> None:
        if timeout_ms == self.default_timeout_ms:
            self._timeout_ms.pop(device_id, None)
        else:
            self._timeout_ms[device_id] = timeout_ms

    def _clamp(self, timeout_ms: int) -> int:
        return min(max(timeout_ms, self.min_timeout_ms), self.max_timeout_ms)

    def _deadline_ms(self, device_id: str) -> int:
        """Return the true deadline of an UP device."""
        timeout_ms = self._timeout_ms.get(device_id, self.default_timeout_ms)
        return self._last_seen_ms[device_id] + timeout_ms

    def _wheel_starting_at(self, time_ms: int) -> TimerWheel[str]:
        """Return the wheel, creating it with its clock at ``time_ms`` if needed.

        NOTE: while the shard clock is behind the wheel's start, a device whose
        deadline lies between the two is filed again on every ``expire``. That
        takes a heartbeat older than the wheel's start by more than its timeout.
        """
        if self._wheel is None:
            self._wheel = TimerWheel(
                tick_ms=self.tick_ms, slots=self.wheel_slots, start_ms=time_ms
            )
        return self._wheel

    def _check(self) -> None:
        """Assert every internal invariant, for tests. Cost: O(devices)."""
        wheel = self._wheel
        assert not (self._last_seen_ms.keys() & self._down.keys())
        if wheel is None:
            assert not self._last_seen_ms
            return
        wheel._check()

        # Exactly the UP devices are filed. Each is due no later than the tick
        # of its true deadline, unless it waits in the overdue list.
        assert len(wheel) == len(self._last_seen_ms)
        next_tick_ms = (wheel.now_ms // self.tick_ms + 1) * self.tick_ms
        for device_id, last_seen_ms in self._last_seen_ms.items():
            assert last_seen_ms <= self._newest_seen_ms, device_id
            due_ms = wheel.due_ms(device_id)
            assert due_ms is not None, device_id
            deadline_tick_ms = -(-self._deadline_ms(device_id) // self.tick_ms)
            deadline_tick_ms *= self.tick_ms
            assert due_ms <= deadline_tick_ms or due_ms < next_tick_ms, device_id

        # Stored timeouts are clamped and differ from the default.
        for device_id, timeout_ms in self._timeout_ms.items():
            assert device_id in self._last_seen_ms or device_id in self._down
            assert self.min_timeout_ms <= timeout_ms <= self.max_timeout_ms
            assert timeout_ms != self.default_timeout_ms, device_id
        for last_seen_ms, timeout_ms in self._down.values():
            assert last_seen_ms <= self._newest_seen_ms
            assert self.min_timeout_ms <= timeout_ms <= self.max_timeout_ms
