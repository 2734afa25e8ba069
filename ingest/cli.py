"""The `hbmon ingest` role: serve the ingest API with uvicorn on uvloop."""

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile

import uvicorn

from hbmon.env import SettingError
from hbmon.kafka import KafkaSettings
from hbmon.logs import configure_logging
from ingest.http import HalfCloseHttpProtocol
from ingest.settings import IngestSettings

HELP = "Receive device heartbeats over HTTP and publish them to Kafka."

logger = logging.getLogger(__name__)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps unset flags out of args, so the environment decides.
    parser.add_argument(
        "--host",
        default=argparse.SUPPRESS,
        help="address to listen on (default: HBMON_INGEST_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=argparse.SUPPRESS,
        help="TCP port to listen on (default: HBMON_INGEST_PORT, else 8080)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        help="number of worker processes, each with its own producer; use the "
        "number of cores to use them all (default: HBMON_INGEST_WORKERS, else 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT, then return the exit status.

    Raises:
        SettingError: an environment variable or flag value is invalid.
    """
    configure_logging()
    settings = resolve_settings(args)
    kafka = KafkaSettings.from_env()  # fail here, before any worker starts
    logger.info(
        "Starting ingest on %s:%s with %d worker(s), Kafka at %s",
        settings.host,
        settings.port,
        settings.workers,
        kafka.bootstrap_servers,
    )
    metrics_dir = _prepare_multiprocess_metrics(settings.workers)
    try:
        uvicorn.run(
            "ingest.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http=HalfCloseHttpProtocol,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            # Ingest never reads the client address, so it skips uvicorn's
            # X-Forwarded-For middleware: 1.7% of ingest's py-spy samples
            # under single-heartbeat load.
            proxy_headers=False,
            timeout_graceful_shutdown=settings.drain_timeout_s,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    logger.info("Ingest stopped")
    return 0


def resolve_settings(args: argparse.Namespace) -> IngestSettings:
    """Read the settings from the environment, with flags taking precedence.

    Raises:
        SettingError: an environment variable or a flag value is invalid.
    """
    settings = IngestSettings.from_env()
    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "workers")
        if hasattr(args, name)
    }
    if overrides.get("workers", 1) < 1:
        raise SettingError(f"--workers={overrides['workers']} must be at least 1")
    if not 0 <= overrides.get("port", 0) <= 65535:
        raise SettingError(f"--port={overrides['port']} must be from 0 to 65535")
    return dataclasses.replace(settings, **overrides)


def _prepare_multiprocess_metrics(workers: int) -> str | None:
    """Give several workers a shared folder for Prometheus metrics files.

    Returns the folder to remove at exit, or None when there is one worker
    or the operator chose a folder through PROMETHEUS_MULTIPROC_DIR.
    """
    if workers < 2 or os.environ.get(_MULTIPROC_ENV):
        return None
    folder = tempfile.mkdtemp(prefix="hbmon-ingest-metrics-")
    # Workers are spawned processes, so they read this before prometheus_client
    # loads and store their metric values in files under it.
    os.environ[_MULTIPROC_ENV] = folder
    return folder
