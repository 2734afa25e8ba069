"""Fixtures shared by the test suite.

Integration tests get a real single-node Kafka broker. The session starts
one with deploy/kafka.sh on test ports and a test data folder, unless
HBMON_TEST_BOOTSTRAP names a broker that is already running.
"""

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hbmon.kafka import KafkaSettings, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka.sh"
TEST_BROKER_ENV = {
    "HBMON_KAFKA_PORT": "19092",
    "HBMON_KAFKA_CONTROLLER_PORT": "19093",
    "HBMON_KAFKA_DIR": str(ROOT / ".local" / "kafka-test"),
}


def _run_kafka_script(command: str) -> None:
    env = {**os.environ, **TEST_BROKER_ENV}
    subprocess.run([str(KAFKA_SCRIPT), command], env=env, check=True, timeout=600)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Return the bootstrap address of a running broker, starting one if needed."""
    given = os.environ.get("HBMON_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    _run_kafka_script("reset")
    _run_kafka_script("start")
    try:
        yield f"127.0.0.1:{TEST_BROKER_ENV['HBMON_KAFKA_PORT']}"
    finally:
        _run_kafka_script("stop")


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Return settings with topics of their own, created on the test broker.

    Each test gets fresh topic names, so what one test publishes never
    reaches another.
    """
    suffix = uuid.uuid4().hex[:8]
    settings = replace(
        KafkaSettings(),
        bootstrap_servers=kafka_bootstrap,
        heartbeat_topic=f"iot-data-{suffix}",
        alert_topic=f"device-alerts-{suffix}",
        heartbeat_partitions=3,
        alert_partitions=2,
    )
    ensure_topics(settings)
    return settings
