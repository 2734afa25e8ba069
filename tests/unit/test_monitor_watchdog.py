"""The stall watchdog ends a process whose guarded call blocks too long."""

import subprocess
import sys
from pathlib import Path

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
