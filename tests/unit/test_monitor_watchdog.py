"""The stall watchdog ends a process whose guarded call blocks too long."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.settings import MonitorSettings
from monitor.transaction import (
    CONSUMER_REQUEST_TIMEOUT_MS,
    OFFSET_COMMIT_SENDS,
    commit_limit_s,
)

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = """
import time
from monitor.watchdog import StallWatchdog
watchdog = StallWatchdog(limit_s=0.3, check_every_s=0.05)
with watchdog.guard("A test call"):
    time.sleep(30)
"""

FINISHED = """
import time
from monitor.watchdog import StallWatchdog
watchdog = StallWatchdog(limit_s=0.3, check_every_s=0.05)
with watchdog.guard("A test call"):
    time.sleep(0.05)
time.sleep(0.6)
"""


def run_snippet(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_watchdog_exits_when_call_blocks():
    result = run_snippet(BLOCKED)

    assert result.returncode == 1
    assert "A test call has blocked for more than 0 s" in result.stderr


def test_watchdog_lets_finished_call_pass():
    result = run_snippet(FINISHED)

    assert result.returncode == 0


@pytest.mark.parametrize("session_timeout_ms", [6_000, 10_000, 45_000])
def test_commit_limit_outlasts_librdkafka_commit(session_timeout_ms):
    # A plain commit sent as the broker stops can block for several request
    # timeouts and a session timeout before librdkafka returns an error.
    settings = replace(MonitorSettings(), session_timeout_ms=session_timeout_ms)
    longest_s = (
        OFFSET_COMMIT_SENDS * CONSUMER_REQUEST_TIMEOUT_MS + session_timeout_ms
    ) / 1000

    assert commit_limit_s(settings) > longest_s


def test_commit_limit_outlasts_transaction_timeouts():
    settings = replace(MonitorSettings(), transaction_timeout_ms=60_000)

    assert commit_limit_s(settings) >= 180
