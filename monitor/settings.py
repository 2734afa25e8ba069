"""Monitor settings from HBMON_MONITOR_* environment variables."""

from dataclasses import dataclass

from hbmon.env import SettingError, env_float, env_int, env_str


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """How the monitor judges deadlines and where it serves metrics."""

    group_id: str = "hbmon-monitor"
    default_timeout_s: float = 30.0
    min_timeout_s: float = 1.0
    max_timeout_s: float = 86400.0
    missed_intervals: float = 3.0
    tick_ms: int = 500
    fetch_grace_ms: int = 1000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101

    @classmethod
    def from_env(cls) -> "MonitorSettings":
        defaults = cls()
        settings = cls(
            group_id=env_str("HBMON_MONITOR_GROUP_ID", defaults.group_id),
            default_timeout_s=env_float(
                "HBMON_MONITOR_DEFAULT_TIMEOUT_S",
                defaults.default_timeout_s,
                minimum=0.1,
            ),
            min_timeout_s=env_float(
                "HBMON_MONITOR_MIN_TIMEOUT_S", defaults.min_timeout_s, minimum=0.1
            ),
            max_timeout_s=env_float(
                "HBMON_MONITOR_MAX_TIMEOUT_S", defaults.max_timeout_s, minimum=0.1
            ),
            missed_intervals=env_float(
                "HBMON_MONITOR_MISSED_INTERVALS", defaults.missed_intervals, minimum=1.0
            ),
            tick_ms=env_int("HBMON_MONITOR_TICK_MS", defaults.tick_ms, minimum=10),
            fetch_grace_ms=env_int(
                "HBMON_MONITOR_FETCH_GRACE_MS", defaults.fetch_grace_ms, minimum=0
            ),
            metrics_host=env_str("HBMON_MONITOR_METRICS_HOST", defaults.metrics_host),
            metrics_port=env_int(
                "HBMON_MONITOR_METRICS_PORT", defaults.metrics_port, minimum=0
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingError unless min <= default <= max timeout."""
        if not self.min_timeout_s <= self.default_timeout_s <= self.max_timeout_s:
            raise SettingError(
                "HBMON_MONITOR_DEFAULT_TIMEOUT_S must lie between "
                f"HBMON_MONITOR_MIN_TIMEOUT_S ({self.min_timeout_s}) and "
                f"HBMON_MONITOR_MAX_TIMEOUT_S ({self.max_timeout_s})"
            )

    def declared_timeout_ms(
        self, timeout_s: float | None, interval_s: float | None
    ) -> int | None:
        """Return the timeout a heartbeat declares, before clamping, or None.

        A declared timeout wins; a declared interval means the device is
        overdue after `missed_intervals` intervals without a heartbeat.
        """
        if timeout_s is not None:
            return int(timeout_s * 1000)
        if interval_s is not None:
            return int(interval_s * self.missed_intervals * 1000)
        return None
