"""Alerter settings from HBMON_SMTP_* and HBMON_ALERTER_* environment variables."""

import os
from dataclasses import dataclass, field

from hbmon.env import SettingError, env_float, env_int, env_list, env_str

SECURITY_MODES = ("none", "starttls", "tls")


@dataclass(frozen=True, slots=True)
class AlerterSettings:
    """SMTP server, mail addresses, consumer group and retry bounds of the alerter.

    The defaults deliver to the local mailbox of the one-command stack.
    """

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_security: str = "none"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_ca_file: str = ""
    smtp_timeout_s: float = 10.0
    sender: str = "hbmon-alerter@localhost"
    recipients: tuple[str, ...] = ("oncall@localhost",)
    group_id: str = "hbmon-alerter"
    # Delivery attempts per read of a record. After the last one, the worker
    # polls again and reads the same record, so a mail is never given up.
    max_attempts: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 5.0
    dedup_size: int = 10_000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102  # 0 turns the metrics endpoint off

    @classmethod
    def from_env(cls) -> "AlerterSettings":
        """Read the settings from the environment.

        Raises:
            SettingError: a variable is invalid; the message names it.
        """
        # Read defaults from an instance: with slots=True, class attributes are
        # slot descriptors, not the defaults.
        defaults = cls()
        settings = cls(
            smtp_host=env_str("HBMON_SMTP_HOST", defaults.smtp_host),
            smtp_port=env_int("HBMON_SMTP_PORT", defaults.smtp_port, minimum=1),
            smtp_security=env_str(
                "HBMON_SMTP_SECURITY", defaults.smtp_security
            ).lower(),
            smtp_user=env_str("HBMON_SMTP_USER", ""),
            smtp_password=env_str("HBMON_SMTP_PASSWORD", ""),
            smtp_ca_file=env_str("HBMON_SMTP_CA_FILE", ""),
            smtp_timeout_s=env_float(
                "HBMON_SMTP_TIMEOUT_S", defaults.smtp_timeout_s, minimum=0.1
            ),
            sender=env_str("HBMON_ALERTER_SENDER", defaults.sender),
            recipients=tuple(
                env_list("HBMON_ALERTER_RECIPIENTS", list(defaults.recipients))
            ),
            group_id=env_str("HBMON_ALERTER_GROUP_ID", defaults.group_id),
            max_attempts=env_int(
                "HBMON_ALERTER_MAX_ATTEMPTS", defaults.max_attempts, minimum=1
            ),
            backoff_initial_s=env_float(
                "HBMON_ALERTER_BACKOFF_INITIAL_S",
                defaults.backoff_initial_s,
                minimum=0.01,
            ),
            backoff_max_s=env_float(
                "HBMON_ALERTER_BACKOFF_MAX_S", defaults.backoff_max_s, minimum=0.01
            ),
            dedup_size=env_int(
                "HBMON_ALERTER_DEDUP_SIZE", defaults.dedup_size, minimum=1
            ),
            metrics_host=env_str("HBMON_ALERTER_METRICS_HOST", defaults.metrics_host),
            metrics_port=env_int(
                "HBMON_ALERTER_METRICS_PORT", defaults.metrics_port, minimum=0
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
        _check_address("HBMON_ALERTER_SENDER", self.sender)
        if not self.recipients:
            raise SettingError(
                "HBMON_ALERTER_RECIPIENTS is empty; give at least one address"
            )
        for recipient in self.recipients:
            _check_address("HBMON_ALERTER_RECIPIENTS", recipient)

    @property
    def delivery_budget_s(self) -> float:
        """Estimate the longest time that one record's delivery attempts can block.

        An attempt makes about 9 SMTP exchanges (connect, greeting, EHLO,
        STARTTLS, EHLO, AUTH, MAIL, DATA, end of data) plus one RCPT per
        recipient, and each exchange may wait up to `smtp_timeout_s`. A stale
        reused connection costs one extra attempt. Waits between attempts
        add at most `backoff_max_s` each.
        """
        exchanges = 9 + len(self.recipients)
        attempt_s = exchanges * self.smtp_timeout_s
        waits_s = (self.max_attempts - 1) * self.backoff_max_s
        return (self.max_attempts + 1) * attempt_s + waits_s


def _check_address(name: str, address: str) -> None:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise SettingError(f"{name}: {address!r} is not an email address (no @)")
    if any(char.isspace() or not char.isprintable() for char in address):
        raise SettingError(
            f"{name}: {address!r} contains whitespace or control characters"
        )
