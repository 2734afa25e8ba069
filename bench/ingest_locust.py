"""Run a Locust scenario against ingest, headless, and write a report.

Usage:
    ./dev bench ingest_locust.py --scenario fleet --users 50 --run-time 60s
    ./dev bench ingest_locust.py --scenario flood --workers 2 --run-time 2m
    ./dev bench ingest_locust.py --scenario gateway --host http://ingest.example:8080

Without --host, the runner starts the bench broker (unless --bootstrap names
one), creates a new heartbeat topic, and starts ingest with one worker on
--server-core, with Locust on --load-core. With --host, it runs only Locust,
against that address, unpinned, and Kafka is not checked.

--workers K runs Locust's distributed mode on this machine: one master and
K worker processes. On a cluster, pass --workers K --external-workers
--master-bind-host 0.0.0.0 --master-bind-port 5557 --host URL here, and
start the K workers on other machines with
`locust -f bench/locustfile.py --worker --master-host MASTER --master-port 5557`;
they take the scenario options from the master.

The output folder gets Locust's CSV files (locust_stats.csv,
locust_stats_history.csv with every endpoint, locust_failures.csv,
locust_exceptions.csv), its final statistics (locust_final.json), report.md,
report.png (throughput and p50/p95/p99 latency over time) and result.json.
Locust ends the run after --run-time, and every process started here is
stopped by its pid on exit, Ctrl-C or error.
"""

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import ingest_cpu
from ingest_locust_report import (
    LocustResult,
    format_report,
    plot_history,
    read_history,
    read_totals,
)
from ingest_services import (
    ROOT,
    BenchBroker,
    BenchTopic,
    ChildProcess,
    HelpFormatter,
    add_ingest_env_argument,
    add_output_arguments,
    free_port,
    ingest_process,
    pinned,
    run_settings,
    scrape_counter,
    stop_on_signals,
    wait_ready,
    write_results,
)

logger = logging.getLogger("ingest_locust")

LOCUSTFILE = ROOT / "bench" / "locustfile.py"
SCENARIOS = {"fleet": "FleetUser", "flood": "FloodUser", "gateway": "GatewayUser"}
ACCEPTED_METRIC = "hbmon_ingest_heartbeats_accepted_total"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_run_time(text: str) -> int:
    """Return the seconds of a Locust run time such as "90", "90s", "2m" or "1h30m".

    Raises:
        ValueError: `text` is not in that form or is zero.
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"run time {text!r} must look like 90s, 2m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"run time {text!r} must be longer than 0 s")
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a Locust scenario against ingest and write a report.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="fleet")
    parser.add_argument("--users", type=int, default=50, help="Locust users")
    parser.add_argument(
        "--spawn-rate", type=float, default=10.0, help="users started per second"
    )
    parser.add_argument(
        "--run-time", default="60s", help="Locust run time: 90s, 2m, 1h30m"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust worker processes; 0 runs one local Locust process",
    )

    # Where the load goes, and where what runs here is placed.
    parser.add_argument(
        "--host",
        default="",
        help="ingest base URL to load, e.g. http://10.0.0.5:8080; nothing is "
        "started then",
    )
    parser.add_argument(
        "--master-bind-host",
        default="127.0.0.1",
        help="address the Locust master listens on for workers",
    )
    parser.add_argument(
        "--master-bind-port",
        type=int,
        default=0,
        help="port the Locust master listens on; 0 picks a free one",
    )
    parser.add_argument(
        "--external-workers",
        action="store_true",
        help="start no workers here: the master waits for --workers workers "
        "started on other machines",
    )
    parser.add_argument(
        "--bootstrap",
        default="",
        help="use the Kafka broker at host:port instead of starting the bench broker",
    )
    parser.add_argument(
        "--partitions", type=int, default=6, help="partitions of the run's topic"
    )
    parser.add_argument(
        "--server-core", default="0", help="core list for ingest (local runs)"
    )
    parser.add_argument(
        "--load-core",
        default="1",
        help="core list for Locust and the bench broker (local runs)",
    )
    add_ingest_env_argument(parser)

    # Output and the scenario's own options.
    add_output_arguments(
        parser, "output folder (default: a new .local/bench/locust-SCENARIO-TIME)"
    )
    scenario = parser.add_argument_group("scenario options (see bench/locustfile.py)")
    scenario.add_argument(
        "--fleet-devices", type=int, default=10_000, help="fleet: devices"
    )
    scenario.add_argument(
        "--fleet-interval-s",
        type=float,
        default=10.0,
        help="fleet: seconds between two heartbeats of one device",
    )
    scenario.add_argument(
        "--fleet-jitter",
        type=float,
        default=0.2,
        help="fleet: spread of one device's interval, as a share of it",
    )
    scenario.add_argument(
        "--flood-devices",
        type=int,
        default=100_000,
        help="flood and gateway: distinct device ids",
    )
    scenario.add_argument(
        "--gateway-batch-size",
        type=int,
        default=100,
        help="gateway: heartbeats per batch request",
    )
    scenario.add_argument(
        "--gateway-interval-s",
        type=float,
        default=0.0,
        help="gateway: seconds between two batches of one user; 0 = no wait",
    )
    scenario.add_argument(
        "--payload",
        choices=("basic", "full"),
        default="basic",
        help="heartbeat fields: basic = device_id, seq, ts; full adds "
        "interval_s and attrs",
    )

    args = parser.parse_args(argv)
    try:
        args.run_time_s = parse_run_time(args.run_time)
    except ValueError as err:
        parser.error(f"--run-time: {err}")
    if args.users < 1 or args.spawn_rate <= 0 or args.workers < 0:
        parser.error("--users must be at least 1, --spawn-rate above 0, --workers >= 0")
    if args.external_workers and not args.workers:
        parser.error("--external-workers needs --workers K, the workers to wait for")
    if args.host and not re.match(r"^https?://", args.host):
        parser.error(f"--host={args.host} must start with http:// or https://")
    if args.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.out = ROOT / ".local" / "bench" / f"locust-{args.scenario}-{stamp}"
    return args


class LocustRun:
    """Broker, topic and ingest (unless remote), then Locust; `cleanup` stops all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.local = not args.host
        self.server_cores = args.server_core if self.local else None
        self.load_cores = args.load_core if self.local else None
        self.broker: BenchBroker | None = None
        self.topic: BenchTopic | None = None
        self.children: list[ChildProcess] = []

    def execute(self) -> LocustResult:
        self.out.mkdir(parents=True, exist_ok=True)
        result = LocustResult(
            machine=ingest_cpu.machine(), settings=run_settings(self.args)
        )

        # What Locust loads: a remote host, or ingest started here.
        ingest = None
        host = self.args.host
        if self.local:
            ingest, host = self._start_ingest()
        result.host = host

        # Locust, bounded by its own --run-time and by a timeout here.
        before = ingest_cpu.snapshot(ingest.pid if ingest else None)
        started = time.monotonic()
        self._run_locust(host)
        result.wall_s = time.monotonic() - started
        if ingest is not None:
            after = ingest_cpu.snapshot(ingest.pid)
            result.ingest_cpu = ingest_cpu.usage(before, after)

        # Locust's figures.
        result.totals = read_totals(self.out / "locust_final.json")
        history = read_history(self.out / "locust_stats_history.csv")
        result.history_rows = len(history)
        plot_history(history, result, self.out / "report.png")

        # Stopping ingest flushes its producer; then count the records.
        if ingest is not None and self.topic is not None:
            result.ingest_metric_accepted = int(
                scrape_counter(host + "/metrics", ACCEPTED_METRIC)
            )
            ingest.stop()
            self.children.remove(ingest)
            result.kafka_records, result.kafka_heartbeats = self.topic.heartbeat_count()
        return result

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.topic is not None:
            self.topic.delete()
        if self.broker is not None:
            self.broker.stop()

    def _start_ingest(self) -> tuple[ChildProcess, str]:
        bootstrap = self.args.bootstrap
        if not bootstrap:
            self.broker = BenchBroker(cores=self.load_cores)
            self.broker.start()
            bootstrap = self.broker.bootstrap
        self.topic = BenchTopic(
            bootstrap,
            f"bench-locust-{int(time.time())}-{os.getpid()}",
            self.args.partitions,
        )
        self.topic.create()
        port = free_port()
        host = f"http://127.0.0.1:{port}"
        ingest = ingest_process(
            port=port,
            topic=self.topic,
            cores=self.server_cores,
            log_path=self.out / "ingest.log",
            extra_env=dict(self.args.ingest_env),
        )
        self.children.append(ingest.start())
        wait_ready(ingest, host + "/readyz")
        return ingest, host

    def _run_locust(self, host: str) -> None:
        """Run the master (or the one process) and any workers to the end."""
        args = self.args
        command = [
            *self._locust_base(),
            "--headless",
            f"--users={args.users}",
            f"--spawn-rate={args.spawn_rate}",
            f"--run-time={args.run_time_s}s",
            f"--host={host}",
            f"--csv={self.out / 'locust'}",
            "--csv-full-history",
            # Locust appends ".json" to this name.
            f"--json-file={self.out / 'locust_final'}",
            "--stop-timeout=5",
            "--only-summary",
            f"--logfile={self.out / 'locust.log'}",
            *self._scenario_options(),
        ]
        workers = []
        if args.workers:
            port = args.master_bind_port or free_port()
            logger.info(
                "Locust master listens for %d workers on %s:%d",
                args.workers,
                args.master_bind_host,
                port,
            )
            command += [
                "--master",
                f"--master-bind-host={args.master_bind_host}",
                f"--master-bind-port={port}",
                f"--expect-workers={args.workers}",
                "--expect-workers-max-wait=60",
            ]
            workers = [
                ChildProcess(
                    f"locust worker {index + 1}",
                    pinned(
                        [
                            *self._locust_base(),
                            "--worker",
                            "--master-host=127.0.0.1",
                            f"--master-port={port}",
                        ],
                        self.load_cores,
                    ),
                    self.out / f"locust-worker-{index + 1}.log",
                )
                for index in range(0 if args.external_workers else args.workers)
            ]
        master = ChildProcess(
            "locust master" if workers else "locust",
            pinned([*command, SCENARIOS[args.scenario]], self.load_cores),
            self.out / "locust-output.log",
        )
        self.children.append(master.start())
        for worker in workers:
            self.children.append(worker.start())

        # Spawning, the run, the stop timeout and the workers' wait, plus slack.
        timeout_s = args.run_time_s + args.users / args.spawn_rate + 60 + 60
        status = master.wait(timeout_s)
        if status is None:
            logger.error("Locust ran over %s s; stopping it", timeout_s)
        master.stop()
        self.children.remove(master)
        for worker in workers:
            if worker.wait(10.0) is None:
                logger.warning(
                    "%s still runs after the master; stopping it", worker.name
                )
            worker.stop()
            self.children.remove(worker)
        logger.info(
            "Locust exited with status %s (1 means some requests failed)", status
        )

    def _locust_base(self) -> list[str]:
        return [sys.executable, "-m", "locust", f"--locustfile={LOCUSTFILE}"]

    def _scenario_options(self) -> list[str]:
        args = self.args
        return [
            f"--fleet-devices={args.fleet_devices}",
            f"--fleet-interval-s={args.fleet_interval_s}",
            f"--fleet-jitter={args.fleet_jitter}",
            f"--fleet-users={args.users}",
            f"--flood-devices={args.flood_devices}",
            f"--gateway-batch-size={args.gateway_batch_size}",
            f"--gateway-interval-s={args.gateway_interval_s}",
            f"--payload={args.payload}",
        ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop_on_signals()
    run = LocustRun(args)
    try:
        result = run.execute()
    except KeyboardInterrupt:
        logger.warning("Interrupted; stopping everything this run started")
        return 130
    finally:
        run.cleanup()

    # Report.
    write_results(args.out, format_report(result), result.to_json(), args.json)
    logger.info("Wrote %s", args.out)
    return 0 if result.kafka_check_passed() is not False else 1


if __name__ == "__main__":
    sys.exit(main())
