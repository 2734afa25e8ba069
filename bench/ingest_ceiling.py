"""Measure ingest's ceiling on one server core against a no-op app, with wrk.

Usage: ./dev bench ingest_ceiling.py [--duration 20] [--json PATH] [--help]

Steps, each bounded in time:

1. Start the bench broker (deploy/kafka.sh on 127.0.0.1:49092, pinned to
   the load core) unless --bootstrap names one, and create a new heartbeat
   topic for this run.
2. Start the no-op app (bench/noop_app.py) and ingest (hbmon ingest, one
   worker), both pinned to the server core.
3. Throughput: wrk on the load core sends single heartbeats, then batches,
   to each server, --rounds times. Each server gets a warm-up run, then the
   two take turns in --slices runs that add up to --duration each.
4. Latency: first, bench/core_steadiness.py probes how often the idle
   server core runs too slowly for that load. Then single heartbeats at
   --latency-share of ingest's single peak,
   to ingest and then to the no-op app, from the open-loop client
   (bench/ingest_openloop.py), because wrk has no fixed-rate mode. It
   uses the --connections of the single-heartbeat peak. The no-op app's
   figure is the floor that the machine, the server stack and the client
   set at that rate.
5. Profiles: py-spy samples each server under wrk's single load.
6. Stop ingest, which flushes its producer, read every record in the
   topic, and compare the heartbeats they hold with those that got a 202.

Every figure is printed with its ratio to the baseline measured in this run
and to its target, and written to OUT/result.json (and --json PATH);
OUT/report.md has the same text as the output.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import ingest_cpu
from core_steadiness import probe
from ingest_ceiling_report import CeilingResult, Phase, format_report, parse_cores
from ingest_openloop import OpenLoopResult
from ingest_profile import ProfileSummary, record_command, summarize
from ingest_services import (
    ROOT,
    BenchBroker,
    BenchTopic,
    ChildProcess,
    HelpFormatter,
    add_ingest_env_argument,
    add_output_arguments,
    finite_float,
    free_port,
    ingest_process,
    noop_process,
    pinned,
    run_settings,
    scrape_counter,
    stop_on_signals,
    wait_ready,
    write_results,
)
from ingest_wrk import (
    WrkLoad,
    WrkResult,
    add_payload_arguments,
    check_wrk,
    combine_results,
    run_wrk,
)

logger = logging.getLogger("ingest_ceiling")

OPENLOOP = ROOT / "bench" / "ingest_openloop.py"
SINGLE_PATH = "/v1/heartbeats"
BATCH_PATH = "/v1/heartbeats/batch"
ACCEPTED_METRIC = "hbmon_ingest_heartbeats_accepted_total"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure ingest's throughput ceiling and latency on one core "
        "against a no-op ASGI app on the same server stack.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--duration",
        type=finite_float,
        default=20.0,
        help="seconds per measured phase",
    )
    parser.add_argument(
        "--warmup",
        type=finite_float,
        default=3.0,
        help="seconds of load before each phase",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="wrk runs that each throughput phase is split into, alternating "
        "between the servers; --duration / --slices must be whole seconds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="times to measure each throughput and latency phase; figures use "
        "the median",
    )

    # What wrk and the open-loop client send.
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        help="connections for single heartbeats, of wrk and the open-loop client",
    )
    parser.add_argument(
        "--batch-connections", type=int, default=8, help="wrk connections for batches"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="heartbeats per batch request"
    )
    add_payload_arguments(parser)
    parser.add_argument(
        "--latency-share",
        type=float,
        default=0.7,
        help="fixed rate of the latency phase, as a share of ingest's single peak",
    )

    # Profiles, placement on cores, the broker and ingest's settings.
    parser.add_argument(
        "--steadiness-duration",
        type=float,
        default=10.0,
        help="seconds of probing the server core's steadiness before the latency "
        "runs (bench/core_steadiness.py); 0 skips the probe",
    )
    parser.add_argument(
        "--profile-duration",
        type=float,
        default=10.0,
        help="seconds of py-spy sampling per server; 0 skips profiling",
    )
    parser.add_argument(
        "--server-core", default="0", help="core list for the server (taskset)"
    )
    parser.add_argument(
        "--load-core",
        default="1",
        help="core list for wrk, the open-loop client, py-spy and the broker",
    )
    parser.add_argument(
        "--bootstrap",
        default="",
        help="use the Kafka broker at host:port instead of starting the bench broker",
    )
    parser.add_argument(
        "--partitions", type=int, default=6, help="partitions of the run's topic"
    )
    add_ingest_env_argument(parser)

    # Output.
    add_output_arguments(
        parser,
        "folder for logs, profiles and results "
        "(default: a new .local/bench/ingest-ceiling-TIME)",
    )

    args = parser.parse_args(argv)
    slice_s = args.duration / max(1, args.slices)
    if args.slices < 1 or slice_s < 1 or slice_s != int(slice_s):
        parser.error(
            f"--duration {args.duration:g} / --slices {args.slices} must be a "
            "whole number of seconds, at least 1"
        )
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error(
            "--duration must be above 0, --warmup at least 0 and --rounds at least 1"
        )
    if not 0 < args.latency_share <= 1:
        parser.error(f"--latency-share={args.latency_share} must be in (0, 1]")
    if args.out is None:
        args.out = (
            ROOT / ".local" / "bench" / time.strftime("ingest-ceiling-%Y%m%d-%H%M%S")
        )
    return args


class CeilingRun:
    """One run of every phase; `cleanup` stops whatever it started."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.broker: BenchBroker | None = None
        self.topic: BenchTopic | None = None
        self.children: list[ChildProcess] = []
        self.single = WrkLoad("single", args.devices, args.payload, 1, args.connections)
        self.batch = WrkLoad(
            "batch", args.devices, args.payload, args.batch_size, args.batch_connections
        )
        # Heartbeats that got a 202 from ingest, warm-ups included, and how
        # many more ingest may have queued for requests cut off at a run's end.
        self.ingest_accepted = 0
        self.ingest_in_flight = 0

    def execute(self) -> CeilingResult:
        self.out.mkdir(parents=True, exist_ok=True)
        result = CeilingResult(
            machine=ingest_cpu.machine(), settings=run_settings(self.args)
        )

        # Broker and topic.
        bootstrap = self.args.bootstrap or self._start_broker()
        self.topic = BenchTopic(
            bootstrap,
            f"bench-ingest-{int(time.time())}-{os.getpid()}",
            self.args.partitions,
        )
        self.topic.create()
        result.topic = self.topic.name

        # Both servers on the server core; only one gets load at a time.
        servers = self._start_servers()

        # Throughput: the no-op app and ingest take turns in short slices, so
        # that a change in the machine's speed during the run touches both alike.
        for round_index in range(self.args.rounds):
            for mode in ("single", "batch"):
                result.phases.extend(self._wrk_phases(servers, mode, round_index))

        # Latency of both at one fixed rate, in turns, once per round: a
        # p99 of one 20 s run moves with brief stalls of the whole machine.
        # First, how often the idle server core runs too slowly to keep up.
        if self.args.steadiness_duration > 0:
            core = parse_cores(self.args.server_core)[0]
            logger.info(
                "Probing the steadiness of core %d for %g s",
                core,
                self.args.steadiness_duration,
            )
            result.steadiness = probe(core, self.args.steadiness_duration)
        peak = result.median_requests_per_s("ingest", "single")
        result.latency_rate_per_s = round(self.args.latency_share * peak)
        for round_index in range(self.args.rounds):
            for name, (_, url) in servers.items():
                latency = self._open_loop(
                    name, url, result.latency_rate_per_s, round_index
                )
                result.latency.setdefault(name, []).append(latency)
                if name == "ingest":
                    self.ingest_accepted += latency.accepted
                    self.ingest_in_flight += latency.unanswered
        for name, (child, url) in servers.items():
            result.profiles[name] = self._profile(name, child, url)

        # Stopping ingest flushes its producer; then the topic is complete.
        ingest, ingest_url = servers["ingest"]
        result.ingest_metric_accepted = int(
            scrape_counter(ingest_url + "/metrics", ACCEPTED_METRIC)
        )
        self._stop(ingest)
        result.client_accepted = self.ingest_accepted
        result.in_flight_bound = self.ingest_in_flight
        result.kafka_records, result.kafka_heartbeats = self.topic.heartbeat_count()
        return result

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.topic is not None:
            self.topic.delete()
        if self.broker is not None:
            self.broker.stop()

    def _start_broker(self) -> str:
        self.broker = BenchBroker(cores=self.args.load_core)
        self.broker.start()
        return self.broker.bootstrap

    def _start_servers(self) -> dict[str, tuple[ChildProcess, str]]:
        """Start the no-op app and ingest; return each with its base URL."""
        assert self.topic is not None
        noop_port, ingest_port = free_port(), free_port()
        noop = noop_process(
            port=noop_port,
            cores=self.args.server_core,
            log_path=self.out / "noop.log",
        )
        ingest = ingest_process(
            port=ingest_port,
            topic=self.topic,
            cores=self.args.server_core,
            log_path=self.out / "ingest.log",
            extra_env=dict(self.args.ingest_env),
        )
        servers = {
            "no-op": (noop, f"http://127.0.0.1:{noop_port}"),
            "ingest": (ingest, f"http://127.0.0.1:{ingest_port}"),
        }
        for child, _ in servers.values():
            self.children.append(child.start())
        wait_ready(noop, servers["no-op"][1] + "/")
        wait_ready(ingest, servers["ingest"][1] + "/readyz")
        return servers

    def _stop(self, child: ChildProcess) -> None:
        child.stop()
        self.children.remove(child)

    def _wrk_phases(
        self, servers: dict[str, tuple[ChildProcess, str]], mode: str, round_index: int
    ) -> list[Phase]:
        """Measure every server with `mode` once, in alternating slices.

        Each server gets its warm-up, then --slices runs of wrk that together
        last --duration, taking turns. A host that slows one core for a few
        seconds then slows both servers' figures alike.
        """
        load = self.single if mode == "single" else self.batch
        path = SINGLE_PATH if mode == "single" else BATCH_PATH
        log_path = self.out / "wrk.log"
        if self.args.warmup > 0:
            for name, (_, url) in servers.items():
                warmup = run_wrk(
                    url + path, load, self.args.warmup, self.args.load_core, log_path
                )
                self._count(name, warmup.heartbeats, load)
        logger.info(
            "Round %d: measuring %s with %s heartbeats for %s s each, in %d slices",
            round_index + 1,
            " and ".join(servers),
            mode,
            self.args.duration,
            self.args.slices,
        )
        slice_s = self.args.duration / self.args.slices
        runs: dict[str, list[WrkResult]] = {name: [] for name in servers}
        usages: dict[str, list[ingest_cpu.CpuUsage]] = {name: [] for name in servers}
        for _ in range(self.args.slices):
            for name, (child, url) in servers.items():
                before = ingest_cpu.snapshot(child.pid)
                measured = run_wrk(
                    url + path, load, slice_s, self.args.load_core, log_path
                )
                usages[name].append(
                    ingest_cpu.usage(before, ingest_cpu.snapshot(child.pid))
                )
                runs[name].append(measured)
                self._count(name, measured.heartbeats, load)
        return [
            Phase(
                server=name,
                mode=mode,
                round_index=round_index,
                load=load,
                wrk=combine_results(runs[name]),
                cpu=ingest_cpu.combine_usage(usages[name]),
                server_cores=self.args.server_core,
                load_cores=self.args.load_core,
            )
            for name in servers
        ]

    def _count(self, server: str, heartbeats: int, load: WrkLoad) -> None:
        if server == "ingest":
            self.ingest_accepted += heartbeats
            self.ingest_in_flight += load.connections * load.heartbeats_per_request

    def _open_loop(
        self, server: str, url: str, rate_per_s: float, round_index: int
    ) -> OpenLoopResult:
        logger.info(
            "Round %d: measuring %s latency at %s requests/s for %s s",
            round_index + 1,
            server,
            rate_per_s,
            self.args.duration,
        )
        output = self.out / f"openloop-{server}-{round_index + 1}.json"
        command = [
            sys.executable,
            str(OPENLOOP),
            f"--url={url}{SINGLE_PATH}",
            f"--rate={rate_per_s}",
            f"--duration={self.args.duration}",
            f"--devices={self.args.devices}",
            f"--payload={self.args.payload}",
            f"--connections={self.args.connections}",
            f"--json={output}",
        ]
        with (self.out / "openloop.log").open("a") as log:
            subprocess.run(
                pinned(command, self.args.load_core),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.args.duration + 60,
                cwd=ROOT,
            )
        return OpenLoopResult.from_json(json.loads(output.read_text()))

    def _profile(
        self, server: str, child: ChildProcess, url: str
    ) -> ProfileSummary | None:
        duration_s = self.args.profile_duration
        if duration_s <= 0:
            return None
        logger.info("Profiling %s with py-spy for %s s", server, duration_s)
        output = self.out / f"profile-{server}.txt"
        command = record_command(child.pid, duration_s, output, rate_hz=100)
        spy = ChildProcess(
            f"py-spy on {server}",
            pinned(command, self.args.load_core),
            self.out / "py-spy.log",
        )
        self.children.append(spy.start())
        try:
            # The load starts just after py-spy and outlasts it by about 2 s,
            # so that every sample falls under load.
            time.sleep(0.2)
            load = run_wrk(
                url + SINGLE_PATH,
                self.single,
                duration_s + 2,
                self.args.load_core,
                self.out / "wrk.log",
            )
            self._count(server, load.heartbeats, self.single)
            status = spy.wait(timeout_s=60.0)
        finally:
            spy.stop()
            self.children.remove(spy)
        if status != 0 or not output.exists():
            logger.warning(
                "py-spy on %s exited with status %s; see %s. The report has no "
                "profile for it",
                server,
                status,
                spy.log_path,
            )
            return None
        return summarize(output.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_wrk()
    stop_on_signals()
    run = CeilingRun(args)
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
    return 0 if result.kafka_check_passed() else 1


if __name__ == "__main__":
    sys.exit(main())
