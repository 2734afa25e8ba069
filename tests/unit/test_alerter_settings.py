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
    monkeypatch.setenv("HBMON_ALERTER_SENDER", "hbmon@example.com")
    monkeypatch.setenv("HBMON_ALERTER_RECIPIENTS", "a@example.com, b@example.com")
    monkeypatch.setenv("HBMON_ALERTER_GROUP_ID", "alerter-eu")
    monkeypatch.setenv("HBMON_ALERTER_MAX_ATTEMPTS", "4")
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
    assert settings.sender == "hbmon@example.com"
    assert settings.recipients == ("a@example.com", "b@example.com")
    assert settings.group_id == "alerter-eu"
    assert settings.max_attempts == 4
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
        ("HBMON_ALERTER_MAX_ATTEMPTS", "0", "HBMON_ALERTER_MAX_ATTEMPTS=0 is below"),
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


def test_delivery_budget_grows_with_attempts_and_timeout() -> None:
    small = AlerterSettings(max_attempts=1, smtp_timeout_s=1.0)
    large = AlerterSettings(max_attempts=3, smtp_timeout_s=10.0)

    assert small.delivery_budget_s < large.delivery_budget_s
    assert large.delivery_budget_s >= 3 * 10.0 * 10
