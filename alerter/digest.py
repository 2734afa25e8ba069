"""Texts of notifications: one event in full, or a group with counts and a list.

A notification with one DOWN, RECOVERED or monitoring event reads like the
one-event mail of alerter.message. A group lists its devices by name. Above
the route's digest threshold it becomes a digest, which names the first
devices and attaches the full list as CSV.
"""

import csv
import html
import io
from datetime import datetime

from alerter.message import (
    count_devices,
    downtime_ms,
    format_duration_short,
    format_duration_words,
    format_utc,
    format_utc_age,
    monitoring_sentence,
    printable,
    render_body,
    render_html,
    render_subject,
    short_device,
)
from alerter.notification import Item, Kind, Notification
from alerter.routing import DEVICE_LABEL

CSV_NAME = "devices.csv"
_ONE_EVENT_KINDS = (Kind.DOWN, Kind.RECOVERED, Kind.DEGRADED, Kind.RESTORED)


def subject(notification: Notification, now: datetime, heartbeat_topic: str) -> str:
    """Return a subject that fits a phone lock screen, such as
    `[DOWN] 1,000 devices (site plant-3) silent since 14:02:11Z`."""
    items = notification.items
    kind = notification.kind
    if len(items) == 1 and kind in _ONE_EVENT_KINDS:
        return render_subject(items[0].event, heartbeat_topic=heartbeat_topic)
    if kind in (Kind.DEGRADED, Kind.RESTORED):
        devices_held = device_count(notification)
        verb = (
            f"silent, {count_devices(devices_held)} not judged"
            if kind is Kind.DEGRADED
            else ("heard again")
        )
        return (
            f"[{kind}] {count_partitions(partition_count(notification))} of "
            f"{printable(heartbeat_topic)} {verb}"
        )

    devices = (
        short_device(items[0].event.device_id)
        if len(items) == 1
        else f"{len(items):,} devices{_labels(notification)}"
    )
    if kind is Kind.DOWN:
        first = min(item.event.last_seen_ms for item in items)
        return (
            f"[DOWN] {devices} silent since {format_utc(first, 'last_seen_ms')[11:19]}Z"
        )
    if kind is Kind.RECOVERED:
        longest = max(downtime_ms(item.event) for item in items)
        return (
            f"[RECOVERED] {devices} back, longest down {format_duration_short(longest)}"
        )
    if kind is Kind.REMINDER:
        longest = max(_silent_ms(item, now) for item in items)
        return f"[STILL DOWN] {devices} silent for {format_duration_short(longest)}"
    return f"[FLAPPING] {devices} changing state, mails held until stable"


def text(notification: Notification, now: datetime, heartbeat_topic: str) -> str:
    """Return the plain-text body."""
    items = notification.items
    if len(items) == 1 and notification.kind in _ONE_EVENT_KINDS:
        return render_body(items[0].event, now, heartbeat_topic=heartbeat_topic)
    lines = [summary(notification, now, heartbeat_topic), ""]
    for item in listed(notification):
        lines.append(f"- {item_line(item, notification.kind, now, heartbeat_topic)}")
    more = len(items) - len(listed(notification))
    if more:
        lines += ["", f"... and {more:,} more; the full list is attached ({CSV_NAME})."]
    lines += ["", _footer(notification)]
    return "\n".join(lines) + "\n"


def html_text(notification: Notification, now: datetime, heartbeat_topic: str) -> str:
    """Return the HTML alternative of text()."""
    items = notification.items
    if len(items) == 1 and notification.kind in _ONE_EVENT_KINDS:
        return render_html(items[0].event, now, heartbeat_topic=heartbeat_topic)
    kind = notification.kind
    rows = "".join(
        f"<li>{html.escape(item_line(item, kind, now, heartbeat_topic))}</li>"
        for item in listed(notification)
    )
    more = len(items) - len(listed(notification))
    tail = (
        f"<p>... and {more:,} more; the full list is attached ({CSV_NAME}).</p>"
        if more
        else ""
    )
    return (
        f"<html><body><p><b>{html.escape(summary(notification, now, heartbeat_topic))}"
        f"</b></p><ul>{rows}</ul>{tail}<p>{html.escape(_footer(notification))}</p>"
        "</body></html>"
    )


def summary(notification: Notification, now: datetime, heartbeat_topic: str) -> str:
    """Return the opening sentence: what happened, to how many, since when."""
    items = notification.items
    count = len(items)
    where = _labels(notification)
    kind = notification.kind
    if kind in (Kind.DEGRADED, Kind.RESTORED):
        if count == 1:
            return monitoring_sentence(items[0].event, heartbeat_topic)
        # One sentence for all partitions, because the list below names each.
        topic = printable(heartbeat_topic)
        devices = device_count(notification)
        partitions = count_partitions(partition_count(notification))
        if kind is Kind.DEGRADED:
            return (
                f"Monitoring degraded: {partitions} of {topic} went silent; "
                f"{count_devices(devices)} {'is' if devices == 1 else 'are'} not being "
                "judged."
            )
        return (
            f"Monitoring restored: {partitions} of {topic} are heard again; "
            "their devices are judged again."
        )
    if kind is Kind.DOWN:
        first = min(item.event.last_seen_ms for item in items)
        return (
            f"{count:,} devices{where} are DOWN. The first went silent at "
            f"{format_utc_age(first, 'last_seen_ms', now)}."
        )
    if kind is Kind.RECOVERED:
        times = [downtime_ms(item.event) for item in items]
        return (
            f"{count:,} devices{where} RECOVERED after "
            f"{format_duration_words(min(times))} to "
            f"{format_duration_words(max(times))} of silence."
        )
    if kind is Kind.REMINDER:
        return (
            f"Reminder: {count:,} devices{where} are still DOWN, the longest for "
            f"{format_duration_words(max(_silent_ms(i, now) for i in items))}."
        )
    return (
        f"{count:,} devices{where} are flapping between DOWN and RECOVERED. Their "
        "DOWN and RECOVERED mails are held until they are stable; then one mail "
        "tells the state they settled in."
    )


def device_count(notification: Notification) -> int:
    """Return how many devices a notification concerns.

    A device notification has one item per device. A monitoring one has one
    per event, whose event gives the devices not judged (DEGRADED) or still
    silent (RESTORED); a partition that has several counts its latest.
    """
    if notification.kind in (Kind.DEGRADED, Kind.RESTORED):
        latest: dict[int, int] = {}
        for item in sorted(notification.items, key=lambda i: i.event.detected_ms):
            latest[item.event.partition] = item.event.devices or 0
        return sum(latest.values())
    return len(notification.items)


def partition_count(notification: Notification) -> int:
    """Return how many partitions the events of a monitoring notification name."""
    return len({item.event.partition for item in notification.items})


def count_partitions(count: int) -> str:
    """Return "1 partition" or "3 partitions"."""
    return f"{count:,} partition{'' if count == 1 else 's'}"


def listed(notification: Notification) -> list[Item]:
    """Return the items named in the body: all, or the first in a digest, in order.

    Devices are in order of their ids, monitoring events of their partitions.
    """
    items = sorted(
        notification.items,
        key=lambda item: (item.event.device_id, item.event.partition),
    )
    if notification.is_digest:
        return items[: notification.digest_threshold]
    return items


def devices_csv(notification: Notification) -> str:
    """Return every item as CSV: device, event, times in UTC, downtime, attributes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "device_id",
            "event_type",
            "last_seen",
            "detected_at",
            "downtime_s",
            "event_id",
            "attrs",
        ]
    )
    for item in sorted(notification.items, key=lambda i: i.event.device_id):
        event = item.event
        writer.writerow(
            [
                spreadsheet_text(printable(event.device_id)),
                event.type,
                format_utc(event.last_seen_ms, "last_seen_ms"),
                format_utc(event.detected_ms, "detected_ms"),
                f"{downtime_ms(event) / 1000:g}" if item.kind is Kind.RECOVERED else "",
                event.event_id,
                spreadsheet_text(
                    ";".join(f"{k}={v}" for k, v in sorted((event.attrs or {}).items()))
                ),
            ]
        )
    return out.getvalue()


# Spreadsheets read a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """Return `value` so that a spreadsheet shows it as text, never as a formula.

    Device ids and attributes come from devices, and the on-call team opens
    the attachment in a spreadsheet. A leading apostrophe marks a text cell.
    """
    if value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def item_line(item: Item, kind: Kind, now: datetime, heartbeat_topic: str) -> str:
    """Return the one-line description of an item in a group's list."""
    event = item.event
    device = printable(event.device_id)
    if kind is Kind.DOWN:
        last_seen = format_utc_age(event.last_seen_ms, "last_seen_ms", now)
        return f"{device}: last seen {last_seen}"
    if kind is Kind.RECOVERED:
        downtime = format_duration_words(downtime_ms(event))
        back = format_utc(event.detected_ms, "detected_ms")
        return f"{device}: back at {back} after {downtime}"
    if kind is Kind.REMINDER:
        return (
            f"{device}: silent for {format_duration_words(_silent_ms(item, now))}, "
            f"last seen {format_utc(event.last_seen_ms, 'last_seen_ms')}"
        )
    if kind is Kind.FLAPPING:
        return (
            f"{device}: {item.flips} state changes, now {_state_word(event.type)} "
            f"since {format_utc_age(event.detected_ms, 'detected_ms', now)}"
        )
    if kind is Kind.DEGRADED:
        since = format_utc(event.last_seen_ms, "last_seen_ms")
        return (
            f"partition {event.partition}: silent since {since}, "
            f"{count_devices(event.devices or 0)} not judged"
        )
    back = format_utc(event.detected_ms, "detected_ms")
    return f"partition {event.partition}: heard again at {back}"


def _footer(notification: Notification) -> str:
    return (
        f"All times are UTC (ISO 8601). Route: {notification.route}. "
        f"Notification id: {notification.notification_id}."
    )


def _labels(notification: Notification) -> str:
    parts = [
        f"{printable(name)} {printable(value)}"
        for name, value in notification.labels
        if value and name != DEVICE_LABEL
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _silent_ms(item: Item, now: datetime) -> int:
    return max(0, int(now.timestamp() * 1000) - item.event.last_seen_ms)


def _state_word(event_type: str) -> str:
    return "DOWN" if event_type == "DEVICE_DOWN" else "RECOVERED"
