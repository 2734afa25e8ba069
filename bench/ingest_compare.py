"""Compare versions of ingest on one core, in paired rounds against the no-op app.

Usage: ./dev bench ingest_compare.py [REV ...] [--rounds 7] [--duration 8]
       [--json PATH]

Each REV is a git revision, checked out with `git worktree add` into the
run's folder, or "." for the working tree as it is. The default compares
HEAD with the working tree, which is how a change to ingest's hot path is
judged before it is committed.

All servers start at once, pinned to the server core: the no-op app and one
`hbmon ingest` per revision, every one on the bench broker and one topic.
In each round, wrk sends single heartbeats to each server in turn (a
warm-up, then the measured run). The revisions take turns in reverse order
every other round, so a change in the machine's speed during a round does
not always favour the same one. A round's figure for a revision is its
heartbeats per server CPU-second divided by the no-op app's in that round.
The result is the median over rounds. The paired differences against the
first revision show whether a change helps in most rounds or only on
average. Context switches of the whole machine per request (from
/proc/stat) come with each figure: a client on the same machine that a
server wakes once per response shows there.

The ceiling bench (bench/ingest_ceiling.py) gives the figures of record.
This script answers a narrower question: does a change make ingest's hot
path cheaper, on the same broker, at the same time, in many short rounds?
"""

import argparse
import logging
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ingest_cpu
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
    run_settings,
    stop_on_signals,
    wait_ready,
    write_results,
)
from ingest_wrk import WrkLoad, add_payload_arguments, run_wrk

logger = logging.getLogger("ingest_compare")

WORKING_TREE = "."
NOOP = "no-op app"


@dataclass
class Server:
    """One server under comparison and its figures, one per round."""

    label: str
    child: ChildProcess
    url: str
    per_cpu_s: list[float] = field(default_factory=list)
    switches_per_request: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare ingest revisions against the no-op app in paired rounds.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "revisions",
        nargs="*",
        default=["HEAD", WORKING_TREE],
        metavar="REV",
        help='git revisions of ingest to compare; "." is the working tree',
    )

    # Rounds and the load.
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds")
    parser.add_argument(
        "--duration",
        type=finite_float,
        default=8.0,
        help="seconds of each measured run",
    )
    parser.add_argument(
        "--warmup",
        type=finite_float,
        default=2.0,
        help="seconds of load before each run",
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    add_payload_arguments(parser)

    # Placement, ingest's settings and output.
    parser.add_argument(
        "--server-core", default="0", help="core list for the servers (taskset)"
    )
    parser.add_argument(
        "--load-core", default="1", help="core list for wrk and the bench broker"
    )
    parser.add_argument(
        "--bootstrap",
        default="",
        help="use the Kafka broker at host:port instead of starting the bench broker",
    )
    add_ingest_env_argument(parser)
    add_output_arguments(
        parser,
        "folder for checkouts, logs and results "
        "(default: a new .local/bench/ingest-compare-TIME)",
    )

    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error(
            "--rounds must be at least 1, --duration at least 1 and --warmup at least 0"
        )
    if args.connections < 1 or args.devices < 1:
        parser.error("--connections and --devices must be at least 1")
    if len(set(args.revisions)) != len(args.revisions):
        parser.error("name each revision once")
    for revision in args.revisions:
        if revision != WORKING_TREE and not is_revision(revision):
            parser.error(f"{revision} is not a commit of this repository")
    return args


def is_revision(revision: str) -> bool:
    """Return whether git can check out `revision` as a commit."""
    return (
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )


def label(revision: str) -> str:
    """Return the report's name for `revision`, with its commit hash, since HEAD moves.

    Raises:
        subprocess.CalledProcessError: the revision is not found.
    """
    if revision == WORKING_TREE:
        return "working tree"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{revision}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return commit if revision.startswith(commit) else f"{revision} ({commit})"


def check_out(revision: str, folder: Path) -> Path:
    """Return the source folder of `revision`: a new worktree, or ROOT for ".".

    Raises:
        subprocess.CalledProcessError: the revision is not found.
    """
    if revision == WORKING_TREE:
        return ROOT
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(folder), revision],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return folder


def remove_checkout(folder: Path) -> None:
    if folder != ROOT:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(folder)],
            cwd=ROOT,
            check=False,
            timeout=120,
        )


def context_switches() -> int:
    """Return the context switches of the whole machine since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    return 0


def measure(server: Server, load: WrkLoad, args: argparse.Namespace, log: Path) -> None:
    """Run wrk against `server` once and add the round's figures to it."""
    run_wrk(server.url, load, args.warmup, args.load_core, log)
    cpu_before = ingest_cpu.snapshot(server.child.pid)
    switches_before = context_switches()
    result = run_wrk(server.url, load, args.duration, args.load_core, log)
    switches = context_switches() - switches_before
    cpu = ingest_cpu.usage(cpu_before, ingest_cpu.snapshot(server.child.pid))
    requests = max(1, result.ok_responses)
    server.per_cpu_s.append(result.heartbeats / cpu.process_s)
    server.switches_per_request.append(switches / requests)


def report(
    servers: list[Server], args: argparse.Namespace, machine: dict[str, object]
) -> tuple[str, dict]:
    """Return the report text and the JSON data of a finished comparison.

    `machine` is what ingest_cpu.machine() returned when the run started.
    """
    noop, first, *_ = servers
    rounds = range(len(noop.per_cpu_s))
    ratios = {
        server.label: [server.per_cpu_s[r] / noop.per_cpu_s[r] for r in rounds]
        for server in servers[1:]
    }
    lines = [
        "# Ingest revisions compared",
        "",
        f"- Command: `./dev bench {run_settings(args)['command']}`",
        f"- Machine: {ingest_cpu.describe_machine(machine)}",
        f"- {args.rounds} rounds of {args.duration:g} s per server after "
        f"{args.warmup:g} s of warm-up; wrk with {args.connections} connections, "
        f"payload {args.payload}; servers on core {args.server_core}, wrk and "
        f"the broker on core {args.load_core}",
        "",
        "| Server | Heartbeats per CPU-second, median | Ratio to the no-op app, "
        "median | Ratios by round | Context switches per request, median |",
        "|---|---:|---:|---|---:|",
    ]
    for server in servers:
        ratio = ratios.get(server.label)
        lines.append(
            f"| {server.label} | {statistics.median(server.per_cpu_s):,.0f} | "
            + (f"{statistics.median(ratio):.3f} | " if ratio else "1 | ")
            + (", ".join(f"{value:.3f}" for value in ratio) if ratio else "")
            + f" | {statistics.median(server.switches_per_request):.2f} |"
        )
    lines.append("")
    data: dict = {
        "settings": run_settings(args),
        "machine": machine,
        "servers": {},
        "paired": {},
    }
    for server in servers:
        data["servers"][server.label] = {
            "heartbeats_per_cpu_s": [round(v, 1) for v in server.per_cpu_s],
            "ratios": [round(v, 4) for v in ratios.get(server.label, [])],
            "context_switches_per_request": [
                round(v, 3) for v in server.switches_per_request
            ],
        }
    for server in servers[2:]:
        differences = [ratios[server.label][r] - ratios[first.label][r] for r in rounds]
        higher = sum(1 for value in differences if value > 0)
        lines.append(
            f"{server.label} against {first.label}: ratio higher in {higher} of "
            f"{len(differences)} rounds, by a median of "
            f"{statistics.median(differences):+.3f}."
        )
        data["paired"][server.label] = {
            "against": first.label,
            "differences": [round(v, 4) for v in differences],
            "higher_in": higher,
            "median_difference": round(statistics.median(differences), 4),
        }
    return "\n".join(lines) + "\n", data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = ingest_cpu.machine()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    stop_on_signals()
    out = args.out or ROOT / ".local" / "bench" / time.strftime(
        "ingest-compare-%Y%m%d-%H%M%S"
    )
    out.mkdir(parents=True, exist_ok=True)
    extra_env = dict(args.ingest_env)
    load = WrkLoad(
        mode="single",
        devices=args.devices,
        payload=args.payload,
        batch_size=1,
        connections=args.connections,
    )
    checkouts: list[Path] = []
    servers: list[Server] = []
    broker = None if args.bootstrap else BenchBroker(args.load_core)
    topic: BenchTopic | None = None

    try:
        for index, revision in enumerate(args.revisions):
            checkouts.append(check_out(revision, out / f"checkout-{index}"))
        if broker is not None:
            broker.start()
        bootstrap = broker.bootstrap if broker is not None else args.bootstrap
        topic = BenchTopic(bootstrap, f"bench-compare-{int(time.time())}", 6)
        topic.create()
        port = free_port()
        noop = noop_process(
            port=port, cores=args.server_core, log_path=out / "noop.log"
        )
        servers.append(Server(NOOP, noop.start(), f"http://127.0.0.1:{port}"))
        for index, (revision, source) in enumerate(
            zip(args.revisions, checkouts, strict=True)
        ):
            port = free_port()
            child = ingest_process(
                port=port,
                topic=topic,
                cores=args.server_core,
                log_path=out / f"ingest-{index}.log",
                extra_env={**extra_env, "PYTHONPATH": str(source)},
                cwd=source,
            )
            servers.append(
                Server(label(revision), child.start(), f"http://127.0.0.1:{port}")
            )
        for server in servers:
            wait_ready(server.child, f"{server.url}/healthz")
            server.url += "/v1/heartbeats"

        for round_index in range(args.rounds):
            ingests = servers[1:] if round_index % 2 == 0 else servers[:0:-1]
            for server in [servers[0], *ingests]:
                measure(server, load, args, out / "wrk.log")
            logger.info(
                "Round %d: %s",
                round_index + 1,
                ", ".join(
                    f"{other.label} "
                    f"{other.per_cpu_s[-1] / servers[0].per_cpu_s[-1]:.3f}"
                    for other in servers[1:]
                ),
            )

        text, data = report(servers, args, machine)
        write_results(out, text, data, args.json)
        return 0
    finally:
        for server in reversed(servers):
            server.child.stop()
        if topic is not None:
            topic.delete()
        if broker is not None:
            broker.stop()
        for source in checkouts:
            remove_checkout(source)


if __name__ == "__main__":
    sys.exit(main())
