"""Webhook, Slack and PagerDuty channels against a local HTTP receiver."""

import hashlib
import hmac
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from alerter.channels.base import DeliveryError
from alerter.channels.pagerduty import PagerDutyChannel, dedup_key
from alerter.channels.slack import SlackChannel
from alerter.channels.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookChannel,
)
from alerter.notification import Item, Kind, Notification
from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED, AlertEvent

NOW = datetime(2024, 5, 1, 14, 3, 20, tzinfo=UTC)
LAST_SEEN_MS = 1_714_572_131_000


class HttpReceiver:
    """A local HTTP server that stores each POST and replies `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    status = receiver.status
                    if status < 300:
                        receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HttpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [orjson.loads(body) for _, _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


def make_event(device_id: str, kind: str = DEVICE_DOWN) -> AlertEvent:
    return AlertEvent(
        event_id=f"{kind}-{device_id}",
        type=kind,
        device_id=device_id,
        severity="critical" if kind == DEVICE_DOWN else "info",
        last_seen_ms=LAST_SEEN_MS,
        deadline_ms=LAST_SEEN_MS + 60_000,
        timeout_ms=60_000,
        detected_ms=LAST_SEEN_MS + 61_000,
        partition=0,
        message="silent",
        downtime_ms=None if kind == DEVICE_DOWN else 120_000,
        attrs={"site": "plant-3"},
    )


def notification(*devices: str, kind: Kind = Kind.DOWN) -> Notification:
    event_type = DEVICE_DOWN if kind is not Kind.RECOVERED else DEVICE_RECOVERED
    items = tuple(
        Item(kind, f"{event_type}-{d}", make_event(d, event_type)) for d in devices
    )
    return Notification(kind, "plant-3", (("site", "plant-3"),), items, 10)


def test_webhook_posts_signed_json(receiver: HttpReceiver) -> None:
    channel = WebhookChannel(f"{receiver.url}/hook", "s3cret", 5.0, "iot-data")

    channel.send(notification("a", "b"), NOW)

    path, headers, body = receiver.requests[0]
    timestamp = headers[TIMESTAMP_HEADER]
    expected = hmac.new(
        b"s3cret", timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert path == "/hook"
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert timestamp == str(int(NOW.timestamp()))
    document = orjson.loads(body)
    assert document["kind"] == "DOWN"
    assert document["count"] == 2
    assert document["group"] == {"site": "plant-3"}
    assert [i["event"]["device_id"] for i in document["items"]] == ["a", "b"]


def test_webhook_without_secret_sends_no_signature(receiver: HttpReceiver) -> None:
    channel = WebhookChannel(receiver.url, "", 5.0, "iot-data")

    channel.send(notification("a"), NOW)

    assert SIGNATURE_HEADER not in receiver.requests[0][1]


@pytest.mark.parametrize(
    ("status", "retriable"),
    [(400, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_http_status_classifies_failure(
    receiver: HttpReceiver, status: int, retriable: bool
) -> None:
    receiver.status = status
    channel = WebhookChannel(receiver.url, "", 5.0, "iot-data")

    with pytest.raises(DeliveryError) as caught:
        channel.send(notification("a"), NOW)

    assert caught.value.retriable is retriable
    assert caught.value.code == status


def test_connection_refused_is_retriable() -> None:
    with HttpReceiver() as closed:
        url = closed.url
    channel = WebhookChannel(url, "", 2.0, "iot-data")

    with pytest.raises(DeliveryError) as caught:
        channel.send(notification("a"), NOW)

    assert caught.value.retriable
    assert caught.value.code is None


def test_slack_body_has_text_and_blocks(receiver: HttpReceiver) -> None:
    channel = SlackChannel(f"{receiver.url}/services/T0/B0/X", 5.0, "iot-data")

    channel.send(notification("pump-1", "pump-2"), NOW)

    body = receiver.bodies()[0]
    assert body["text"].startswith("[DOWN] 2 devices (site plant-3) silent since")
    assert body["blocks"][0]["type"] == "header"
    assert "pump-1" in body["blocks"][2]["text"]["text"]


def test_pagerduty_triggers_one_event_per_device(receiver: HttpReceiver) -> None:
    channel = PagerDutyChannel(f"{receiver.url}/v2/enqueue", "rk-1", 5.0, "iot-data")
    down = notification("pump-1", "pump-2")

    for unit in channel.units(down):
        channel.send(down.with_items(unit), NOW)

    bodies = receiver.bodies()
    assert [b["event_action"] for b in bodies] == ["trigger", "trigger"]
    assert [b["dedup_key"] for b in bodies] == [
        "hbmon-device-pump-1",
        "hbmon-device-pump-2",
    ]
    assert bodies[0]["routing_key"] == "rk-1"
    assert bodies[0]["payload"]["severity"] == "critical"
    assert bodies[0]["payload"]["source"] == "pump-1"
    assert bodies[0]["payload"]["summary"].startswith("[DOWN] pump-1")


def test_pagerduty_resolves_recovery_with_same_key(receiver: HttpReceiver) -> None:
    channel = PagerDutyChannel(receiver.url, "rk-1", 5.0, "iot-data")

    channel.send(notification("pump-1", kind=Kind.RECOVERED), NOW)

    body = receiver.bodies()[0]
    assert body == {
        "routing_key": "rk-1",
        "event_action": "resolve",
        "dedup_key": "hbmon-device-pump-1",
    }


def test_pagerduty_skips_reminders() -> None:
    channel = PagerDutyChannel("http://127.0.0.1:9", "rk-1", 5.0, "iot-data")

    assert channel.units(notification("pump-1", kind=Kind.REMINDER)) == []


def test_pagerduty_hashes_unprintable_device_id() -> None:
    item = Item(Kind.DOWN, "k", replace(make_event("x"), device_id="bad\nid"))

    assert dedup_key(item).startswith("hbmon-device-sha256-")
