"""The `hbmon ingest` flags and how they combine with the environment."""

import argparse

import pytest

from hbmon.env import SettingError
from ingest import cli


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBMON_INGEST_HOST", "10.0.0.1")
    monkeypatch.setenv("HBMON_INGEST_PORT", "9000")
    monkeypatch.setenv("HBMON_INGEST_WORKERS", "2")

    settings = cli.resolve_settings(parse(["--port", "9100", "--workers", "8"]))

    assert settings.host == "10.0.0.1"
    assert settings.port == 9100
    assert settings.workers == 8


def test_cli_without_flags_uses_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBMON_INGEST_PORT", "9000")
    settings = cli.resolve_settings(parse([]))
    assert settings.port == 9000


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--workers", "0"], "--workers"), (["--port", "70000"], "--port")],
)
def test_cli_invalid_flag_names_it(argv: list[str], flag: str) -> None:
    with pytest.raises(SettingError, match=flag):
        cli.resolve_settings(parse(argv))


def test_cli_help_states_units_and_defaults() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    cli.add_arguments(parser)
    text = parser.format_help()
    assert "HBMON_INGEST_PORT" in text
    assert "number of worker processes" in text
    assert "None" not in text
