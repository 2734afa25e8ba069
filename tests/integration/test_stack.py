"""`hbmon stack`, the command behind `./dev up`, run as a user runs it.

The stack uses the test broker (--bootstrap), so it starts no broker of its
own, and no simulated fleet (--no-simulate), so the test decides which
device falls silent.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest

from hbmon.kafka import KafkaSettings
from hbmon.restart_backoff import MAX_RESTARTS
from tests.integration.services import ROOT, free_port, kafka_env, wait_for

pytestmark = pytest.mark.integration

TIMEOUT_S = 3.0


class StackProcess:
    """One `hbmon stack` child process with its terminal output in a file."""

    def __init__(
        self,
        kafka: KafkaSettings,
        state_dir: Path,
        env: dict[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.state_dir = state_dir
        self.ingest_port = free_port()
        self.output_path = state_dir / "stack-output.txt"
        self.env = {
            **os.environ,
            **kafka_env(kafka),
            "HBMON_MONITOR_GROUP_ID": f"monitor-{suffix}",
            "HBMON_MONITOR_TICK_MS": "200",
            "HBMON_ALERTER_GROUP_ID": f"alerter-{suffix}",
            "HBMON_ALERTER_GROUP_WAIT_S": "1",
            **env,
        }
        self.command = [
            sys.executable,
            "-m",
            "hbmon",
            "stack",
            "--bootstrap",
            kafka.bootstrap_servers,
            "--no-simulate",
            "--state-dir",
            str(state_dir),
            "--smtp-port",
            str(free_port()),
            "--ingest-port",
            str(self.ingest_port),
            "--monitor-metrics-port",
            str(free_port()),
            "--alerter-metrics-port",
            str(free_port()),
            "--alerter-api-port",
            "0",
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "StackProcess":
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def pids(self, role: str) -> list[int]:
        """Return the pids of every `role` process the stack started, in order."""
        pattern = rf"Started {role} \(pid (\d+)\)"
        return [int(pid) for pid in re.findall(pattern, self.output())]

    def interrupt(self, timeout_s: float = 90.0) -> int:
        """Stop the stack as Ctrl-C would and return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def mails(self, device_id: str, kind: str) -> list[EmailMessage]:
        found = []
        for path in sorted((self.state_dir / "mailbox").glob("*.eml")):
            with path.open("rb") as handle:
                mail = BytesParser(policy=policy.default).parse(handle)
            assert isinstance(mail, EmailMessage)
            if (
                mail["X-Hbmon-Device-Id"] == device_id
                and mail["X-Hbmon-Event-Type"] == kind
            ):
                found.append(mail)
        return found


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stack_restarts_killed_monitor(kafka_settings, tmp_path):
    stack = StackProcess(kafka_settings, tmp_path, {}).start()
    try:
        wait_for(lambda: "Ingest on" in stack.output(), 120, "the stack to start")
        [first_monitor] = stack.pids("monitor")

        # 1. A monitor killed without warning is started again.
        os.kill(first_monitor, signal.SIGKILL)
        wait_for(
            lambda: len(stack.pids("monitor")) == 2, 60, "a second monitor process"
        )
        assert f"(1 of {MAX_RESTARTS})." in stack.output()
        # The alerter is a static member of its group.
        [alerter] = stack.pids("alerter")
        environ = Path(f"/proc/{alerter}/environ").read_bytes().split(b"\0")
        assert any(v.startswith(b"HBMON_ALERTER_INSTANCE_ID=") for v in environ)

        # 2. The new monitor does the work: a device that falls silent is
        # mailed as DOWN.
        device = f"stack-{uuid.uuid4().hex[:6]}"
        with httpx.Client(
            base_url=f"http://127.0.0.1:{stack.ingest_port}", timeout=10.0
        ) as client:
            for _ in range(4):
                response = client.post(
                    "/v1/heartbeats", json={"device_id": device, "timeout_s": TIMEOUT_S}
                )
                assert response.status_code == 202, response.text
                time.sleep(0.5)
        wait_for(
            lambda: stack.mails(device, "DEVICE_DOWN"),
            120,
            f"a DOWN mail for {device}",
            every_s=0.5,
        )
        children = [
            pid for role in ("ingest", "monitor", "alerter") for pid in stack.pids(role)
        ]

        # 3. Ctrl-C stops the stack and every service it started.
        exit_code = stack.interrupt()
    finally:
        if stack.process is not None and stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()
        print(f"----- stack output -----\n{stack.output()[-4000:]}")

    assert exit_code == 0
    assert "Stack stopped" in stack.output()
    assert [pid for pid in children if is_running(pid)] == []


def test_stack_stops_after_repeated_failures(kafka_settings, tmp_path):
    # An invalid setting makes the alerter exit at once, every time.
    stack = StackProcess(
        kafka_settings,
        tmp_path,
        {"HBMON_ALERTER_GROUP_WAIT_S": "soon"},
        args=("--max-restart-delay", "2"),
    ).start()
    try:
        assert stack.process is not None
        exit_code = stack.process.wait(timeout=180)
    finally:
        if stack.process is not None and stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()
        print(f"----- stack output -----\n{stack.output()[-4000:]}")

    output = stack.output()
    assert exit_code == 1
    assert len(stack.pids("alerter")) == MAX_RESTARTS + 1
    assert f"alerter exited with code 2 {MAX_RESTARTS + 1} times in a row" in output
    # The delay doubles from about 1 s up to --max-restart-delay.
    delays = [
        float(d) for d in re.findall(r"alerter exited .* again in ([\d.]+) s", output)
    ]
    assert len(delays) == MAX_RESTARTS
    assert 0.9 <= delays[0] <= 1.0
    assert delays[1] > delays[0]
    assert max(delays) <= 2.0
    assert re.search(r"alerter \(pid \d+\) had exited with code 2", output)
    assert "Stack stopped" in output
    assert [
        pid for pid in stack.pids("ingest") + stack.pids("monitor") if is_running(pid)
    ] == []
