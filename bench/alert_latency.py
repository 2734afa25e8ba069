"""Measure alert latency: from a DEVICE_DOWN event to the mail the SMTP server accepted.

Usage: python bench/alert_latency.py [--bootstrap HOST:PORT] [--events 1000]
       [--sites 10] [--group-wait 1.0] [--json PATH]

Needs a running broker (deploy/kafka.sh start). The script creates topics
of its own, starts a real aiosmtpd mailbox on 127.0.0.1 and the alerter
worker in this process, then publishes `--events` DEVICE_DOWN events at
once, spread over `--sites` sites, so all of them are in flight together.
The route groups by site, so each site's devices become one digest mail.

An event's latency runs from the moment just before it was handed to the
producer to the time the mailbox stored the mail that lists it (the
mailbox's file name carries that time). Both clocks are this machine's.
The figures are p50, p99 and max over all events, each also printed as a
ratio to the group wait, the baseline that grouping adds by design.
"""

import argparse
import csv
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer
from ingest_services import HelpFormatter
from prometheus_client import CollectorRegistry

from alerter.config import parse_config
from alerter.settings import AlerterSettings
from alerter.worker import AlertWorker, build_worker
from hbmon.events import DEVICE_DOWN, AlertEvent, event_id_for
from hbmon.kafka import KafkaSettings, ensure_topics
from hbmon.mailbox import LocalMailbox

ROUTES = """
[defaults]
group_wait_s = {group_wait}
group_interval_s = {group_wait}
digest_threshold = 20
group_by = ["site"]
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("HBMON_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="broker address, from HBMON_KAFKA_BOOTSTRAP when it is set",
    )
    parser.add_argument("--events", type=int, default=1000, help="DOWN events sent")
    parser.add_argument("--sites", type=int, default=10, help="groups (one per site)")
    parser.add_argument(
        "--group-wait", type=float, default=1.0, help="group wait in seconds"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="alert-latency-"))
    try:
        result = run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(result, args)
    return 0 if result["delivered"] == args.events else 1


def run(args: argparse.Namespace, folder: Path) -> dict:
    suffix = uuid.uuid4().hex[:8]
    kafka = replace(
        KafkaSettings(),
        bootstrap_servers=args.bootstrap,
        heartbeat_topic=f"bench-iot-data-{suffix}",
        alert_topic=f"bench-device-alerts-{suffix}",
        heartbeat_partitions=1,
        alert_partitions=3,
    )
    ensure_topics(kafka)

    with LocalMailbox(folder / "mail", port=0) as mailbox:
        settings = AlerterSettings(
            smtp_port=mailbox.port,
            group_id=f"bench-alerter-{suffix}",
            metrics_port=0,
            api_port=0,
            dead_letter_topic=f"bench-dead-letter-{suffix}",
            sent_topic=f"bench-sent-{suffix}",
            state_topic=f"bench-state-{suffix}",
            silence_topic=f"bench-silences-{suffix}",
        )
        config = parse_config(ROUTES.format(group_wait=args.group_wait), settings, {})
        worker = build_worker(kafka, settings, CollectorRegistry(), config)
        thread = threading.Thread(target=worker.run, args=(0.2,), daemon=True)
        thread.start()
        try:
            wait_for_assignment(worker, args.timeout)
            sent_at = publish(kafka, args.events, args.sites)
            accepted_at = collect(mailbox, set(sent_at), args.timeout)
        finally:
            worker.stop()
            thread.join(args.timeout)
        mails = len(mailbox.paths())

    latencies = sorted(accepted_at[device] - sent_at[device] for device in accepted_at)
    return {
        "events": args.events,
        "delivered": len(latencies),
        "mails": mails,
        "latencies_s": latencies,
    }


def wait_for_assignment(worker: AlertWorker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not worker.assigned_partitions:
        if time.monotonic() > deadline:
            raise SystemExit("the alerter got no partition of the alert topic")
        time.sleep(0.05)


def publish(kafka: KafkaSettings, count: int, sites: int) -> dict[str, float]:
    producer = Producer(kafka.client_config(linger_ms=5))
    sent_at = {}
    last_seen_ms = int(time.time() * 1000) - 61_000
    for n in range(count):
        device = f"dev-{n:05d}"
        event = AlertEvent(
            event_id=event_id_for(DEVICE_DOWN, device, last_seen_ms),
            type=DEVICE_DOWN,
            device_id=device,
            severity="critical",
            last_seen_ms=last_seen_ms,
            deadline_ms=last_seen_ms + 60_000,
            timeout_ms=60_000,
            detected_ms=last_seen_ms + 61_000,
            partition=0,
            message=f"{device} sent no heartbeat within its 60 s timeout",
            attrs={"site": f"site-{n % sites}"},
        )
        sent_at[device] = time.time()
        producer.produce(kafka.alert_topic, key=device, value=event.encode())
        producer.poll(0)
    producer.flush(30)
    return sent_at


def collect(mailbox: LocalMailbox, devices: set[str], timeout_s: float) -> dict:
    """Return device -> the time its mail was stored, once every device has one."""
    accepted_at: dict[str, float] = {}
    seen: set[Path] = set()
    deadline = time.monotonic() + timeout_s
    while len(accepted_at) < len(devices) and time.monotonic() < deadline:
        for path in mailbox.paths():
            if path in seen:
                continue
            seen.add(path)
            stored = datetime.strptime(path.name[:23], "%Y%m%dT%H%M%S.%fZ")
            stored_s = stored.replace(tzinfo=UTC).timestamp()
            for device in devices_in(path):
                accepted_at.setdefault(device, stored_s)
        time.sleep(0.05)
    return accepted_at


def devices_in(path: Path) -> list[str]:
    from email.parser import BytesParser
    from email.policy import default

    mail = BytesParser(policy=default).parsebytes(path.read_bytes())
    if mail["X-Hbmon-Device-Id"]:
        return [str(mail["X-Hbmon-Device-Id"])]
    for part in mail.iter_attachments():
        if part.get_filename() == "devices.csv":
            text = part.get_content()
            text = text.decode() if isinstance(text, bytes) else text
            return [row["device_id"] for row in csv.DictReader(io.StringIO(text))]
    body = mail.get_body(("plain",))
    lines = str(body.get_content()).splitlines() if body is not None else []
    return [line[2:].split(":")[0] for line in lines if line.startswith("- ")]


def percentile(values: list[float], fraction: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[
        int(fraction * 1000) - 1
    ]


def report(result: dict, args: argparse.Namespace) -> None:
    latencies = result["latencies_s"]
    wait = args.group_wait
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()},"
        f" Python {platform.python_version()}"
    )
    print(
        f"events: {result['events']} DOWN at once over {args.sites} sites; "
        f"delivered {result['delivered']} in {result['mails']} mails; "
        f"group wait {wait:g} s"
    )
    figures = {}
    if latencies:
        figures = {
            "p50_s": percentile(latencies, 0.50),
            "p99_s": percentile(latencies, 0.99),
            "max_s": latencies[-1],
        }
        for name, value in figures.items():
            print(
                f"  {name[:-2]:>4}: {value:6.3f} s  ({value / wait:5.2f} x group wait,"
                f" {value - wait:+.3f} s over it)"
            )
        target = wait + 2.0
        verdict = "met" if figures["p99_s"] <= target else "MISSED"
        print(f"  target p99 <= group wait + 2 s = {target:g} s: {verdict}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "events": result["events"],
                    "delivered": result["delivered"],
                    "mails": result["mails"],
                    "sites": args.sites,
                    "group_wait_s": wait,
                    "cores": os.cpu_count(),
                    **figures,
                },
                out,
                indent=2,
            )


if __name__ == "__main__":
    raise SystemExit(main())
