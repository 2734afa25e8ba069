"""The `hbmon` command: one subcommand per role.

Each role module provides HELP, add_arguments(parser) and run(args) -> int.
Settings that operators change per deployment come from environment
variables (see the README); flags cover what one changes per run.
"""

import argparse
import importlib
import os
import sys

from confluent_kafka import KafkaException

from hbmon.env import SettingError

ROLES = {
    "ingest": "ingest.cli",
    "monitor": "monitor.cli",
    "alerter": "alerter.cli",
    "stack": "hbmon.stack",
    "simulate": "hbmon.simulator",
    "topics": "hbmon.topics",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults in help, except for flags and options without a default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbmon",
        description="Heartbeat monitoring and alerting for IoT fleets on Kafka.",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    for name, module_name in ROLES.items():
        module = importlib.import_module(module_name)
        sub = roles.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=_HelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SettingError as err:
        print(f"hbmon {args.role}: invalid setting: {err}", file=sys.stderr)
        return 2
    except KafkaException as err:
        bootstrap = os.environ.get("HBMON_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        print(
            f"hbmon {args.role}: Kafka at {bootstrap} failed: {err.args[0]}. "
            "Check HBMON_KAFKA_BOOTSTRAP and that the broker runs. Exiting.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
