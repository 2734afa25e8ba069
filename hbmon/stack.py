"""The `hbmon stack` role: the whole system on one machine.

It starts a single-node Kafka broker (unless one is given), creates the
topics, starts a local SMTP server that stores each mail as a file, runs
ingest, monitor and alerter as child processes, and drives a simulated
fleet. A service that exits is started again after a growing delay, and
the stack stops once a service exited more than MAX_RESTARTS times in a row
without a long run in between.
Ctrl-C stops everything it started: the terminal's SIGINT reaches
the services directly, the stack sends SIGTERM to any still running, and
then stops the mailbox and, last, the broker.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx

from hbmon.kafka import KafkaSettings, ensure_topics
from hbmon.mailbox import LocalMailbox
from hbmon.restart_backoff import MAX_DELAY_S, RestartBackoff
from hbmon.simulator import FleetPlan, FleetProgress, format_progress, simulate

HELP = "Start broker, topics, ingest, monitor, alerter, a local mailbox and devices."

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka.sh"
ROLES = ("ingest", "monitor", "alerter")
# How often the fleet's progress goes to output that is not a terminal.
PROGRESS_LOG_INTERVAL_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="use the Kafka broker at this host:port instead of starting one "
        "(default: start a broker on 127.0.0.1:--kafka-port)",
    )
    parser.add_argument(
        "--state-dir",
        default=str(ROOT / ".local"),
        help="folder for the mailbox and the service logs (the broker keeps "
        "its data in deploy/kafka.sh's folder)",
    )

    # Ports of the services, so that a second stack or a busy port can move.
    ports = parser.add_argument_group("ports on 127.0.0.1")
    ports.add_argument(
        "--kafka-port",
        type=int,
        default=int(os.environ.get("HBMON_KAFKA_PORT") or 9092),
        help="client port of the broker that the stack starts; its KRaft "
        "controller listens on the next port up",
    )
    ports.add_argument(
        "--smtp-port", type=int, default=8025, help="port of the local mailbox"
    )
    ports.add_argument(
        "--ingest-port", type=int, default=8080, help="port of the ingest service"
    )
    ports.add_argument(
        "--monitor-metrics-port",
        type=int,
        default=9101,
        help="port of the monitor's /metrics; 0 turns it off",
    )
    ports.add_argument(
        "--alerter-metrics-port",
        type=int,
        default=9102,
        help="port of the alerter's /metrics; 0 turns it off",
    )
    ports.add_argument(
        "--alerter-api-port",
        type=int,
        default=9103,
        help="port of the alerter's silences API; 0 turns it off",
    )
    parser.add_argument(
        "--no-simulate",
        action="store_true",
        help="start the services without the simulated fleet",
    )
    parser.add_argument(
        "--max-restart-delay",
        type=float,
        default=MAX_DELAY_S,
        help="max seconds to wait before starting an exited service again; "
        "the delay doubles from 1 s with each exit in a row",
    )
    parser.add_argument(
        "--keep-broker",
        action="store_true",
        help="leave the broker running on exit (when the stack started it)",
    )

    # The simulated fleet.
    plan = FleetPlan()
    fleet = parser.add_argument_group("simulated fleet")
    fleet.add_argument(
        "--devices", type=int, default=plan.devices, help="simulated devices"
    )
    fleet.add_argument(
        "--interval",
        type=float,
        default=plan.interval_s,
        help="seconds between two heartbeats of one device; a device is DOWN "
        "after HBMON_MONITOR_MISSED_INTERVALS (3) missed intervals",
    )
    fleet.add_argument(
        "--silent-share",
        type=float,
        default=plan.silent_share,
        help="share of devices that go silent, from 0 to 1",
    )
    fleet.add_argument(
        "--silence-after",
        type=float,
        default=plan.silence_after_s,
        help="seconds after the start when the silent devices stop posting",
    )
    fleet.add_argument(
        "--silence-for",
        type=float,
        default=plan.silence_for_s,
        help="seconds the silent devices stay silent",
    )


def run(args: argparse.Namespace) -> int:
    stack = Stack(args)
    try:
        asyncio.run(stack.run())
    except StackError as err:
        print(f"hbmon stack: {err}", file=sys.stderr)
        return 1
    return 1 if stack.failed_role else 0


class StackError(RuntimeError):
    """A part of the local stack failed to start."""


class Stack:
    """The processes and servers of one local stack, and their order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.mail_dir = self.state_dir / "mailbox"
        self.log_dir = self.state_dir / "logs"
        self.kafka = replace(
            KafkaSettings.from_env(),
            bootstrap_servers=args.bootstrap or f"127.0.0.1:{args.kafka_port}",
        )
        self.started_broker = False
        self.failed_role = ""
        self.mailbox: LocalMailbox | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.stop = asyncio.Event()
        # Seconds into the simulation of the last progress line written to a
        # file or pipe.
        self.progress_logged_at = -PROGRESS_LOG_INTERVAL_S

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        try:
            await self._start()
            await self._serve()
        finally:
            self._shutdown()

    async def _start(self) -> None:
        # 1. The broker and the topics.
        if not self.args.bootstrap:
            say(
                f"Starting Kafka on {self.kafka.bootstrap_servers} "
                "(the jars are downloaded once, on the first run)"
            )
            self._kafka_script("start")
            self.started_broker = True
        created = ensure_topics(self.kafka)
        say(f"Topics ready on {self.kafka.bootstrap_servers}: {created or 'existing'}")

        # 2. The mailbox that replaces the team's SMTP relay.
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.mailbox = LocalMailbox(self.mail_dir, port=self.args.smtp_port)
        self.mailbox.start()
        say(f"Mailbox on 127.0.0.1:{self.args.smtp_port}, mails in {self.mail_dir}")

        # 3. The three services, each logging to its own file.
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            self.children[role] = self._spawn(role)
        await self._wait_for_ingest()
        say(f"Ingest on http://127.0.0.1:{self.args.ingest_port}/v1/heartbeats")
        say(f"Metrics: {', '.join(self._metrics_urls())}")
        say(f"Service logs in {self.log_dir}; Ctrl-C stops everything")

    async def _serve(self) -> None:
        tasks = [asyncio.create_task(self._watch_mailbox())]
        if not self.args.no_simulate:
            tasks.append(asyncio.create_task(self._simulate()))
        tasks.append(asyncio.create_task(self._watch_children()))
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _simulate(self) -> None:
        plan = FleetPlan(
            url=f"http://127.0.0.1:{self.args.ingest_port}",
            devices=self.args.devices,
            interval_s=self.args.interval,
            silent_share=self.args.silent_share,
            silence_after_s=self.args.silence_after,
            silence_for_s=self.args.silence_for,
        )
        silent = sorted(plan.silent_ids())
        say(
            f"Simulating {plan.devices} devices every {plan.interval_s:g} s; "
            f"{', '.join(silent) or 'none'} go silent after "
            f"{plan.silence_after_s:g} s for {plan.silence_for_s:g} s"
        )
        await simulate(plan, show_progress=self._show_progress, stop=self.stop)

    def _show_progress(
        self, plan: FleetPlan, progress: FleetProgress, elapsed: float
    ) -> None:
        line = format_progress(plan, progress, elapsed)
        if sys.stdout.isatty():
            sys.stdout.write("\r" + line.ljust(100))
            sys.stdout.flush()
        elif elapsed >= self.progress_logged_at + PROGRESS_LOG_INTERVAL_S:
            # A file or pipe keeps every line, so only one per interval.
            self.progress_logged_at = elapsed
            print(line, flush=True)

    async def _watch_mailbox(self) -> None:
        seen: set[Path] = set(self.mail_dir.glob("*.eml"))
        while True:
            await asyncio.sleep(1.0)
            for path in sorted(set(self.mail_dir.glob("*.eml")) - seen):
                seen.add(path)
                with path.open("rb") as handle:
                    mail = BytesParser(policy=policy.default).parse(handle)
                say(f"Mail to {mail['To']}: {mail['Subject']}  ({path.name})")

    async def _watch_children(self) -> None:
        # A service that exits is started again, as an orchestrator would,
        # after a delay that doubles with each exit in a row. After more than
        # MAX_RESTARTS exits in a row, the stack stops.
        backoffs = {
            role: RestartBackoff(max_delay_s=self.args.max_restart_delay)
            for role in ROLES
        }
        due: dict[str, float] = {}
        while True:
            await asyncio.sleep(1.0)
            for role, child in list(self.children.items()):
                if role in due or child.poll() is None:
                    continue
                log = self.log_dir / f"{role}.log"
                backoff = backoffs[role]
                ran_s = time.monotonic() - self.started_at[role]
                delay_s = backoff.next_delay_s(ran_s)
                if delay_s is None:
                    self.failed_role = role
                    say(
                        f"{role} exited with {exit_status(child.returncode)} "
                        f"{backoff.max_restarts + 1} times in a row; see {log}. "
                        "Stopping the stack."
                    )
                    self.stop.set()
                    return
                say(
                    f"{role} exited with {exit_status(child.returncode)} after "
                    f"{ran_s:.0f} s; "
                    f"see {log}. Starting it again in {delay_s:.1f} s "
                    f"({backoff.failures} of {backoff.max_restarts})."
                )
                due[role] = time.monotonic() + delay_s
            for role, due_at in list(due.items()):
                if time.monotonic() >= due_at:
                    del due[role]
                    self.children[role] = self._spawn(role)

    # Helpers

    def _metrics_urls(self) -> list[str]:
        ports = {
            "ingest": self.args.ingest_port,
            "monitor": self.args.monitor_metrics_port,
            "alerter": self.args.alerter_metrics_port,
        }
        return [
            f"http://127.0.0.1:{port}/metrics ({role})"
            for role, port in ports.items()
            if port
        ]

    def _kafka_script(self, command: str) -> None:
        port = self.args.kafka_port
        env = {
            **os.environ,
            "HBMON_KAFKA_PORT": str(port),
            "HBMON_KAFKA_CONTROLLER_PORT": os.environ.get(
                "HBMON_KAFKA_CONTROLLER_PORT", str(port + 1)
            ),
        }
        result = subprocess.run([str(KAFKA_SCRIPT), command], env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"deploy/kafka.sh {command} failed ({result.returncode})")

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HBMON_KAFKA_BOOTSTRAP": self.kafka.bootstrap_servers,
            "HBMON_INGEST_PORT": str(self.args.ingest_port),
            "HBMON_MONITOR_METRICS_PORT": str(self.args.monitor_metrics_port),
            "HBMON_ALERTER_METRICS_PORT": str(self.args.alerter_metrics_port),
            "HBMON_ALERTER_API_PORT": str(self.args.alerter_api_port),
            "HBMON_SMTP_HOST": "127.0.0.1",
            "HBMON_SMTP_PORT": str(self.args.smtp_port),
            "HBMON_SMTP_SECURITY": "none",
        }
        if role == "alerter":
            # Static group membership: a restarted alerter gets its
            # partitions back at once, not after the session timeout.
            env.setdefault(
                "HBMON_ALERTER_INSTANCE_ID", f"{socket.gethostname()}-stack-alerter"
            )
        with (self.log_dir / f"{role}.log").open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "hbmon", role],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.started_at[role] = time.monotonic()
        say(f"Started {role} (pid {child.pid})")
        return child

    async def _wait_for_ingest(self, timeout_s: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.args.ingest_port}/healthz"
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if self.children["ingest"].poll() is not None:
                    break
                await asyncio.sleep(0.5)
        raise StackError(
            f"ingest did not respond on {url}; see {self.log_dir / 'ingest.log'}"
        )

    def _shutdown(self) -> None:
        print()
        for role in reversed(ROLES):
            child = self.children.get(role)
            if child is None:
                continue
            if child.poll() is not None:
                # Ctrl-C reaches every process of the terminal's group at once,
                # so most services have stopped on their own by now.
                if child.returncode == 0:
                    say(f"{role} (pid {child.pid}) stopped")
                else:
                    status = exit_status(child.returncode)
                    say(f"{role} (pid {child.pid}) had exited with {status}")
                continue
            say(f"Stopping {role} (pid {child.pid})")
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                say(f"{role} did not stop within 20 s; killing it")
                child.kill()
                child.wait()
        if self.mailbox is not None:
            self.mailbox.stop()
        if self.started_broker and not self.args.keep_broker:
            say("Stopping Kafka")
            self._kafka_script("stop")
        say("Stack stopped")


def exit_status(returncode: int) -> str:
    """Return how a child process ended: "code 2", or "signal SIGKILL"."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def say(line: str) -> None:
    """Print a line, over the progress line when the output is a terminal."""
    if sys.stdout.isatty():
        line = "\r" + line.ljust(100)
    print(line, flush=True)
