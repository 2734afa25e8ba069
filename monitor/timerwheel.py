"""Hashed timer wheel with a sorted index for deadlines beyond its horizon.

Time is divided into ticks of ``tick_ms``. A key scheduled for deadline ``d`` is due
at tick ``ceil(d / tick_ms)``, the first tick that starts at or after ``d``, and
``expire(now_ms)`` returns it once ``now_ms`` reaches the start of that tick. A
key is therefore never returned before its deadline and, when ``expire`` runs
at least once per tick, less than one tick after it.

The wheel is a ring of ``slots`` lists. Ticks from the next unexpired tick up
to ``slots`` ticks later map one to one onto the ring; that span is the
horizon. Keys due later wait in a sorted index and move into the ring when
their tick comes within the horizon. A heap of the ticks whose slot is not
empty lets ``expire`` and the ordered queries skip empty slots instead of
stepping through them.

Cancelled and moved keys are not searched for in their old slot. The old entry
stays there as a stale copy and is dropped when its slot is expired, because
the key's entry in ``_filed`` no longer names that slot.

Keys must be hashable and, for the sorted index, comparable with each other
(``str`` or ``int``).
"""

from collections.abc import Hashable, Iterable, Iterator
from heapq import heappop, heappush
from itertools import islice
from typing import Generic, TypeVar

from sortedcontainers import SortedList

K = TypeVar("K", bound=Hashable)

# Values of _filed that are not slot numbers.
_OVERDUE = -1
_FAR = -2


class TimerWheel(Generic[K]):
    """Timer wheel of keys, each due at the tick of its deadline.

    Costs, for n keys held: ``schedule``, ``cancel`` and ``due_ms`` take O(1)
    time, plus O(log slots) when a slot stops being empty and O(log n) for a
    key beyond the horizon. ``expire`` takes O(e + c + s·log slots), where e
    is the number of keys returned, c the stale copies dropped and s the
    non-empty slots crossed. Each key that arrives from beyond the horizon
    adds O(log n). The number of keys held does not enter. Memory is one dict
    entry and one list slot per key, plus a tuple and a dict entry per key
    beyond the horizon.

    >>> wheel = TimerWheel(tick_ms=1000, slots=8, start_ms=0)
    >>> wheel.schedule("a", 2500)
    >>> wheel.expire(2999), wheel.expire(3000)
    ([], ['a'])
    """

    def __init__(self, *, tick_ms: int, slots: int, start_ms: int) -> None:
        """Create an empty wheel whose clock reads ``start_ms``.

        Raises:
            ValueError: ``tick_ms`` or ``slots`` is not positive.
        """
        if tick_ms <= 0:
            raise ValueError(f"tick_ms must be positive, got {tick_ms}")
        if slots <= 0:
            raise ValueError(f"slots must be positive, got {slots}")
        self.tick_ms = tick_ms
        self.slots = slots
        self._now_ms = start_ms
        # Every tick before this one has been expired.
        self._next_tick = start_ms // tick_ms + 1
        self._ring: list[list[K]] = [[] for _ in range(slots)]
        # One int object per slot number, shared by all the keys in _filed.
        self._slot_numbers = list(range(slots))
        self._filed: dict[K, int] = {}
        # Heap of the ticks whose slot is not empty. Each tick appears once.
        self._occupied: list[int] = []
        self._far: SortedList = SortedList()
        self._far_tick: dict[K, int] = {}
        self._overdue: list[K] = []

    def __len__(self) -> int:
        return len(self._filed)

    def __contains__(self, key: object) -> bool:
        return key in self._filed

    @property
    def now_ms(self) -> int:
        """Wheel clock: the latest time passed to ``expire``, or the start time."""
        return self._now_ms

    @property
    def horizon_ms(self) -> int:
        """Start of the first tick that lies beyond the ring, in ms."""
        return (self._next_tick + self.slots) * self.tick_ms

    def schedule(self, key: K, deadline_ms: int) -> None:
        """File ``key`` for ``deadline_ms``, replacing its previous deadline.

        A deadline whose tick has already been expired makes the key due at
        the next ``expire`` call. Cost: O(1), plus O(log slots) when the slot
        was empty and O(log n) when the old or the new tick is beyond the
        horizon.
        """
        tick = -(-deadline_ms // self.tick_ms)
        old = self._filed.get(key)
        if old == _FAR:
            self._unfile_far(key)

        if tick < self._next_tick:
            if old != _OVERDUE:
                self._overdue.append(key)
                self._filed[key] = _OVERDUE
            return

        if tick < self._next_tick + self.slots:
            slot = tick % self.slots
            if old != slot:
                self._file_in_ring(key, tick, slot)
            return

        self._far.add((tick, key))
        self._far_tick[key] = tick
        self._filed[key] = _FAR

    def schedule_many(self, entries: Iterable[tuple[K, int]]) -> None:
        """Schedule each ``(key, deadline_ms)`` pair in order.

        Same result as calling ``schedule`` for each pair, with less overhead
        per pair when the new tick is inside the ring. Cost: as ``schedule``,
        per pair.
        """
        tick_ms, slots, ring = self.tick_ms, self.slots, self._ring
        filed, slot_numbers = self._filed, self._slot_numbers
        first_tick, end_tick = self._next_tick, self._next_tick + self.slots
        for key, deadline_ms in entries:
            tick = -(-deadline_ms // tick_ms)
            old = filed.get(key)
            if not (first_tick <= tick < end_tick) or old == _FAR:
                self.schedule(key, deadline_ms)
                continue
            slot = tick % slots
            if old != slot:
                entries_in_slot = ring[slot]
                if not entries_in_slot:
                    heappush(self._occupied, tick)
                entries_in_slot.append(key)
                filed[key] = slot_numbers[slot]

    def cancel(self, key: K) -> bool:
        """Remove ``key`` and return whether it was scheduled.

        Cost: O(1), or O(log n) for a key beyond the horizon.
        """
        old = self._filed.pop(key, None)
        if old == _FAR:
            self._unfile_far(key)
        return old is not None

    def due_ms(self, key: K) -> int | None:
        """Return the start of the tick at which ``key`` becomes due.

        For a key scheduled after its tick had been expired, this is the start
        of the last expired tick. Returns None for a key not scheduled.
        Cost: O(1).
        """
        where = self._filed.get(key)
        if where is None:
            return None
        return self._tick_of(key, where) * self.tick_ms

    def expire(self, now_ms: int) -> list[K]:
        """Advance the clock to ``now_ms``, then remove and return the due keys.

        A key is due once ``now_ms`` reaches the start of its tick. Keys come
        back in tick order. A ``now_ms`` earlier than the clock leaves the
        clock where it is. Cost: O(e + c + s·log slots) for e keys returned, c
        stale copies dropped and s non-empty slots crossed, plus O(log n) per
        key that arrives from beyond the horizon. Empty slots cost nothing, so
        a clock jump of any size costs no more than the keys it makes due.
        """
        if now_ms > self._now_ms:
            self._now_ms = now_ms
        last_tick = self._now_ms // self.tick_ms
        due = self._take_overdue() if self._overdue else []
        if last_tick < self._next_tick:
            return due

        if self._occupied and self._occupied[0] <= last_tick:
            self._empty_slots_until(last_tick, due)
        self._next_tick = last_tick + 1
        # Testing the dict first skips the SortedList call when no key is far.
        if self._far_tick and self._far[0][0] < self._next_tick + self.slots:
            self._pull_far(due, last_tick)
        return due

    def earliest_due(self) -> tuple[int, list[K]] | None:
        """Return the earliest due time and every key due then, or None if empty.

        The due time is a tick start, as in ``due_ms``. Stale copies met on the
        way are dropped, so repeated calls stay cheap. Cost: O(k + c) for k
        keys returned and c stale copies dropped, plus O(log slots) per slot
        that held only stale copies, or O(log n) when the keys are beyond the
        horizon.
        """
        overdue = self._compact_overdue()
        if overdue:
            return (self._next_tick - 1) * self.tick_ms, list(overdue)

        while self._occupied:
            tick = self._occupied[0]
            keys = self._compact_slot(tick % self.slots)
            if keys:
                return tick * self.tick_ms, keys
            heappop(self._occupied)

        if not self._far:
            return None
        tick = self._far[0][0]
        same_tick = self._far.irange((tick,), (tick + 1,), inclusive=(True, False))
        return tick * self.tick_ms, [key for _, key in same_tick]

    def next_due(self, limit: int) -> list[tuple[int, K]]:
        """Return up to ``limit`` keys in due order, each with its due time.

        Keys due in the same tick come in no particular order. Nothing is
        removed. Cost: O(limit + c) for c stale copies skipped, plus
        O(s·log s) to order the s non-empty slots and O(log n) to reach the
        keys beyond the horizon.
        """
        found: list[tuple[int, K]] = []
        for due_ms, key in self._iter_due():
            if len(found) >= limit:
                break
            found.append((due_ms, key))
        return found

    def _iter_due(self) -> Iterator[tuple[int, K]]:
        """Yield each scheduled key once, in due order, with its due time."""
        last_expired_ms = (self._next_tick - 1) * self.tick_ms
        for key in dict.fromkeys(self._overdue):
            if self._filed.get(key) == _OVERDUE:
                yield last_expired_ms, key
        for tick in sorted(self._occupied):
            slot = tick % self.slots
            for key in dict.fromkeys(self._ring[slot]):
                if self._filed.get(key) == slot:
                    yield tick * self.tick_ms, key
        for tick, key in self._far:
            yield tick * self.tick_ms, key

    def _file_in_ring(self, key: K, tick: int, slot: int) -> None:
        entries = self._ring[slot]
        if not entries:
            heappush(self._occupied, tick)
        entries.append(key)
        self._filed[key] = self._slot_numbers[slot]

    def _unfile_far(self, key: K) -> None:
        self._far.remove((self._far_tick.pop(key), key))

    def _take_overdue(self) -> list[K]:
        """Remove and return the keys in the overdue list."""
        if not self._overdue:
            return []
        due = self._compact_overdue()
        for key in due:
            del self._filed[key]
        self._overdue = []
        return due

    def _compact_overdue(self) -> list[K]:
        """Drop stale and repeated copies from the overdue list and return it."""
        self._overdue = [
            key
            for key in dict.fromkeys(self._overdue)
            if self._filed.get(key) == _OVERDUE
        ]
        return self._overdue

    def _empty_slots_until(self, last_tick: int, due: list[K]) -> None:
        """Empty the slots up to ``last_tick``, adding their live keys to ``due``."""
        occupied = self._occupied
        filed = self._filed
        while occupied and occupied[0] <= last_tick:
            slot = heappop(occupied) % self.slots
            entries = self._ring[slot]
            self._ring[slot] = []
            for key in entries:
                # A live key costs one dict operation. A stale copy puts the
                # entry of its key back.
                where = filed.pop(key, None)
                if where == slot:
                    due.append(key)
                elif where is not None:
                    filed[key] = where

    def _pull_far(self, due: list[K], last_tick: int) -> None:
        """Move far keys whose tick is within the horizon into ``due`` or the ring."""
        horizon_tick = self._next_tick + self.slots
        count = self._far.bisect_left((horizon_tick,))
        arriving = list(islice(self._far, count))
        del self._far[:count]
        for tick, key in arriving:
            del self._far_tick[key]
            if tick <= last_tick:
                del self._filed[key]
                due.append(key)
            else:
                self._file_in_ring(key, tick, tick % self.slots)

    def _compact_slot(self, slot: int) -> list[K]:
        """Drop stale and repeated copies from a slot and return the keys left."""
        filed = self._filed
        keys = [
            key for key in dict.fromkeys(self._ring[slot]) if filed.get(key) == slot
        ]
        self._ring[slot] = list(keys)
        return keys

    def _tick_of(self, key: K, where: int) -> int:
        if where == _OVERDUE:
            return self._next_tick - 1
        if where == _FAR:
            return self._far_tick[key]
        # The ring contains ticks next_tick .. next_tick + slots - 1, one per slot.
        return self._next_tick + (where - self._next_tick) % self.slots

    def _check(self) -> None:
        """Assert every internal invariant, for tests. Cost: O(n + slots)."""
        assert self._next_tick == self._now_ms // self.tick_ms + 1
        first, end = self._next_tick, self._next_tick + self.slots

        # The occupied heap lists exactly the non-empty slots, by their tick.
        occupied = sorted(self._occupied)
        assert len(occupied) == len(set(occupied))
        assert self._occupied[:1] == occupied[:1]
        assert all(first <= tick < end for tick in occupied)
        occupied_slots = {tick % self.slots for tick in occupied}
        for slot, entries in enumerate(self._ring):
            assert bool(entries) == (slot in occupied_slots), slot

        # Each key is filed in exactly the place that _filed names.
        for key, where in self._filed.items():
            if where == _OVERDUE:
                assert key in self._overdue, key
            elif where == _FAR:
                assert (self._far_tick[key], key) in self._far, key
                assert self._far_tick[key] >= end, key
            else:
                assert 0 <= where < self.slots, key
                assert where is self._slot_numbers[where], key
                assert key in self._ring[where], key

        # The far index contains exactly the keys filed beyond the horizon.
        assert len(self._far) == len(self._far_tick)
        for tick, key in self._far:
            assert self._filed.get(key) == _FAR, key
            assert self._far_tick[key] == tick, key
