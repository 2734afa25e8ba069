"""The per-partition clock that deadlines are judged against."""


class PartitionClock:
    """Event time of one partition: how far its heartbeats have really been read.

    The clock is the newest broker append time read from the partition. While
    the consumer has read everything the broker holds (it is caught up), the
    clock also follows the wall clock minus a grace for records appended but
    not yet fetched, but never passes the last time the consumer heard from
    the broker. While the consumer lags, the clock stops at the last record
    read, so a backlog never looks like silence.

    `last_record_ms` is the append time of the newest record read, without
    the wall clock part: the partition has been silent since then.
    """

    __slots__ = ("partition", "now_ms", "last_record_ms", "grace_ms")

    def __init__(self, partition: int, grace_ms: int) -> None:
        self.partition = partition
        self.grace_ms = grace_ms
        self.now_ms = 0
        self.last_record_ms = 0

    def observe(self, record_ms: int) -> None:
        """Move the clock to a record's append time, never backwards."""
        if record_ms > self.last_record_ms:
            self.last_record_ms = record_ms
        if record_ms > self.now_ms:
            self.now_ms = record_ms

    def follow_wall_clock(self, wall_ms: int, contact_ms: int | None = None) -> None:
        """Advance the clock while the partition is caught up.

        `contact_ms` is when the consumer last heard from the partition's
        leader. The cached high watermark that marks it caught up is no newer
        than that, so the clock stops there while the broker is unreachable.
        """
        candidate = wall_ms - self.grace_ms
        if contact_ms is not None:
            candidate = min(candidate, contact_ms)
        if candidate > self.now_ms:
            self.now_ms = candidate

    def restore(self, now_ms: int, last_record_ms: int) -> None:
        """Resume at the times saved before a restart, never moving backwards."""
        self.now_ms = max(self.now_ms, now_ms)
        self.last_record_ms = max(self.last_record_ms, last_record_ms)
