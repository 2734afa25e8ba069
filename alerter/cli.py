"""The `hbmon alerter` role: notify people of alert events, grouped and routed."""

import argparse
import logging
import signal
from types import FrameType

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from alerter.api import ApiServer, create_app
from alerter.config import ConfigError
from alerter.settings import AlerterSettings
from alerter.tables import StateError
from alerter.worker import AlertWorker, build_worker, load_routing
from hbmon.kafka import KafkaSettings
from hbmon.logs import configure_logging
from hbmon.metrics_server import start_metrics_server

logger = logging.getLogger(__name__)

HELP = (
    "Consume alert events and notify people by mail, webhook, Slack or PagerDuty, "
    "grouped, routed and silenced as the routes file says."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll-timeout",
        type=float,
        default=1.0,
        help="seconds that one poll of the alert topic waits for a record; "
        "an idle alerter reacts to SIGTERM within this time",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the environment and the routes file, then exit",
    )


def run(args: argparse.Namespace) -> int:
    """Run the alerter until SIGTERM or SIGINT; return the exit status.

    Raises:
        SettingError: an environment variable is invalid.
    """
    configure_logging()
    kafka = KafkaSettings.from_env()
    settings = AlerterSettings.from_env()
    try:
        config = load_routing(settings)
    except ConfigError as err:
        logger.error("Invalid routes file: %s. Exiting", err)
        return 2
    if args.check_config:
        logger.info(
            "Configuration is valid: %d routes plus the default, %d receivers, "
            "%d silences",
            len(config.router.routes),
            len(config.router.receivers),
            len(config.silences),
        )
        return 0
    _warn_about_exposure(settings)

    registry = CollectorRegistry()
    metrics_server = None
    api_server = None
    try:
        metrics_server = start_metrics_server(
            settings.metrics_host,
            settings.metrics_port,
            registry,
            "HBMON_ALERTER_METRICS_PORT",
        )
        worker = build_worker(kafka, settings, registry, config)
        if settings.api_port:
            app = create_app(
                worker.silences,
                worker.stores.silence_writer,
                settings.api_token,
                invalid_silences=worker.metrics.invalid_silences,
            )
            api_server = ApiServer(app, settings.api_host, settings.api_port)
            api_server.start()
        _stop_on_signals(worker)
        worker.run(args.poll_timeout)
    except OSError as err:
        logger.error(
            "Cannot listen for the silences API on %s:%d (HBMON_ALERTER_API_PORT): "
            "%s. Exiting",
            settings.api_host,
            settings.api_port,
            err,
        )
        return 1
    except (KafkaException, StateError) as err:
        logger.error("Kafka failed: %s. Exiting", err)
        return 1
    finally:
        if api_server is not None:
            api_server.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
    return 0


def _warn_about_exposure(settings: AlerterSettings) -> None:
    if settings.smtp_user and settings.smtp_security == "none":
        logger.warning(
            "HBMON_SMTP_USER is set but HBMON_SMTP_SECURITY=none, so the SMTP "
            "password crosses the network unencrypted; set starttls or tls. "
            "Continuing"
        )
    if settings.api_port and not settings.api_is_local and not settings.api_token:
        logger.warning(
            "The silences API listens on %s without HBMON_ALERTER_API_TOKEN, so "
            "anyone who reaches it can silence alerts; set a token. Continuing",
            settings.api_host,
        )


def _stop_on_signals(worker: AlertWorker) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
