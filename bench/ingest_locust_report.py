"""Read Locust's output files and turn a run into report.md, report.png and JSON.

Locust (2.x) writes PREFIX_stats_history.csv with one row per second and
endpoint. Its requests per second and percentiles cover a moving window of
about the last 10 s, so they lag behind sudden changes. The totals come
from the file that --json-file writes at shutdown.
"""

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from ingest_ceiling_report import format_source
from ingest_cpu import CpuUsage
from matplotlib.ticker import FuncFormatter

# Write image files only and never open a window, whatever MPLBACKEND is.
matplotlib.use("Agg")

AGGREGATED = "Aggregated"
HISTORY_PERCENTILES = ("50%", "95%", "99%")


@dataclass(frozen=True)
class EndpointTotals:
    """Final counts and response time percentiles (ms) of one endpoint, or all."""

    name: str
    requests: int
    failures: int
    requests_per_s: float
    percentiles_ms: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "requests": self.requests,
            "failures": self.failures,
            "requests_per_s": round(self.requests_per_s, 2),
            "latency_ms": self.percentiles_ms,
        }


def read_totals(path: Path) -> list[EndpointTotals]:
    """Return each endpoint's totals and "Aggregated" from Locust's --json-file.

    Locust writes that file at shutdown, after the last request, whereas
    its last periodic write of PREFIX_stats.csv may be up to a second older.
    Requests per second divide by the time from the first request to the
    last, as Locust does.
    """
    entries = json.loads(path.read_text())
    totals = [_endpoint_totals(entry["name"], [entry]) for entry in entries]
    if entries:
        totals.append(_endpoint_totals(AGGREGATED, entries))
    return totals


def _endpoint_totals(name: str, entries: list[dict[str, Any]]) -> EndpointTotals:
    histogram: Counter[float] = Counter()
    for entry in entries:
        for rounded_ms, count in entry["response_times"].items():
            histogram[float(rounded_ms)] += count
    requests = sum(entry["num_requests"] for entry in entries)
    start = min(entry["start_time"] for entry in entries)
    last = max(entry["last_request_timestamp"] or start for entry in entries)
    return EndpointTotals(
        name=name,
        requests=requests,
        failures=sum(entry["num_failures"] for entry in entries),
        requests_per_s=requests / (last - start) if last > start else 0.0,
        percentiles_ms={
            "p50": histogram_percentile(histogram, 50.0),
            "p95": histogram_percentile(histogram, 95.0),
            "p99": histogram_percentile(histogram, 99.0),
            "max": max(
                (entry["max_response_time"] or 0.0 for entry in entries), default=0.0
            ),
        },
    )


def histogram_percentile(histogram: Counter[float], percent: float) -> float:
    """Return the nearest-rank percentile of a {value: count} histogram."""
    total = sum(histogram.values())
    if total == 0:
        return float("nan")
    rank = math.ceil(total * percent / 100)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


@dataclass(frozen=True)
class HistoryPoint:
    """One second of Locust's history for all endpoints together."""

    timestamp: int
    users: int
    requests_per_s: float
    failures_per_s: float
    percentiles_ms: dict[str, float | None]


def read_history(path: Path) -> list[HistoryPoint]:
    """Return the "Aggregated" rows of PREFIX_stats_history.csv.

    Percentiles that Locust writes as "N/A" (no requests in the window)
    read as None.
    """
    points = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["Name"] != AGGREGATED:
                continue
            points.append(
                HistoryPoint(
                    timestamp=int(row["Timestamp"]),
                    users=int(row["User Count"]),
                    requests_per_s=float(row["Requests/s"]),
                    failures_per_s=float(row["Failures/s"]),
                    percentiles_ms={
                        name: _number(row[name]) for name in HISTORY_PERCENTILES
                    },
                )
            )
    return points


@dataclass
class LocustResult:
    """One Locust run: its settings, Locust's totals and, for local runs, Kafka."""

    machine: dict[str, object]
    settings: dict[str, object]
    host: str = ""
    wall_s: float = 0.0
    totals: list[EndpointTotals] = field(default_factory=list)
    history_rows: int = 0
    ingest_cpu: CpuUsage | None = None
    ingest_metric_accepted: int | None = None
    kafka_records: int | None = None
    kafka_heartbeats: int | None = None

    @property
    def heartbeats_per_request(self) -> int:
        if self.settings["scenario"] == "gateway":
            return int(self.settings["gateway_batch_size"])  # type: ignore[call-overload]
        return 1

    @property
    def aggregated(self) -> EndpointTotals:
        for totals in self.totals:
            if totals.name == AGGREGATED:
                return totals
        return EndpointTotals(AGGREGATED, 0, 0, 0.0, {})

    @property
    def successes(self) -> int:
        return self.aggregated.requests - self.aggregated.failures

    @property
    def client_accepted(self) -> int:
        """Heartbeats in requests that Locust counted as successful (202)."""
        return self.successes * self.heartbeats_per_request

    @property
    def in_flight_bound(self) -> int:
        """Maximum heartbeats in requests that the end of the run may have cut off."""
        return int(self.settings["users"]) * self.heartbeats_per_request  # type: ignore[call-overload]

    def target_per_s(self) -> float | None:
        """Return the heartbeats per second that the fleet scenario aims at."""
        if self.settings["scenario"] != "fleet":
            return None
        devices = float(self.settings["fleet_devices"])  # type: ignore[arg-type]
        return devices / float(self.settings["fleet_interval_s"])  # type: ignore[arg-type]

    def kafka_check_passed(self) -> bool | None:
        """Return whether the topic contains every accepted heartbeat, or None."""
        if self.kafka_heartbeats is None:
            return None
        lowest = self.client_accepted
        highest = lowest + self.in_flight_bound
        return (
            self.kafka_heartbeats == self.ingest_metric_accepted
            and lowest <= self.kafka_heartbeats <= highest
        )

    def to_json(self) -> dict[str, object]:
        total = self.aggregated
        return {
            "machine": self.machine,
            "settings": self.settings,
            "host": self.host,
            "wall_s": round(self.wall_s, 1),
            "requests": total.requests,
            "failures": total.failures,
            "requests_per_s": round(total.requests_per_s, 2),
            "heartbeats_per_s": round(
                total.requests_per_s * self.heartbeats_per_request, 2
            ),
            "target_heartbeats_per_s": self.target_per_s(),
            "latency_ms": total.percentiles_ms,
            "endpoints": [totals.to_json() for totals in self.totals],
            "ingest_cpu": self.ingest_cpu.to_json() if self.ingest_cpu else None,
            "kafka": {
                "records": self.kafka_records,
                "heartbeats": self.kafka_heartbeats,
                "client_accepted": self.client_accepted,
                "in_flight_bound": self.in_flight_bound,
                "ingest_metric_accepted": self.ingest_metric_accepted,
                "passed": self.kafka_check_passed(),
            },
        }


def plot_history(points: list[HistoryPoint], result: LocustResult, path: Path) -> None:
    """Draw throughput and users above, p50/p95/p99 latency below, over time."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 7), sharex=True, constrained_layout=True
    )
    start = points[0].timestamp if points else 0
    seconds = [p.timestamp - start for p in points]
    per_request = result.heartbeats_per_request

    # Throughput and users.
    unit = "heartbeats/s" if per_request > 1 else "requests/s"
    top.plot(seconds, [p.requests_per_s * per_request for p in points], label=unit)
    top.plot(
        seconds,
        [p.failures_per_s * per_request for p in points],
        label=f"failed {unit}",
        color="tab:red",
    )
    target = result.target_per_s()
    if target is not None:
        top.axhline(target, color="grey", linestyle=":", label="fleet target")
    top.set_ylabel(unit)
    top.set_ylim(bottom=0)
    top.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    top.grid(alpha=0.3)
    users = top.twinx()
    users.plot(
        seconds, [p.users for p in points], color="tab:green", alpha=0.5, label="users"
    )
    users.set_ylabel("users")
    # Keep the users line below a fleet target line at the same height.
    users.set_ylim(0, max((p.users for p in points), default=1) * 1.3 or 1)
    lines = top.get_legend_handles_labels()
    more = users.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], loc="best")

    # Latency percentiles.
    for name in HISTORY_PERCENTILES:
        bottom.plot(
            seconds, [p.percentiles_ms[name] for p in points], label=f"p{name[:-1]}"
        )
    bottom.set_ylabel("response time (ms)")
    bottom.set_xlabel("seconds since the first sample")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best")

    settings = result.settings
    batches = f", batches of {per_request:,}" if per_request > 1 else ""
    figure.suptitle(
        f"Locust {settings['scenario']}{batches}: {settings['users']} users "
        f"against {result.host} (moving 10 s window)"
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def format_report(result: LocustResult) -> str:
    """Return the run as Markdown."""
    sections = [_format_setup(result), _format_stats(result), _format_checks(result)]
    return "\n\n".join(sections) + "\n"


def _format_setup(result: LocustResult) -> str:
    settings, machine = result.settings, result.machine
    scenario = settings["scenario"]
    details = {
        "fleet": f"{settings['fleet_devices']:,} devices, one heartbeat every "
        f"{settings['fleet_interval_s']:g} s each, interval jitter "
        f"{settings['fleet_jitter']:.0%}",
        "flood": f"single heartbeats without pause, {settings['flood_devices']:,} "
        "device ids",
        "gateway": f"batches of {settings['gateway_batch_size']:,} heartbeats, "
        + (
            f"one every {settings['gateway_interval_s']:g} s per user"
            if settings["gateway_interval_s"]
            else "without pause"
        ),
    }
    workers = settings["workers"]
    mode = f"distributed: 1 master and {workers} workers" if workers else "1 process"
    placement = (
        f"ingest (1 worker) on core {settings['server_core']}, Locust and the "
        f"bench broker on core {settings['load_core']}"
        if not settings["host"]
        else "remote host; nothing started here"
    )
    return "\n".join(
        [
            f"# Locust: {scenario}",
            "",
            f"- Command: `./dev bench {settings['command']}`",
            f"- Code: {format_source(settings.get('source'))}",
            f"- Scenario: {details[str(scenario)]}; payload {settings['payload']}",
            f"- Locust: {settings['users']} users, spawn rate "
            f"{settings['spawn_rate']:g}/s, run time {settings['run_time']}, {mode}",
            f"- Target: {result.host}; {placement}",
            f"- Machine: {machine['nproc']} cores, {machine['cpu_model']}, "
            f"{machine['memory_gib']} GiB RAM",
            "- Files: locust_stats.csv, locust_stats_history.csv, "
            "locust_failures.csv, report.png, result.json",
        ]
    )


def _format_stats(result: LocustResult) -> str:
    per_request = result.heartbeats_per_request
    lines = [
        "## Totals over the run (ramp-up included)",
        "",
        "| Endpoint | Requests | Failures | Requests/s | Heartbeats/s "
        "| p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for totals in result.totals:
        ms = totals.percentiles_ms
        lines.append(
            f"| {totals.name} | {totals.requests:,} | {totals.failures:,} "
            f"| {totals.requests_per_s:,.1f} "
            f"| {totals.requests_per_s * per_request:,.1f} | {_ms(ms['p50'])} "
            f"| {_ms(ms['p95'])} | {_ms(ms['p99'])} | {_ms(ms['max'])} |"
        )
    target = result.target_per_s()
    if target is not None:
        achieved = result.aggregated.requests_per_s
        lines += [
            "",
            f"The fleet aims at {target:,.0f} heartbeats/s; Locust reached "
            f"{achieved:,.0f}/s ({achieved / target:.0%}) over the whole run, "
            "ramp-up included.",
        ]
    lines += [
        "",
        "Totals come from Locust's final statistics (locust_final.json), "
        "written at shutdown. Locust rounds each response time to whole "
        "milliseconds below 100 ms and to 2 significant digits above.",
        "",
        "![throughput and latency over time](report.png)",
    ]
    return "\n".join(lines)


def _format_checks(result: LocustResult) -> str:
    lines = ["## Ingest and Kafka", ""]
    cpu = result.ingest_cpu
    if cpu is not None and result.wall_s > 0:
        lines.append(
            f"- Ingest used {cpu.process_s:.1f} CPU-seconds in {result.wall_s:.0f} s "
            f"({cpu.process_s / result.wall_s:.0%} of one core)"
        )
    passed = result.kafka_check_passed()
    if passed is None:
        lines.append("- Kafka was not checked: the target is a remote host.")
        return "\n".join(lines)
    verdict = "passed" if passed else "FAILED"
    lines += [
        f"- Heartbeats in the run's topic after ingest flushed and stopped: "
        f"{result.kafka_heartbeats:,}, in {result.kafka_records:,} records",
        f"- Heartbeats in requests that Locust counted as successful (202): "
        f"{result.client_accepted:,}, plus at most {result.in_flight_bound:,} in "
        "requests cut off at the end",
        f"- Ingest's hbmon_ingest_heartbeats_accepted_total: "
        f"{result.ingest_metric_accepted:,}",
        f"- Check ({verdict}): the topic contains exactly what ingest accepted, and "
        "at least every heartbeat that Locust saw accepted.",
    ]
    return "\n".join(lines)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f} ms"
