"""Benchmark the monitor core against simpler deadline designs.

Usage: python bench/core_bench.py [--sizes 10000,100000,1000000,5000000]
       [--json PATH] [--quick] [--repeats N]

Five designs get the same heartbeats and ticks at each number of devices:

- dict floor: a loop of plain dict writes, the cheapest possible heartbeat.
- core: ``monitor.shard.Shard`` with its timer wheel, fed by ``observe_many``.
- lazy heap: a dict plus a heap that gets one entry per heartbeat. A tick
  pops the entries up to now and skips those that a later heartbeat replaced.
- sorted list: a dict plus a ``SortedList`` of deadlines, updated (remove and
  add) on every heartbeat.
- full scan: a dict written on every heartbeat and scanned in full on a tick.

The other designs handle neither out-of-order heartbeats nor recoveries, so
their figures are lower bounds for a complete monitor of their kind.

Scenario: each device starts with a last seen time spread evenly over the
100 s before T0 and a 200 s timeout. Deadlines therefore fall between
T0 + 100 s and T0 + 200 s, 1% of the devices per 1 s tick. Heartbeats go to
random devices whose deadlines lie in the second half of that range. Their
device ids are new str objects equal to the stored ids, as after decoding a
Kafka record, so every design pays for hashing them.

Each design runs alone in a child process forked from this one while it is
still small, so no design's memory layout depends on the designs before it.
Timed figures are the fastest of several runs, because other processes on
the machine can only add time. Before each timed tick the child reads a
64 MiB buffer, so every tick starts with cold caches, as after a batch of
records in the monitor. The figures:

- memory per device: the child's peak RSS (VmHWM) minus its RSS before the
  build, divided by the number of devices. It includes device id strings,
  int objects and allocator overhead.
- tick, nothing due: one tick in which no deadline falls.
- heartbeat: time per heartbeat, fastest over 2,000-heartbeat slices of
  20,000-heartbeat batches.
- heartbeat, paired (core and dict floor): the core and plain writes into the
  core's own last seen dict take turns on slices in one process. The
  heartbeat target is checked on this pair, because separate processes differ
  by several percent from run to run: compare dict floor and full scan, whose
  heartbeat loops are the same code.
- heartbeat, declared timeout (core only): each heartbeat declares the
  timeout the device already has.
- heartbeat, older than newest (core only): each heartbeat is older than the
  newest one the shard has seen, which costs an extra read.
- tick, 1% due: one tick that reports 1% of the devices DOWN.
- lateness, max (core only): the largest time from deadline to DOWN over one
  such tick, with the previous tick one tick earlier.
- tick, 1% re-filed: one tick over the old deadlines of 1% of the devices,
  all of which have sent a heartbeat since, so nothing is due. The core
  files those devices again; the heap pops their replaced entries.
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
import traceback
from collections.abc import Callable
from importlib.metadata import version
from typing import Protocol

from sortedcontainers import SortedList

from monitor.shard import DOWN, Shard, Transition

T0 = 1_700_000_000_000
TICK_MS = 1000
SPREAD_MS = 100_000
TIMEOUT_MS = 200_000
BATCH = 20_000
# Heartbeats per timed run: short runs are more often left alone by the
# scheduler, and the fastest run is the figure.
TIMED_SLICE = 2_000
BUILD_CHUNK = 10_000
HEARTBEAT_ROUNDS_PER_REPEAT = 2
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
PAIRED = "heartbeat, paired"
DESIGN_NAMES = [FLOOR, CORE, LazyHeap.name, SortedIndex.name, SCAN]
# The order of the figures in the printed table.
FIGURES = [
    "memory per device",
    "heartbeat",
    PAIRED,
    "heartbeat, declared timeout",
    "heartbeat, older than newest",
    "tick, nothing due",
    "tick, 1% due",
    "tick, 1% re-filed",
    "lateness, max",
]


# Measuring.


def build(design: Design, devices: int) -> None:
    """Feed every device its first heartbeat, in chunks of at most 1% of them."""
    chunk_size = max(1, min(BUILD_CHUNK, devices // 100))
    for first in range(0, devices, chunk_size):
        # The same times as last_seen_at_start, without a call per device.
        chunk: list[Heartbeat] = [
            (f"device-{i:07d}", T0 - SPREAD_MS + i * SPREAD_MS // devices, None)
            for i in range(first, min(first + chunk_size, devices))
        ]
        design.observe_many(chunk)


def status_kib(field: str) -> int:
    """Return a field of /proc/self/status, such as VmRSS, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line; run this on Linux")


def heartbeat_batch(
    rng: random.Random, devices: int, seen_ms: int, timeout_ms: int | None = None
) -> list[Heartbeat]:
    """Heartbeats for random devices of the second half."""
    first = devices // 2
    return [
        (device_id(rng.randrange(first, devices)), seen_ms, timeout_ms)
        for _ in range(BATCH)
    ]


def with_fresh_ids(batch: list[Heartbeat]) -> list[Heartbeat]:
    """Copy a batch with new id str objects, whose hashes are not cached yet."""
    return [(device.encode().decode(), t, x) for device, t, x in batch]


def sub_batches(batch: list[Heartbeat]) -> list[list[Heartbeat]]:
    """Split a batch, with fresh ids, into the slices that are timed one by one."""
    fresh = with_fresh_ids(batch)
    return [fresh[i : i + TIMED_SLICE] for i in range(0, len(fresh), TIMED_SLICE)]


def fastest_heartbeat_ns(design: Design, batches: list[list[Heartbeat]]) -> float:
    """Time every slice of the batches; return the fastest time per heartbeat."""
    fastest_ns = float("inf")
    for batch in batches:
        for heartbeats in sub_batches(batch):
            elapsed_ns = timed_ns(design.observe_many, heartbeats)
            fastest_ns = min(fastest_ns, elapsed_ns / len(heartbeats))
    return fastest_ns


def paired_heartbeat_ns(
    core: "CoreShard", batches: list[list[Heartbeat]]
) -> tuple[float, float]:
    """Time the core against plain writes into its own last seen dict.

    The two take turns, slice by slice, in the same process and on the same
    dict, so neither the machine's load nor the memory layout differs between
    them. Returns the fastest time per heartbeat of each.
    """

    def write_dict(heartbeats: list[Heartbeat]) -> None:
        last_seen_ms = core._last_seen_ms
        for device, seen_ms, _ in heartbeats:
            last_seen_ms[device] = seen_ms

    core_fastest_ns = floor_fastest_ns = float("inf")
    for batch in batches:
        core_slices = sub_batches(batch[: BATCH // 2])
        floor_slices = sub_batches(batch[BATCH // 2 :])
        pairs = zip(core_slices, floor_slices, strict=True)
        for turn, (core_slice, floor_slice) in enumerate(pairs):
            # Alternate which of the two runs first.
            if turn % 2:
                floor_ns = timed_ns(write_dict, floor_slice)
                core_ns = timed_ns(core.observe_many, core_slice)
            else:
                core_ns = timed_ns(core.observe_many, core_slice)
                floor_ns = timed_ns(write_dict, floor_slice)
            core_fastest_ns = min(core_fastest_ns, core_ns / len(core_slice))
            floor_fastest_ns = min(floor_fastest_ns, floor_ns / len(floor_slice))
    return core_fastest_ns, floor_fastest_ns


def timed_ns(function: Callable[..., object], *args: object) -> int:
    started = time.perf_counter_ns()
    function(*args)
    return time.perf_counter_ns() - started


# Written, so that its pages are real memory rather than the shared zero page.
CACHE_FLUSH = b"\x01" * (64 * 2**20)


def measure_design(make: Callable[[], Design], devices: int, repeats: int) -> list:
    """Build one design and return its result rows. Run it in a fresh child."""
    design = make()
    rows: list[dict] = []

    def add(figure: str, value: float, unit: str, name: str = design.name) -> None:
        row = {"devices": devices, "figure": figure, "design": name}
        rows.append({**row, "value": value, "unit": unit})

    def time_ticks(figure: str, first_now_ms: int, unit: str) -> None:
        unit_ns = {"us": 1e3, "ms": 1e6}[unit]
        fastest_ns = float("inf")
        for repeat in range(repeats):
            CACHE_FLUSH.count(b"x")
            now_ms = first_now_ms + repeat * TICK_MS
            fastest_ns = min(fastest_ns, timed_ns(design.expire, now_ms))
        add(figure, fastest_ns / unit_ns, unit)

    # 1. Build, measuring the peak RSS it adds ("5" resets VmHWM to VmRSS).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    start_kib = status_kib("VmRSS")
    build(design, devices)
    add("memory per device", (status_kib("VmHWM") - start_kib) * 1024 / devices, "B")

    # 2. Ticks in which no deadline falls.
    has_ticks = not isinstance(design, DictFloor)
    if has_ticks:
        time_ticks("tick, nothing due", T0 + TICK_MS, "us")

    # 3. Heartbeats. Every design draws the same batches from the same seed.
    rng = random.Random(devices)
    rounds = HEARTBEAT_ROUNDS_PER_REPEAT * repeats

    def batches(seen_ms: int, timeout_ms: int | None = None) -> list:
        return [
            heartbeat_batch(rng, devices, seen_ms + round_, timeout_ms)
            for round_ in range(rounds)
        ]

    add("heartbeat", fastest_heartbeat_ns(design, batches(T0 + 10_000)), "ns")
    if isinstance(design, CoreShard):
        core_ns, floor_ns = paired_heartbeat_ns(design, batches(T0 + 15_000))
        add(PAIRED, floor_ns, "ns", name=FLOOR)
        add(PAIRED, core_ns, "ns")
        declared = batches(T0 + 20_000, TIMEOUT_MS)
        add("heartbeat, declared timeout", fastest_heartbeat_ns(design, declared), "ns")
        older = batches(T0 + 1)
        add("heartbeat, older than newest", fastest_heartbeat_ns(design, older), "ns")
    if not has_ticks:
        return rows

    # 4. Ticks that report 1% of the devices DOWN, one per tick start.
    design.expire(T0 + SPREAD_MS)
    time_ticks("tick, 1% due", T0 + SPREAD_MS + TICK_MS, "ms")
    if isinstance(design, CoreShard):
        downs = design.expire(T0 + SPREAD_MS + (repeats + 1) * TICK_MS)
        lateness_ms = max(t.at_ms - t.deadline_ms for t in downs)
        add("lateness, max", lateness_ms, "ms")

    # 5. Ticks over deadlines that heartbeats have moved, so 1% of the devices
    # are re-filed and none are due. They follow the ticks of step 4.
    first_tick_ms = T0 + SPREAD_MS + (repeats + 2) * TICK_MS
    design.expire(first_tick_ms)
    last_tick_ms = first_tick_ms + repeats * TICK_MS
    design.observe_many(
        [
            (device_id(i), T0 + 30_000, None)
            for i in indexes_due_between(first_tick_ms, last_tick_ms, devices)
        ]
    )
    time_ticks("tick, 1% re-filed", first_tick_ms + TICK_MS, "ms")
    return rows


def run_in_child(make: Callable[[], Design], devices: int, repeats: int) -> list:
    """Run ``measure_design`` in a forked child and return its rows."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        exit_code = 1
        try:
            rows = measure_design(make, devices, repeats)
            with os.fdopen(write_end, "w") as reply:
                json.dump(rows, reply)
            exit_code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(exit_code)
    os.close(write_end)
    with os.fdopen(read_end) as reply:
        text = reply.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0 or not text:
        raise RuntimeError(
            f"measuring {make} at {devices} devices failed in the child process; "
            "its traceback is printed above"
        )
    return json.loads(text)


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
        for row in sorted(
            (r for r in rows if r["devices"] == devices),
            key=lambda r: (FIGURES.index(r["figure"]), DESIGN_NAMES.index(r["design"])),
        ):
            print(
                f"{row['figure']:<30} {row['design']:<12} {row['value']:>12,.2f}"
                f" {row['unit']:<5} {format_ratio(row['vs_floor']):>9}"
                f" {format_ratio(row['vs_scan']):>10}"
            )


def check_targets(rows: list[dict]) -> dict[str, dict]:
    """Check the core's figures at 1M devices against its performance targets."""
    at = {(r["figure"], r["design"]): r for r in rows if r["devices"] == 1_000_000}
    if not at:
        return {}
    core = CORE
    checks = {
        "heartbeat <= 1.2x dict write": at[(PAIRED, core)]["vs_floor"] <= 1.2,
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
        help="comma-separated numbers of devices to measure (default: %(default)s)",
        default=",".join(str(s) for s in FULL_SIZES),
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON to PATH"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"measure only {QUICK_SIZES} devices with 3 repeats, as a smoke test",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed ticks per figure; heartbeat figures get twice as many batches "
        "(default: %(default)s)",
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
    # Other processes slow the timed figures down, so the report shows the load.
    load_before = os.getloadavg()
    gc.disable()
    rows: list[dict] = []
    for devices in sizes:
        for make in DESIGNS:
            design_started = time.perf_counter()
            design_rows = run_in_child(make, devices, repeats)
            design_s = time.perf_counter() - design_started
            log(f"{devices:,} devices, {design_rows[0]['design']}: {design_s:.1f} s")
            rows += design_rows
    add_ratios(rows)
    elapsed_s = time.perf_counter() - started

    print_table(rows)
    targets = check_targets(rows)
    if targets:
        print("\nTargets at 1,000,000 devices")
        for name, result in targets.items():
            print(f"  {'met' if result['met'] else 'NOT MET':<8} {name}")
    load_after = os.getloadavg()
    print(f"\nRan in {elapsed_s:.0f} s on {machine()['cpu']}", end="; ")
    print(
        f"1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )

    if args.json:
        report = {
            "command": " ".join(["python", "bench/core_bench.py", *sys.argv[1:]]),
            "machine": machine(),
            "elapsed_s": round(elapsed_s, 1),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "repeats": repeats,
            "results": rows,
            "targets": targets,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
