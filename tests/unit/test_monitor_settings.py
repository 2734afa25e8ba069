"""Monitor settings and the partition clock."""

import pytest

from hbmon.env import SettingError
from monitor.clock import PartitionClock
from monitor.settings import MonitorSettings


def test_declared_timeout_wins_over_interval():
    settings = MonitorSettings(missed_intervals=3)

    assert settings.declared_timeout_ms(timeout_s=5, interval_s=1) == 5000


def test_declared_interval_allows_missed_intervals():
    settings = MonitorSettings(missed_intervals=3)

    assert settings.declared_timeout_ms(timeout_s=None, interval_s=2) == 6000


def test_nothing_declared_means_default():
    assert MonitorSettings().declared_timeout_ms(None, None) is None


def test_default_timeout_outside_bounds_is_rejected(monkeypatch):
    monkeypatch.setenv("HBMON_MONITOR_DEFAULT_TIMEOUT_S", "0.5")
    monkeypatch.setenv("HBMON_MONITOR_MIN_TIMEOUT_S", "1")

    with pytest.raises(SettingError, match="HBMON_MONITOR_DEFAULT_TIMEOUT_S"):
        MonitorSettings.from_env()


def test_clock_never_moves_backwards():
    clock = PartitionClock(0, grace_ms=1000)
    clock.observe(5000)

    clock.observe(4000)
    clock.follow_wall_clock(5500)

    assert clock.now_ms == 5000


def test_clock_follows_wall_clock_minus_grace():
    clock = PartitionClock(0, grace_ms=1000)
    clock.observe(5000)

    clock.follow_wall_clock(9000)

    assert clock.now_ms == 8000
