"""Monitor settings from HBMON_MONITOR_* environment variables."""

import uuid
from dataclasses import dataclass

from hbmon.env import SettingError, env_bool, env_float, env_int, env_port, env_str

TRANSACTIONAL_ID_PREFIX = "hbmon-monitor-"


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Deadline, commit, outage and metrics settings of the monitor."""

    group_id: str = "hbmon-monitor"
    default_timeout_s: float = 30.0
    min_timeout_s: float = 1.0
    max_timeout_s: float = 86400.0
    missed_intervals: float = 3.0
    tick_ms: int = 500
    fetch_grace_ms: int = 1000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101
    # Alerts, changelog records and consumer offsets commit together in one
    # Kafka transaction per interval. Without exactly-once, the changelog is
    # flushed and the offsets are committed plainly at the same interval.
    exactly_once: bool = True
    commit_interval_ms: int = 1000
    # Empty means a fresh id per process, TRANSACTIONAL_ID_PREFIX plus a uuid.
    transactional_id: str = ""
    # A crashed member's open transaction blocks read_committed readers of
    # its partitions until the broker aborts it after this timeout.
    transaction_timeout_ms: int = 10_000
    outage_share: float = 0.5
    outage_min_devices: int = 20
    # Silence of the partition leaders after which the monitor counts
    # contact as lost. It must exceed the statistics interval (500 ms) plus
    # fetch.wait.max.ms (500 ms), the longest normal gap between responses.
    contact_timeout_ms: int = 5000
    restore_timeout_s: float = 120.0
    # The group moves a killed member's partitions to the others only after
    # this. librdkafka's default is 45 s; 10 s matches the transaction
    # timeout, which holds back the killed member's partitions for as long
    # anyway. librdkafka sends group heartbeats from its own thread, so a
    # long restore in the Python thread counts against max.poll.interval.ms
    # (300 s), not against this. Brokers reject values below their
    # group.min.session.timeout.ms, 6000 by default.
    session_timeout_ms: int = 10_000

    @classmethod
    def from_env(cls) -> "MonitorSettings":
        """Read the settings from the environment.

        Raises:
            SettingError: a variable is invalid; the message names it.
        """
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
            metrics_port=env_port("HBMON_MONITOR_METRICS_PORT", defaults.metrics_port),
            exactly_once=env_bool("HBMON_MONITOR_EXACTLY_ONCE", defaults.exactly_once),
            commit_interval_ms=env_int(
                "HBMON_MONITOR_COMMIT_INTERVAL_MS",
                defaults.commit_interval_ms,
                minimum=10,
            ),
            transactional_id=env_str(
                "HBMON_MONITOR_TRANSACTIONAL_ID", defaults.transactional_id
            ),
            transaction_timeout_ms=env_int(
                "HBMON_MONITOR_TRANSACTION_TIMEOUT_MS",
                defaults.transaction_timeout_ms,
                minimum=1000,
            ),
            outage_share=env_float(
                "HBMON_MONITOR_OUTAGE_SHARE", defaults.outage_share, minimum=0.0
            ),
            outage_min_devices=env_int(
                "HBMON_MONITOR_OUTAGE_MIN_DEVICES",
                defaults.outage_min_devices,
                minimum=1,
            ),
            contact_timeout_ms=env_int(
                "HBMON_MONITOR_CONTACT_TIMEOUT_MS",
                defaults.contact_timeout_ms,
                minimum=2000,
            ),
            restore_timeout_s=env_float(
                "HBMON_MONITOR_RESTORE_TIMEOUT_S",
                defaults.restore_timeout_s,
                minimum=1.0,
            ),
            session_timeout_ms=env_int(
                "HBMON_MONITOR_SESSION_TIMEOUT_MS",
                defaults.session_timeout_ms,
                minimum=1000,
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the rules that span fields or that env helpers cannot express.

        Raises:
            SettingError: a value breaks a rule; the message names the variable.
        """
        if not self.min_timeout_s <= self.default_timeout_s <= self.max_timeout_s:
            raise SettingError(
                "HBMON_MONITOR_DEFAULT_TIMEOUT_S must lie between "
                f"HBMON_MONITOR_MIN_TIMEOUT_S ({self.min_timeout_s}) and "
                f"HBMON_MONITOR_MAX_TIMEOUT_S ({self.max_timeout_s})"
            )
        if not 0.0 < self.outage_share < 1.0:
            raise SettingError(
                f"HBMON_MONITOR_OUTAGE_SHARE={self.outage_share} is invalid; "
                "use a share between 0 and 1, such as 0.5"
            )
        if self.commit_interval_ms * 2 > self.transaction_timeout_ms:
            raise SettingError(
                f"HBMON_MONITOR_COMMIT_INTERVAL_MS={self.commit_interval_ms} must "
                "be at most half of HBMON_MONITOR_TRANSACTION_TIMEOUT_MS "
                f"({self.transaction_timeout_ms}), or the broker aborts open "
                "transactions before they commit"
            )

    def transactional_id_or_fresh(self) -> str:
        """Return the configured transactional id, or a new one for this process."""
        return self.transactional_id or TRANSACTIONAL_ID_PREFIX + uuid.uuid4().hex

    def declared_timeout_ms(
        self, timeout_s: float | None, interval_s: float | None
    ) -> int | None:
        """Return the timeout a heartbeat declares, clamped to the bounds, or None.

        A declared timeout wins; a declared interval means the device is
        overdue after `missed_intervals` intervals without a heartbeat.
        Clamping here, before the conversion to int, keeps a huge declared
        value such as 1e308 from overflowing.
        """
        if timeout_s is not None:
            declared_s = timeout_s
        elif interval_s is not None:
            declared_s = interval_s * self.missed_intervals
        else:
            return None
        clamped_s = min(max(declared_s, self.min_timeout_s), self.max_timeout_s)
        return int(clamped_s * 1000)
