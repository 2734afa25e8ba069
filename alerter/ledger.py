"""Which record offsets may be committed: the lowest unsettled one per partition.

A record is settled when every notification that depends on it was
delivered or parked, or when it needed none. The worker while it handles a
record, each group that contains its events and each channel queue take a
hold on the record and release it when done. At zero holds it is settled. The
committable position of a partition is its lowest unsettled offset, or
the offset after the last record read when all are settled. A partition
whose first record read is unsettled has nothing to commit.
"""

import threading
from dataclasses import dataclass

from sortedcontainers import SortedDict


@dataclass(frozen=True, slots=True)
class RecordRef:
    """A record of the alert topic, by partition and offset.

    `epoch` changes each time the partition is assigned, so holds from a
    previous assignment cannot settle records of the current one.
    """

    partition: int
    offset: int
    epoch: int


class OffsetLedger:
    """Pending offsets per partition, with hold counts. Thread-safe.

    hold() and release() cost O(log n) in the partition's pending records;
    committable() costs O(partitions).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, SortedDict] = {}
        self._next: dict[int, int] = {}
        self._first: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._epochs: dict[int, int] = {}

    def assign(self, partitions: list[int]) -> None:
        """Start tracking `partitions` afresh, as after a rebalance."""
        with self._lock:
            for partition in partitions:
                self._epochs[partition] = self._epochs.get(partition, 0) + 1
                self._pending[partition] = SortedDict()
                self._next.pop(partition, None)
                self._first.pop(partition, None)
                self._committed.pop(partition, None)

    def revoke(self, partitions: list[int]) -> None:
        """Stop tracking `partitions`; holds on their records become no-ops."""
        with self._lock:
            for partition in partitions:
                self._epochs[partition] = self._epochs.get(partition, 0) + 1
                self._pending.pop(partition, None)
                self._next.pop(partition, None)
                self._first.pop(partition, None)
                self._committed.pop(partition, None)

    def read(self, partition: int, offset: int) -> RecordRef:
        """Register a record just read, held once by the reader."""
        with self._lock:
            pending = self._pending.setdefault(partition, SortedDict())
            epoch = self._epochs.setdefault(partition, 1)
            pending[offset] = pending.get(offset, 0) + 1
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)
            self._first.setdefault(partition, offset)
            return RecordRef(partition, offset, epoch)

    def hold(self, ref: RecordRef) -> None:
        with self._lock:
            pending = self._current(ref)
            if pending is not None and ref.offset in pending:
                pending[ref.offset] += 1

    def release(self, ref: RecordRef) -> None:
        with self._lock:
            pending = self._current(ref)
            if pending is None or ref.offset not in pending:
                return
            pending[ref.offset] -= 1
            if pending[ref.offset] <= 0:
                del pending[ref.offset]

    def committable(self) -> dict[int, int]:
        """Return the positions that advanced since mark_committed(), by partition."""
        with self._lock:
            positions = {}
            for partition, pending in self._pending.items():
                if partition not in self._next:
                    continue
                position = pending.peekitem(0)[0] if pending else self._next[partition]
                floor = max(self._committed.get(partition, -1), self._first[partition])
                if position > floor:
                    positions[partition] = position
            return positions

    def mark_committed(self, positions: dict[int, int]) -> None:
        with self._lock:
            for partition, position in positions.items():
                if partition in self._pending:
                    self._committed[partition] = position

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(pending) for pending in self._pending.values())

    def _current(self, ref: RecordRef) -> SortedDict | None:
        if self._epochs.get(ref.partition) != ref.epoch:
            return None
        return self._pending.get(ref.partition)
