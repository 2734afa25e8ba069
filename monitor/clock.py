"""The per-partition clock that deadlines are judged against."""


class PartitionClock:
    """Event time of one partition: how far its heartbeats have really been read.

    The clock is the newest broker append time read from the partition. While
    the consumer has read everything the broker holds (it is caught up), the
    clock also follows the wall clock minus a grace for records appended but
    not yet fetched. While the consumer lags, the clock stops at the last
    record read, so a backlog never looks like silence.
    """

    __slots__ = ("partition", "now_ms", "grace_ms")

    def __init__(self, partition: int, grace_ms: int) -> None:
        self.partition = partition
        self.grace_ms = grace_ms
        self.now_ms = 0

    def observe(self, record_ms: int) -> None:
        """Move the clock to a record's append time; it never goes backwards."""
        if record_ms > self.now_ms:
            self.now_ms = record_ms

    def follow_wall_clock(self, wall_ms: int) -> None:
        """Advance the clock while the partition is caught up."""
        candidate = wall_ms - self.grace_ms
        if candidate > self.now_ms:
            self.now_ms = candidate
