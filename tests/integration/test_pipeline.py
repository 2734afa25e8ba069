"""End to end: heartbeats over HTTP, through Kafka, to mail in a local mailbox."""

import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox
from tests.integration.services import Service, free_port, kafka_env, wait_for

pytestmark = pytest.mark.integration

TIMEOUT_S = 3.0
TICK_MS = 200
GROUP_WAIT_S = 1.0
# The deadline-to-mail slack that the assertions allow. The expected delay is
# the monitor's fetch grace (1 s), one or two ticks, its commit interval
# (1 s), the alerter's group wait (1 s) and the SMTP exchange: about 3.5 s.
# The rest absorbs a loaded machine.
SLACK_S = 10.0


def mails_of(mailbox: LocalMailbox, device_id: str, kind: str) -> list[EmailMessage]:
    return [
        mail
        for mail in mailbox.messages()
        if mail["X-Hbmon-Device-Id"] == device_id and mail["X-Hbmon-Event-Type"] == kind
    ]


def post_heartbeats(
    client: httpx.Client, device_id: str, count: int, every_s: float
) -> float:
    """Post `count` heartbeats and return the wall time of the last 202."""
    accepted_at = 0.0
    for _ in range(count):
        response = client.post(
            "/v1/heartbeats", json={"device_id": device_id, "timeout_s": TIMEOUT_S}
        )
        assert response.status_code == 202, response.text
        accepted_at = time.time()
        time.sleep(every_s)
    return accepted_at


@pytest.fixture
def pipeline(kafka_settings: KafkaSettings, tmp_path: Path):
    mailbox = LocalMailbox(tmp_path / "mail", port=free_port())
    mailbox.start()
    ingest_port = free_port()
    group_suffix = uuid.uuid4().hex[:8]
    env = {
        **kafka_env(kafka_settings),
        "HBMON_INGEST_PORT": str(ingest_port),
        "HBMON_MONITOR_GROUP_ID": f"monitor-{group_suffix}",
        "HBMON_MONITOR_TICK_MS": str(TICK_MS),
        "HBMON_MONITOR_METRICS_PORT": str(free_port()),
        "HBMON_ALERTER_GROUP_ID": f"alerter-{group_suffix}",
        "HBMON_ALERTER_METRICS_PORT": str(free_port()),
        "HBMON_ALERTER_API_PORT": "0",
        "HBMON_ALERTER_GROUP_WAIT_S": str(GROUP_WAIT_S),
        "HBMON_SMTP_HOST": "127.0.0.1",
        "HBMON_SMTP_PORT": str(mailbox.port),
        "HBMON_SMTP_SECURITY": "none",
        "HBMON_LOG_LEVEL": "DEBUG",
    }
    services = [
        Service(role, env, tmp_path).start()
        for role in ("ingest", "monitor", "alerter")
    ]
    client = httpx.Client(base_url=f"http://127.0.0.1:{ingest_port}", timeout=10.0)

    def ingest_healthy() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ingest_healthy, 60, "ingest /healthz")
        yield client, mailbox
    finally:
        client.close()
        for service in reversed(services):
            service.stop()
        mailbox.stop()
        for service in services:
            print(f"----- {service.role} log -----\n{service.log()[-4000:]}")


def test_pipeline_silent_device_mails_down_once_then_recovered_once(pipeline):
    client, mailbox = pipeline
    device = f"sensor-{uuid.uuid4().hex[:6]}"

    # 1. The device talks for a while, then goes silent.
    last_accepted = post_heartbeats(client, device, count=8, every_s=0.5)
    deadline = last_accepted + TIMEOUT_S

    # 2. Exactly one DOWN mail arrives, soon after the deadline.
    wait_for(
        lambda: mails_of(mailbox, device, "DEVICE_DOWN"),
        TIMEOUT_S + 60,
        f"a DOWN mail for {device}",
        every_s=0.05,
    )
    down_latency_s = time.time() - deadline
    print(f"deadline to DOWN mail: {down_latency_s:.2f} s")
    assert down_latency_s < SLACK_S
    time.sleep(3 * TIMEOUT_S)
    assert len(mails_of(mailbox, device, "DEVICE_DOWN")) == 1

    # 3. The device talks again: exactly one RECOVERED mail, no second DOWN.
    post_heartbeats(client, device, count=2, every_s=0.5)
    wait_for(
        lambda: mails_of(mailbox, device, "DEVICE_RECOVERED"),
        60,
        f"a RECOVERED mail for {device}",
    )
    post_heartbeats(client, device, count=6, every_s=0.5)
    assert len(mails_of(mailbox, device, "DEVICE_RECOVERED")) == 1
    assert len(mails_of(mailbox, device, "DEVICE_DOWN")) == 1


def test_pipeline_steady_device_gets_no_mail(pipeline):
    client, mailbox = pipeline
    device = f"steady-{uuid.uuid4().hex[:6]}"

    post_heartbeats(client, device, count=int(4 * TIMEOUT_S), every_s=0.5)

    assert mails_of(mailbox, device, "DEVICE_DOWN") == []
