"""AlerterSettings: environment variables, defaults and the rules they must follow."""

import os

import pytest

from alerter.settings import AlerterSettings
from hbmon.env import SettingError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("HBMON_SMTP_", "HBMON_ALERTER_")):
            monkeypatch.delenv(name)


def test_from_env_defaults_run_locally() -> None:
    settings = AlerterSettings.from_env()

    assert settings.smtp_host == "127.0.0.1"
    assert settings.smtp_port == 8025
    assert settings.smtp_security == "none"
    assert settings.smtp_user == ""
    assert settings.group_id == "hbmon-alerter"
    assert settings.recipients == ("oncall@localhost",)
    assert settings.metrics_host == "127.0.0.1"
    assert settings.metrics_port == 9102


def test_from_env_reads_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBMON_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("HBMON_SMTP_PORT", "587")
    monkeypatch.setenv("HBMON_SMTP_SECURITY", "STARTTLS")
    monkeypatch.setenv("HBMON_SMTP_USER", "alerts")
    monkeypatch.setenv("HBMON_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("HBMON_SMTP_CA_FILE", __file__)
    monkeypatch.setenv("HBMON_SMTP_TIMEOUT_S", "2.5")
    monkeypatch.setenv("HBMON_SMTP_DATA_TIMEOUT_S", "120")
    monkeypatch.setenv("HBMON_ALERTER_SENDER", "hbmon@example.com")
    monkeypatch.setenv("HBMON_ALERTER_RECIPIENTS", "a@example.com, b@example.com")
    monkeypatch.setenv("HBMON_ALERTER_GROUP_ID", "alerter-eu")
    monkeypatch.setenv("HBMON_ALERTER_BACKOFF_INITIAL_S", "0.2")
    monkeypatch.setenv("HBMON_ALERTER_BACKOFF_MAX_S", "3")
    monkeypatch.setenv("HBMON_ALERTER_DEDUP_SIZE", "500")
    monkeypatch.setenv("HBMON_ALERTER_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("HBMON_ALERTER_METRICS_PORT", "0")

    settings = AlerterSettings.from_env()

    assert settings.smtp_host == "smtp.example.com"
    assert settings.smtp_port == 587
    assert settings.smtp_security == "starttls"
    assert settings.smtp_user == "alerts"
    assert settings.smtp_password == "s3cret"
    assert settings.smtp_ca_file == __file__
    assert settings.smtp_timeout_s == 2.5
    assert settings.smtp_data_timeout_s == 120.0
    assert settings.sender == "hbmon@example.com"
    assert settings.recipients == ("a@example.com", "b@example.com")
    assert settings.group_id == "alerter-eu"
    assert settings.backoff_initial_s == 0.2
    assert settings.backoff_max_s == 3.0
    assert settings.dedup_size == 500
    assert settings.metrics_host == "0.0.0.0"
    assert settings.metrics_port == 0


def test_repr_hides_password() -> None:
    settings = AlerterSettings(smtp_user="alerts", smtp_password="s3cret")

    assert "s3cret" not in repr(settings)
    assert "alerts" in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected_in_message"),
    [
        ("HBMON_SMTP_SECURITY", "ssl", "HBMON_SMTP_SECURITY='ssl' is invalid"),
        ("HBMON_SMTP_PORT", "smtp", "HBMON_SMTP_PORT='smtp' is not an integer"),
        ("HBMON_SMTP_TIMEOUT_S", "0", "HBMON_SMTP_TIMEOUT_S=0.0 is below"),
        ("HBMON_ALERTER_DIGEST_THRESHOLD", "0", "DIGEST_THRESHOLD=0 is below"),
        (
            "HBMON_ALERTER_GROUP_WAIT_S",
            "-1",
            "HBMON_ALERTER_GROUP_WAIT_S=-1.0 is below",
        ),
        ("HBMON_ALERTER_ROUTES_FILE", "/no/routes.toml", "'/no/routes.toml' is not"),
        ("HBMON_ALERTER_SENT_TOPIC", "device-alerts-state", "four different topics"),
        ("HBMON_ALERTER_SENDER", "alerter", "HBMON_ALERTER_SENDER: 'alerter'"),
        ("HBMON_ALERTER_RECIPIENTS", "a@x, b", "HBMON_ALERTER_RECIPIENTS: 'b'"),
        ("HBMON_ALERTER_RECIPIENTS", " , ", "HBMON_ALERTER_RECIPIENTS is empty"),
        ("HBMON_ALERTER_BACKOFF_MAX_S", "0.1", "HBMON_ALERTER_BACKOFF_MAX_S=0.1"),
        ("HBMON_SMTP_USER", "alerts", "only one of them is set"),
        ("HBMON_SMTP_CA_FILE", "/no/such/ca.pem", "'/no/such/ca.pem' is not found"),
    ],
)
def test_from_env_rejects_invalid_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected_in_message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingError) as caught:
        AlerterSettings.from_env()

    assert expected_in_message in str(caught.value)


def test_from_env_rejects_address_with_control_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HBMON_ALERTER_SENDER", "a@b\x07c")

    with pytest.raises(SettingError, match="control characters"):
        AlerterSettings.from_env()


def test_from_env_reads_grouping_and_api_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HBMON_ALERTER_GROUP_WAIT_S", "2")
    monkeypatch.setenv("HBMON_ALERTER_GROUP_INTERVAL_S", "30")
    monkeypatch.setenv("HBMON_ALERTER_REPEAT_INTERVAL_S", "3600")
    monkeypatch.setenv("HBMON_ALERTER_DIGEST_THRESHOLD", "5")
    monkeypatch.setenv("HBMON_ALERTER_FLAP_MAX_FLIPS", "6")
    monkeypatch.setenv("HBMON_ALERTER_API_PORT", "0")
    monkeypatch.setenv("HBMON_ALERTER_API_TOKEN", "t0ken")
    monkeypatch.setenv("HBMON_ALERTER_DEAD_LETTER_TOPIC", "dlq")

    settings = AlerterSettings.from_env()

    assert settings.group_wait_s == 2.0
    assert settings.group_interval_s == 30.0
    assert settings.repeat_interval_s == 3600.0
    assert settings.digest_threshold == 5
    assert settings.flap_max_flips == 6
    assert settings.api_port == 0
    assert settings.api_token == "t0ken"
    assert settings.dead_letter_topic == "dlq"
    assert "t0ken" not in repr(settings)


def test_from_env_names_topics_after_alert_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HBMON_ALERT_TOPIC", "alerts-eu")

    settings = AlerterSettings.from_env()

    assert settings.dead_letter_topic == "alerts-eu-dead-letter"
    assert settings.sent_topic == "alerts-eu-sent"
    assert settings.state_topic == "alerts-eu-state"
    assert settings.silence_topic == "alerts-eu-silences"


def test_from_env_default_topics_and_api_are_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HBMON_ALERT_TOPIC", raising=False)

    settings = AlerterSettings.from_env()

    assert settings.dead_letter_topic == "device-alerts-dead-letter"
    assert settings.sent_topic == "device-alerts-sent"
    assert settings.state_topic == "device-alerts-state"
    assert settings.silence_topic == "device-alerts-silences"
    assert settings.api_host == "127.0.0.1"
    assert settings.api_is_local


@pytest.mark.parametrize(
    ("host", "is_local"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False)],
)
def test_api_is_local_only_for_loopback(host: str, is_local: bool) -> None:
    assert AlerterSettings(api_host=host).api_is_local is is_local
