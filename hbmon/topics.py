"""The `hbmon topics` role: create the project's topics on the broker."""

import argparse
import logging

from hbmon.kafka import KafkaSettings, ensure_topics
from hbmon.logs import configure_logging

HELP = "Create the heartbeat, alert and monitor state topics unless they exist."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the broker",
    )


def run(args: argparse.Namespace) -> int:
    configure_logging()
    settings = KafkaSettings.from_env()
    created = ensure_topics(settings, timeout_s=args.timeout)
    logging.getLogger(__name__).info(
        "Topics ready on %s (created: %s)",
        settings.bootstrap_servers,
        ", ".join(created) or "none",
    )
    return 0
