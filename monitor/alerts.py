"""Alert events built from shard transitions and partition outages."""

from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    SEVERITY,
    AlertEvent,
    event_id_for,
)
from monitor.outage import Degraded
from monitor.shard import DOWN, Transition


def device_event(
    partition: int,
    transition: Transition,
    detected_ms: int,
    attrs: dict[str, str] | None = None,
) -> AlertEvent:
    """Build the DEVICE_DOWN or DEVICE_RECOVERED event of a shard transition.

    `detected_ms` is the partition clock when the DOWN is announced, or the
    time of the heartbeat that ended the episode for a RECOVERED.
    """
    kind = DEVICE_DOWN if transition.kind == DOWN else DEVICE_RECOVERED
    timeout_s = transition.timeout_ms / 1000
    if kind == DEVICE_DOWN:
        downtime_ms = None
        message = (
            f"Device {transition.device_id} sent no heartbeat within its "
            f"{timeout_s:g} s timeout and is DOWN."
        )
    else:
        downtime_ms = transition.at_ms - transition.last_seen_ms
        message = (
            f"Device {transition.device_id} is sending heartbeats again after "
            f"{downtime_ms / 1000:.0f} s of silence."
        )
    return AlertEvent(
        event_id=event_id_for(kind, transition.device_id, transition.last_seen_ms),
        type=kind,
        device_id=transition.device_id,
        severity=SEVERITY[kind],
        last_seen_ms=transition.last_seen_ms,
        deadline_ms=transition.deadline_ms,
        timeout_ms=transition.timeout_ms,
        detected_ms=detected_ms,
        partition=partition,
        message=message,
        downtime_ms=downtime_ms,
        attrs=attrs or None,
    )


def degraded_event(partition: int, degraded: Degraded, timeout_ms: int) -> AlertEvent:
    """Build the MONITORING_DEGRADED event of a partition that fell silent."""
    silent_s = (degraded.since_ms - degraded.last_record_ms) / 1000
    if silent_s >= 1:
        opening = (
            f"Heartbeat partition {partition} received nothing for {silent_s:.0f} s, "
            f"so {degraded.devices} devices missed their deadlines at once."
        )
    else:
        # Records were still arriving: many devices stopped together.
        opening = (
            f"{degraded.devices} devices of heartbeat partition {partition} missed "
            "their deadlines at once."
        )
    return AlertEvent(
        event_id=event_id_for(
            MONITORING_DEGRADED, partition_subject(partition), degraded.last_record_ms
        ),
        type=MONITORING_DEGRADED,
        device_id="",
        severity=SEVERITY[MONITORING_DEGRADED],
        last_seen_ms=degraded.last_record_ms,
        deadline_ms=degraded.last_record_ms + timeout_ms,
        timeout_ms=timeout_ms,
        detected_ms=degraded.since_ms,
        partition=partition,
        message=(
            f"{opening} The monitor suspects the pipeline (ingest, broker or network) "
            "and holds their DOWN alerts until heartbeats arrive again."
        ),
        devices=degraded.devices,
    )


def restored_event(
    partition: int, degraded: Degraded, restored_ms: int, timeout_ms: int, held: int
) -> AlertEvent:
    """Build the MONITORING_RESTORED event that ends a DEGRADED episode."""
    return AlertEvent(
        event_id=event_id_for(
            MONITORING_RESTORED, partition_subject(partition), degraded.last_record_ms
        ),
        type=MONITORING_RESTORED,
        device_id="",
        severity=SEVERITY[MONITORING_RESTORED],
        last_seen_ms=degraded.last_record_ms,
        deadline_ms=degraded.last_record_ms + timeout_ms,
        timeout_ms=timeout_ms,
        detected_ms=restored_ms,
        partition=partition,
        message=(
            f"Heartbeats reach partition {partition} again after "
            f"{(restored_ms - degraded.last_record_ms) / 1000:.0f} s. Each of its "
            f"devices gets one full timeout from now before it is judged; "
            f"{held} devices silent since the outage are DOWN unless they "
            "send a heartbeat by then."
        ),
        downtime_ms=restored_ms - degraded.last_record_ms,
        devices=held,
    )


def partition_subject(partition: int) -> str:
    """Return the key and event-id subject of a partition's monitoring events.

    Ingest rejects device ids that contain "#", so for heartbeats that came
    through ingest the two kinds of subject cannot collide.
    """
    return f"#partition-{partition}"
