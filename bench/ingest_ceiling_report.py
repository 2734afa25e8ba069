"""The figures of an ingest ceiling run, their ratios and targets, as Markdown."""

import math
import statistics
from dataclasses import dataclass, field

from core_steadiness import Steadiness
from ingest_cpu import CpuUsage, describe_machine
from ingest_openloop import OpenLoopResult
from ingest_profile import ProfileSummary
from ingest_wrk import WrkLoad, WrkResult

# Targets of the ingest service on one core.
SINGLE_RATIO_TARGET = 0.80  # single-heartbeat throughput / no-op app throughput
BATCH_PER_CORE_TARGET = 400_000  # batch heartbeats per second per server core
P99_TARGET_MS = 10.0  # p99 latency at the latency phase's fixed rate

# Capacity planning: a fleet of 1M devices, each sending one heartbeat per
# 10 s, with every task loaded to at most half of its measured ceiling.
FLEET_DEVICES = 1_000_000
FLEET_INTERVAL_S = 10.0
PLANNED_SHARE = 0.5

# Above these shares, a phase's figures are marked as disturbed.
BUSY_LOAD_CORE = 0.9
BUSY_SERVER_CORE = 0.1


def parse_cores(cores: str) -> list[int]:
    """Return the cores of a taskset core list such as "0", "1-3" or "0,2-3"."""
    result: list[int] = []
    for part in cores.split(","):
        first, _, last = part.partition("-")
        result.extend(range(int(first), int(last or first) + 1))
    return result


@dataclass(frozen=True)
class Phase:
    """One measured wrk run against one server, with the CPU it used."""

    server: str  # "no-op" or "ingest"
    mode: str  # "single" or "batch"
    round_index: int
    load: WrkLoad
    wrk: WrkResult
    cpu: CpuUsage
    server_cores: str
    load_cores: str

    @property
    def server_cpu_share(self) -> float:
        """CPU seconds of the server process per second of the phase."""
        return self.cpu.process_s / self.wrk.duration_s

    @property
    def heartbeats_per_cpu_s(self) -> float:
        return self.wrk.heartbeats / self.cpu.process_s

    @property
    def requests_per_cpu_s(self) -> float:
        return self.wrk.ok_responses / self.cpu.process_s

    @property
    def other_load_on_server_cores(self) -> float:
        """Share of the server cores used by other processes, or stolen by the host.

        Interrupt time is left out: see `irq_on_server_cores`.
        """
        cores = parse_cores(self.server_cores)
        cpu = self.cpu
        busy = sum(
            cpu.core_busy_s.get(c, 0.0)
            - cpu.core_irq_s.get(c, 0.0)
            + cpu.core_steal_s.get(c, 0.0)
            for c in cores
        )
        other_s = max(0.0, busy - cpu.process_s)
        return other_s / self.wrk.duration_s / len(cores)

    @property
    def irq_on_server_cores(self) -> float:
        """Share of the server cores spent in interrupts, mostly loopback TCP.

        Linux charges it to no process, so it is neither in the server's CPU
        time nor in `other_load_on_server_cores`.
        """
        cores = parse_cores(self.server_cores)
        irq_s = sum(self.cpu.core_irq_s.get(c, 0.0) for c in cores)
        return irq_s / self.wrk.duration_s / len(cores)

    @property
    def load_cores_busy(self) -> float:
        cores = parse_cores(self.load_cores)
        busy = sum(self.cpu.core_busy_s.get(c, 0.0) for c in cores)
        return busy / self.wrk.duration_s / len(cores)

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "mode": self.mode,
            "round": self.round_index + 1,
            "connections": self.load.connections,
            "heartbeats_per_request": self.load.heartbeats_per_request,
            "wrk": self.wrk.to_json(),
            "cpu": self.cpu.to_json(),
            "server_cpu_share": round(self.server_cpu_share, 3),
            "heartbeats_per_cpu_s": round(self.heartbeats_per_cpu_s, 1),
            "other_load_on_server_cores": round(self.other_load_on_server_cores, 3),
            "irq_on_server_cores": round(self.irq_on_server_cores, 3),
            "load_cores_busy": round(self.load_cores_busy, 3),
        }


@dataclass
class CeilingResult:
    """Everything one run measured; filled in phase by phase."""

    machine: dict[str, object]
    settings: dict[str, object]
    topic: str = ""
    phases: list[Phase] = field(default_factory=list)
    latency_rate_per_s: float = 0.0
    # Per server, one open-loop run per round.
    latency: dict[str, list[OpenLoopResult]] = field(default_factory=dict)
    profiles: dict[str, ProfileSummary | None] = field(default_factory=dict)
    # The server core's steadiness, probed before the latency runs.
    steadiness: Steadiness | None = None
    ingest_metric_accepted: int = 0
    client_accepted: int = 0
    in_flight_bound: int = 0
    kafka_records: int = 0
    kafka_heartbeats: int = 0

    def rounds(self, server: str, mode: str) -> list[Phase]:
        """Return the phases of `server` with `mode`, one per round."""
        found = [p for p in self.phases if p.server == server and p.mode == mode]
        if not found:
            raise KeyError(f"no {server} {mode} phase in this run")
        return found

    def median_requests_per_s(self, server: str, mode: str) -> float:
        return statistics.median(
            p.wrk.requests_per_s for p in self.rounds(server, mode)
        )

    def median_per_cpu_s(self, server: str, mode: str) -> float:
        """Return the median heartbeats per server CPU-second over the rounds."""
        return statistics.median(
            p.heartbeats_per_cpu_s for p in self.rounds(server, mode)
        )

    def median_ratio(self, mode: str, per_cpu_s: bool) -> float:
        """Return the median over rounds of ingest's throughput / the no-op app's.

        Each round's ratio compares two runs measured back to back.
        """
        pairs = zip(
            self.rounds("ingest", mode), self.rounds("no-op", mode), strict=True
        )
        if per_cpu_s:
            ratios = [i.heartbeats_per_cpu_s / n.heartbeats_per_cpu_s for i, n in pairs]
        else:
            ratios = [i.wrk.requests_per_s / n.wrk.requests_per_s for i, n in pairs]
        return statistics.median(ratios)

    def kafka_check_passed(self) -> bool:
        """Return whether the topic contains every accepted heartbeat, and no extra.

        wrk stops with requests on the wire, which ingest may still have
        queued. `in_flight_bound` is the most heartbeats those requests hold.
        """
        lowest, highest = (
            self.client_accepted,
            self.client_accepted + self.in_flight_bound,
        )
        return (
            self.kafka_heartbeats == self.ingest_metric_accepted
            and lowest <= self.kafka_heartbeats <= highest
        )

    def figures(self) -> dict[str, float]:
        """Return the headline figures and their ratios to baselines and targets."""
        batch_per_core = self.median_per_cpu_s("ingest", "batch")
        p99_ms = self.median_p99_ms("ingest")
        return {
            "single_ratio": round(self.median_ratio("single", per_cpu_s=False), 3),
            "single_ratio_per_cpu_s": round(
                self.median_ratio("single", per_cpu_s=True), 3
            ),
            "noop_single_per_s": round(self.median_requests_per_s("no-op", "single")),
            "ingest_single_per_s": round(
                self.median_requests_per_s("ingest", "single")
            ),
            "noop_single_per_cpu_s": round(self.median_per_cpu_s("no-op", "single")),
            "ingest_single_per_cpu_s": round(self.median_per_cpu_s("ingest", "single")),
            "batch_per_core": round(batch_per_core),
            "batch_ratio_to_target": round(batch_per_core / BATCH_PER_CORE_TARGET, 3),
            "latency_rate_per_s": self.latency_rate_per_s,
            "p99_ms": p99_ms,
            "p99_ratio_to_target": round(p99_ms / P99_TARGET_MS, 3),
            "noop_p99_ms": self.median_p99_ms("no-op"),
        }

    def too_slow_share(self) -> float | None:
        """Return the share of the probe's windows too slow for the latency load.

        A window is too slow when the core ran more than 1 / latency_share
        times slower than its median, so that a server loaded to that share
        of its peak falls behind. None without a probe.
        """
        if self.steadiness is None:
            return None
        share = float(self.settings["latency_share"])  # type: ignore[arg-type]
        return round(self.steadiness.share_slower_than(1 / share), 4)

    def median_p99_ms(self, server: str) -> float:
        """Return the median over the rounds of `server`'s open-loop p99."""
        return statistics.median(r.latency_ms["p99"] for r in self.latency[server])

    def capacity(self) -> list[dict[str, object]]:
        """Return the ingest tasks that the planned fleet needs, per request kind.

        A task is one `hbmon ingest` worker process with one core of its own;
        its ceiling is the heartbeats per CPU-second that ingest reached here.
        """
        fleet_per_s = FLEET_DEVICES / FLEET_INTERVAL_S
        rows: list[dict[str, object]] = []
        for mode in ("single", "batch"):
            per_core = self.median_per_cpu_s("ingest", mode)
            planned = per_core * PLANNED_SHARE
            rows.append(
                {
                    "mode": mode,
                    "per_task_per_s": round(per_core),
                    "per_core_per_s": round(per_core),
                    "planned_per_task_per_s": round(planned),
                    "fleet_per_s": round(fleet_per_s),
                    "tasks": math.ceil(fleet_per_s / planned),
                }
            )
        return rows

    def to_json(self) -> dict[str, object]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "topic": self.topic,
            "phases": [phase.to_json() for phase in self.phases],
            "latency_rate_per_s": self.latency_rate_per_s,
            "latency": {
                name: [r.to_json() for r in runs] for name, runs in self.latency.items()
            },
            "profiles": {
                name: (p.to_json() if p else None) for name, p in self.profiles.items()
            },
            "server_core_steadiness": (
                {**self.steadiness.to_json(), "too_slow_share": self.too_slow_share()}
                if self.steadiness
                else None
            ),
            "kafka": {
                "records": self.kafka_records,
                "heartbeats": self.kafka_heartbeats,
                "client_accepted": self.client_accepted,
                "in_flight_bound": self.in_flight_bound,
                "ingest_metric_accepted": self.ingest_metric_accepted,
                "passed": self.kafka_check_passed(),
            },
            "figures": self.figures(),
            "targets": {
                "single_ratio": SINGLE_RATIO_TARGET,
                "batch_per_core": BATCH_PER_CORE_TARGET,
                "p99_ms": P99_TARGET_MS,
            },
            "capacity": self.capacity(),
        }


def format_report(result: CeilingResult) -> str:
    """Return the run's figures as Markdown."""
    sections = [
        _format_setup(result),
        _format_phases(result),
        _format_targets(result),
        _format_kafka(result),
        _format_capacity(result),
        _format_profiles(result),
    ]
    return "\n\n".join(sections) + "\n"


def _format_setup(result: CeilingResult) -> str:
    settings = result.settings
    return "\n".join(
        [
            "# Ingest ceiling",
            "",
            f"- Command: `./dev bench {settings['command']}`",
            f"- Code: {format_source(settings.get('source'))}",
            f"- Machine: {describe_machine(result.machine)}",
            f"- Server on core {settings['server_core']}; wrk, the open-loop "
            f"client, py-spy and the bench broker on core {settings['load_core']}",
            f"- {settings['duration']:g} s per phase after a "
            f"{settings['warmup']:g} s warm-up, in {settings.get('slices', 1)} "
            "slices that alternate between the servers; payload "
            f"{settings['payload']}; "
            f"{settings['devices']:,} device ids; batches of "
            f"{settings['batch_size']:,}; topic {result.topic} with "
            f"{settings['partitions']} partitions",
        ]
    )


def format_source(source: object) -> str:
    """Return the commit and the uncommitted changes of a run's code, in words."""
    if not isinstance(source, dict):
        return "unknown"
    changed = source.get("changed") or []
    if not changed:
        return f"commit {source.get('commit')}, no uncommitted changes"
    return f"commit {source.get('commit')} with uncommitted changes in " + ", ".join(
        str(path) for path in changed
    )


def _format_phases(result: CeilingResult) -> str:
    lines = [
        "## Throughput at saturation (wrk, closed loop)",
        "",
        "| Round | Server | Request | Connections | Requests/s | Heartbeats/s "
        "| Server CPU | Heartbeats per CPU-second | Other load on server core "
        "| Interrupts on server core | Load core busy | wrk p99 |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in result.phases:
        request = (
            "single"
            if phase.mode == "single"
            else f"batch of {phase.load.batch_size:,}"
        )
        lines.append(
            f"| {phase.round_index + 1} | {phase.server} | {request} "
            f"| {phase.load.connections} "
            f"| {phase.wrk.requests_per_s:,.0f} | {phase.wrk.heartbeats_per_s:,.0f} "
            f"| {phase.server_cpu_share:.0%} | {phase.heartbeats_per_cpu_s:,.0f} "
            f"| {phase.other_load_on_server_cores:.0%} "
            f"| {phase.irq_on_server_cores:.0%} | {phase.load_cores_busy:.0%} "
            f"| {phase.wrk.latency_us['p99'] / 1000:.1f} ms |"
        )
    lines += [
        "",
        "Server CPU counts every thread of the server process, librdkafka's "
        "included. Heartbeats per CPU-second divide by that CPU time, so other "
        "processes on the server core do not lower them. Interrupt time, where "
        "Linux handles much of a loopback TCP transfer, is charged to no "
        "process and shows in its own column. wrk's latencies at saturation "
        "are mostly time spent queued; a phase's p99 is the highest of its "
        "slices'.",
    ]
    lines += _format_disturbances(result.phases)
    return "\n".join(lines)


def _format_disturbances(phases: list[Phase]) -> list[str]:
    """Return warnings for phases whose cores were busy with other work."""
    warnings = []
    for phase in phases:
        name = f"Round {phase.round_index + 1}, {phase.server}, {phase.mode}"
        if phase.load_cores_busy >= BUSY_LOAD_CORE:
            warnings.append(
                f"- {name}: the load core was {phase.load_cores_busy:.0%} busy, so "
                "wrk may have sent less than the server could take."
            )
        if phase.other_load_on_server_cores >= BUSY_SERVER_CORE:
            warnings.append(
                f"- {name}: other processes used "
                f"{phase.other_load_on_server_cores:.0%} of the server core; "
                "compare per CPU-second figures rather than per second."
            )
    if not warnings:
        return []
    return ["", "Disturbances:", "", *warnings]


def _format_targets(result: CeilingResult) -> str:
    figures = result.figures()
    share = result.settings["latency_share"]
    rounds = len(result.rounds("ingest", "single"))
    rows = [
        (
            "Single heartbeats, ingest / no-op requests/s",
            f"{figures['ingest_single_per_s']:,} / {figures['noop_single_per_s']:,}",
            f"{figures['single_ratio']:.2f}",
            f">= {SINGLE_RATIO_TARGET:.2f}",
            _met(figures["single_ratio"] >= SINGLE_RATIO_TARGET),
        ),
        (
            "Same, per server CPU-second",
            f"{figures['ingest_single_per_cpu_s']:,} / "
            f"{figures['noop_single_per_cpu_s']:,}",
            f"{figures['single_ratio_per_cpu_s']:.2f}",
            f">= {SINGLE_RATIO_TARGET:.2f}",
            _met(figures["single_ratio_per_cpu_s"] >= SINGLE_RATIO_TARGET),
        ),
        (
            "Batch heartbeats per server core (per CPU-second)",
            f"{figures['batch_per_core']:,}/s",
            f"{figures['batch_ratio_to_target']:.2f} of target",
            f">= {BATCH_PER_CORE_TARGET:,}/s",
            _met(figures["batch_per_core"] >= BATCH_PER_CORE_TARGET),
        ),
        (
            f"p99 latency at {share:.0%} of ingest's single peak "
            f"({result.latency_rate_per_s:,.0f} requests/s, open loop)",
            f"{figures['p99_ms']:.1f} ms",
            f"{figures['p99_ratio_to_target']:.2f} of target",
            f"<= {P99_TARGET_MS:g} ms",
            _met(figures["p99_ms"] <= P99_TARGET_MS),
        ),
    ]
    median = f"Medians over {rounds} rounds; each round's" if rounds > 1 else "The"
    lines = [
        "## Against the baseline and the targets",
        "",
        "| Figure | Measured | Ratio | Target | Met |",
        "|---|---:|---:|---:|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        f"{median} ratio compares ingest with the no-op app measured just "
        "before it, on the same core, with the same wrk settings.",
        "",
        f"The p99 latency is the median over {len(result.latency['ingest'])} "
        "open-loop runs per server at the same rate, taking turns:",
        "",
        *(
            _format_latency_line(f"Ingest, round {index}", latency)
            for index, latency in enumerate(result.latency["ingest"], start=1)
        ),
        *(
            _format_latency_line(f"No-op app, round {index}", latency)
            for index, latency in enumerate(result.latency["no-op"], start=1)
        ),
        "",
        "Latency comes from bench/ingest_openloop.py, an asyncio client on "
        "uvloop that sends each request at its fixed time, whether or not "
        "earlier responses have arrived, and measures from that time (wrk2's "
        "method; wrk2 is not packaged in Debian). Like wrk2, it opens its "
        "connections before the first request, as many as wrk used for the "
        "single-heartbeat peak, and a request that finds none free waits for "
        "one, which counts in its latency. Its timer ticks every "
        "millisecond, so up to about 1 ms of each latency can be the client's "
        "own dispatch lag, reported above. The no-op app's figures are the "
        "floor that the machine, the server stack and the client set at the "
        "same rate.",
        *_format_steadiness(result),
    ]
    return "\n".join(lines)


def _format_steadiness(result: CeilingResult) -> list[str]:
    steadiness, too_slow = result.steadiness, result.too_slow_share()
    if steadiness is None or too_slow is None:
        return []
    factor = 1 / float(result.settings["latency_share"])  # type: ignore[arg-type]
    return [
        "",
        f"Steadiness of the server core, probed for {steadiness.duration_s:g} s "
        "with both servers idle before the latency runs (bench/core_steadiness.py): "
        f"a fixed loop on core {steadiness.core} ran more than {factor:.2f} times "
        f"slower than its median in {too_slow:.1%} of "
        f"{steadiness.window_s * 1000:g} ms windows, and the longest such spell "
        f"lasted {steadiness.longest_spell_s(factor) * 1000:.0f} ms. A server "
        f"loaded to {1 / factor:.0%} of its peak falls behind in those windows, "
        "so when they fill more than 1% of the time, the queues they build are "
        "in the p99.",
    ]


def _format_latency_line(label: str, latency: OpenLoopResult) -> str:
    ms = latency.latency_ms
    return (
        f"- {label}: p50 {ms['p50']:.2f} ms, p90 {ms['p90']:.2f} ms, "
        f"p99 {ms['p99']:.2f} ms, p99.9 {ms['p99_9']:.2f} ms, max {ms['max']:.1f} ms; "
        f"service time p99 {latency.service_ms['p99']:.2f} ms; dispatch lag p99 "
        f"{latency.dispatch_lag_ms['p99']:.2f} ms; {latency.completed:,} of "
        f"{latency.sent:,} answered ({latency.accepted:,} with 202), "
        f"{latency.errors} errors, {latency.connections} connections"
    )


def _format_kafka(result: CeilingResult) -> str:
    verdict = "passed" if result.kafka_check_passed() else "FAILED"
    return "\n".join(
        [
            "## Records in Kafka",
            "",
            f"- Heartbeats in {result.topic} after ingest flushed and stopped: "
            f"{result.kafka_heartbeats:,}, in {result.kafka_records:,} records "
            "(a gateway batch goes out as one bundle record per partition)",
            f"- Heartbeats in requests that got a 202, counted by wrk and the "
            f"open-loop client: {result.client_accepted:,}, plus at most "
            f"{result.in_flight_bound:,} in requests that wrk cut off at the end "
            "of a run",
            f"- Ingest's {'hbmon_ingest_heartbeats_accepted_total'}: "
            f"{result.ingest_metric_accepted:,}",
            f"- Check ({verdict}): the topic contains exactly the heartbeats ingest "
            "accepted, and at least every one that a client saw accepted.",
        ]
    )


def _format_capacity(result: CeilingResult) -> str:
    lines = [
        "## Capacity",
        "",
        f"A fleet of {FLEET_DEVICES:,} devices at one heartbeat per "
        f"{FLEET_INTERVAL_S:g} s sends {FLEET_DEVICES / FLEET_INTERVAL_S:,.0f} "
        f"heartbeats/s. A task is one ingest worker process on one core; it is "
        f"planned at {PLANNED_SHARE:.0%} of its measured ceiling, which leaves "
        "headroom for bursts, retries after an outage and slower cores.",
        "",
        "| Devices send | Heartbeats/s per core (ceiling) | Planned per task "
        "| Tasks for the fleet |",
        "|---|---:|---:|---:|",
    ]
    batch_size = result.settings["batch_size"]
    for row in result.capacity():
        kind = (
            "single heartbeats"
            if row["mode"] == "single"
            else f"batches of {batch_size:,} through gateways"
        )
        lines.append(
            f"| {kind} | {row['per_core_per_s']:,} | "
            f"{row['planned_per_task_per_s']:,} | {row['tasks']:,} |"
        )
    return "\n".join(lines)


def _format_profiles(result: CeilingResult) -> str:
    ingest = result.profiles.get("ingest")
    noop = result.profiles.get("no-op")
    if ingest is None:
        return "## Profile\n\nNo profile was recorded."

    # Areas side by side with the no-op app.
    noop_areas = dict(noop.areas) if noop else {}
    lines = [
        "## Where the server spends its time under single-heartbeat load (py-spy)",
        "",
        f"Share of active samples of the main thread, by area "
        f"({ingest.samples:,} samples of ingest"
        + (f", {noop.samples:,} of the no-op app" if noop else "")
        + "):",
        "",
        "| Area | Ingest | No-op app |",
        "|---|---:|---:|",
    ]
    for area, pct in ingest.areas:
        lines.append(f"| {area} | {pct:.1f}% | {noop_areas.get(area, 0.0):.1f}% |")

    # Top functions, then the CPU of threads that py-spy cannot see.
    lines += ["", "Ingest's top functions by own time:", ""]
    lines += [f"- {pct:.1f}% {name}" for name, pct in ingest.self_functions]
    lines += ["", "Ingest's top functions including their callees:", ""]
    lines += [f"- {pct:.1f}% {name}" for name, pct in ingest.inclusive_functions]
    single = result.rounds("ingest", "single")[0]
    threads = ", ".join(
        f"{name} {seconds / single.wrk.duration_s:.0%}"
        for name, seconds in single.cpu.threads_s.items()
        if seconds > 0
    )
    lines += [
        "",
        f"CPU of ingest's threads during the single phase, as a share of one "
        f"core: {threads}. py-spy samples only threads that run Python code, "
        "so librdkafka's own threads show here and not above.",
    ]
    return "\n".join(lines)


def _met(passed: bool) -> str:
    return "yes" if passed else "no"
