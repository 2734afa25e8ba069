"""The `hbmon monitor` role."""

import argparse
import signal
import threading
from dataclasses import replace
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from hbmon.kafka import KafkaSettings
from hbmon.logs import configure_logging
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker

HELP = "Watch heartbeat deadlines for the partitions this member is assigned."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the Prometheus endpoint; 0 disables it "
        "(default: HBMON_MONITOR_METRICS_PORT or 9101)",
    )


def run(args: argparse.Namespace) -> int:
    configure_logging()
    settings = MonitorSettings.from_env()
    if args.metrics_port is not None:
        settings = replace(settings, metrics_port=args.metrics_port)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry
        )
    worker = MonitorWorker(KafkaSettings.from_env(), settings, MonitorMetrics(registry))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker.start()
    try:
        worker.run(stop)
    finally:
        worker.close()
    return 0
