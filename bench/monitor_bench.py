"""Benchmark what the monitor's guarantees cost: restore time and exactly-once.

Usage: python bench/monitor_bench.py [--bootstrap HOST:PORT] [--devices N]
       [--heartbeats N] [--pairs N] [--intervals 250,1000] [--json PATH]
       [--quick]

It needs a running broker (deploy/kafka.sh start) and creates topics of its
own on it, named bench-<random>. Two figures, each printed with its ratio
to a baseline measured in the same run:

- restore: a state topic holding --devices devices (default 1,000,000) over
  --partitions partitions is read back by ``monitor.restore``, from assign
  until every shard is ready to judge. The baseline is reading the same
  records with the same consumer settings without applying them. The target
  is 30 s.
- throughput: a MonitorWorker reads --heartbeats heartbeats (already in the
  topic) from --senders devices and keeps its state topic up to date. The
  baseline is the same worker with HBMON_MONITOR_EXACTLY_ONCE=false at the
  same commit interval, which writes the same changelog but commits offsets
  plainly. At each commit interval in --intervals, the two run back to back
  in --pairs pairs. Each figure is the median over the pairs, and the ratio
  is the median of the pairs' ratios, so load from other processes on the
  machine hits both sides of a ratio alike. The target is 85% of the
  baseline at the default interval, the last one given.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
import zlib
from dataclasses import replace
from importlib.metadata import version

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from hbmon.events import HeartbeatRecord
from hbmon.kafka import KafkaSettings, ensure_topics
from monitor.changelog import (
    PARTITION_KEY,
    DeviceRecord,
    PartitionRecord,
    encode_device,
    encode_partition,
)
from monitor.metrics import MonitorMetrics
from monitor.restore import READER_GROUP_ID, restore_partitions
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker

RESTORE_TARGET_S = 30.0
THROUGHPUT_TARGET = 0.85
# Longer than any run, so no device of the bench goes DOWN while it runs.
BENCH_TIMEOUT_S = 3600.0


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def produce_all(
    kafka: KafkaSettings, records: list[tuple[str, bytes, bytes, int]]
) -> None:
    """Write (topic, key, value, partition) records and wait for all of them."""
    producer = Producer(
        kafka.client_config(
            linger_ms=20,
            batch_size=1_000_000,
            compression_type="lz4",
            queue_buffering_max_messages=1_000_000,
        )
    )
    for topic, key, value, partition in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records not delivered to the broker")


# Restore


def write_changelog(kafka: KafkaSettings, devices: int, partitions: int) -> None:
    now_ms = time.time_ns() // 1_000_000
    topic = kafka.state_topic_name
    records = []
    for index in range(devices):
        device_id = f"device-{index:08d}"
        key = device_id.encode()
        value = encode_device(DeviceRecord(now_ms - index % 30_000, 30_000, False))
        records.append((topic, key, value, zlib.crc32(key) % partitions))
    clock = encode_partition(PartitionRecord(now_ms, now_ms))
    records += [(topic, PARTITION_KEY, clock, p) for p in range(partitions)]
    produce_all(kafka, records)


def read_raw(kafka: KafkaSettings, partitions: int) -> float:
    """Time a read of the state topic to its end that applies nothing."""
    started = time.perf_counter()
    reader = Consumer(
        kafka.client_config(
            group_id=READER_GROUP_ID,
            enable_auto_commit=False,
            isolation_level="read_committed",
            enable_partition_eof=True,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_wait_max_ms=10,
        )
    )
    topic = kafka.state_topic_name
    reader.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    )
    pending = set(range(partitions))
    while pending:
        for message in reader.consume(10_000, timeout=0.05):
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
    reader.close()
    return time.perf_counter() - started


def measure_restore(kafka: KafkaSettings, devices: int, partitions: int) -> list[dict]:
    log(f"writing a state topic of {devices:,} devices")
    write_changelog(kafka, devices, partitions)
    raw_s = read_raw(kafka, partitions)
    log(f"read without applying: {raw_s:.1f} s")

    settings = MonitorSettings(default_timeout_s=30.0, metrics_port=0)
    worker = MonitorWorker(kafka, settings, MonitorMetrics(CollectorRegistry()))
    states = {p: worker.new_state(p) for p in range(partitions)}
    started = time.perf_counter()
    restore_partitions(kafka, states, worker.metrics, timeout_s=600)
    restore_s = time.perf_counter() - started
    restored = sum(len(state.shard) for state in states.values())
    if restored != devices:
        raise RuntimeError(f"restored {restored} devices, expected {devices}")
    log(f"restore: {restore_s:.1f} s")
    return [
        row("restore", "read only (baseline)", raw_s, "s", 1.0),
        row("restore", "read and apply", restore_s, "s", restore_s / raw_s),
    ]


# Throughput


def write_heartbeats(kafka: KafkaSettings, heartbeats: int, senders: int) -> None:
    records = []
    for index in range(heartbeats):
        device_id = f"sensor-{index % senders:07d}"
        value = HeartbeatRecord(device_id, 0).encode()
        records.append((kafka.heartbeat_topic, device_id.encode(), value, -1))
    produce_all(kafka, records)


def run_worker(
    kafka: KafkaSettings, heartbeats: int, exactly_once: bool, interval_ms: int
) -> dict:
    """Run one worker over every heartbeat and return its rate and commit figures."""
    tag = uuid.uuid4().hex[:8]
    kafka = replace(kafka, state_topic=f"{kafka.heartbeat_topic}-state-{tag}")
    ensure_topics(kafka)
    settings = MonitorSettings(
        group_id=f"bench-{tag}",
        default_timeout_s=BENCH_TIMEOUT_S,
        max_timeout_s=BENCH_TIMEOUT_S,
        metrics_port=0,
        exactly_once=exactly_once,
        commit_interval_ms=interval_ms,
        transaction_timeout_ms=max(10_000, 4 * interval_ms),
    )
    registry = CollectorRegistry()
    worker = MonitorWorker(kafka, settings, MonitorMetrics(registry))
    worker.start()

    def consumed() -> float:
        return registry.get_sample_value("hbmon_monitor_records_consumed_total") or 0

    try:
        # The clock starts with the first record, after the group formed.
        while consumed() == 0:
            worker.step()
        started = time.perf_counter()
        while consumed() < heartbeats:
            worker.step()
        worker.commit()
        elapsed_s = time.perf_counter() - started
    finally:
        worker.close()
    commits = registry.get_sample_value(
        "hbmon_monitor_commits_total", {"outcome": "committed"}
    )
    commit_s = registry.get_sample_value("hbmon_monitor_commit_seconds_sum")
    return {
        "rate": heartbeats / elapsed_s,
        "commits": commits or 0,
        "commit_ms": 1000 * (commit_s or 0) / max(1, commits or 0),
        "changelog": registry.get_sample_value(
            "hbmon_monitor_changelog_records_written_total"
        ),
    }


def measure_throughput(
    kafka: KafkaSettings,
    heartbeats: int,
    senders: int,
    intervals: list[int],
    pairs: int,
) -> list[dict]:
    log(f"writing {heartbeats:,} heartbeats from {senders:,} devices")
    write_heartbeats(kafka, heartbeats, senders)
    rows = []
    for interval_ms in intervals:
        results: dict[str, list[dict]] = {"at-least-once": [], "exactly-once": []}
        for pair in range(pairs):
            # The two runs of a pair are back to back, in alternating order,
            # so load from other processes hits both alike.
            modes = ["at-least-once", "exactly-once"]
            for mode in modes if pair % 2 == 0 else modes[::-1]:
                result = run_worker(
                    kafka, heartbeats, mode == "exactly-once", interval_ms
                )
                results[mode].append(result)
                log(
                    f"pair {pair + 1} {mode}, {interval_ms} ms: "
                    f"{result['rate']:,.0f} heartbeats/s, {result['commits']:.0f} "
                    f"commits of {result['commit_ms']:.1f} ms"
                )
        rows += pair_rows(interval_ms, results)
    return rows


def pair_rows(interval_ms: int, results: dict[str, list[dict]]) -> list[dict]:
    """Return the median figures of one interval, with the median pair ratio."""
    baseline, exactly_once = results["at-least-once"], results["exactly-once"]
    ratios = [
        e["rate"] / b["rate"] for b, e in zip(baseline, exactly_once, strict=True)
    ]
    rows = []
    for mode, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        commit_ms = statistics.median(r["commit_ms"] for r in runs)
        if mode == "at-least-once":
            label, ratio = f"{mode}, {interval_ms} ms (baseline)", 1.0
        else:
            label, ratio = f"{mode}, {interval_ms} ms", statistics.median(ratios)
        rows.append(row("throughput", label, rate, "heartbeats/s", ratio))
        if mode == "exactly-once":
            rows[-1]["pair_ratios"] = [round(r, 3) for r in ratios]
        rows.append(row("commit", f"{mode}, {interval_ms} ms", commit_ms, "ms", None))
    return rows


# Report


def row(figure: str, name: str, value: float, unit: str, ratio: float | None) -> dict:
    return {
        "figure": figure,
        "name": name,
        "value": value,
        "unit": unit,
        "ratio": ratio,
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"{'figure':<11} {'run':<36} {'value':>12} {'unit':<14} {'ratio':>6}  "
        "pair ratios"
    )
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        pairs = r.get("pair_ratios")
        spread = f"{min(pairs):.2f} to {max(pairs):.2f}" if pairs else ""
        print(
            f"{r['figure']:<11} {r['name']:<36} {r['value']:>12,.1f} "
            f"{r['unit']:<14} {ratio:>6}  {spread}"
        )


def check_targets(rows: list[dict], default_interval_ms: int) -> dict[str, bool]:
    by_name = {(r["figure"], r["name"]): r for r in rows}
    targets = {}
    restore = by_name.get(("restore", "read and apply"))
    if restore is not None:
        targets[f"restore ready within {RESTORE_TARGET_S:.0f} s"] = (
            restore["value"] <= RESTORE_TARGET_S
        )
    eos = by_name.get(("throughput", f"exactly-once, {default_interval_ms} ms"))
    if eos is not None:
        targets[
            f"exactly-once at {default_interval_ms} ms >= "
            f"{THROUGHPUT_TARGET:.0%} of at-least-once"
        ] = eos["ratio"] >= THROUGHPUT_TARGET
    return targets


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "confluent-kafka": version("confluent-kafka"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("HBMON_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="broker address (default: HBMON_KAFKA_BOOTSTRAP or %(default)s)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1_000_000,
        help="devices in the restored state topic (default: %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=6,
        help="partitions of the bench topics (default: %(default)s)",
    )
    parser.add_argument(
        "--heartbeats",
        type=int,
        default=500_000,
        help="heartbeats per throughput run (default: %(default)s)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=50_000,
        help="devices sending those heartbeats (default: %(default)s)",
    )
    parser.add_argument(
        "--intervals",
        default="250,1000",
        help="comma-separated exactly-once commit intervals in ms; "
        "the last is the default one (default: %(default)s)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="pairs of runs per commit interval (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100,000 devices, 50,000 heartbeats, 1 pair",
    )
    args = parser.parse_args(argv)
    try:
        intervals = [int(ms) for ms in args.intervals.split(",")]
    except ValueError:
        parser.error(
            f"--intervals must be integers separated by commas, got {args.intervals!r}"
        )
    if args.quick:
        args.devices, args.heartbeats, args.senders, args.pairs = (
            100_000,
            50_000,
            5_000,
            1,
        )

    suffix = uuid.uuid4().hex[:8]
    kafka = replace(
        KafkaSettings(),
        bootstrap_servers=args.bootstrap,
        heartbeat_topic=f"bench-{suffix}",
        alert_topic=f"bench-alerts-{suffix}",
        heartbeat_partitions=args.partitions,
    )
    ensure_topics(kafka)
    started = time.perf_counter()
    rows = measure_restore(kafka, args.devices, args.partitions)
    rows += measure_throughput(
        kafka, args.heartbeats, args.senders, intervals, args.pairs
    )
    elapsed_s = time.perf_counter() - started

    print_table(rows)
    targets = check_targets(rows, intervals[-1])
    print("\nTargets")
    for name, met in targets.items():
        print(f"  {'met' if met else 'NOT MET':<8} {name}")
    print(f"\nRan in {elapsed_s:.0f} s on {machine()['cpu']}, {os.cpu_count()} cores")
    if args.json:
        report = {
            "command": " ".join(["python", "bench/monitor_bench.py", *sys.argv[1:]]),
            "machine": machine(),
            "elapsed_s": round(elapsed_s, 1),
            "results": rows,
            "targets": targets,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
