"""The processes that the ingest benchmarks start, pin to cores and stop.

Every process started here is stopped by its own pid: a child by
``ChildProcess.stop`` and the broker by ``deploy/kafka.sh stop``, which
signals the pid in its pid file. Children get sessions of their own, so a
Ctrl-C in the terminal reaches only the runner, which then stops them in
order (ingest flushes its producer before the broker goes away).
"""

import argparse
import concurrent.futures
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from hbmon.kafka import KafkaSettings, ensure_topics

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = ROOT / "deploy" / "kafka.sh"
NOOP_APP = ROOT / "bench" / "noop_app.py"

# The bench broker's own ports and data folder, apart from those of the
# tests (19092) and of "./dev up" (9092).
BROKER_ENV = {
    "HBMON_KAFKA_PORT": "49092",
    "HBMON_KAFKA_CONTROLLER_PORT": "49093",
    "HBMON_KAFKA_DIR": ".local/kafka-bench",
}


def source_state() -> dict[str, object]:
    """Return the commit that is checked out and the changed files of the services.

    Benchmarks run the working tree, so a figure belongs to the commit plus
    these changes.
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    ).stdout.strip()
    changes = subprocess.run(
        ["git", "status", "--porcelain", "--", "ingest", "hbmon"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    ).stdout.splitlines()
    return {"commit": commit, "changed": [line[3:] for line in changes]}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default in --help, except a default of None."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], cores: str | None) -> list[str]:
    """Prefix `command` with taskset so that it runs only on `cores` ("0", "1-3")."""
    if not cores:
        return command
    return ["taskset", "--cpu-list", cores, *command]


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt, so `finally` stops children.

    SIGINT is set too because a shell starts background jobs with SIGINT
    ignored, and Python keeps it ignored then.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


class ChildProcess:
    """One child process with its output in a log file, stopped by its pid."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env or {}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process.pid

    def start(self) -> "ChildProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        logger.info("Started %s (pid %d), log %s", self.name, self.pid, self.log_path)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the process to exit; return its status or None."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Send SIGTERM, then SIGKILL after `timeout_s`; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait(timeout_s) is None:
                logger.warning(
                    "%s (pid %d) still runs %s s after SIGTERM; sending SIGKILL",
                    self.name,
                    self.pid,
                    timeout_s,
                )
                self.process.kill()
                self.process.wait()
        logger.info("Stopped %s (pid %d)", self.name, self.pid)
        return self.process.returncode


class BenchBroker:
    """A single-node Kafka broker run by deploy/kafka.sh on the bench ports.

    A broker that already runs in the bench data folder is used as it is
    and left running, because this process did not start it.
    """

    def __init__(self, cores: str | None) -> None:
        self.cores = cores
        self.env = {**os.environ, **BROKER_ENV}
        self.bootstrap = f"127.0.0.1:{BROKER_ENV['HBMON_KAFKA_PORT']}"
        self.started = False

    def start(self) -> None:
        status = self._script("status", check=False)
        if status.returncode == 0:
            logger.info("Using the running bench broker: %s", status.stdout.strip())
            return
        self.started = True
        self._script("start", cores=self.cores)

    def stop(self) -> None:
        if self.started:
            self._script("stop", check=False)
            self.started = False

    def _script(
        self, command: str, *, check: bool = True, cores: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Affinity is inherited, so taskset on "start" pins the broker too.
        return subprocess.run(
            pinned([str(KAFKA_SCRIPT), command], cores),
            env=self.env,
            check=check,
            text=True,
            stdout=subprocess.PIPE,
            timeout=600,
        )


class BenchTopic:
    """A heartbeat topic of this run, created like the real one and deleted after."""

    def __init__(self, bootstrap: str, name: str, partitions: int) -> None:
        self.settings = replace(
            KafkaSettings.from_env(),
            bootstrap_servers=bootstrap,
            heartbeat_topic=name,
            alert_topic=f"{name}-alerts",
            heartbeat_partitions=partitions,
        )
        self.created: list[str] = []

    @property
    def name(self) -> str:
        return self.settings.heartbeat_topic

    def create(self) -> None:
        self.created = ensure_topics(self.settings, timeout_s=30.0)
        logger.info("Created topics %s", ", ".join(self.created))

    def delete(self) -> None:
        if not self.created:
            return
        admin = AdminClient(self.settings.client_config())
        for name, future in admin.delete_topics(self.created).items():
            try:
                future.result(timeout=30.0)
            except (KafkaException, concurrent.futures.TimeoutError) as err:
                logger.warning("Deleting topic %s failed: %s; it stays", name, err)
                continue
            logger.info("Deleted topic %s", name)
        self.created = []

    def heartbeat_count(self) -> tuple[int, int]:
        """Return the records in the topic and the heartbeats they hold.

        The topic is new, so every partition starts at offset 0, and the
        idempotent producer writes each record once. A bundle record (a
        JSON array) contains one heartbeat per item, any other record one.
        Reads every record, which takes about a second per million.
        """
        consumer = Consumer(
            self.settings.client_config(
                group_id="hbmon-bench-count",
                enable_auto_commit=False,
                fetch_max_bytes=52_428_800,
            )
        )
        try:
            metadata = consumer.list_topics(self.name, timeout=30.0)
            ends: dict[int, int] = {}
            for partition in metadata.topics[self.name].partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.name, partition), timeout=30.0
                )
                if high > 0:
                    ends[partition] = high
            records = sum(ends.values())
            consumer.assign([TopicPartition(self.name, p, 0) for p in ends])
            heartbeats = 0
            deadline = time.monotonic() + 600.0
            while ends and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=10_000, timeout=1.0):
                    if message.error() is not None:
                        continue
                    value = message.value() or b""
                    heartbeats += len(orjson.loads(value)) if value[:1] == b"[" else 1
                    partition, offset = message.partition(), message.offset()
                    if partition is None or offset is None:
                        continue
                    if offset + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
            if ends:
                raise RuntimeError(f"partitions {sorted(ends)} not read to the end")
            return records, heartbeats
        finally:
            consumer.close()


def ingest_process(
    *,
    port: int,
    topic: BenchTopic,
    cores: str | None,
    log_path: Path,
    extra_env: dict[str, str],
    cwd: Path = ROOT,
) -> ChildProcess:
    """Return `hbmon ingest` with one worker on `port`, producing to `topic`.

    It imports ingest from `cwd`, which `python -m` puts first on the path.
    """
    env = {
        "HBMON_KAFKA_BOOTSTRAP": topic.settings.bootstrap_servers,
        "HBMON_HEARTBEAT_TOPIC": topic.name,
        "HBMON_INGEST_HOST": "127.0.0.1",
        "HBMON_INGEST_PORT": str(port),
        "HBMON_INGEST_WORKERS": "1",
        **extra_env,
    }
    command = pinned([sys.executable, "-m", "hbmon", "ingest"], cores)
    return ChildProcess("ingest", command, log_path, env, cwd)


def noop_process(*, port: int, cores: str | None, log_path: Path) -> ChildProcess:
    """Return the no-op baseline app on `port`."""
    command = [
        sys.executable,
        str(NOOP_APP),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return ChildProcess("no-op app", pinned(command, cores), log_path)


def wait_ready(child: ChildProcess, url: str, timeout_s: float = 60.0) -> None:
    """Wait until GET `url` returns a 2xx status.

    Raises:
        RuntimeError: the process exited, or `timeout_s` passed first.
    """
    deadline = time.monotonic() + timeout_s
    for _ in poll_until(deadline, interval_s=0.2):
        if not child.running():
            raise RuntimeError(
                f"{child.name} exited during startup; see {child.log_path}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            continue
    raise RuntimeError(
        f"{child.name} not ready at {url} after {timeout_s} s; see {child.log_path}"
    )


def poll_until(deadline: float, interval_s: float) -> Iterator[None]:
    """Yield, then sleep `interval_s`, until time.monotonic() passes `deadline`."""
    while time.monotonic() < deadline:
        yield
        time.sleep(interval_s)


def scrape_counter(url: str, name: str) -> float:
    """Return the sum of every sample of counter `name` on a Prometheus page."""
    with urllib.request.urlopen(url, timeout=10.0) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            metric, _, value = line.rpartition(" ")
            if metric == name or metric.startswith(name + "{"):
                total += float(value)
    return total


def finite_float(text: str) -> float:
    """Parse a command-line number, rejecting nan and infinities."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def add_ingest_env_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable --ingest-env, read as `dict(args.ingest_env)`."""
    parser.add_argument(
        "--ingest-env",
        action="append",
        type=name_value,
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for every ingest that the run starts, e.g. "
        "HBMON_INGEST_LINGER_MS=20; repeatable",
    )


def name_value(text: str) -> tuple[str, str]:
    """Parse a command-line NAME=VALUE pair."""
    name, sign, value = text.partition("=")
    if not sign or not name:
        raise argparse.ArgumentTypeError(f"{text} must have the form NAME=VALUE")
    return name, value


def add_output_arguments(parser: argparse.ArgumentParser, contents: str) -> None:
    """Add --out, the run's folder described as `contents`, and --json."""
    parser.add_argument("--out", type=Path, default=None, help=contents)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")


def run_settings(args: argparse.Namespace) -> dict[str, object]:
    """Return a run's arguments, command line and source state for its JSON."""
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
    }
    settings["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    settings["source"] = source_state()
    return settings


def write_results(out: Path, report: str, data: object, json_path: Path | None) -> None:
    """Print the report and write report.md and result.json into `out`.

    The JSON goes to `json_path` too when the caller passed --json.
    """
    print(report)
    (out / "report.md").write_text(report)
    text = json.dumps(data, indent=2) + "\n"
    (out / "result.json").write_text(text)
    if json_path:
        json_path.write_text(text)
