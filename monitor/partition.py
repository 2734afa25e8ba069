"""Everything the monitor keeps for one heartbeat partition.

A PartitionState joins the partition's shard, clock and held DOWNs, applies
the outage rule (see monitor/outage.py and monitor/pool.py), remembers which
devices changed since the last commit, and turns those changes into
changelog records.
"""

from hbmon.events import AlertEvent, InvalidRecord
from monitor.alerts import degraded_event, device_event, restored_event
from monitor.changelog import (
    PARTITION_KEY,
    DeviceRecord,
    PartitionRecord,
    decode_device,
    decode_partition,
    encode_device,
    encode_partition,
)
from monitor.clock import PartitionClock
from monitor.outage import Degraded, HeldDowns, OutageRule
from monitor.pool import OutagePool
from monitor.shard import DOWN, Shard, Transition

# Maximum characters of routing attributes (keys and values) kept per device.
ROUTING_ATTRS_MAX_CHARS = 8192


class PartitionState:
    """Devices, clock, held DOWNs and outage state of one partition.

    `observe` and `judge` return the alert events to publish. The caller
    publishes them in the same transaction as `changelog_records()`. Without
    a `pool`, the partition is the only one in a pool of its own.
    """

    def __init__(
        self,
        shard: Shard,
        clock: PartitionClock,
        rule: OutageRule,
        pool: OutagePool | None = None,
    ) -> None:
        self.partition = shard.partition
        self.shard = shard
        self.clock = clock
        self.rule = rule
        if pool is None:
            pool = OutagePool(rule)
            pool.partitions[self.partition] = self
        self.pool = pool
        self.held_downs = HeldDowns()
        # Routing attributes (string values only) of devices that sent any.
        self.attrs: dict[str, dict[str, str]] = {}
        # Devices whose changelog record is out of date.
        self.dirty: set[str] = set()
        self.degraded: Degraded | None = None
        # When monitoring was last restored after an outage. A device silent
        # since before then is judged one full timeout after it.
        self.restored_ms = 0
        # The maximum gap between consecutive records read since `restored_ms`,
        # the first counted from `restored_ms`. None when unknown, as after a
        # restart.
        self.gap_since_restored_ms: int | None = None
        # Set while the consumer has lost contact with the broker: nothing is
        # judged until contact returns. Not stored in the state topic.
        self.contact_lost = False
        self._written_partition_value = b""

    @property
    def devices_down(self) -> int:
        """Devices whose DOWN was announced and that have not recovered."""
        return self.shard.down_count - len(self.held_downs)

    @property
    def devices_judged(self) -> int:
        """Devices UP or held, which the outage rule counts."""
        return len(self.shard) - self.devices_down

    # Heartbeats

    def observe(
        self,
        device_id: str,
        record_ms: int,
        timeout_ms: int | None,
        attrs: dict[str, object] | None = None,
    ) -> list[AlertEvent]:
        """Apply one heartbeat record appended at `record_ms` and return the events.

        A record that reaches a new tick of the shard clock first has the
        deadlines before it judged at its own time, because every earlier
        record of the partition has been read by then. So a backlog read in
        large batches after a restart gets the same verdicts as a live
        monitor.
        """
        events: list[AlertEvent] = []
        clock = self.clock
        if record_ms > clock.now_ms and self._reaches_new_tick(record_ms):
            events.extend(self.judge(record_ms))
        if self.degraded is not None:
            events.append(self._end_outage(record_ms))
        gap = self.gap_since_restored_ms
        if gap is not None and record_ms - clock.last_record_ms > gap:
            # A gap that began before the restore counts from the restore.
            since_restored_ms = record_ms - self.restored_ms
            self.gap_since_restored_ms = max(
                gap, min(record_ms - clock.last_record_ms, since_restored_ms)
            )
        clock.observe(record_ms)
        transition = self.shard.observe(device_id, record_ms, timeout_ms)
        self.dirty.add(device_id)
        if attrs:
            self._store_attrs(device_id, attrs)
        if transition is not None and not self.held_downs.discard(device_id):
            events.append(
                device_event(
                    self.partition, transition, record_ms, self.attrs.get(device_id)
                )
            )
        return events

    def _reaches_new_tick(self, time_ms: int) -> bool:
        judged_ms = self.shard.clock_ms
        tick_ms = self.shard.tick_ms
        return judged_ms is None or time_ms // tick_ms > judged_ms // tick_ms

    def follow_wall_clock(self, wall_ms: int, contact_ms: int | None = None) -> None:
        """Advance the clock of a caught-up partition, unless it is DEGRADED.

        The clock never passes `contact_ms`, the last time the consumer heard
        from the broker; see PartitionClock.follow_wall_clock.
        """
        if self.degraded is None and not self.contact_lost:
            self.clock.follow_wall_clock(wall_ms, contact_ms)

    # Contact with the broker

    def lose_contact(self) -> None:
        """Stop judging until `regain_contact`, because the broker is unreachable."""
        self.contact_lost = True

    def regain_contact(self, contact_ms: int) -> None:
        """Resume judging after lost contact, as after an outage ending at `contact_ms`.

        Heartbeats sent while the broker was unreachable may never have been
        appended, so each device silent since before then is judged one full
        timeout after contact returned.
        """
        if self.contact_lost:
            self.contact_lost = False
            self._restore_monitoring(contact_ms)

    # Deadlines

    def judge(self, now_ms: int) -> list[AlertEvent]:
        """Expire deadlines up to `now_ms`, apply the outage rule, return the events.

        A DOWN is announced once a record appended at or after its judge
        time was read: from this partition, or from any partition of the
        monitor when this one is small. When due held DOWNs make an outage
        of the partition, or of the pool of small partitions, the partition
        enters DEGRADED and its clock stops. A pool too small for the rule
        announces DOWNs when their judge time passes. Nothing is judged
        while contact with the broker is lost.
        """
        if self.contact_lost:
            return []
        events: list[AlertEvent] = []
        if self.degraded is not None:
            evidence_ms = self.pool.evidence_ms(self)
            if not self._pool_restores_degraded(evidence_ms):
                return []
            events.append(self._end_outage(evidence_ms))
        for transition in self.shard.expire(now_ms):
            judge_ms = max(
                transition.deadline_ms, self.restored_ms + transition.timeout_ms
            )
            self.held_downs.add(transition, judge_ms)
            self.dirty.add(transition.device_id)
        if not self.held_downs:
            return events
        pooled = self.pool.is_small(self)

        # 1. Announce what later records confirm.
        evidence_ms = self.clock.last_record_ms
        if pooled:
            evidence_ms = self.pool.evidence_ms(self)
        events.extend(self._announce(self.held_downs.pop_until(evidence_ms), now_ms))

        # 2. A pool too small for the rule announces at the judge time.
        devices = self.pool.devices(self) if pooled else self.devices_judged
        if not self.rule.applies_to(devices):
            events.extend(self._announce(self.held_downs.pop_until(now_ms), now_ms))
            return events

        # 3. Too many unconfirmed DOWNs at once: suspect the pipeline.
        due = self.held_downs.count_until(now_ms)
        outage_due = due
        if pooled:
            outage_due += self.pool.unconfirmed_due_elsewhere(self, evidence_ms)
        else:
            # Devices silent through a full timeout in which records kept
            # arriving failed on their own, so they count neither way.
            confirmed = self._silent_through_restore(now_ms)
            outage_due -= confirmed
            devices -= confirmed
        if due and self.rule.is_outage(outage_due, devices):
            self.degraded = Degraded(now_ms, self.clock.last_record_ms, due)
            events.append(
                degraded_event(self.partition, self.degraded, self._timeout_ms())
            )
        return events

    def _announce(self, transitions: list[Transition], now_ms: int) -> list[AlertEvent]:
        for transition in transitions:
            self.dirty.add(transition.device_id)
        return [
            device_event(self.partition, t, now_ms, self.attrs.get(t.device_id))
            for t in transitions
        ]

    def _pool_restores_degraded(self, evidence_ms: int) -> bool:
        """Return whether a record read elsewhere ends this small partition's DEGRADED.

        A record appended after the partition entered DEGRADED shows that data
        flows again, even when the partition's own devices are all silent.
        """
        assert self.degraded is not None
        return self.pool.is_small(self) and evidence_ms > self.degraded.since_ms

    def _end_outage(self, record_ms: int) -> AlertEvent:
        assert self.degraded is not None
        degraded, self.degraded = self.degraded, None
        self._restore_monitoring(record_ms)
        return restored_event(
            self.partition,
            degraded,
            record_ms,
            self._timeout_ms(),
            len(self.held_downs),
        )

    def _silent_through_restore(self, now_ms: int) -> int:
        """Return how many due DOWNs stayed silent while records kept arriving.

        See HeldDowns.count_silent_through. The time from the last record to
        `now_ms` counts as a gap too, so a pipeline that stopped again after
        the restore counts for none of them once half their timeout passed.
        """
        gap = self.gap_since_restored_ms
        if gap is None or not self.restored_ms:
            return 0
        last_ms = max(self.clock.last_record_ms, self.restored_ms)
        gap = max(gap, now_ms - last_ms)
        return self.held_downs.count_silent_through(self.restored_ms, gap, now_ms)

    def _restore_monitoring(self, restored_ms: int) -> None:
        if restored_ms > self.restored_ms:
            self.gap_since_restored_ms = 0
        self.restored_ms = max(self.restored_ms, restored_ms)
        self.held_downs.postpone(self.restored_ms)
        # The held DOWNs' new judge times go to the state topic too.
        self.dirty.update(transition.device_id for _, transition in self.held_downs)

    def _timeout_ms(self) -> int:
        return self.shard.default_timeout_ms

    def _store_attrs(self, device_id: str, attrs: dict[str, object]) -> None:
        # Ingest caps attrs at a few KiB, but another producer might not, and
        # every alert event of the device carries these.
        routing: dict[str, str] = {}
        size = 0
        for key, value in attrs.items():
            if isinstance(value, str):
                size += len(key) + len(value)
                if size > ROUTING_ATTRS_MAX_CHARS:
                    break
                routing[key] = value
        if routing:
            self.attrs[device_id] = routing

    # Changelog

    def changelog_records(self) -> list[tuple[bytes, bytes | None]]:
        """Return changelog records of what changed since the last call.

        Those are the devices changed, then the partition record if it
        changed. Cost: O(changed devices).
        """
        records: list[tuple[bytes, bytes | None]] = []
        for device_id in self.dirty:
            state = self.shard.device(device_id)
            key = device_id.encode()
            if state is None:
                records.append((key, None))
                continue
            record = DeviceRecord(
                state.last_seen_ms,
                state.timeout_ms,
                state.down,
                self.held_downs.judge_ms(device_id),
                self.attrs.get(device_id),
            )
            records.append((key, encode_device(record)))
        self.dirty.clear()
        partition_value = encode_partition(self.partition_record())
        if partition_value != self._written_partition_value:
            records.append((PARTITION_KEY, partition_value))
            self._written_partition_value = partition_value
        return records

    def partition_record(self) -> PartitionRecord:
        return PartitionRecord(
            self.clock.now_ms,
            self.clock.last_record_ms,
            self.restored_ms,
            self.degraded,
        )

    def load(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one changelog record while restoring.

        Raises:
            InvalidRecord: the key or value cannot be decoded.
        """
        if key is None or not key:
            raise InvalidRecord("key", "is missing")
        if key == PARTITION_KEY:
            if value is not None:
                self._load_partition(decode_partition(value))
            return
        try:
            device_id = key.decode()
        except UnicodeDecodeError as err:
            raise InvalidRecord("key", f"is not UTF-8 ({err})") from err
        if value is None:
            self.shard.forget(device_id)
            self.held_downs.discard(device_id)
            self.attrs.pop(device_id, None)
            return
        self._load_device(device_id, decode_device(value))

    def _load_partition(self, record: PartitionRecord) -> None:
        self.clock.restore(record.clock_ms, record.last_record_ms)
        self.restored_ms = record.restored_ms
        self.degraded = record.degraded

    def _load_device(self, device_id: str, record: DeviceRecord) -> None:
        self.shard.restore(
            device_id, record.last_seen_ms, record.timeout_ms, record.down
        )
        if device_id in self.held_downs:
            self.held_downs.discard(device_id)
        if record.held_ms is not None:
            # The shard clamps the timeout into its bounds; the DOWN uses that.
            state = self.shard.device(device_id)
            assert state is not None
            transition = Transition(
                DOWN,
                device_id,
                state.last_seen_ms,
                state.deadline_ms,
                state.timeout_ms,
                record.held_ms,
            )
            self.held_downs.add(transition, record.held_ms)
        if record.attrs:
            self.attrs[device_id] = record.attrs
        else:
            self.attrs.pop(device_id, None)
