"""Benchmark the monitor core against simpler deadline designs.

Usage: python bench/core_bench.py [--sizes 10000,100000,1000000,5000000]
       [--json PATH] [--quick]

For each number of devices, five designs get the same heartbeats and ticks:

- dict floor: a loop of plain dict writes, the cheapest possible heartbeat.
- core: ``monitor.shard.Shard`` with its timer wheel (``observe_many``).
- lazy heap: a dict plus a heap that gets one entry per heartbeat; a tick
  pops entries up to now and skips those that a later heartbeat replaced.
- sorted list: a dict plus a ``SortedList`` of deadlines, updated (remove and
  add) on every heartbeat.
- full scan: a dict written on every heartbeat and scanned in full on a tick.

Scenario. Each device starts with a last seen time spread evenly over 100 s
before T0, with a 200 s timeout, so deadlines fall between T0 + 100 s and
T0 + 200 s, 1% of the devices per 1 s tick. Heartbeats go to random devices
whose deadlines lie in the second half of that range. Their device ids are
new str objects equal to the stored ids, as they would be after decoding a
Kafka record, so every design pays for hashing them.

Figures, each the median of ``--repeats`` runs:

- heartbeat: time per heartbeat of one batch passed to the design's loop.
- tick, nothing due: one tick in which no deadline falls.
- tick, 1% due: one tick that reports 1% of the devices DOWN.
- tick, 1% re-filed: one tick over deadlines that heartbeats have since
  moved, so nothing is due. The core re-files those devices; the heap pops
  their stale entries.
- memory: peak bytes traced by tracemalloc while the design takes in its
  devices, divided by the number of devices. It counts everything the design
  keeps, device id strings and int objects included, at their requested
  sizes; allocator rounding and free lists are not counted.

The core also gets two slow-path figures: heartbeats that declare a timeout,
and heartbeats older than the newest one the shard has seen.
"""

import argparse
import gc
import heapq
import json
import os
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version
from typing import Protocol

from sortedcontainers import SortedList

from monitor.shard import DOWN, Shard, Transition

T0 = 1_700_000_000_000
TICK_MS = 1000
SPREAD_MS = 100_000
TIMEOUT_MS = 200_000
BATCH = 50_000
BUILD_CHUNK = 10_000
# Short batches, many of them: the fastest run is the one least disturbed.
HEARTBEAT_ROUNDS_PER_REPEAT = 3
FULL_SIZES = [10_000, 100_000, 1_000_000, 5_000_000]
QUICK_SIZES = [10_000, 100_000]

Heartbeat = tuple[str, int, int | None]


def device_id(index: int) -> str:
    return f"device-{index:07d}"


def last_seen_at_start(index: int, devices: int) -> int:
    return T0 - SPREAD_MS + index * SPREAD_MS // devices


def indexes_due_between(after_ms: int, until_ms: int, devices: int) -> range:
    """Return the devices whose starting deadline is in (after_ms, until_ms]."""

    def first_index_after(time_ms: int) -> int:
        offset_ms = time_ms - TIMEOUT_MS - (T0 - SPREAD_MS)
        index = max(0, offset_ms * devices // SPREAD_MS - 1)
        while index < devices and (
            last_seen_at_start(index, devices) + TIMEOUT_MS <= time_ms
        ):
            index += 1
        return index

    return range(first_index_after(after_ms), first_index_after(until_ms))


class Design(Protocol):
    name: str

    def observe_many(self, heartbeats: list[Heartbeat]) -> object: ...

    def expire(self, now_ms: int) -> list[Transition]: ...


def down_transition(device: str, last_seen_ms: int, now_ms: int) -> Transition:
    return Transition(
        DOWN, device, last_seen_ms, last_seen_ms + TIMEOUT_MS, TIMEOUT_MS, now_ms
    )


class DictFloor:
    name = "dict floor"

    def __init__(self) -> None:
        self.last_seen_ms: dict[str, int] = {}

    def observe_many(self, heartbeats: list[Heartbeat]) -> None:
        last_seen_ms = self.last_seen_ms
        for device, seen_ms, _ in heartbeats:
            last_seen_ms[device] = seen_ms

    def expire(self, now_ms: int) -> list[Transition]:
        raise NotImplementedError("the floor has no ticks")


class CoreShard(Shard):
    name = "core"

    def __init__(self) -> None:
        super().__init__(
            0,
            default_timeout_ms=TIMEOUT_MS,
            min_timeout_ms=TICK_MS,
            max_timeout_ms=10 * TIMEOUT_MS,
            tick_ms=TICK_MS,
        )


class LazyHeap:
    name = "lazy heap"

    def __init__(self) -> None:
        self.last_seen_ms: dict[str, int] = {}
        self.down: dict[str, int] = {}
        self.heap: list[tuple[int, str]] = []

    def observe_many(self, heartbeats: list[Heartbeat]) -> None:
        last_seen_ms, heap = self.last_seen_ms, self.heap
        for device, seen_ms, _ in heartbeats:
            last_seen_ms[device] = seen_ms
            heapq.heappush(heap, (seen_ms + TIMEOUT_MS, device))

    def expire(self, now_ms: int) -> list[Transition]:
        last_seen_ms, heap = self.last_seen_ms, self.heap
        transitions = []
        while heap and heap[0][0] <= now_ms:
            deadline_ms, device = heapq.heappop(heap)
            seen_ms = last_seen_ms.get(device)
            # Entries that a later heartbeat replaced are skipped.
            if seen_ms is not None and seen_ms + TIMEOUT_MS == deadline_ms:
                self.down[device] = last_seen_ms.pop(device)
                transitions.append(down_transition(device, seen_ms, now_ms))
        return transitions


class SortedIndex:
    name = "sorted list"

    def __init__(self) -> None:
        self.last_seen_ms: dict[str, int] = {}
        self.down: dict[str, int] = {}
        self.index = SortedList()

    def observe_many(self, heartbeats: list[Heartbeat]) -> None:
        last_seen_ms, index = self.last_seen_ms, self.index
        for device, seen_ms, _ in heartbeats:
            old_ms = last_seen_ms.get(device)
            if old_ms is not None:
                index.remove((old_ms + TIMEOUT_MS, device))
            last_seen_ms[device] = seen_ms
            index.add((seen_ms + TIMEOUT_MS, device))

    def expire(self, now_ms: int) -> list[Transition]:
        count = self.index.bisect_left((now_ms + 1,))
        if not count:
            return []
        transitions = []
        for _, device in self.index[:count]:
            seen_ms = self.down[device] = self.last_seen_ms.pop(device)
            transitions.append(down_transition(device, seen_ms, now_ms))
        del self.index[:count]
        return transitions


class FullScan:
    name = "full scan"

    def __init__(self) -> None:
        self.last_seen_ms: dict[str, int] = {}
        self.down: dict[str, int] = {}

    def observe_many(self, heartbeats: list[Heartbeat]) -> None:
        last_seen_ms = self.last_seen_ms
        for device, seen_ms, _ in heartbeats:
            last_seen_ms[device] = seen_ms

    def expire(self, now_ms: int) -> list[Transition]:
        limit_ms = now_ms - TIMEOUT_MS
        due = [d for d, seen_ms in self.last_seen_ms.items() if seen_ms <= limit_ms]
        transitions = []
        for device in due:
            seen_ms = self.down[device] = self.last_seen_ms.pop(device)
            transitions.append(down_transition(device, seen_ms, now_ms))
        return transitions


DESIGNS: list[Callable[[], Design]] = [
    DictFloor,
    CoreShard,
    LazyHeap,
    SortedIndex,
    FullScan,
]
FLOOR, CORE, SCAN = DictFloor.name, CoreShard.name, FullScan.name


# Measuring.


def build(design: Design, devices: int) -> float:
    """Feed every device its first heartbeat; return peak traced bytes per device."""
    # Chunks of at most 1% of the devices keep the input's share of the peak small.
    chunk_size = max(1, min(BUILD_CHUNK, devices // 100))
    gc.collect()
    tracemalloc.start()
    for first in range(0, devices, chunk_size):
        chunk = [
            (device_id(i), last_seen_at_start(i, devices), None)
            for i in range(first, min(first + chunk_size, devices))
        ]
        design.observe_many(chunk)
        del chunk
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / devices


def heartbeat_batch(
    rng: random.Random, devices: int, seen_ms: int, timeout_ms: int | None = None
) -> list[Heartbeat]:
    """Heartbeats for random devices of the second half, with fresh id strings."""
    first = devices // 2
    return [
        (device_id(rng.randrange(first, devices)), seen_ms, timeout_ms)
        for _ in range(BATCH)
    ]


def timed_ns(function: Callable[..., object], *args: object) -> int:
    started = time.perf_counter_ns()
    function(*args)
    return time.perf_counter_ns() - started


class Run:
    """Designs built for one number of devices, and the result rows so far."""

    def __init__(self, devices: int, repeats: int) -> None:
        self.devices = devices
        self.repeats = repeats
        self.rng = random.Random(devices)
        self.designs: dict[str, Design] = {}
        self.rows: list[dict] = []

    @property
    def tickers(self) -> dict[str, Design]:
        return {name: d for name, d in self.designs.items() if name != FLOOR}

    def add(self, figure: str, design: str, value: float, unit: str) -> None:
        row = {"devices": self.devices, "figure": figure, "design": design}
        self.rows.append({**row, "value": value, "unit": unit})

    def time_ticks(self, figure: str, first_now_ms: int, unit: str) -> dict:
        """Time one tick per repeat for every design, on consecutive tick starts.

        Returns the number of DOWN transitions of each design's last tick.
        """
        unit_ns = {"us": 1e3, "ms": 1e6}[unit]
        samples: dict[str, list[float]] = {name: [] for name in self.tickers}
        reported: dict[str, int] = {}
        for repeat in range(self.repeats):
            now_ms = first_now_ms + repeat * TICK_MS
            for name, design in self.tickers.items():
                started = time.perf_counter_ns()
                reported[name] = len(design.expire(now_ms))
                samples[name].append((time.perf_counter_ns() - started) / unit_ns)
        for name, values in samples.items():
            self.add(figure, name, min(values), unit)
        return reported

    def time_heartbeats(self, figure: str, batches: list[list[Heartbeat]]) -> None:
        """Time each batch on every design in turn; each gets fresh id strings."""
        samples: dict[str, list[float]] = {name: [] for name in self.designs}
        names = list(self.designs)
        for round_, batch in enumerate(batches):
            # Rotate the order, so no design always runs after the same one.
            first = round_ % len(names)
            for name in names[first:] + names[:first]:
                design = self.designs[name]
                fresh = [(d.encode().decode(), t, x) for d, t, x in batch]
                samples[name].append(timed_ns(design.observe_many, fresh) / BATCH)
        for name, values in samples.items():
            self.add(figure, name, min(values), "ns")

    def time_core_heartbeats(self, figure: str, batches: list[list[Heartbeat]]):
        core = self.designs[CORE]
        values = [timed_ns(core.observe_many, batch) / BATCH for batch in batches]
        self.add(figure, CORE, min(values), "ns")


def measure_size(devices: int, repeats: int, log: Callable[[str], None]) -> list:
    """Run every figure for one number of devices; return the result rows."""
    run = Run(devices, repeats)

    # 1. Build each design and trace its memory.
    for make in DESIGNS:
        design = make()
        started = time.perf_counter()
        run.add("memory per device", design.name, build(design, devices), "bytes")
        log(f"  built {design.name} in {time.perf_counter() - started:.1f} s")
        run.designs[design.name] = design

    # 2. Ticks in which no deadline falls.
    reported = run.time_ticks("tick, nothing due", T0 + TICK_MS, "us")
    log(f"  DOWN per tick with nothing due: {reported}")

    # 3. Heartbeats, newer than any before, then the core's slower paths.
    def batches(seen_ms: int, timeout_ms: int | None = None) -> list:
        return [
            heartbeat_batch(run.rng, devices, seen_ms + repeat, timeout_ms)
            for repeat in range(HEARTBEAT_ROUNDS_PER_REPEAT * repeats)
        ]

    run.time_heartbeats("heartbeat", batches(T0 + 10_000))
    declared = batches(T0 + 20_000, TIMEOUT_MS)
    run.time_core_heartbeats("heartbeat, declared timeout", declared)
    run.time_core_heartbeats("heartbeat, older than newest", batches(T0 + 1))

    # 4. Ticks that report 1% of the devices DOWN, one per tick start. The
    # core's next tick gives the lateness, with the previous tick just before.
    for design in run.tickers.values():
        design.expire(T0 + SPREAD_MS)
    reported = run.time_ticks("tick, 1% due", T0 + SPREAD_MS + TICK_MS, "ms")
    log(f"  DOWN per tick with 1% due: {reported}")
    downs = run.designs[CORE].expire(T0 + SPREAD_MS + (repeats + 1) * TICK_MS)
    lateness_ms = max(t.at_ms - t.deadline_ms for t in downs)
    run.add("lateness, max", CORE, lateness_ms, "ms")

    # 5. Ticks over deadlines that heartbeats have moved: 1% re-filed, none due.
    first_tick_ms = T0 + SPREAD_MS * 3 // 2
    for design in run.tickers.values():
        design.expire(first_tick_ms)
    last_tick_ms = first_tick_ms + repeats * TICK_MS
    moved: list[Heartbeat] = [
        (device_id(i), T0 + 30_000, None)
        for i in indexes_due_between(first_tick_ms, last_tick_ms, devices)
    ]
    for design in run.designs.values():
        design.observe_many(moved)
    reported = run.time_ticks("tick, 1% re-filed", first_tick_ms + TICK_MS, "ms")
    log(f"  DOWN per tick with 1% re-filed: {reported}")
    return run.rows


def add_ratios(rows: list[dict]) -> None:
    """Set each row's ratio to the floor and to the full scan of its figure."""
    baseline = {(r["devices"], r["figure"], r["design"]): r["value"] for r in rows}
    for row in rows:
        for key, name in (("vs_floor", FLOOR), ("vs_scan", SCAN)):
            base = baseline.get((row["devices"], row["figure"], name))
            row[key] = row["value"] / base if base else None


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"1/{1 / ratio:,.0f}"


def print_table(rows: list[dict]) -> None:
    header = f"{'figure':<30} {'design':<12} {'value':>12} {'unit':<5}"
    header += f" {'vs floor':>9} {'vs scan':>10}"
    for devices in sorted({r["devices"] for r in rows}):
        print(f"\n{devices:,} devices")
        print(header)
        print("-" * len(header))
        for row in (r for r in rows if r["devices"] == devices):
            print(
                f"{row['figure']:<30} {row['design']:<12} {row['value']:>12,.2f}"
                f" {row['unit']:<5} {format_ratio(row['vs_floor']):>9}"
                f" {format_ratio(row['vs_scan']):>10}"
            )


def check_targets(rows: list[dict]) -> dict[str, dict]:
    """Compare the core at 1M devices with the issue's targets."""
    at = {(r["figure"], r["design"]): r for r in rows if r["devices"] == 1_000_000}
    if not at:
        return {}
    core = CORE
    checks = {
        "heartbeat <= 1.2x dict write": at[("heartbeat", core)]["vs_floor"] <= 1.2,
        "tick, nothing due >= 1000x cheaper than full scan": (
            at[("tick, nothing due", core)]["vs_scan"] <= 1 / 1000
        ),
        "lateness <= 1 tick": at[("lateness, max", core)]["value"] <= TICK_MS,
        "memory <= 200 bytes per device": (
            at[("memory per device", core)]["value"] <= 200
        ),
    }
    return {name: {"met": met} for name, met in checks.items()}


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sortedcontainers": version("sortedcontainers"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        help="comma-separated numbers of devices (default: %(default)s)",
        default=",".join(str(s) for s in FULL_SIZES),
    )
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES} and 3 repeats, for a smoke run",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per figure (default: 5)"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(
            f"--sizes must be integers separated by commas, got {args.sizes!r}"
        )
    if args.quick:
        sizes = QUICK_SIZES
    if min(sizes) < 100:
        parser.error(
            f"each size must be at least 100 devices for a 1% tick, got {sizes}"
        )
    repeats = 3 if args.quick else args.repeats
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    gc.disable()
    rows: list[dict] = []
    for devices in sizes:
        log(f"{devices:,} devices")
        rows += measure_size(devices, repeats, log)
        gc.collect()
    add_ratios(rows)
    elapsed_s = time.perf_counter() - started

    print_table(rows)
    targets = check_targets(rows)
    if targets:
        print("\nTargets at 1,000,000 devices")
        for name, result in targets.items():
            print(f"  {'met' if result['met'] else 'NOT MET':<8} {name}")
    print(f"\nRan in {elapsed_s:.0f} s on {machine()['cpu']}")

    if args.json:
        report = {
            "command": " ".join(["python", "bench/core_bench.py", *sys.argv[1:]]),
            "machine": machine(),
            "elapsed_s": round(elapsed_s, 1),
            "repeats": repeats,
            "results": rows,
            "targets": targets,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
