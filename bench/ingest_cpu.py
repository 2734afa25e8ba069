"""CPU time of a process, its threads and the cores, read from /proc (Linux only).

A benchmark phase takes a `CpuSnapshot` before and after and reports the
difference, so each figure can be divided by the CPU seconds the server
really got. That keeps "per core" figures honest on a machine where other
processes share the server's core.
"""

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CoreTimes:
    """Seconds one core spent since boot: busy, in interrupts, stolen by the host.

    `busy_s` includes `irq_s`, the time in hardware and software interrupts.
    Much of a loopback TCP transfer runs there, and Linux does not charge it
    to the process whose packets they are.
    """

    busy_s: float
    irq_s: float
    steal_s: float


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds of one process, by thread name, and of every core."""

    process_s: float
    threads_s: dict[str, float] = field(default_factory=dict)
    cores: dict[int, CoreTimes] = field(default_factory=dict)


@dataclass(frozen=True)
class CpuUsage:
    """CPU used between two snapshots: the process, its threads and each core."""

    process_s: float
    threads_s: dict[str, float]
    core_busy_s: dict[int, float]
    core_irq_s: dict[int, float]
    core_steal_s: dict[int, float]

    def to_json(self) -> dict[str, object]:
        return {
            "process_s": round(self.process_s, 3),
            "threads_s": {name: round(s, 3) for name, s in self.threads_s.items()},
            "core_busy_s": {str(c): round(s, 3) for c, s in self.core_busy_s.items()},
            "core_irq_s": {str(c): round(s, 3) for c, s in self.core_irq_s.items()},
            "core_steal_s": {str(c): round(s, 3) for c, s in self.core_steal_s.items()},
        }


def snapshot(pid: int | None) -> CpuSnapshot:
    """Read the CPU seconds of process `pid` (none if None) and of every core."""
    if pid is None:
        return CpuSnapshot(process_s=0.0, cores=read_cores())
    return CpuSnapshot(
        process_s=_stat_cpu_s(Path(f"/proc/{pid}/stat").read_text()),
        threads_s=read_threads(pid),
        cores=read_cores(),
    )


def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    threads = {
        name: after.threads_s[name] - before.threads_s.get(name, 0.0)
        for name in after.threads_s
    }
    return CpuUsage(
        process_s=after.process_s - before.process_s,
        threads_s=dict(sorted(threads.items(), key=lambda item: -item[1])),
        core_busy_s={
            core: times.busy_s - before.cores[core].busy_s
            for core, times in after.cores.items()
            if core in before.cores
        },
        core_irq_s={
            core: times.irq_s - before.cores[core].irq_s
            for core, times in after.cores.items()
            if core in before.cores
        },
        core_steal_s={
            core: times.steal_s - before.cores[core].steal_s
            for core, times in after.cores.items()
            if core in before.cores
        },
    )


def combine_usage(usages: list[CpuUsage]) -> CpuUsage:
    """Return the CPU that several measured spans used in all."""
    threads = _sum_by_key([usage.threads_s for usage in usages])
    return CpuUsage(
        process_s=sum(usage.process_s for usage in usages),
        threads_s=dict(sorted(threads.items(), key=lambda item: -item[1])),
        core_busy_s=_sum_by_key([usage.core_busy_s for usage in usages]),
        core_irq_s=_sum_by_key([usage.core_irq_s for usage in usages]),
        core_steal_s=_sum_by_key([usage.core_steal_s for usage in usages]),
    )


Key = TypeVar("Key")


def _sum_by_key(parts: list[dict[Key, float]]) -> dict[Key, float]:
    total: dict[Key, float] = {}
    for part in parts:
        for key, seconds in part.items():
            total[key] = total.get(key, 0.0) + seconds
    return total


def read_threads(pid: int) -> dict[str, float]:
    """Return CPU seconds by thread name; threads of one name are summed.

    librdkafka names its threads ("rdk:main", "rdk:broker1"), so their
    share of the process shows apart from the Python main thread.
    """
    threads: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended while the folder was read
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        threads[name] = threads.get(name, 0.0) + _stat_cpu_s(stat)
    return threads


def read_cores() -> dict[int, CoreTimes]:
    """Return busy and steal seconds of each core from /proc/stat."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(value) for value in values]
        # user nice system idle iowait irq softirq steal guest guest_nice;
        # guest time is already counted in user and nice.
        idle = ticks[3] + ticks[4]
        irq = ticks[5] + ticks[6]
        steal = ticks[7] if len(ticks) > 7 else 0
        busy = sum(ticks[:8]) - idle - steal
        cores[int(name[3:])] = CoreTimes(
            busy_s=busy / CLOCK_TICKS_PER_S,
            irq_s=irq / CLOCK_TICKS_PER_S,
            steal_s=steal / CLOCK_TICKS_PER_S,
        )
    return cores


def machine() -> dict[str, object]:
    """Describe the machine: cores, CPU model, memory, kernel and Python."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }


def describe_machine(machine: dict[str, object]) -> str:
    """Return one line about the machine that `machine()` described, for reports."""
    load_avg = machine["load_avg"]
    assert isinstance(load_avg, tuple | list)
    return (
        f"{machine['nproc']} cores, {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB RAM, Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average at start "
        + " ".join(f"{value:.2f}" for value in load_avg)
    )


def _stat_cpu_s(stat: str) -> float:
    # Fields after the ")" that closes the command name: utime is the 12th
    # and stime the 13th (fields 14 and 15 of proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S
