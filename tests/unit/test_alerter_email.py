"""Mails built from notifications: subjects, digests with CSV, HTML alternative."""

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime

from alerter.channels.email import compose
from alerter.notification import Item, Kind, Notification
from hbmon.events import (
    DEVICE_DOWN,
    DEVICE_RECOVERED,
    MONITORING_DEGRADED,
    AlertEvent,
)

LAST_SEEN_MS = 1_714_572_131_000  # 2024-05-01T14:02:11Z
NOW = datetime(2024, 5, 1, 14, 12, 11, tzinfo=UTC)


def event(device_id: str, kind: str = DEVICE_DOWN, offset_s: int = 0) -> AlertEvent:
    return AlertEvent(
        event_id=f"{kind}-{device_id}",
        type=kind,
        device_id=device_id,
        severity="critical",
        last_seen_ms=LAST_SEEN_MS + offset_s * 1000,
        deadline_ms=LAST_SEEN_MS + 60_000,
        timeout_ms=60_000,
        detected_ms=LAST_SEEN_MS + 61_000,
        partition=0,
        message="m",
        downtime_ms=None if kind == DEVICE_DOWN else 252_000 + offset_s * 1000,
        attrs={"site": "plant-3"},
    )


def notification(count: int, kind: Kind = Kind.DOWN) -> Notification:
    event_type = DEVICE_RECOVERED if kind is Kind.RECOVERED else DEVICE_DOWN
    items = tuple(
        Item(kind, f"k-{n}", event(f"dev-{n:04d}", event_type, offset_s=n))
        for n in range(count)
    )
    return Notification(kind, "plant", (("site", "plant-3"),), items, 10)


def mail(n: Notification):
    return compose(
        n, sender="hbmon@example.com", recipients=["a@x.org"], now=NOW,
        heartbeat_topic="iot-data",
    )  # fmt: skip


def plain(n: Notification) -> str:
    body = mail(n).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_single_event_mail_keeps_one_event_format() -> None:
    message = mail(notification(1))

    assert message["Subject"] == "[DOWN] dev-0000 silent since 14:02:11Z"
    assert message["X-Hbmon-Event-Id"] == "DEVICE_DOWN-dev-0000"
    assert message["X-Hbmon-Device-Id"] == "dev-0000"
    assert message["Message-ID"] == "<DEVICE_DOWN-dev-0000@hbmon>"


def test_group_subject_counts_devices_and_names_group() -> None:
    message = mail(notification(1000))

    assert message["Subject"] == (
        "[DOWN] 1,000 devices (site plant-3) silent since 14:02:11Z"
    )
    assert message["X-Hbmon-Devices"] == "1000"
    assert message["X-Hbmon-Device-Id"] is None


def test_digest_names_first_devices_and_attaches_all() -> None:
    message = mail(notification(1000))
    text = plain(notification(1000))

    listed = [line for line in text.splitlines() if line.startswith("- ")]
    attachment = next(message.iter_attachments())
    rows = list(csv.DictReader(io.StringIO(attachment.get_content())))
    assert text.startswith(
        "1,000 devices (site plant-3) are DOWN. The first went silent at "
        "2024-05-01T14:02:11.000Z (10 minutes ago)."
    )
    assert len(listed) == 10
    assert listed[0].startswith("- dev-0000: last seen 2024-05-01T14:02:11.000Z")
    assert "... and 990 more; the full list is attached (devices.csv)." in text
    assert attachment.get_filename() == "devices.csv"
    assert len(rows) == 1000
    assert rows[999]["device_id"] == "dev-0999"
    assert rows[0]["attrs"] == "site=plant-3"


def test_digest_csv_cells_never_formulas() -> None:
    hostile = {'=HYPERLINK("http://x.invalid")': "1", "site": "@SUM(A1)"}
    items = tuple(
        Item(Kind.DOWN, f"k-{n}", replace(event(device), attrs=hostile))
        for n, device in enumerate(["-2+3", "dev-1", *(f"d-{n}" for n in range(20))])
    )
    message = mail(Notification(Kind.DOWN, "plant", (), items, 10))

    attachment = next(message.iter_attachments())
    rows = {
        r["device_id"]: r for r in csv.DictReader(io.StringIO(attachment.get_content()))
    }
    assert "'-2+3" in rows
    assert "dev-1" in rows
    assert rows["dev-1"]["attrs"].startswith("'=HYPERLINK(")


def test_small_group_lists_every_device_without_attachment() -> None:
    message = mail(notification(3))

    assert list(message.iter_attachments()) == []
    assert plain(notification(3)).count("\n- ") == 3


def test_recovery_group_gives_downtime_in_words() -> None:
    n = notification(3, Kind.RECOVERED)

    assert mail(n)["Subject"] == (
        "[RECOVERED] 3 devices (site plant-3) back, longest down 4m 14s"
    )
    assert plain(n).startswith(
        "3 devices (site plant-3) RECOVERED after 4 minutes 12 seconds to "
        "4 minutes 14 seconds of silence."
    )


def test_reminder_subject_says_still_down() -> None:
    n = notification(1, Kind.REMINDER)

    assert mail(n)["Subject"] == "[STILL DOWN] dev-0000 silent for 10m"


def test_html_alternative_escapes_device_ids() -> None:
    items = (Item(Kind.DOWN, "k", event("<script>")), Item(Kind.DOWN, "j", event("b")))
    n = Notification(Kind.DOWN, "plant", (), items, 10)

    html_part = mail(n).get_body(("html",))

    assert html_part is not None
    assert "&lt;script&gt;" in str(html_part.get_content())
    assert "<script>" not in str(html_part.get_content())


def degraded(partitions: int, devices: int | None = None) -> Notification:
    """Return a DEGRADED notification; partition p has 100 * p + 5 devices."""
    items = tuple(
        Item(
            Kind.DEGRADED,
            f"k-{p}",
            replace(
                event(""),
                type=MONITORING_DEGRADED,
                event_id=f"degraded-{p}",
                partition=p,
                devices=100 * p + 5 if devices is None else devices,
                attrs=None,
            ),
        )
        for p in range(partitions)
    )
    return Notification(Kind.DEGRADED, "all", (), items, 10)


def test_degraded_mail_counts_devices_and_partitions() -> None:
    message = mail(degraded(3))

    assert message["X-Hbmon-Devices"] == "315"
    assert message["X-Hbmon-Partitions"] == "3"


def test_degraded_mail_sums_up_once_then_lists() -> None:
    lines = plain(degraded(3)).splitlines()

    assert lines[0] == (
        "Monitoring degraded: 3 partitions of iot-data went silent; 315 devices "
        "are not being judged."
    )
    bullets = [line for line in lines if line.startswith("- ")]
    assert bullets == [
        "- partition 0: silent since 2024-05-01T14:02:11.000Z, 5 devices not judged",
        "- partition 1: silent since 2024-05-01T14:02:11.000Z, 105 devices not judged",
        "- partition 2: silent since 2024-05-01T14:02:11.000Z, 205 devices not judged",
    ]


def test_degraded_mail_counts_each_partition_once() -> None:
    first, second = degraded(2).items
    again = replace(
        first,
        key="k-0-again",
        event=replace(
            first.event,
            event_id="degraded-0-again",
            detected_ms=first.event.detected_ms + 60_000,
            devices=7,
        ),
    )
    notification = Notification(Kind.DEGRADED, "all", (), (first, second, again), 10)
    message = mail(notification)

    assert message["Subject"] == (
        "[MONITORING DEGRADED] 2 partitions of iot-data silent, 112 devices not judged"
    )
    assert message["X-Hbmon-Partitions"] == "2"
    assert message["X-Hbmon-Devices"] == "112"
    assert plain(notification).splitlines()[0] == (
        "Monitoring degraded: 2 partitions of iot-data went silent; 112 devices "
        "are not being judged."
    )


def test_degraded_mail_counts_one_device_in_singular() -> None:
    notification = degraded(2, devices=1)
    single = degraded(1, devices=1)

    assert mail(single)["Subject"].endswith("1 device not judged")
    assert "1 device is not being judged" in plain(single)
    assert "2 devices are not being judged" in plain(notification)
    assert (
        "- partition 1: silent since 2024-05-01T14:02:11.000Z, 1 device not judged"
        in plain(notification)
    )
