"""Measure the CPU that ingest's Kafka producer spends per heartbeat record.

This is the floor under ingest's per-core figures: whatever the HTTP and
validation code costs, every heartbeat also passes through
`Publisher.publish` and librdkafka. The run produces the same records
twice per round, in one process and against one broker:

- baseline: a bare confluent-kafka Producer, no compression, no delivery
  callback, the same linger and batch size as ingest;
- ingest: ingest's own `Publisher`, with its settings (lz4, idempotence,
  acks=all, a delivery callback per record).

CPU is the process's user plus system time, librdkafka's threads
included, from the first produce until the last record is acknowledged.
The broker must run on another core for the figure to mean anything:

    taskset --cpu-list 1 deploy/kafka.sh start
    taskset --cpu-list 0 ./dev bench producer_cost.py --bootstrap 127.0.0.1:9092
"""

import argparse
import json
import os
import statistics
import time
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from hbmon.kafka import KafkaSettings, ensure_topics
from ingest.metrics import IngestMetrics
from ingest.publisher import Publisher
from ingest.settings import IngestSettings

DEVICES = 100_000
POLL_EVERY = 1000
FLUSH_TIMEOUT_S = 120.0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def records(count: int) -> list[tuple[str, dict[str, object], bytes]]:
    """Return `count` (device id, record, encoded record) shaped like ingest's.

    The baseline sends the encoded records. Ingest's Publisher gets the
    records, because it encodes them itself, a bundle at a time.
    """
    now_ms = time.time_ns() // 1_000_000
    triples = []
    for index in range(count):
        device_id = f"sensor-{index % DEVICES:06d}"
        record: dict[str, object] = {
            "device_id": device_id,
            "received_ms": now_ms,
            "device_ts": now_ms / 1000,
            "seq": index,
        }
        triples.append((device_id, record, orjson.dumps(record)))
    return triples


def run_baseline(kafka: KafkaSettings, ingest: IngestSettings, data: list) -> float:
    """Return CPU µs per record for a bare producer."""
    producer = Producer(
        kafka.client_config(
            linger_ms=ingest.linger_ms,
            compression_type="none",
            queue_buffering_max_messages=ingest.queue_max_messages,
        )
    )
    producer.produce(kafka.heartbeat_topic, b"warm-up", "warm-up")
    producer.flush(FLUSH_TIMEOUT_S)
    topic = kafka.heartbeat_topic
    started = cpu_seconds()
    for index, (device_id, _, value) in enumerate(data):
        producer.produce(topic, value, device_id)
        if index % POLL_EVERY == 0:
            producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    used = cpu_seconds() - started
    if left:
        raise RuntimeError(f"{left} baseline records were not delivered")
    return used / len(data) * 1e6


def run_ingest(kafka: KafkaSettings, ingest: IngestSettings, data: list) -> float:
    """Return CPU µs per record for ingest's Publisher."""
    publisher = Publisher(ingest, kafka, IngestMetrics(CollectorRegistry()))
    publisher.start()
    publisher.publish("warm-up", {"device_id": "warm-up"}, None)
    while publisher.queue_length():
        publisher.poll()
        time.sleep(0.01)
    started = cpu_seconds()
    for index, (device_id, record, _) in enumerate(data):
        publisher.publish(device_id, record, None)
        if index % POLL_EVERY == 0:
            publisher.poll()
    left = publisher.close(FLUSH_TIMEOUT_S)
    used = cpu_seconds() - started
    if left:
        raise RuntimeError(f"{left} ingest records were not delivered")
    return used / len(data) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write results as JSON")
    args = parser.parse_args()

    kafka = replace(
        KafkaSettings(),
        bootstrap_servers=args.bootstrap,
        heartbeat_topic=f"producer-cost-{uuid.uuid4().hex[:8]}",
    )
    ensure_topics(kafka)
    ingest = IngestSettings()
    data = records(args.records)

    rounds = []
    for number in range(1, args.rounds + 1):
        baseline_us = run_baseline(kafka, ingest, data)
        ingest_us = run_ingest(kafka, ingest, data)
        rounds.append({"baseline_us": baseline_us, "ingest_us": ingest_us})
        print(
            f"round {number}: baseline {baseline_us:.2f} µs/record, ingest "
            f"{ingest_us:.2f} µs/record, ratio {ingest_us / baseline_us:.2f}"
        )

    baseline = statistics.median(r["baseline_us"] for r in rounds)
    ingest_median = statistics.median(r["ingest_us"] for r in rounds)
    ratio = statistics.median(r["ingest_us"] / r["baseline_us"] for r in rounds)
    print(
        f"median: baseline {baseline:.2f} µs CPU/record (1.00), ingest's "
        f"Publisher {ingest_median:.2f} µs CPU/record ({ratio:.2f}); at "
        f"400,000 heartbeats per CPU-second a heartbeat may cost 2.50 µs in all"
    )
    if args.json:
        result = {
            "records": args.records,
            "rounds": rounds,
            "baseline_us": baseline,
            "ingest_us": ingest_median,
            "ratio": ratio,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
