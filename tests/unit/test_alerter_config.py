"""The routes file: the shipped example, and errors that name the line and rule."""

from pathlib import Path

import pytest

from alerter.config import ConfigError, load_config, parse_config
from alerter.settings import AlerterSettings
from hbmon.events import DEVICE_DOWN, AlertEvent

EXAMPLE = Path(__file__).resolve().parents[2] / "alerter" / "example-routes.toml"
ENVIRON = {
    "HBMON_PAGERDUTY_ROUTING_KEY": "pd-key",
    "HBMON_SLACK_PLANT3_URL": "http://127.0.0.1:9/slack",
    "HBMON_PUMPS_WEBHOOK_SECRET": "s3cret",
}
SETTINGS = AlerterSettings()
MINIMAL = """
[receivers.oncall]
email = ["oncall@example.com"]
[default_route]
receivers = ["oncall"]
"""


def event(device_id: str, **attrs: str) -> AlertEvent:
    return AlertEvent(
        event_id=f"id-{device_id}",
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=0,
        deadline_ms=0,
        timeout_ms=0,
        detected_ms=0,
        partition=0,
        message="m",
        attrs=attrs or None,
    )


def error_of(text: str, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SETTINGS, environ, source="routes.toml")
    return caught.value


def test_example_file_loads() -> None:
    config = load_config(str(EXAMPLE), SETTINGS, ENVIRON)

    router = config.router
    assert [route.name for route in router.routes] == [
        "plant-3",
        "pumps",
        "critical-sensors",
    ]
    assert sorted(router.receivers) == ["oncall", "plant-3", "pumps"]
    assert config.flapping.max_flips == 4
    assert len(config.silences) == 1
    assert config.silences[0].source == "config"


def test_example_routes_events_as_documented() -> None:
    router = load_config(str(EXAMPLE), SETTINGS, ENVIRON).router

    def names(e: AlertEvent) -> list[str]:
        return [route.name for route in router.routes_for(e)]

    assert names(event("x-1", site="plant-3")) == ["plant-3"]
    assert names(event("pump-7")) == ["pumps"]
    assert names(event("pump-safety-1", tier="gold")) == ["pumps", "critical-sensors"]
    assert names(event("sensor-crit-1", tier="gold")) == ["critical-sensors"]
    assert names(event("sensor-crit-1", tier="bronze")) == ["default"]
    assert names(event("")) == ["default"]


def test_example_secrets_come_from_environment() -> None:
    router = load_config(str(EXAMPLE), SETTINGS, ENVIRON).router

    channels = {c.kind: c for r in router.receivers.values() for c in r.channels}
    assert channels["pagerduty"].routing_key == "pd-key"
    assert channels["slack"].url == "http://127.0.0.1:9/slack"
    assert channels["webhook"].secret == "s3cret"
    assert "s3cret" not in repr(channels["webhook"])


def test_route_inherits_defaults_and_overrides() -> None:
    router = load_config(str(EXAMPLE), SETTINGS, ENVIRON).router

    plant, pumps = router.routes[0], router.routes[1]
    assert plant.timing.group_wait_s == 10
    assert plant.timing.group_interval_s == 300
    assert pumps.timing.group_by == ("device_id",)
    assert pumps.timing.repeat_interval_s == 3600


def test_missing_default_route_is_an_error() -> None:
    err = error_of('[receivers.oncall]\nemail = ["a@b.c"]\n')

    assert err.key == "default_route"
    assert "add a [default_route] table" in str(err)


def test_unknown_receiver_names_line_and_rule() -> None:
    text = MINIMAL + '[[routes]]\nname = "r"\nreceivers = ["nobody"]\n'

    err = error_of(text)

    assert str(err).startswith(
        "routes.toml:8: routes[0].receivers: unknown receiver 'nobody'"
    )


def test_unknown_key_names_line_and_allowed_keys() -> None:
    err = error_of(MINIMAL + "[defaults]\ngroup_wiat_s = 3\n")

    assert err.line == 7
    assert err.key == "defaults.group_wiat_s"
    assert "allowed here: group_wait_s" in err.rule


def test_missing_secret_environment_variable_is_an_error() -> None:
    hook = '{ url = "http://127.0.0.1:9", secret_env = "NOPE" }'
    text = MINIMAL + f"[receivers.hook]\nwebhook = {hook}\n"

    err = error_of(text)

    assert err.line == 7
    assert "environment variable NOPE is not set" in err.rule


SILENCE = '[[silences]]\ncomment = "c"\ncreated_by = "me"\n'
JAN_1 = "2025-01-01T00:00:00Z"
JAN_2 = "2025-01-02T00:00:00Z"
ROUTE = '[[routes]]\nname = "r"\nreceivers = ["oncall"]\n'


@pytest.mark.parametrize(
    ("snippet", "key", "rule"),
    [
        ('[defaults]\ngroup_wait_s = "5"', "defaults.group_wait_s", "a number"),
        ("[defaults]\ngroup_interval_s = 0", "defaults.group_interval_s", "above 0"),
        ("[defaults]\ndigest_threshold = 2.5", "defaults.digest_threshold", "integer"),
        ('[receivers.x]\nemail = ["nobody"]', "receivers.x.email", "not an email"),
        ("[receivers.x]\nemail = []", "receivers.x.email", "non-empty list"),
        (
            '[receivers.x]\nwebhook = { url = "ftp://h" }',
            "receivers.x.webhook.url",
            "http",
        ),
        (
            '[receivers.x]\nwebhook = { url = "http://127.0.0.1:notaport/h" }',
            "receivers.x.webhook.url",
            "port from 0 to 65535",
        ),
        ("[receivers.x]", "receivers.x", "has no channel"),
        (ROUTE.replace('"r"', '"a b"'), "routes[0].name", "invalid"),
        (ROUTE + "device_glob = 3", "routes[0].device_glob", "string"),
        (
            SILENCE + f"starts_at = {JAN_1}\nends_at = {JAN_2}",
            "silences[0]",
            "has no matcher",
        ),
        (
            SILENCE + f'starts_at = {JAN_2}\nends_at = {JAN_1}\ndevice_prefix = "x"',
            "silences[0].ends_at",
            "later than starts_at",
        ),
        (
            SILENCE
            + f'starts_at = {JAN_1[:-1]}\nends_at = {JAN_2}\ndevice_prefix = "x"',
            "silences[0].starts_at",
            "with an offset",
        ),
    ],
)
def test_invalid_values_name_key_and_rule(snippet: str, key: str, rule: str) -> None:
    err = error_of(MINIMAL + snippet + "\n")

    assert err.key == key
    assert rule in err.rule
    assert err.line is not None and err.line >= 6


def test_duplicate_route_name_is_an_error() -> None:
    route = '[[routes]]\nname = "r"\nreceivers = ["oncall"]\n'

    err = error_of(MINIMAL + route + route)

    assert err.key == "routes[1].name"
    assert err.line == 10


def test_invalid_toml_reports_position() -> None:
    err = error_of("[receivers\n")

    assert err.key == "syntax"
    assert "line 1" in err.rule


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(str(tmp_path / "missing.toml"), SETTINGS, {})
