"""The outage rule, which tells a stopped pipeline from stopped devices.

A partition with many devices never goes quiet while its devices live,
because some heartbeat arrives every moment. So the monitor announces a
DOWN only once it has read a record appended at or after the device's
deadline, which proves that heartbeats still reached the partition then.
Until then the DOWN is held. When the held DOWNs that are due exceed a
share of the partition's devices, the partition is DEGRADED, and one
monitoring event replaces the DOWNs. Small partitions are judged together,
as monitor/pool.py describes.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedList

from monitor.shard import Transition


@dataclass(frozen=True, slots=True)
class OutageRule:
    """When due DOWNs of one partition count as a pipeline outage.

    `share` is a fraction of the partition's devices (UP plus held), strictly
    between 0 and 1. A partition with fewer than `min_devices` devices is
    judged in the monitor's pool of small partitions (monitor/pool.py). Only
    when that pool has fewer than `min_devices` devices too are its DOWNs
    announced at their judge time.
    """

    share: float
    min_devices: int

    def applies_to(self, devices: int) -> bool:
        return devices >= self.min_devices

    def is_outage(self, due: int, devices: int) -> bool:
        return due >= self.min_devices and due > self.share * devices


@dataclass(frozen=True, slots=True)
class Degraded:
    """A partition in DEGRADED state.

    `since_ms` is the partition clock when it entered, `last_record_ms` the
    append time of the last record before the silence, and `devices` the
    number of DOWNs it held back then.
    """

    since_ms: int
    last_record_ms: int
    devices: int


class HeldDowns:
    """DOWN transitions not announced yet, ordered by when they may be announced.

    A held device is DOWN in its shard. Its `judge_ms` is its deadline, or
    later when monitoring was restored after an outage. Cost: O(log n) per
    add and discard, O(k log n) to pop k entries.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, tuple[int, Transition]] = {}
        self._order: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self._by_device)

    def __contains__(self, device_id: str) -> bool:
        return device_id in self._by_device

    def __iter__(self) -> Iterator[tuple[int, Transition]]:
        return iter(self._by_device.values())

    def add(self, transition: Transition, judge_ms: int) -> None:
        self.discard(transition.device_id)
        self._by_device[transition.device_id] = (judge_ms, transition)
        self._order.add((judge_ms, transition.device_id))

    def discard(self, device_id: str) -> bool:
        """Stop holding a device and return whether it was held."""
        entry = self._by_device.pop(device_id, None)
        if entry is None:
            return False
        self._order.remove((entry[0], device_id))
        return True

    def judge_ms(self, device_id: str) -> int | None:
        entry = self._by_device.get(device_id)
        return None if entry is None else entry[0]

    def count_until(self, time_ms: int) -> int:
        """Return how many held DOWNs have `judge_ms` at or before `time_ms`."""
        return int(self._order.bisect_left((time_ms + 1,)))

    def count_silent_through(self, restored_ms: int, gap_ms: int, until_ms: int) -> int:
        """Return how many DOWNs due at `until_ms` had their silence confirmed.

        That is a DOWN of a device last seen before `restored_ms`, with a
        timeout more than twice `gap_ms`, the longest time without records
        since `restored_ms`: the pipeline delivered records all along while
        the device stayed silent. O(k) for the k DOWNs due.
        """
        due = self._order[: self.count_until(until_ms)]
        count = 0
        for _, device_id in due:
            transition = self._by_device[device_id][1]
            if (
                transition.last_seen_ms < restored_ms
                and transition.timeout_ms > 2 * gap_ms
            ):
                count += 1
        return count

    def count_between(self, after_ms: int, until_ms: int) -> int:
        """Return how many held DOWNs have `after_ms < judge_ms <= until_ms`."""
        if until_ms <= after_ms:
            return 0
        return self.count_until(until_ms) - self.count_until(after_ms)

    def pop_until(self, time_ms: int) -> list[Transition]:
        """Remove and return the held DOWNs due at `time_ms`, earliest first."""
        count = self.count_until(time_ms)
        due = [
            self._by_device.pop(device_id)[1] for _, device_id in self._order[:count]
        ]
        del self._order[:count]
        return due

    def postpone(self, restored_ms: int) -> None:
        """Make every held DOWN wait one full timeout from `restored_ms`. O(n log n)."""
        entries = list(self._by_device.values())
        self._by_device.clear()
        self._order.clear()
        for judge_ms, transition in entries:
            self.add(transition, max(judge_ms, restored_ms + transition.timeout_ms))
