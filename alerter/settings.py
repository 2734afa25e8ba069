"""Alerter settings from HBMON_SMTP_* and HBMON_ALERTER_* environment variables."""

import ipaddress
import os
from dataclasses import dataclass, field

from hbmon.env import SettingError, env_float, env_int, env_list, env_port, env_str

SECURITY_MODES = ("none", "starttls", "tls")
_WEEK_S = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class AlerterSettings:
    """SMTP server, addresses, topics, grouping, retry bounds and API of the alerter.

    The defaults deliver to the local mailbox of the one-command stack. The
    grouping, reminder and flapping values are defaults that a routes file
    (`routes_file`) may override per route.
    """

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_security: str = "none"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_ca_file: str = ""
    smtp_timeout_s: float = 10.0
    # The wait from the DATA command to the reply to the end of the message.
    # RFC 5321 section 4.5.3.2.6 recommends at least 10 minutes for that
    # reply, because a server may accept a mail after a shorter client
    # timeout, and the retry then delivers it again.
    smtp_data_timeout_s: float = 600.0
    sender: str = "hbmon-alerter@localhost"
    recipients: tuple[str, ...] = ("oncall@localhost",)
    group_id: str = "hbmon-alerter"
    # A static group member (group.instance.id) that restarts with the same
    # id gets its partitions back at once, without waiting for the session
    # timeout of its previous incarnation. Give each alerter its own id.
    instance_id: str = ""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # Transient failures of one notification are retried for this long; after
    # it, the notification is parked on the dead-letter topic.
    retry_for_s: float = 86_400.0
    http_timeout_s: float = 10.0
    dedup_size: int = 10_000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102  # 0 turns the metrics endpoint off
    routes_file: str = ""
    group_wait_s: float = 5.0
    group_interval_s: float = 60.0
    repeat_interval_s: float = 0.0  # 0 sends no reminders
    digest_threshold: int = 10
    flap_max_flips: int = 4
    flap_window_s: float = 600.0
    flap_stable_s: float = 300.0
    api_host: str = "127.0.0.1"
    api_port: int = 9103  # 0 turns the silences API off
    api_token: str = field(default="", repr=False)
    dead_letter_topic: str = "device-alerts-dead-letter"
    sent_topic: str = "device-alerts-sent"
    state_topic: str = "device-alerts-state"
    silence_topic: str = "device-alerts-silences"
    sent_retention_s: float = _WEEK_S

    @classmethod
    def from_env(cls) -> "AlerterSettings":
        """Read the settings from the environment.

        Raises:
            SettingError: a variable is invalid; the message names it.
        """
        # Read defaults from an instance: with slots=True, class attributes are
        # slot descriptors, not the defaults.
        d = cls()
        # The alerter's topics are named after the alert topic by default, so
        # two deployments that share a broker keep their state apart.
        alert_topic = env_str("HBMON_ALERT_TOPIC", "device-alerts")
        settings = cls(
            smtp_host=env_str("HBMON_SMTP_HOST", d.smtp_host),
            smtp_port=env_port("HBMON_SMTP_PORT", d.smtp_port, allow_zero=False),
            smtp_security=env_str("HBMON_SMTP_SECURITY", d.smtp_security).lower(),
            smtp_user=env_str("HBMON_SMTP_USER", ""),
            smtp_password=env_str("HBMON_SMTP_PASSWORD", ""),
            smtp_ca_file=env_str("HBMON_SMTP_CA_FILE", ""),
            smtp_timeout_s=_seconds("HBMON_SMTP_TIMEOUT_S", d.smtp_timeout_s, 0.1),
            smtp_data_timeout_s=_seconds(
                "HBMON_SMTP_DATA_TIMEOUT_S", d.smtp_data_timeout_s, 0.1
            ),
            sender=env_str("HBMON_ALERTER_SENDER", d.sender),
            recipients=tuple(env_list("HBMON_ALERTER_RECIPIENTS", list(d.recipients))),
            group_id=env_str("HBMON_ALERTER_GROUP_ID", d.group_id),
            instance_id=env_str("HBMON_ALERTER_INSTANCE_ID", ""),
            backoff_initial_s=_seconds(
                "HBMON_ALERTER_BACKOFF_INITIAL_S", d.backoff_initial_s, 0.01
            ),
            backoff_max_s=_seconds(
                "HBMON_ALERTER_BACKOFF_MAX_S", d.backoff_max_s, 0.01
            ),
            retry_for_s=_seconds("HBMON_ALERTER_RETRY_FOR_S", d.retry_for_s, 1.0),
            http_timeout_s=_seconds(
                "HBMON_ALERTER_HTTP_TIMEOUT_S", d.http_timeout_s, 0.1
            ),
            dedup_size=env_int("HBMON_ALERTER_DEDUP_SIZE", d.dedup_size, minimum=1),
            metrics_host=env_str("HBMON_ALERTER_METRICS_HOST", d.metrics_host),
            metrics_port=env_port("HBMON_ALERTER_METRICS_PORT", d.metrics_port),
            routes_file=env_str("HBMON_ALERTER_ROUTES_FILE", ""),
            group_wait_s=_seconds("HBMON_ALERTER_GROUP_WAIT_S", d.group_wait_s, 0.0),
            group_interval_s=_seconds(
                "HBMON_ALERTER_GROUP_INTERVAL_S", d.group_interval_s, 0.1
            ),
            repeat_interval_s=_seconds(
                "HBMON_ALERTER_REPEAT_INTERVAL_S", d.repeat_interval_s, 0.0
            ),
            digest_threshold=env_int(
                "HBMON_ALERTER_DIGEST_THRESHOLD", d.digest_threshold, minimum=1
            ),
            flap_max_flips=env_int(
                "HBMON_ALERTER_FLAP_MAX_FLIPS", d.flap_max_flips, minimum=1
            ),
            flap_window_s=_seconds("HBMON_ALERTER_FLAP_WINDOW_S", d.flap_window_s, 1.0),
            flap_stable_s=_seconds("HBMON_ALERTER_FLAP_STABLE_S", d.flap_stable_s, 0.1),
            api_host=env_str("HBMON_ALERTER_API_HOST", d.api_host),
            api_port=env_port("HBMON_ALERTER_API_PORT", d.api_port),
            api_token=env_str("HBMON_ALERTER_API_TOKEN", ""),
            dead_letter_topic=env_str(
                "HBMON_ALERTER_DEAD_LETTER_TOPIC", f"{alert_topic}-dead-letter"
            ),
            sent_topic=env_str("HBMON_ALERTER_SENT_TOPIC", f"{alert_topic}-sent"),
            state_topic=env_str("HBMON_ALERTER_STATE_TOPIC", f"{alert_topic}-state"),
            silence_topic=env_str(
                "HBMON_ALERTER_SILENCE_TOPIC", f"{alert_topic}-silences"
            ),
            sent_retention_s=_seconds(
                "HBMON_ALERTER_SENT_RETENTION_S", d.sent_retention_s, 3_600.0
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the rules that span fields or that env helpers cannot express.

        Raises:
            SettingError: a value breaks a rule; the message names the variable.
        """
        if self.smtp_security not in SECURITY_MODES:
            raise SettingError(
                f"HBMON_SMTP_SECURITY={self.smtp_security!r} is invalid; "
                f"use one of {', '.join(SECURITY_MODES)}"
            )
        if bool(self.smtp_user) != bool(self.smtp_password):
            raise SettingError(
                "HBMON_SMTP_USER and HBMON_SMTP_PASSWORD must be set together "
                "(only one of them is set)"
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise SettingError(
                f"HBMON_ALERTER_BACKOFF_MAX_S={self.backoff_max_s} is below "
                f"HBMON_ALERTER_BACKOFF_INITIAL_S={self.backoff_initial_s}; "
                "raise the maximum or lower the initial backoff"
            )
        if self.smtp_ca_file and not os.path.isfile(self.smtp_ca_file):
            raise SettingError(
                f"HBMON_SMTP_CA_FILE={self.smtp_ca_file!r} is not found or is "
                "not a file; give the path of a PEM file with CA certificates"
            )
        if self.routes_file and not os.path.isfile(self.routes_file):
            raise SettingError(
                f"HBMON_ALERTER_ROUTES_FILE={self.routes_file!r} is not found or "
                "is not a file; give the path of a TOML routes file, or unset it "
                "to mail every alert to HBMON_ALERTER_RECIPIENTS"
            )
        topics = {
            "HBMON_ALERTER_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "HBMON_ALERTER_SENT_TOPIC": self.sent_topic,
            "HBMON_ALERTER_STATE_TOPIC": self.state_topic,
            "HBMON_ALERTER_SILENCE_TOPIC": self.silence_topic,
        }
        if len(set(topics.values())) != len(topics):
            raise SettingError(
                f"{', '.join(topics)} must name four different topics; "
                f"they are {', '.join(topics.values())}"
            )
        _check_address("HBMON_ALERTER_SENDER", self.sender)
        if not self.recipients:
            raise SettingError(
                "HBMON_ALERTER_RECIPIENTS is empty; give at least one address"
            )
        for recipient in self.recipients:
            _check_address("HBMON_ALERTER_RECIPIENTS", recipient)

    @property
    def api_is_local(self) -> bool:
        """True when the silences API listens on a loopback address only."""
        if self.api_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.api_host).is_loopback
        except ValueError:
            return False


def _seconds(name: str, default: float, minimum: float) -> float:
    return env_float(name, default, minimum=minimum)


def _check_address(name: str, address: str) -> None:
    """Raise SettingError unless `address` looks like a mail address."""
    reason = address_problem(address)
    if reason:
        raise SettingError(f"{name}: {address!r} {reason}")


def address_problem(address: str) -> str:
    """Return why `address` is not a usable mail address, or an empty string."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "is not an email address (no @)"
    if any(char.isspace() or not char.isprintable() for char in address):
        return "contains whitespace or control characters"
    return ""
