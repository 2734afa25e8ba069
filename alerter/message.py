"""Text of a notification about one event, and the formatting helpers of all texts.

Device ids come from devices and are untrusted, so every field that reaches
a header or the body has control characters escaped first.
"""

import hashlib
import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from hbmon.events import (
    DEVICE_DOWN,
    MONITORING_DEGRADED,
    MONITORING_TYPES,
    AlertEvent,
    InvalidRecord,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MESSAGE_ID_DOMAIN = "hbmon"
_MESSAGE_ID_LOCAL = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Longer device ids are cut, so that the start of the subject, which is what a
# phone lock screen shows, keeps the alert kind and the device.
_SUBJECT_DEVICE_MAX_CHARS = 40
DEFAULT_HEARTBEAT_TOPIC = "iot-data"
_UNITS = (
    ("day", 86_400),
    ("hour", 3_600),
    ("minute", 60),
    ("second", 1),
)


def render_message(
    event: AlertEvent,
    *,
    sender: str,
    recipients: Sequence[str],
    now: datetime,
    heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC,
) -> EmailMessage:
    """Render the mail for one alert event: plain text with an HTML alternative.

    Raises:
        InvalidRecord: a time field is outside the range of dates that
            Python can represent.
    """
    message = EmailMessage()
    message["Subject"] = render_subject(event, heartbeat_topic=heartbeat_topic)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = message_id_for(event.event_id)
    message["X-Hbmon-Event-Id"] = printable(event.event_id)
    message["X-Hbmon-Device-Id"] = printable(event.device_id)
    message["X-Hbmon-Event-Type"] = event.type
    message.set_content(render_body(event, now, heartbeat_topic=heartbeat_topic))
    message.add_alternative(
        render_html(event, now, heartbeat_topic=heartbeat_topic), subtype="html"
    )
    return message


def render_subject(
    event: AlertEvent, *, heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC
) -> str:
    """Return a subject line that fits a phone lock screen.

    Examples: `[DOWN] sensor-17 silent since 14:02:11Z`,
    `[RECOVERED] sensor-17 back after 4m 12s` and
    `[MONITORING DEGRADED] partition 3 of iot-data silent, 1,234 devices not
    judged`. The time of day gets its date when the device went silent on
    an earlier UTC day.
    """
    if event.type in MONITORING_TYPES:
        return _monitoring_subject(event, heartbeat_topic)
    device = short_device(event.device_id)
    if event.type == DEVICE_DOWN:
        last_seen = to_datetime(event.last_seen_ms, "last_seen_ms")
        detected = to_datetime(event.detected_ms, "detected_ms")
        since = last_seen.strftime("%H:%M:%SZ")
        if last_seen.date() != detected.date():
            since = last_seen.strftime("%Y-%m-%d ") + since
        return f"[DOWN] {device} silent since {since}"
    downtime = format_duration_short(downtime_ms(event))
    return f"[RECOVERED] {device} back after {downtime}"


def render_body(
    event: AlertEvent,
    now: datetime | None = None,
    *,
    heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC,
) -> str:
    """Return the plain-text body: a summary sentence, then one field per line.

    With `now`, each time is followed by its age.
    """
    summary, rows = render_rows(event, now, heartbeat_topic=heartbeat_topic)
    table = "\n".join(f"{name + ':':<13}{value}" for name, value in rows)
    return (
        f"{summary}\n\n{table}\n\n"
        f"Monitor message: {printable(event.message)}\n\n"
        "All times are UTC (ISO 8601).\n"
    )


def render_html(
    event: AlertEvent,
    now: datetime | None = None,
    *,
    heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC,
) -> str:
    """Return the HTML alternative of render_body(): the same sentence and rows."""
    summary, rows = render_rows(event, now, heartbeat_topic=heartbeat_topic)
    cells = "".join(
        f'<tr><th align="left">{html.escape(name)}</th>'
        f"<td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return (
        f"<html><body><p><b>{html.escape(summary)}</b></p>"
        f'<table cellpadding="3">{cells}</table>'
        f"<p>Monitor message: {html.escape(printable(event.message))}</p>"
        "<p>All times are UTC (ISO 8601).</p></body></html>"
    )


def render_rows(
    event: AlertEvent,
    now: datetime | None = None,
    *,
    heartbeat_topic: str = DEFAULT_HEARTBEAT_TOPIC,
) -> tuple[str, list[tuple[str, str]]]:
    """Return the summary sentence and the (name, value) rows of a one-event text."""
    if event.type in MONITORING_TYPES:
        return _monitoring_rows(event, now, heartbeat_topic)
    device = printable(event.device_id)
    last_seen = format_utc_age(event.last_seen_ms, "last_seen_ms", now)
    detected = format_utc_age(event.detected_ms, "detected_ms", now)
    deadline = format_utc(event.deadline_ms, "deadline_ms")
    timeout = _format_duration_both(event.timeout_ms)

    if event.type == DEVICE_DOWN:
        summary = (
            f"Device {device} is DOWN. It has sent no heartbeat since "
            f"{format_utc(event.last_seen_ms, 'last_seen_ms')}, "
            f"and its deadline passed at {deadline}."
        )
        label = "DOWN"
    else:
        downtime = format_duration_words(downtime_ms(event))
        summary = (
            f"Device {device} RECOVERED. It sent a heartbeat at "
            f"{format_utc(event.detected_ms, 'detected_ms')} "
            f"after {downtime} of silence."
        )
        label = "RECOVERED"

    rows = [
        ("Device", device),
        ("Alert", f"{label} ({event.type})"),
        ("Severity", printable(event.severity)),
        ("Last seen", last_seen),
        ("Detected at", detected),
        ("Deadline", deadline),
        ("Timeout", timeout),
    ]
    if event.type != DEVICE_DOWN:
        rows.append(("Downtime", _format_duration_both(downtime_ms(event))))
    for name, value in sorted((event.attrs or {}).items()):
        rows.append((printable(name)[:30].capitalize(), printable(value)))
    rows += [
        ("Event id", printable(event.event_id)),
        ("Partition", str(event.partition)),
    ]
    return summary, rows


def count_devices(count: int) -> str:
    """Return `count` with the noun: "1 device", "1,234 devices"."""
    return count_of(count, "device")


def count_of(count: int, noun: str) -> str:
    """Return `count` with `noun`, plural unless it is 1: "1 event", "2 events"."""
    return f"1 {noun}" if count == 1 else f"{count:,} {noun}s"


def monitoring_sentence(event: AlertEvent, heartbeat_topic: str) -> str:
    """Return the plain sentence of a MONITORING_DEGRADED or RESTORED event."""
    topic = printable(heartbeat_topic)
    if event.type == MONITORING_DEGRADED:
        return (
            f"Monitoring degraded: partition {event.partition} of {topic} went "
            f"silent; {count_devices(event.devices or 0)} "
            f"{'is' if event.devices == 1 else 'are'} not being judged."
        )
    return (
        f"Monitoring restored: partition {event.partition} of {topic} is heard "
        f"again; its devices are judged again."
    )


def _monitoring_subject(event: AlertEvent, heartbeat_topic: str) -> str:
    topic = printable(heartbeat_topic)
    if event.type == MONITORING_DEGRADED:
        return (
            f"[MONITORING DEGRADED] partition {event.partition} of {topic} silent, "
            f"{count_devices(event.devices or 0)} not judged"
        )
    return f"[MONITORING RESTORED] partition {event.partition} of {topic} heard again"


def _monitoring_rows(
    event: AlertEvent, now: datetime | None, heartbeat_topic: str
) -> tuple[str, list[tuple[str, str]]]:
    rows = [
        ("Alert", event.type),
        ("Severity", printable(event.severity)),
        ("Partition", f"{event.partition} of {printable(heartbeat_topic)}"),
        ("Devices held", f"{event.devices or 0:,}"),
        ("Detected at", format_utc_age(event.detected_ms, "detected_ms", now)),
        ("Last heard", format_utc_age(event.last_seen_ms, "last_seen_ms", now)),
        ("Event id", printable(event.event_id)),
    ]
    return monitoring_sentence(event, heartbeat_topic), rows


def downtime_ms(event: AlertEvent) -> int:
    """Return how long the device was silent, never less than zero.

    Events without `downtime_ms` fall back to detected_ms - last_seen_ms,
    the gap between the last heartbeat before the silence and the one
    that ended it.
    """
    if event.downtime_ms is not None:
        return max(0, event.downtime_ms)
    return max(0, event.detected_ms - event.last_seen_ms)


def message_id_for(event_id: str) -> str:
    """Return a Message-ID that is the same for every mail about one event.

    Mail clients can then thread or drop a copy that an at-least-once
    resend produces. Ids that are not a plain token are hashed.
    """
    local = event_id
    if not _MESSAGE_ID_LOCAL.fullmatch(event_id):
        local = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"<{local}@{_MESSAGE_ID_DOMAIN}>"


def to_datetime(epoch_ms: int, field: str) -> datetime:
    """Convert milliseconds since the Unix epoch to an aware UTC datetime.

    Raises:
        InvalidRecord: the value is outside the years 1 to 9999.
    """
    try:
        return _EPOCH + timedelta(milliseconds=epoch_ms)
    except OverflowError as err:
        raise InvalidRecord(
            field, "must be a time between the years 1 and 9999"
        ) from err


def format_utc(epoch_ms: int, field: str) -> str:
    """Format epoch milliseconds as ISO 8601 in UTC: `2024-05-01T14:02:11.123Z`."""
    moment = to_datetime(epoch_ms, field)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_utc_age(epoch_ms: int, field: str, now: datetime | None) -> str:
    """Format a time as ISO 8601 UTC, followed by its age when `now` is given.

    Example: `2024-05-01T14:02:11.000Z (4 minutes 12 seconds ago)`.
    """
    moment = format_utc(epoch_ms, field)
    if now is None:
        return moment
    return f"{moment} ({format_age(now, epoch_ms)})"


def format_age(now: datetime, epoch_ms: int) -> str:
    """Return how long before `now` a time was, in its two largest units.

    Times less than a second old, or ahead of `now` because of clock skew,
    read `just now`.
    """
    now_ms = int(now.timestamp() * 1000)
    parts = [
        f"{count} {unit}" if count == 1 else f"{count} {unit}s"
        for unit, count in _split_duration(now_ms - epoch_ms)
    ]
    if not parts:
        return "just now"
    return " ".join(parts[:2]) + " ago"


def short_device(device_id: str) -> str:
    """Return the device id for a subject: printable, and cut after 40 characters."""
    device = printable(device_id)
    if len(device) > _SUBJECT_DEVICE_MAX_CHARS:
        device = device[: _SUBJECT_DEVICE_MAX_CHARS - 1] + "…"
    return device


def format_duration_short(duration_ms: int) -> str:
    """Format a duration with its two largest non-zero units, such as `4m 12s`."""
    parts = [f"{count}{unit[0]}" for unit, count in _split_duration(duration_ms)]
    return " ".join(parts[:2]) or "0s"


def format_duration_words(duration_ms: int) -> str:
    """Format a duration in words, such as `1 hour 4 minutes 12 seconds`.

    Milliseconds are dropped, and a duration under one second reads
    `less than a second`.
    """
    parts = [
        f"{count} {unit}" if count == 1 else f"{count} {unit}s"
        for unit, count in _split_duration(duration_ms)
    ]
    return " ".join(parts) or "less than a second"


def printable(text: str) -> str:
    """Replace non-printable characters, such as CR and LF, with Python escapes."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode()
        for char in text
    )


def _format_duration_both(duration_ms: int) -> str:
    words = format_duration_words(duration_ms)
    if duration_ms < 60_000 and duration_ms % 1000 == 0:
        # "15 seconds" is already exact, so "(15 s)" would only repeat it.
        return words
    return f"{words} ({duration_ms / 1000:g} s)"


def _split_duration(duration_ms: int) -> list[tuple[str, int]]:
    remaining_s = max(0, duration_ms) // 1000
    parts = []
    for unit, size_s in _UNITS:
        count, remaining_s = divmod(remaining_s, size_s)
        if count:
            parts.append((unit, count))
    return parts
