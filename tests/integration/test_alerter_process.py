"""The alerter role as a real process: metrics, mail, SIGTERM, and SIGKILL."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from alerter.matchers import Matcher
from alerter.settings import AlerterSettings
from alerter.silences import Silence
from alerter.topics import ensure_alerter_topics
from hbmon.events import DEVICE_DOWN, AlertEvent, event_id_for
from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox
from tests.integration.services import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

WAIT_S = 60.0
HTTP_TIMEOUT_S = 30.0

# Runs the role module the way `hbmon alerter` does, without importing the
# other roles that the `hbmon` parser loads.
RUN_ALERTER = (
    "import argparse, sys\n"
    "from alerter import cli\n"
    "parser = argparse.ArgumentParser()\n"
    "cli.add_arguments(parser)\n"
    "sys.exit(cli.run(parser.parse_args(['--poll-timeout', '0.2'])))\n"
)
ROUTES = """
[defaults]
group_wait_s = 0.2
group_by = ["device_id"]
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


def make_event(device_id: str) -> AlertEvent:
    last_seen_ms = int(time.time() * 1000) - 61_000
    return AlertEvent(
        event_id=event_id_for(DEVICE_DOWN, device_id, last_seen_ms),
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=last_seen_ms,
        deadline_ms=last_seen_ms + 60_000,
        timeout_ms=60_000,
        detected_ms=last_seen_ms + 61_000,
        partition=0,
        message=f"{device_id} sent no heartbeat within its 60 s timeout",
    )


def alerter_env(
    kafka_settings: KafkaSettings, mailbox: LocalMailbox, **extra: str
) -> dict[str, str]:
    suffix = kafka_settings.alert_topic.rsplit("-", 1)[-1]
    return {
        **os.environ,
        "HBMON_KAFKA_BOOTSTRAP": kafka_settings.bootstrap_servers,
        "HBMON_HEARTBEAT_TOPIC": kafka_settings.heartbeat_topic,
        "HBMON_ALERT_TOPIC": kafka_settings.alert_topic,
        "HBMON_ALERT_PARTITIONS": str(kafka_settings.alert_partitions),
        "HBMON_SMTP_PORT": str(mailbox.port),
        "HBMON_SMTP_USER": "",
        "HBMON_SMTP_PASSWORD": "",
        "HBMON_ALERTER_GROUP_ID": f"alerter-process-{uuid.uuid4().hex[:8]}",
        "HBMON_ALERTER_METRICS_PORT": "0",
        "HBMON_ALERTER_API_PORT": "0",
        "HBMON_ALERTER_GROUP_WAIT_S": "0.2",
        "HBMON_ALERTER_BACKOFF_INITIAL_S": "0.05",
        "HBMON_ALERTER_BACKOFF_MAX_S": "0.5",
        "HBMON_ALERTER_DEAD_LETTER_TOPIC": f"alerts-dead-letter-{suffix}",
        "HBMON_ALERTER_SENT_TOPIC": f"alerts-sent-{suffix}",
        "HBMON_ALERTER_STATE_TOPIC": f"alerts-state-{suffix}",
        "HBMON_ALERTER_SILENCE_TOPIC": f"alerts-silences-{suffix}",
        **extra,
    }


def restartable_env(
    kafka_settings: KafkaSettings, mailbox: LocalMailbox, tmp_path: Path
) -> dict[str, str]:
    """Return the environment of an alerter that mails each device on its own.

    A static member gets its partitions back at once after a restart.
    """
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    return alerter_env(
        kafka_settings,
        mailbox,
        HBMON_ALERTER_ROUTES_FILE=str(routes),
        HBMON_ALERTER_INSTANCE_ID=f"alerter-{uuid.uuid4().hex[:8]}",
    )


def start_alerter(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_ALERTER],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def publish(kafka_settings: KafkaSettings, *events: AlertEvent) -> None:
    producer = Producer(kafka_settings.client_config())
    for event in events:
        producer.produce(
            kafka_settings.alert_topic, value=event.encode(), key=event.device_id
        )
    assert producer.flush(30) == 0


def test_alerter_process_mails_and_stops(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    event = make_event("sensor-17")
    publish(kafka_settings, event)

    metrics_port = free_port()
    log_path = tmp_path / "alerter.log"
    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        env = alerter_env(
            kafka_settings, mailbox, HBMON_ALERTER_METRICS_PORT=str(metrics_port)
        )
        process = start_alerter(env, log_path)
        try:
            wait_for(
                lambda: len(mailbox.paths()) == 1 or process.poll() is not None,
                WAIT_S,
                "the alert mail or the end of the process",
            )
            mail_count = len(mailbox.paths())
            metrics = ""
            if process.poll() is None:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                metrics = httpx.get(url).text
        finally:
            exit_code = stop(process)

    output = log_path.read_text(errors="replace")
    assert mail_count == 1, output
    assert exit_code == 0, output
    assert (
        'hbmon_alerter_notifications_sent_total{channel="email",receiver="default"} 1.0'
        in metrics
    )
    assert "Alerter started" in output
    assert "Sent DOWN notification" in output
    assert "Alerter stopped" in output


def test_alerter_rejects_invalid_routes_file(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.replace('receivers = ["oncall"]', 'receivers = ["ops"]'))
    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        env = alerter_env(
            kafka_settings, mailbox, HBMON_ALERTER_ROUTES_FILE=str(routes)
        )
        process = start_alerter(env, tmp_path / "alerter.log")
        exit_code = process.wait(timeout=WAIT_S)

    output = (tmp_path / "alerter.log").read_text()
    assert exit_code == 2
    assert f"{routes}:8: default_route.receivers: unknown receiver 'ops'" in output


def test_alerter_killed_after_50_mails_sends_none_again(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """SIGKILL after 50 accepted mails, then restart: each of 100 mails arrives once.

    The mailbox accepts 50 mails, then answers 451, so the kill lands while
    the alerter retries the 51st. That is outside the window between an
    SMTP accept and the sent-log write, which no design can close (see the
    NOTE in alerter/sentlog.py).
    """
    events = [make_event(f"sensor-{n:03d}") for n in range(100)]
    publish(kafka_settings, *events)
    log_path = tmp_path / "alerter.log"

    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        env = restartable_env(kafka_settings, mailbox, tmp_path)
        mailbox.reject_mail(451, after=50)
        first = start_alerter(env, log_path)
        try:
            wait_for(
                lambda: mailbox.rejected_count >= 1 or first.poll() is not None,
                WAIT_S,
                "50 mails and a rejected 51st",
            )
        finally:
            first.kill()
            first.wait()
        assert len(mailbox.paths()) == 50, log_path.read_text()

        mailbox.accept_mail()
        second = start_alerter(env, log_path)
        try:
            wait_for(
                lambda: len(mailbox.paths()) >= 100 or second.poll() is not None,
                WAIT_S,
                "the other 50 mails",
            )
            time.sleep(3.0)
            ids = Counter(str(m["X-Hbmon-Event-Id"]) for m in mailbox.messages())
        finally:
            exit_code = stop(second)

    output = log_path.read_text(errors="replace")
    assert exit_code == 0, output
    assert set(ids) == {event.event_id for event in events}
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]


def test_alerter_restart_sends_no_parked_mail(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Mails parked after a 550 reply stay unsent when a restarted alerter resumes."""
    parked = [make_event(f"sensor-parked-{n}") for n in range(3)]
    marker = make_event("sensor-after-restart")
    publish(kafka_settings, *parked)
    log_path = tmp_path / "alerter.log"

    def parked_count() -> int:
        return log_path.read_text(errors="replace").count("Parking DOWN")

    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        env = restartable_env(kafka_settings, mailbox, tmp_path)
        mailbox.reject_mail(550)
        first = start_alerter(env, log_path)
        try:
            wait_for(
                lambda: parked_count() >= len(parked) or first.poll() is not None,
                WAIT_S,
                "three parked notifications",
            )
        finally:
            first_exit_code = stop(first)
        rejected_before_restart = mailbox.rejected_count

        mailbox.accept_mail()
        second = start_alerter(env, log_path)
        try:
            publish(kafka_settings, marker)
            # The lane sends in order, and the restarted alerter queues the
            # notices of its devices before it reads the marker event, so a
            # parked mail sent again would arrive before the marker's mail.
            wait_for(
                lambda: len(mailbox.paths()) >= 1 or second.poll() is not None,
                WAIT_S,
                "the mail of the event published after the restart",
            )
            time.sleep(3.0)
            ids = [str(m["X-Hbmon-Event-Id"]) for m in mailbox.messages()]
        finally:
            second_exit_code = stop(second)

    output = log_path.read_text(errors="replace")
    assert first_exit_code == 0, output
    assert second_exit_code == 0, output
    assert rejected_before_restart == len(parked), output
    assert ids == [marker.event_id], output


def test_alerter_api_survives_invalid_stored_silence(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """A silence record ending after the year 9999 leaves the API working."""
    api_port, metrics_port = free_port(), free_port()
    log_path = tmp_path / "alerter.log"
    with LocalMailbox(tmp_path / "mail", port=0) as mailbox:
        env = alerter_env(
            kafka_settings,
            mailbox,
            HBMON_ALERTER_API_PORT=str(api_port),
            HBMON_ALERTER_METRICS_PORT=str(metrics_port),
        )
        bad = Silence(
            "silence-bad",
            Matcher(device_prefix=("pump-",)),
            0,
            253_402_300_800_000,
            "written by an older alerter",
            "ops",
            0,
        )
        silence_topic = env["HBMON_ALERTER_SILENCE_TOPIC"]
        topics = replace(
            AlerterSettings(),
            dead_letter_topic=env["HBMON_ALERTER_DEAD_LETTER_TOPIC"],
            sent_topic=env["HBMON_ALERTER_SENT_TOPIC"],
            state_topic=env["HBMON_ALERTER_STATE_TOPIC"],
            silence_topic=silence_topic,
        )
        ensure_alerter_topics(kafka_settings, topics)
        producer = Producer(kafka_settings.client_config())
        producer.produce(silence_topic, value=bad.encode(), key=bad.silence_id)
        assert producer.flush(30) == 0

        process = start_alerter(env, log_path)
        base = f"http://127.0.0.1:{api_port}"
        try:
            wait_for(
                lambda: (
                    "Alerter started" in log_path.read_text(errors="replace")
                    or process.poll() is not None
                ),
                WAIT_S,
                "the alerter to start",
            )
            rejected = httpx.post(
                f"{base}/silences",
                json={
                    "device_prefix": "pump-",
                    "duration_s": 1e30,
                    "comment": "c",
                    "created_by": "me",
                },
                timeout=HTTP_TIMEOUT_S,
            )
            listed = httpx.get(f"{base}/silences", timeout=HTTP_TIMEOUT_S)
            one = httpx.get(f"{base}/silences/silence-bad", timeout=HTTP_TIMEOUT_S)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            metrics = httpx.get(metrics_url, timeout=HTTP_TIMEOUT_S).text
        finally:
            exit_code = stop(process)

    output = log_path.read_text(errors="replace")
    assert exit_code == 0, output
    assert rejected.status_code == 400
    assert rejected.json()["field"] == "duration_s"
    assert listed.status_code == 200
    assert listed.json()["silences"] == []
    assert one.status_code == 404
    assert "hbmon_alerter_invalid_silences_total 1.0" in metrics
    assert output.count("Skipping invalid silence record silence-bad") == 1
