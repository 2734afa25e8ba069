"""The partitions of one monitor, for the outage rules that span partitions.

A partition with fewer devices than the outage rule's `min_devices` cannot
tell a pipeline outage from its own devices falling silent. The small
partitions of one monitor are therefore judged as one pool:

- Evidence: a held DOWN of a small partition is confirmed by a record
  appended at or after its judge time in any partition the monitor owns,
  which proves that the pipeline delivered data then.
- Pooling: the due, unconfirmed DOWNs of all small partitions are compared
  with all their devices, using the same share and `min_devices`. A pool
  with fewer than `min_devices` devices announces DOWNs at the judge time.
"""

from typing import TYPE_CHECKING

from monitor.outage import OutageRule

if TYPE_CHECKING:
    from monitor.partition import PartitionState


class OutagePool:
    """The partitions one monitor owns, keyed by partition number.

    Nothing here runs per heartbeat. Cost: the pool sums run over the owned
    partitions, O(p log n) for p partitions, when a small partition with
    held DOWNs is judged.
    """

    def __init__(self, rule: OutageRule) -> None:
        self.rule = rule
        self.partitions: dict[int, PartitionState] = {}

    def evidence_ms(self, judging: "PartitionState") -> int:
        """Return the newest append time of a record read from any owned partition."""
        newest_ms = judging.clock.last_record_ms
        for state in self.partitions.values():
            newest_ms = max(newest_ms, state.clock.last_record_ms)
        return newest_ms

    def is_small(self, state: "PartitionState") -> bool:
        return not self.rule.applies_to(state.devices_judged)

    def small_partitions(self, judging: "PartitionState") -> list["PartitionState"]:
        """Return the small partitions, with `judging` first even if not owned yet."""
        others = [
            state
            for state in self.partitions.values()
            if state is not judging and self.is_small(state)
        ]
        return [judging, *others]

    def devices(self, judging: "PartitionState") -> int:
        """Return the devices of the pool, which the outage rule counts."""
        return sum(state.devices_judged for state in self.small_partitions(judging))

    def unconfirmed_due_elsewhere(
        self, judging: "PartitionState", evidence_ms: int
    ) -> int:
        """Return the due DOWNs of the other small partitions that no record confirms.

        A DOWN there is due once that partition was judged at or after its
        judge time, and confirmed once `evidence_ms` reached it.
        """
        due = 0
        for state in self.small_partitions(judging)[1:]:
            judged_ms = state.shard.clock_ms
            if judged_ms is not None:
                due += state.held_downs.count_between(evidence_ms, judged_ms)
        return due
