"""The `hbmon alerter` role: mail a notification for every alert event."""

import argparse
import logging
import signal
from types import FrameType

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, start_http_server

from alerter.settings import AlerterSettings
from alerter.worker import AlertWorker, build_worker
from hbmon.kafka import KafkaSettings
from hbmon.logs import configure_logging

logger = logging.getLogger(__name__)

HELP = "Consume alert events and send a notification mail for each over SMTP."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll-timeout",
        type=float,
        default=1.0,
        help="seconds that one poll of the alert topic waits for a record; "
        "an idle alerter reacts to SIGTERM within this time",
    )


def run(args: argparse.Namespace) -> int:
    """Run the alerter until SIGTERM or SIGINT; return the exit status.

    Raises:
        SettingError: an environment variable is invalid.
    """
    configure_logging()
    kafka = KafkaSettings.from_env()
    settings = AlerterSettings.from_env()
    if settings.smtp_user and settings.smtp_security == "none":
        logger.warning(
            "HBMON_SMTP_USER is set but HBMON_SMTP_SECURITY=none, so the SMTP "
            "password crosses the network unencrypted; set starttls or tls. "
            "Continuing"
        )

    registry = CollectorRegistry()
    metrics_server = None
    if settings.metrics_port:
        try:
            metrics_server, _ = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=registry
            )
        except OSError as err:
            logger.error(
                "Cannot serve metrics on %s:%d: %s. Exiting",
                settings.metrics_host,
                settings.metrics_port,
                err,
            )
            return 1
        logger.info(
            "Serving metrics on http://%s:%d/metrics",
            settings.metrics_host,
            settings.metrics_port,
        )

    try:
        worker = build_worker(kafka, settings, registry)
        _stop_on_signals(worker)
        worker.run(args.poll_timeout)
    except KafkaException as err:
        logger.error("Kafka consumer failed: %s. Exiting", err)
        return 1
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
    return 0


def _stop_on_signals(worker: AlertWorker) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
