"""Notification mails rendered from alert events: subject, body fields and headers."""

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from alerter.message import (
    format_age,
    format_duration_short,
    format_duration_words,
    message_id_for,
    render_message,
    render_subject,
)
from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    AlertEvent,
    InvalidRecord,
)

# 2024-05-01T14:02:11.000Z
LAST_SEEN_MS = 1_714_572_131_000
NOW = datetime(2024, 5, 1, 14, 3, 20, tzinfo=UTC)
ROW = re.compile(r"^([A-Z][a-z]+(?: [a-z]+)?): +(.*)$", re.MULTILINE)

DOWN = AlertEvent(
    event_id="0b7f4c52-2a63-5d1e-9a0e-3f1f6c1b2d4e",
    type=DEVICE_DOWN,
    device_id="sensor-17",
    severity="critical",
    last_seen_ms=LAST_SEEN_MS,
    deadline_ms=LAST_SEEN_MS + 60_000,
    timeout_ms=60_000,
    detected_ms=LAST_SEEN_MS + 61_345,
    partition=2,
    message="sensor-17 sent no heartbeat within its 60 s timeout",
)
RECOVERED = replace(
    DOWN,
    event_id="5c1d0a9e-7b4f-5e2a-8c3d-1a2b3c4d5e6f",
    type=DEVICE_RECOVERED,
    severity="info",
    detected_ms=LAST_SEEN_MS + 252_000,
    downtime_ms=252_000,
    message="sensor-17 sent a heartbeat again",
)


def render(event: AlertEvent) -> str:
    message = render_message(
        event, sender="hbmon@example.com", recipients=["oncall@example.com"], now=NOW
    )
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def body_rows(event: AlertEvent) -> dict[str, str]:
    """Return the `Name: value` rows of the body as a dict."""
    return dict(ROW.findall(render(event)))


def test_subject_down_names_device_and_last_seen() -> None:
    assert render_subject(DOWN) == "[DOWN] sensor-17 silent since 14:02:11Z"


def test_subject_down_dates_earlier_day() -> None:
    event = replace(DOWN, detected_ms=LAST_SEEN_MS + 86_400_000)

    assert render_subject(event) == "[DOWN] sensor-17 silent since 2024-05-01 14:02:11Z"


def test_subject_recovered_names_downtime() -> None:
    assert render_subject(RECOVERED) == "[RECOVERED] sensor-17 back after 4m 12s"


def test_subject_recovered_derives_missing_downtime() -> None:
    event = replace(RECOVERED, downtime_ms=None, detected_ms=LAST_SEEN_MS + 3_720_000)

    assert render_subject(event) == "[RECOVERED] sensor-17 back after 1h 2m"


def test_subject_shortens_long_device_id() -> None:
    event = replace(DOWN, device_id="d" * 100)

    subject = render_subject(event)

    assert subject.startswith("[DOWN] " + "d" * 39 + "…")
    assert len(subject) < 80


def test_body_down_starts_with_plain_sentence() -> None:
    first_line = render(DOWN).splitlines()[0]

    assert first_line == (
        "Device sensor-17 is DOWN. It has sent no heartbeat since "
        "2024-05-01T14:02:11.000Z, and its deadline passed at "
        "2024-05-01T14:03:11.000Z."
    )


def test_body_recovered_starts_with_plain_sentence() -> None:
    first_line = render(RECOVERED).splitlines()[0]

    assert first_line == (
        "Device sensor-17 RECOVERED. It sent a heartbeat at "
        "2024-05-01T14:06:23.000Z after 4 minutes 12 seconds of silence."
    )


def test_body_down_fields() -> None:
    rows = body_rows(DOWN)

    assert rows["Device"] == "sensor-17"
    assert rows["Alert"] == "DOWN (DEVICE_DOWN)"
    assert rows["Severity"] == "critical"
    assert rows["Last seen"] == "2024-05-01T14:02:11.000Z (1 minute 9 seconds ago)"
    assert rows["Detected at"] == "2024-05-01T14:03:12.345Z (7 seconds ago)"
    assert rows["Deadline"] == "2024-05-01T14:03:11.000Z"
    assert rows["Timeout"] == "1 minute (60 s)"
    assert rows["Event id"] == DOWN.event_id
    assert rows["Partition"] == "2"
    assert "Downtime" not in rows


@pytest.mark.parametrize(
    ("timeout_ms", "shown"),
    [
        (15_000, "15 seconds"),
        (1_500, "1 second (1.5 s)"),
        (90_000, "1 minute 30 seconds (90 s)"),
    ],
)
def test_body_timeout_seconds_once(timeout_ms: int, shown: str) -> None:
    rows = body_rows(replace(DOWN, timeout_ms=timeout_ms))

    assert rows["Timeout"] == shown


def test_body_recovered_fields() -> None:
    rows = body_rows(RECOVERED)

    assert rows["Alert"] == "RECOVERED (DEVICE_RECOVERED)"
    assert rows["Severity"] == "info"
    assert rows["Detected at"] == "2024-05-01T14:06:23.000Z (just now)"
    assert rows["Downtime"] == "4 minutes 12 seconds (252 s)"


def test_body_includes_monitor_message_and_time_zone() -> None:
    body = render(DOWN)

    assert (
        "Monitor message: sensor-17 sent no heartbeat within its 60 s timeout" in body
    )
    assert "All times are UTC (ISO 8601)." in body


def test_headers_identify_event() -> None:
    message = render_message(
        DOWN, sender="hbmon@example.com", recipients=["a@x.org", "b@x.org"], now=NOW
    )

    assert message["Subject"] == "[DOWN] sensor-17 silent since 14:02:11Z"
    assert message["From"] == "hbmon@example.com"
    assert message["To"] == "a@x.org, b@x.org"
    assert message["Date"] == "Wed, 01 May 2024 14:03:20 +0000"
    assert message["Message-ID"] == f"<{DOWN.event_id}@hbmon>"
    assert message["X-Hbmon-Event-Id"] == DOWN.event_id
    assert message["X-Hbmon-Device-Id"] == "sensor-17"
    assert message["X-Hbmon-Event-Type"] == "DEVICE_DOWN"
    assert message.get_content_type() == "multipart/alternative"


def test_html_alternative_has_sentence_and_escaped_rows() -> None:
    event = replace(DOWN, device_id="<b>sensor</b>")
    message = render_message(
        event, sender="hbmon@example.com", recipients=["a@x.org"], now=NOW
    )

    html_part = message.get_body(("html",))

    assert html_part is not None
    content = str(html_part.get_content())
    assert "Device &lt;b&gt;sensor&lt;/b&gt; is DOWN." in content
    assert '<th align="left">Last seen</th>' in content


def test_body_lists_routing_attributes() -> None:
    rows = body_rows(replace(DOWN, attrs={"site": "plant-3"}))

    assert rows["Site"] == "plant-3"


def test_subject_monitoring_degraded_counts_devices() -> None:
    event = replace(
        DOWN, type=MONITORING_DEGRADED, device_id="", partition=3, devices=1234
    )

    assert render_subject(event) == (
        "[MONITORING DEGRADED] partition 3 of iot-data silent, 1,234 devices not judged"
    )


def test_body_monitoring_degraded_says_what_is_not_judged() -> None:
    event = replace(
        DOWN, type=MONITORING_DEGRADED, device_id="", partition=3, devices=1234
    )

    first_line = render(event).splitlines()[0]

    assert first_line == (
        "Monitoring degraded: partition 3 of iot-data went silent; 1,234 devices "
        "are not being judged."
    )


def test_subject_monitoring_restored_names_partition() -> None:
    event = replace(DOWN, type=MONITORING_RESTORED, device_id="", partition=3)

    assert render_subject(event, heartbeat_topic="hb") == (
        "[MONITORING RESTORED] partition 3 of hb heard again"
    )


def test_message_id_is_stable_per_event() -> None:
    assert message_id_for("abc-1") == message_id_for("abc-1")
    assert message_id_for("abc-1") != message_id_for("abc-2")


def test_message_id_hashes_unsafe_event_id() -> None:
    message_id = message_id_for("id with <brackets>@and spaces")

    assert message_id.startswith("<")
    assert message_id.endswith("@hbmon>")
    assert " " not in message_id
    assert message_id.count("@") == 1


def test_device_id_with_line_break_cannot_inject_header() -> None:
    event = replace(DOWN, device_id="evil\r\nBcc: victim@example.com")

    message = render_message(
        event, sender="hbmon@example.com", recipients=["oncall@example.com"], now=NOW
    )

    assert message["Bcc"] is None
    assert message["X-Hbmon-Device-Id"] == "evil\\r\\nBcc: victim@example.com"
    assert "\\r\\n" in message["Subject"]
    assert b"\r\nBcc:" not in message.as_bytes()


def test_non_ascii_device_id_survives_encoding() -> None:
    event = replace(DOWN, device_id="capteur-été")

    message = render_message(
        event, sender="hbmon@example.com", recipients=["oncall@example.com"], now=NOW
    )

    assert message["Subject"] == "[DOWN] capteur-été silent since 14:02:11Z"
    assert b"=?utf-8?" in message.as_bytes()


def test_time_out_of_range_is_invalid_record() -> None:
    event = replace(DOWN, last_seen_ms=10**18)

    with pytest.raises(InvalidRecord) as caught:
        render_subject(event)

    assert caught.value.field == "last_seen_ms"


@pytest.mark.parametrize(
    ("duration_ms", "short", "words"),
    [
        (0, "0s", "less than a second"),
        (999, "0s", "less than a second"),
        (1_000, "1s", "1 second"),
        (252_000, "4m 12s", "4 minutes 12 seconds"),
        (3_600_000, "1h", "1 hour"),
        (3_661_000, "1h 1m", "1 hour 1 minute 1 second"),
        (2 * 86_400_000 + 3 * 3_600_000, "2d 3h", "2 days 3 hours"),
        (-5_000, "0s", "less than a second"),
    ],
)
def test_duration_formats(duration_ms: int, short: str, words: str) -> None:
    assert format_duration_short(duration_ms) == short
    assert format_duration_words(duration_ms) == words


@pytest.mark.parametrize(
    ("age_ms", "expected"),
    [
        (0, "just now"),
        (-5_000, "just now"),
        (69_000, "1 minute 9 seconds ago"),
        (3_661_000, "1 hour 1 minute ago"),
    ],
)
def test_format_age_uses_two_largest_units(age_ms: int, expected: str) -> None:
    now_ms = int(NOW.timestamp() * 1000)

    assert format_age(NOW, now_ms - age_ms) == expected
