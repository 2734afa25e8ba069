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


def test_exactly_once_is_the_default():
    settings = MonitorSettings.from_env()

    assert settings.exactly_once is True
    assert settings.commit_interval_ms == 1000


def test_exactly_once_reads_strict_boolean(monkeypatch):
    monkeypatch.setenv("HBMON_MONITOR_EXACTLY_ONCE", "maybe")

    with pytest.raises(SettingError, match="HBMON_MONITOR_EXACTLY_ONCE"):
        MonitorSettings.from_env()


@pytest.mark.parametrize("share", ["0", "1", "1.5"])
def test_outage_share_outside_zero_one_is_rejected(monkeypatch, share):
    monkeypatch.setenv("HBMON_MONITOR_OUTAGE_SHARE", share)

    with pytest.raises(SettingError, match="HBMON_MONITOR_OUTAGE_SHARE"):
        MonitorSettings.from_env()


def test_commit_interval_above_half_transaction_timeout_is_rejected(monkeypatch):
    monkeypatch.setenv("HBMON_MONITOR_COMMIT_INTERVAL_MS", "6000")
    monkeypatch.setenv("HBMON_MONITOR_TRANSACTION_TIMEOUT_MS", "10000")

    with pytest.raises(SettingError, match="HBMON_MONITOR_COMMIT_INTERVAL_MS"):
        MonitorSettings.from_env()


def test_transactional_id_is_fresh_per_process_unless_set():
    fresh = MonitorSettings()
    fixed = MonitorSettings(transactional_id="monitor-a")

    assert fresh.transactional_id_or_fresh() != fresh.transactional_id_or_fresh()
    assert fresh.transactional_id_or_fresh().startswith("hbmon-monitor-")
    assert fixed.transactional_id_or_fresh() == "monitor-a"


def test_clock_restore_never_moves_backwards():
    clock = PartitionClock(0, grace_ms=0)
    clock.observe(5000)

    clock.restore(now_ms=4000, last_record_ms=3000)

    assert clock.now_ms == 5000
    assert clock.last_record_ms == 5000


def test_huge_declared_timeout_is_clamped_to_maximum():
    settings = MonitorSettings(max_timeout_s=86400)

    assert settings.declared_timeout_ms(timeout_s=1e308, interval_s=None) == 86400000


def test_tiny_declared_interval_is_clamped_to_minimum():
    settings = MonitorSettings(min_timeout_s=1, missed_intervals=3)

    assert settings.declared_timeout_ms(timeout_s=None, interval_s=0.001) == 1000


def test_contact_timeout_below_minimum_is_rejected(monkeypatch):
    monkeypatch.setenv("HBMON_MONITOR_CONTACT_TIMEOUT_MS", "1500")

    with pytest.raises(SettingError, match="HBMON_MONITOR_CONTACT_TIMEOUT_MS"):
        MonitorSettings.from_env()
