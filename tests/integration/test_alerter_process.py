"""The alerter role as a real process: metrics endpoint, mail, and SIGTERM."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from hbmon.events import DEVICE_DOWN, AlertEvent, event_id_for
from hbmon.kafka import KafkaSettings
from hbmon.mailbox import LocalMailbox
from tests.integration.services import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

WAIT_S = 60.0

# Runs the role module the way `hbmon alerter` does, without importing the
# other roles that the `hbmon` parser loads.
RUN_ALERTER = (
    "import argparse, sys\n"
    "from alerter import cli\n"
    "parser = argparse.ArgumentParser()\n"
    "cli.add_arguments(parser)\n"
    "sys.exit(cli.run(parser.parse_args(['--poll-timeout', '0.2'])))\n"
)


def test_alerter_process_mails_and_stops(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    event = AlertEvent(
        event_id=event_id_for(DEVICE_DOWN, "sensor-17", 1_714_572_131_000),
        type=DEVICE_DOWN,
        device_id="sensor-17",
        severity="critical",
        last_seen_ms=1_714_572_131_000,
        deadline_ms=1_714_572_191_000,
        timeout_ms=60_000,
        detected_ms=1_714_572_192_000,
        partition=0,
        message="sensor-17 sent no heartbeat within its 60 s timeout",
    )
    producer = Producer(kafka_settings.client_config())
    producer.produce(kafka_settings.alert_topic, value=event.encode(), key=b"k")
    assert producer.flush(30) == 0

    metrics_port = free_port()
    log_path = tmp_path / "alerter.log"
    with LocalMailbox(tmp_path / "mail", port=0) as mailbox, log_path.open("wb") as log:
        env = {
            **os.environ,
            "HBMON_KAFKA_BOOTSTRAP": kafka_settings.bootstrap_servers,
            "HBMON_HEARTBEAT_TOPIC": kafka_settings.heartbeat_topic,
            "HBMON_ALERT_TOPIC": kafka_settings.alert_topic,
            "HBMON_SMTP_PORT": str(mailbox.port),
            "HBMON_SMTP_USER": "",
            "HBMON_SMTP_PASSWORD": "",
            "HBMON_ALERTER_GROUP_ID": f"alerter-process-{uuid.uuid4().hex[:8]}",
            "HBMON_ALERTER_METRICS_PORT": str(metrics_port),
        }
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_ALERTER],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
            process.send_signal(signal.SIGTERM)
            try:
                exit_code = process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                exit_code = process.wait()

    output = log_path.read_text(errors="replace")
    assert mail_count == 1, output
    assert exit_code == 0, output
    assert "hbmon_alerter_mails_sent_total 1.0" in metrics
    assert "Alerter started" in output
    assert f"Mail sent for event {event.event_id}" in output
    assert "Alerter stopped" in output
