"""Settings read from environment variables fail loudly with the variable's name."""

import pytest

from hbmon.env import SettingError, env_bool, env_float, env_int, env_list, env_port


def test_env_int_uses_default_when_unset(monkeypatch):
    monkeypatch.delenv("HBMON_X", raising=False)

    assert env_int("HBMON_X", 7) == 7


def test_env_int_rejects_text_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HBMON_X", "seven")

    with pytest.raises(SettingError, match="HBMON_X"):
        env_int("HBMON_X", 7)


def test_env_int_rejects_value_below_minimum(monkeypatch):
    monkeypatch.setenv("HBMON_X", "0")

    with pytest.raises(SettingError, match="minimum 1"):
        env_int("HBMON_X", 7, minimum=1)


def test_env_float_reads_number(monkeypatch):
    monkeypatch.setenv("HBMON_X", "2.5")

    assert env_float("HBMON_X", 1.0) == 2.5


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("OFF", False)])
def test_env_bool_reads_words(monkeypatch, raw, value):
    monkeypatch.setenv("HBMON_X", raw)

    assert env_bool("HBMON_X", not value) is value


def test_env_bool_rejects_other_words(monkeypatch):
    monkeypatch.setenv("HBMON_X", "maybe")

    with pytest.raises(SettingError, match="HBMON_X"):
        env_bool("HBMON_X", False)


def test_env_list_drops_blank_items(monkeypatch):
    monkeypatch.setenv("HBMON_X", "a@x.org, ,b@x.org")

    assert env_list("HBMON_X", []) == ["a@x.org", "b@x.org"]


@pytest.mark.parametrize("raw", ["inf", "nan", "-inf"])
def test_env_float_rejects_non_finite(monkeypatch, raw):
    monkeypatch.setenv("HBMON_X", raw)

    with pytest.raises(SettingError, match="not a finite number"):
        env_float("HBMON_X", 1.0)


def test_env_port_rejects_port_above_65535(monkeypatch):
    monkeypatch.setenv("HBMON_X_PORT", "70000")

    with pytest.raises(SettingError, match="maximum 65535"):
        env_port("HBMON_X_PORT", 9101)


def test_env_port_allows_zero_to_turn_off(monkeypatch):
    monkeypatch.setenv("HBMON_X_PORT", "0")

    assert env_port("HBMON_X_PORT", 9101) == 0
