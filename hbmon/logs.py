"""Logging setup shared by every service."""

import logging
import time
from collections.abc import Callable

from hbmon.env import SettingError, env_str

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# httpx logs the whole URL of each request at INFO. A Slack webhook URL
# contains its token in the path, so httpx and httpcore log warnings only.
_URL_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str | None = None) -> None:
    """Send log lines to stderr in UTC, at HBMON_LOG_LEVEL (default INFO).

    Raises:
        SettingError: the level is not one of LEVELS.
    """
    name = (level or env_str("HBMON_LOG_LEVEL", "INFO")).upper()
    if name not in LEVELS:
        raise SettingError(
            f"HBMON_LOG_LEVEL={name!r} is not a log level; use one of "
            f"{', '.join(LEVELS)}"
        )
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(level=name, format=_FORMAT, force=True)
    for logger_name in _URL_LOGGERS:
        logging.getLogger(logger_name).setLevel(logging.WARNING)


class RateLimitedLog:
    """Let a repeated log line through at most once per interval.

    The caller counts every occurrence in metrics; this only keeps the log
    readable when the same failure repeats thousands of times.
    """

    def __init__(
        self,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """Return None to drop this line, else how many were dropped before it."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


# librdkafka adds this guess when an ApiVersionRequest fails, as one did
# after a Kafka 4.1.1 broker was frozen for 40 s.
_OLD_BROKER_GUESS = "probably due to broker version < 0.10"
_OLD_BROKER_NOTE = (
    "; the request also fails this way when a broker restarts or is frozen, "
    "whatever its version"
)

# A broker that has just started rejects a producer's request for an
# idempotence or transactional PID with these errors (for about 0.5 s in the
# local stack), and librdkafka retries.
_COORDINATOR_STARTING = (
    "Coordinator load in progress: retrying",
    "Not coordinator: retrying",
)
_COORDINATOR_NOTE = "; usual for a few seconds after the broker starts"


class LibrdkafkaLog:
    """The `logger` of every Kafka client: librdkafka's log lines, rate-limited.

    confluent-kafka 2.16 calls `log(level, "%s [%s] %s", facility, client,
    line)` from the client's poll, consume or flush. Without a `logger`,
    librdkafka writes to stderr itself, unformatted and unlimited: about
    20 lines per second per client with the local broker stopped. Here each
    facility (FAIL, ERROR, REQTMOUT, ...) at each level passes at most once
    per `interval_s`, and the next line that passes counts those dropped.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 20.0) -> None:
        self.logger = logger
        self._limit = RateLimitedLog(interval_s)

    def log(self, level: int, msg: str, *args: object) -> None:
        facility = args[0] if args else msg
        suppressed = self._limit.allow(f"{level}:{facility}")
        if suppressed is None:
            return
        line = str(args[-1] if args else msg)
        if _OLD_BROKER_GUESS in line:
            msg += _OLD_BROKER_NOTE
        elif level == logging.WARNING and any(
            text in line for text in _COORDINATOR_STARTING
        ):
            level = logging.INFO
            msg += _COORDINATOR_NOTE
        if suppressed:
            msg += " (%d more %s lines dropped since the last one)"
            args = (*args, suppressed, facility)
        self.logger.log(level, msg, *args)
