"""The `hbmon simulate` role: a fleet of fake devices posting heartbeats.

Each device posts every interval with a little jitter. After a delay, a
chosen share of the devices goes silent for a while and then resumes, which
is what produces DOWN and RECOVERED alerts in a demo.
"""

import argparse
import asyncio
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger(__name__)

HELP = "Post heartbeats for N simulated devices, silencing some for a while."


@dataclass
class FleetPlan:
    """Plan of the simulated fleet; all durations are in seconds."""

    url: str = "http://127.0.0.1:8080"
    devices: int = 20
    interval_s: float = 2.0
    silent_share: float = 0.1
    silence_after_s: float = 15.0
    silence_for_s: float = 30.0
    duration_s: float = 0.0
    prefix: str = "sim-device"
    token: str = ""

    def device_ids(self) -> list[str]:
        return [f"{self.prefix}-{i:04d}" for i in range(self.devices)]

    def silent_ids(self) -> set[str]:
        count = round(self.devices * self.silent_share)
        if self.silent_share > 0:
            count = max(1, count)
        return set(self.device_ids()[:count])


@dataclass
class FleetProgress:
    """Counters the progress line shows."""

    statuses: Counter[str] = field(default_factory=Counter)
    silent_now: int = 0
    errors: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    plan = FleetPlan()
    parser.add_argument("--url", default=plan.url, help="ingest base URL")
    parser.add_argument(
        "--devices", type=int, default=plan.devices, help="number of devices"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=plan.interval_s,
        help="seconds between two heartbeats of one device",
    )
    parser.add_argument(
        "--silent-share",
        type=float,
        default=plan.silent_share,
        help="share of devices that go silent, from 0 to 1 (at least one "
        "device when above 0)",
    )
    parser.add_argument(
        "--silence-after",
        type=float,
        default=plan.silence_after_s,
        help="seconds after the start when the silent devices stop posting",
    )
    parser.add_argument(
        "--silence-for",
        type=float,
        default=plan.silence_for_s,
        help="seconds the silent devices stay silent before they resume",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=plan.duration_s,
        help="seconds to run; 0 runs until interrupted",
    )
    parser.add_argument("--prefix", default=plan.prefix, help="device id prefix")


def plan_from_args(args: argparse.Namespace) -> FleetPlan:
    if not 0 <= args.silent_share <= 1:
        raise SystemExit("--silent-share must be between 0 and 1")
    if args.devices < 1 or args.interval <= 0:
        raise SystemExit("--devices must be at least 1 and --interval above 0")
    return FleetPlan(
        url=args.url,
        devices=args.devices,
        interval_s=args.interval,
        silent_share=args.silent_share,
        silence_after_s=args.silence_after,
        silence_for_s=args.silence_for,
        duration_s=args.duration,
        prefix=args.prefix,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING")
    plan = plan_from_args(args)
    try:
        asyncio.run(simulate(plan, show_progress=print_progress))
    except KeyboardInterrupt:
        pass
    print(file=sys.stderr)
    return 0


async def simulate(
    plan: FleetPlan,
    show_progress: Callable[[FleetPlan, FleetProgress, float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> FleetProgress:
    """Run the fleet until `duration_s` passes or `stop` is set."""
    progress = FleetProgress()
    stop = stop or asyncio.Event()
    started = time.monotonic()
    headers = {"content-type": "application/json"}
    if plan.token:
        headers["authorization"] = f"Bearer {plan.token}"
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=plan.url, headers=headers, limits=limits, timeout=10.0
    ) as client:
        devices = [
            asyncio.create_task(
                _device(client, plan, device_id, started, progress, stop)
            )
            for device_id in plan.device_ids()
        ]
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if plan.duration_s and elapsed >= plan.duration_s:
                stop.set()
                break
            progress.silent_now = _silent_now(plan, elapsed)
            if show_progress is not None:
                show_progress(plan, progress, elapsed)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
        await asyncio.gather(*devices, return_exceptions=True)
    return progress


async def _device(
    client: httpx.AsyncClient,
    plan: FleetPlan,
    device_id: str,
    started: float,
    progress: FleetProgress,
    stop: asyncio.Event,
) -> None:
    silent = device_id in plan.silent_ids()
    rng = random.Random(device_id)
    await _sleep_or_stop(stop, rng.uniform(0, plan.interval_s))
    seq = 0
    while not stop.is_set():
        elapsed = time.monotonic() - started
        in_silence = (
            plan.silence_after_s
            <= elapsed
            < (plan.silence_after_s + plan.silence_for_s)
        )
        if not (silent and in_silence):
            seq += 1
            await _post(client, plan, device_id, seq, progress)
        jitter = rng.uniform(-0.1, 0.1) * plan.interval_s
        await _sleep_or_stop(stop, plan.interval_s + jitter)


async def _post(
    client: httpx.AsyncClient,
    plan: FleetPlan,
    device_id: str,
    seq: int,
    progress: FleetProgress,
) -> None:
    body = {
        "device_id": device_id,
        "seq": seq,
        "ts": time.time(),
        "interval_s": plan.interval_s,
    }
    try:
        response = await client.post("/v1/heartbeats", json=body)
    except httpx.HTTPError as err:
        progress.errors += 1
        logger.debug("Heartbeat of %s failed: %s", device_id, err)
        return
    progress.statuses[str(response.status_code)] += 1


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        pass


def _silent_now(plan: FleetPlan, elapsed: float) -> int:
    if plan.silence_after_s <= elapsed < plan.silence_after_s + plan.silence_for_s:
        return len(plan.silent_ids())
    return 0


def format_progress(plan: FleetPlan, progress: FleetProgress, elapsed: float) -> str:
    sent = sum(progress.statuses.values())
    by_status = " ".join(f"{k}:{v}" for k, v in sorted(progress.statuses.items()))
    return (
        f"{elapsed:6.0f}s  {plan.devices} devices, {progress.silent_now} silent  "
        f"heartbeats {sent} ({by_status or 'none yet'})  errors {progress.errors}"
    )


def print_progress(plan: FleetPlan, progress: FleetProgress, elapsed: float) -> None:
    line = format_progress(plan, progress, elapsed)
    sys.stderr.write("\r" + line.ljust(100))
    sys.stderr.flush()
