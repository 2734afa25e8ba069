"""Run wrk with bench/wrk/heartbeats.lua and read the figures it prints.

wrk (Debian package "wrk", 4.1) is a closed-loop load generator: each
connection sends its next request as soon as the previous response arrives.
That makes it the tool for peak throughput. Its latencies at the peak are
mostly queueing, so the latency target is measured by the open-loop client
in ingest_openloop.py.
"""

import argparse
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ingest_services import ROOT, pinned

LUA_SCRIPT = ROOT / "bench" / "wrk" / "heartbeats.lua"
MARKER = "WRK_JSON "


def add_payload_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --payload and --devices: the heartbeats that wrk's script sends."""
    parser.add_argument(
        "--payload",
        choices=("basic", "full"),
        default="basic",
        help="heartbeat fields: basic = device_id, seq, ts; full adds interval_s "
        "and attrs",
    )
    parser.add_argument(
        "--devices", type=int, default=100_000, help="distinct device ids sent"
    )


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no figures."""


@dataclass(frozen=True)
class WrkLoad:
    """Request shape and concurrency of one wrk run."""

    mode: str  # "single" or "batch"
    devices: int
    payload: str  # "basic" or "full"
    batch_size: int
    connections: int
    threads: int = 1

    @property
    def heartbeats_per_request(self) -> int:
        return self.batch_size if self.mode == "batch" else 1


@dataclass(frozen=True)
class WrkResult:
    """Counts and latency percentiles (microseconds) printed by the Lua done()."""

    duration_s: float
    requests: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    heartbeats_per_request: int

    @property
    def ok_responses(self) -> int:
        """Responses with a status below 400; the server sends 202 for those."""
        return self.requests - self.errors.get("status", 0)

    @property
    def requests_per_s(self) -> float:
        return self.ok_responses / self.duration_s

    @property
    def heartbeats(self) -> int:
        return self.ok_responses * self.heartbeats_per_request

    @property
    def heartbeats_per_s(self) -> float:
        return self.heartbeats / self.duration_s

    def to_json(self) -> dict[str, object]:
        return {
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "ok_responses": self.ok_responses,
            "requests_per_s": round(self.requests_per_s, 1),
            "heartbeats_per_s": round(self.heartbeats_per_s, 1),
            "errors": self.errors,
            "latency_us": self.latency_us,
        }


def check_wrk() -> None:
    """Raise WrkError unless wrk is on PATH."""
    if shutil.which("wrk") is None:
        raise WrkError("wrk not found on PATH; install it with: apt-get install -y wrk")


def run_wrk(
    url: str,
    load: WrkLoad,
    duration_s: float,
    cores: str | None,
    log_path: Path,
) -> WrkResult:
    """Run wrk against `url` for `duration_s` and return its figures.

    Raises:
        WrkError: wrk failed, ran over its duration by 60 s, or printed
            no WRK_JSON line.
    """
    args = [load.mode, str(load.devices), load.payload]
    if load.mode == "batch":
        args.append(str(load.batch_size))
    command = [
        "wrk",
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={max(1, round(duration_s))}s",
        "--timeout=10s",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        *args,
    ]
    try:
        completed = subprocess.run(
            pinned(command, cores),
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as err:
        raise WrkError(f"wrk ran over {duration_s} s by 60 s and was killed") from err
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}\n")
    if completed.returncode != 0:
        raise WrkError(
            f"wrk exited with status {completed.returncode}: {completed.stderr.strip()}"
        )
    return parse_wrk_output(completed.stdout, load.heartbeats_per_request)


def combine_results(results: list[WrkResult]) -> WrkResult:
    """Return the sum of several wrk runs of one load, as if they were one run.

    Counts and durations add up. Each latency percentile is the highest of
    the runs', because percentiles of separate runs cannot be merged.
    """
    errors: dict[str, int] = {}
    for result in results:
        for kind, count in result.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    return WrkResult(
        duration_s=sum(result.duration_s for result in results),
        requests=sum(result.requests for result in results),
        errors=errors,
        latency_us={
            name: max(result.latency_us[name] for result in results)
            for name in results[0].latency_us
        },
        heartbeats_per_request=results[0].heartbeats_per_request,
    )


def parse_wrk_output(output: str, heartbeats_per_request: int) -> WrkResult:
    """Read the WRK_JSON line that bench/wrk/heartbeats.lua prints in done().

    Raises:
        WrkError: the output has no WRK_JSON line.
    """
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            return WrkResult(
                duration_s=data["duration_us"] / 1e6,
                requests=data["requests"],
                errors=data["errors"],
                latency_us=data["latency_us"],
                heartbeats_per_request=heartbeats_per_request,
            )
    raise WrkError(f"wrk printed no {MARKER.strip()} line; its output:\n{output}")
