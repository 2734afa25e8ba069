"""The hbmon command: startup failures end with a clear message, not a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hbmon.env import SettingError
from hbmon.kafka import KafkaSettings
from hbmon.metrics_server import start_metrics_server

ROOT = Path(__file__).resolve().parents[2]


def run_hbmon(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hbmon", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_unreachable_broker_exits_1_naming_variable():
    # Port 1 on loopback has no listener, so the metadata request fails.
    result = run_hbmon(
        ["topics", "--timeout", "2"], HBMON_KAFKA_BOOTSTRAP="127.0.0.1:1"
    )

    assert result.returncode == 1
    assert "Check HBMON_KAFKA_BOOTSTRAP" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_invalid_log_level_exits_2_naming_variable():
    result = run_hbmon(["topics"], HBMON_LOG_LEVEL="verbose")

    assert result.returncode == 2
    assert "HBMON_LOG_LEVEL='VERBOSE' is not a log level" in result.stderr
    assert "Traceback" not in result.stderr


def test_security_protocol_rejects_unknown_word(monkeypatch):
    monkeypatch.setenv("HBMON_KAFKA_SECURITY_PROTOCOL", "TLS")

    with pytest.raises(SettingError, match="HBMON_KAFKA_SECURITY_PROTOCOL"):
        KafkaSettings.from_env()


def test_metrics_server_busy_port_names_variable():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(SettingError, match=f"HBMON_X_METRICS_PORT={port}"):
            start_metrics_server(
                "127.0.0.1", port, CollectorRegistry(), "HBMON_X_METRICS_PORT"
            )


def test_metrics_server_port_zero_serves_nothing():
    assert start_metrics_server("127.0.0.1", 0, CollectorRegistry(), "X") is None
