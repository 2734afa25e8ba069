"""Silences: matchers with a start and an end that keep notifications back.

Silences come from the routes file (read-only) and from the HTTP API. API
silences are written to a compacted topic keyed by silence id, so they
survive restarts and reach every alerter in the group.
"""

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from alerter.matchers import Matcher, parse_matcher
from hbmon.events import AlertEvent

SOURCES = ("api", "config")
# Expired silences stay listed this long, then they are dropped.
EXPIRED_KEEP_MS = 7 * 86_400_000
# Silence times must format as ISO 8601, and Python's datetime ends with the
# year 9999. Times before the Unix epoch have no use for a silence.
MIN_TIME_MS = 0
MAX_TIME_MS = 253_402_300_799_999
TIME_RANGE = "1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Silence:
    """Notifications for devices that `matcher` accepts are held from start to end.

    Times are milliseconds since the Unix epoch; `ends_ms` is exclusive.
    """

    silence_id: str
    matcher: Matcher
    starts_ms: int
    ends_ms: int
    comment: str
    created_by: str
    created_ms: int
    source: str = "api"

    def state(self, now_ms: int) -> str:
        """Return `pending`, `active` or `expired` at `now_ms`."""
        if now_ms < self.starts_ms:
            return "pending"
        if now_ms < self.ends_ms:
            return "active"
        return "expired"

    def silences(self, event: AlertEvent, now_ms: int) -> bool:
        return self.state(now_ms) == "active" and self.matcher.matches(
            event.device_id, event.attrs
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "silence_id": self.silence_id,
                "matcher": self.matcher.to_json(),
                "starts_ms": self.starts_ms,
                "ends_ms": self.ends_ms,
                "comment": self.comment,
                "created_by": self.created_by,
                "created_ms": self.created_ms,
                "source": self.source,
            }
        )


def decode_silence(value: bytes) -> Silence:
    """Decode a silence written by Silence.encode().

    Raises:
        ValueError: the value is not a silence record (MatcherError and
            orjson.JSONDecodeError are ValueErrors too).
    """
    data = orjson.loads(value)
    if not isinstance(data, dict):
        raise ValueError("a silence record must be a JSON object")
    matcher = data.get("matcher")
    if not isinstance(matcher, Mapping):
        raise ValueError("matcher: must be an object")
    silence = Silence(
        silence_id=_field(data, "silence_id", str),
        matcher=parse_matcher(matcher),
        starts_ms=_field(data, "starts_ms", int),
        ends_ms=_field(data, "ends_ms", int),
        comment=_field(data, "comment", str),
        created_by=_field(data, "created_by", str),
        created_ms=_field(data, "created_ms", int),
        source=_field(data, "source", str),
    )
    for name in ("starts_ms", "ends_ms", "created_ms"):
        check_time_ms(name, getattr(silence, name))
    return silence


def epoch_ms(moment: datetime) -> int:
    """Convert an aware datetime to whole milliseconds since the Unix epoch.

    Integer arithmetic, unlike `timestamp() * 1000`, never rounds a time
    such as 9999-12-31T23:59:59.999999Z up into the year 10000.
    """
    return (moment - _EPOCH) // _MILLISECOND


def check_time_ms(name: str, value_ms: int) -> None:
    """Check that a silence time lies in TIME_RANGE.

    Raises:
        ValueError: the time is outside the range; the message names `name`.
    """
    if not MIN_TIME_MS <= value_ms <= MAX_TIME_MS:
        raise ValueError(f"{name}: must be a time from {TIME_RANGE}")


def new_silence_id() -> str:
    return str(uuid.uuid4())


class SilenceStore:
    """The silences in force, shared by the worker and the API threads.

    Lookups cost O(silences). Every method is thread-safe.
    """

    def __init__(self, configured: tuple[Silence, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._silences: dict[str, Silence] = {s.silence_id: s for s in configured}

    def put(self, silence: Silence) -> None:
        """Add or replace a silence."""
        with self._lock:
            self._silences[silence.silence_id] = silence

    def remove(self, silence_id: str) -> None:
        with self._lock:
            self._silences.pop(silence_id, None)

    def get(self, silence_id: str) -> Silence | None:
        with self._lock:
            return self._silences.get(silence_id)

    def all(self) -> list[Silence]:
        """Return every silence, ordered by start time."""
        with self._lock:
            silences = list(self._silences.values())
        return sorted(silences, key=lambda s: (s.starts_ms, s.silence_id))

    def silencing(self, event: AlertEvent, now_ms: int) -> Silence | None:
        """Return an active silence that matches `event`, or None."""
        with self._lock:
            silences = list(self._silences.values())
        return next((s for s in silences if s.silences(event, now_ms)), None)

    def expire(self, silence_id: str, now_ms: int) -> Silence | None:
        """End a silence at `now_ms` unless it ended already; return it, or None."""
        with self._lock:
            silence = self._silences.get(silence_id)
            if silence is None:
                return None
            if silence.ends_ms > now_ms:
                silence = replace(
                    silence, ends_ms=now_ms, starts_ms=min(silence.starts_ms, now_ms)
                )
                self._silences[silence_id] = silence
            return silence

    def stale_ids(self, now_ms: int) -> list[str]:
        """Return ids of API silences that ended more than EXPIRED_KEEP_MS ago."""
        with self._lock:
            return [
                s.silence_id
                for s in self._silences.values()
                if s.source == "api" and s.ends_ms + EXPIRED_KEEP_MS < now_ms
            ]


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name}: must be of type {kind.__name__}")
    return value
