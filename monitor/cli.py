"""The `hbmon monitor` role."""

import argparse
import logging
import signal
import threading
from dataclasses import replace
from types import FrameType

from prometheus_client import CollectorRegistry

from hbmon.kafka import KafkaSettings
from hbmon.logs import configure_logging
from hbmon.metrics_server import start_metrics_server
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker

logger = logging.getLogger(__name__)

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
    port_variable = (
        "--metrics-port"
        if args.metrics_port is not None
        else "HBMON_MONITOR_METRICS_PORT"
    )
    start_metrics_server(
        settings.metrics_host, settings.metrics_port, registry, port_variable
    )
    worker = MonitorWorker(KafkaSettings.from_env(), settings, MonitorMetrics(registry))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        worker.start()
        worker.run(stop)
    except MonitorError as err:
        # Work since the last commit is dropped. The orchestrator restarts
        # the process, which restores its partitions from that commit.
        logger.error("Monitor failed: %s. Exiting with status 1.", err)
        worker.close(commit=False)
        return 1
    worker.close()
    return 0
