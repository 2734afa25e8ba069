"""Load and validate the routes file (TOML): receivers, routes, silences.

Every rule is checked at startup, and an error names the file, the line,
the key and the rule it breaks, such as
`routes.toml:14: routes[1].receivers: unknown receiver 'pumps'; ...`.
Secrets (webhook HMAC keys, Slack URLs, PagerDuty routing keys) are not
written in the file; it names environment variables that hold them.
"""

import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

from alerter._toml_lines import key_lines, line_of
from alerter.matchers import MATCHER_KEYS, MatcherError, parse_matcher
from alerter.routing import ChannelConfig, Receiver, Route, Router, Timing
from alerter.settings import AlerterSettings, address_problem
from alerter.silences import Silence, check_time_ms, epoch_ms

TOP_KEYS = ("defaults", "flapping", "receivers", "routes", "default_route", "silences")
TIMING_KEYS = (
    "group_wait_s",
    "group_interval_s",
    "repeat_interval_s",
    "digest_threshold",
    "group_by",
)
ROUTE_KEYS = ("name", "receivers", "continue", *MATCHER_KEYS, *TIMING_KEYS)
SILENCE_KEYS = ("comment", "created_by", "starts_at", "ends_at", *MATCHER_KEYS)
FLAPPING_KEYS = ("max_flips", "window_s", "stable_s")
CHANNEL_KEYS = {
    "webhook": ("url", "secret_env"),
    "slack": ("url", "url_env"),
    "pagerduty": ("url", "routing_key_env"),
}
DEFAULT_ROUTE = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Config silences get stable ids, so that restarts list them under one id.
_SILENCE_NAMESPACE = uuid.UUID("0f4b9a7e-3d1c-4c2a-9e55-7d3b1a2c6e10")


class ConfigError(ValueError):
    """The routes file breaks a rule. `line` is None when no line applies."""

    def __init__(self, source: str, line: int | None, key: str, rule: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {rule}")
        self.source = source
        self.line = line
        self.key = key
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Flapping:
    """More than `max_flips` DOWN/RECOVERED flips within `window_s` is flapping.

    A flapping device is stable again after `stable_s` without a flip.
    """

    max_flips: int
    window_s: float
    stable_s: float


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Everything the routes file sets, validated."""

    router: Router
    flapping: Flapping
    silences: tuple[Silence, ...]


def default_config(settings: AlerterSettings) -> RoutingConfig:
    """Return the configuration used without a routes file.

    One default route mails every event to HBMON_ALERTER_RECIPIENTS, with
    the grouping settings from the environment.
    """
    receiver = Receiver(
        DEFAULT_ROUTE, (ChannelConfig("email", addresses=settings.recipients),)
    )
    route = Route(
        DEFAULT_ROUTE,
        parse_matcher({}),
        (DEFAULT_ROUTE,),
        _timing_defaults(settings),
    )
    return RoutingConfig(
        router=Router((), route, {DEFAULT_ROUTE: receiver}),
        flapping=_flapping_defaults(settings),
        silences=(),
    )


def load_config(
    path: str, settings: AlerterSettings, environ: Mapping[str, str]
) -> RoutingConfig:
    """Read and validate the routes file at `path`.

    Raises:
        ConfigError: the file cannot be read, is not valid TOML, or breaks a
            rule; the message names the line and the rule.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(path, None, "file", f"cannot be read ({err})") from err
    return parse_config(text, settings, environ, source=path)


def parse_config(
    text: str,
    settings: AlerterSettings,
    environ: Mapping[str, str],
    source: str = "<routes>",
) -> RoutingConfig:
    """Validate routes-file text; see load_config()."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, None, "syntax", f"invalid TOML: {err}") from err
    return _Parser(source, key_lines(text), settings, environ).parse(data)


class _Parser:
    """Walks the parsed TOML and raises ConfigError at the first broken rule."""

    def __init__(
        self,
        source: str,
        lines: dict[tuple[str, ...], int],
        settings: AlerterSettings,
        environ: Mapping[str, str],
    ) -> None:
        self.source = source
        self.lines = lines
        self.settings = settings
        self.environ = environ

    def parse(self, data: dict[str, Any]) -> RoutingConfig:
        self._check_keys(data, TOP_KEYS, ())

        # 1. Defaults that routes inherit, and flapping limits.
        defaults = self._timing(
            self._table(data, "defaults", ()),
            ("defaults",),
            _timing_defaults(self.settings),
        )
        flapping = self._flapping(self._table(data, "flapping", ()))

        # 2. Receivers, then the routes that name them.
        receivers = self._receivers(self._table(data, "receivers", ()))
        routes = tuple(
            self._route(entry, ("routes", str(index)), defaults, receivers)
            for index, entry in enumerate(self._array(data, "routes"))
        )
        names = [route.name for route in routes]
        for index, name in enumerate(names):
            if name in names[:index] or name == DEFAULT_ROUTE:
                self._fail(
                    ("routes", str(index), "name"),
                    f"duplicate route name {name!r}; give each route its own name "
                    f"({DEFAULT_ROUTE!r} is the default route's)",
                )
        if "default_route" not in data:
            self._fail(
                ("default_route",),
                "is missing; add a [default_route] table with `receivers`, so "
                "events that no route matches still reach someone",
            )
        default_route = self._route(
            {**self._table(data, "default_route", ()), "name": DEFAULT_ROUTE},
            ("default_route",),
            defaults,
            receivers,
            is_default=True,
        )

        # 3. Silences from the file.
        silences = tuple(
            self._silence(entry, ("silences", str(index)))
            for index, entry in enumerate(self._array(data, "silences"))
        )
        return RoutingConfig(
            router=Router(routes, default_route, receivers),
            flapping=flapping,
            silences=silences,
        )

    def _receivers(self, table: dict[str, Any]) -> dict[str, Receiver]:
        receivers = {}
        for name, entry in table.items():
            path = ("receivers", name)
            if not _NAME.fullmatch(name):
                self._fail(path, "receiver names use letters, digits, _ . - only")
            if not isinstance(entry, dict):
                self._fail(path, "must be a table of channels")
            self._check_keys(entry, ("email", *CHANNEL_KEYS), path)
            channels = []
            if "email" in entry:
                channels.append(self._email(entry["email"], (*path, "email")))
            for kind in CHANNEL_KEYS:
                if kind in entry:
                    channels.append(
                        self._http_channel(kind, entry[kind], (*path, kind))
                    )
            if not channels:
                self._fail(
                    path, "has no channel; add email, webhook, slack or pagerduty"
                )
            receivers[name] = Receiver(name, tuple(channels))
        return receivers

    def _email(self, value: object, path: tuple[str, ...]) -> ChannelConfig:
        if not isinstance(value, list) or not value:
            self._fail(path, "must be a non-empty list of mail addresses")
        for address in value:
            problem = address_problem(address) if isinstance(address, str) else ""
            if not isinstance(address, str) or problem:
                self._fail(path, f"{address!r} {problem or 'is not a string'}")
        return ChannelConfig("email", addresses=tuple(value))

    def _http_channel(
        self, kind: str, value: object, path: tuple[str, ...]
    ) -> ChannelConfig:
        if not isinstance(value, dict):
            self._fail(path, f"must be a table with {' and '.join(CHANNEL_KEYS[kind])}")
        self._check_keys(value, CHANNEL_KEYS[kind], path)
        url = value.get("url")
        if kind == "slack" and "url_env" in value:
            if url is not None:
                self._fail(path, "set url or url_env, not both")
            url = self._env(value, "url_env", path)
        if not isinstance(url, str):
            self._fail((*path, "url"), "is missing; give the endpoint's http(s) URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._fail((*path, "url"), "must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - reading it checks the port
        except ValueError:
            self._fail((*path, "url"), "must have a port from 0 to 65535, or none")
        secret = self._env(value, "secret_env", path) if "secret_env" in value else ""
        routing_key = ""
        if kind == "pagerduty":
            routing_key = self._env(value, "routing_key_env", path)
        return ChannelConfig(kind, url=url, secret=secret, routing_key=routing_key)

    def _env(self, table: dict[str, Any], key: str, path: tuple[str, ...]) -> str:
        name = table.get(key)
        if not isinstance(name, str) or not name:
            self._fail((*path, key), "must name an environment variable")
        value = self.environ.get(name, "")
        if not value:
            self._fail(
                (*path, key),
                f"environment variable {name} is not set or empty; set it before "
                "starting the alerter",
            )
        return value

    def _route(
        self,
        entry: object,
        path: tuple[str, ...],
        defaults: Timing,
        receivers: dict[str, Receiver],
        *,
        is_default: bool = False,
    ) -> Route:
        if not isinstance(entry, dict):
            self._fail(path, "must be a table")
        allowed = ("name", "receivers", *TIMING_KEYS) if is_default else ROUTE_KEYS
        self._check_keys(entry, allowed, path)
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self._fail(
                (*path, "name"),
                "is missing or invalid; use 1-64 letters, digits, _ . -",
            )
        names = entry.get("receivers")
        if not isinstance(names, list) or not names:
            self._fail((*path, "receivers"), "must be a non-empty list of receivers")
        for receiver in names:
            if receiver not in receivers:
                known = ", ".join(sorted(receivers)) or "none"
                self._fail(
                    (*path, "receivers"),
                    f"unknown receiver {receiver!r}; define it under [receivers] "
                    f"(defined: {known})",
                )
        try:
            matcher = parse_matcher(entry)
        except MatcherError as err:
            self._fail((*path, err.key.split(".")[0]), err.rule)
        follow = entry.get("continue", False)
        if not isinstance(follow, bool):
            self._fail((*path, "continue"), "must be true or false")
        return Route(
            name=name,
            matcher=matcher,
            receivers=tuple(names),
            timing=self._timing(entry, path, defaults),
            continue_matching=follow,
        )

    def _timing(
        self, table: dict[str, Any], path: tuple[str, ...], base: Timing
    ) -> Timing:
        if path == ("defaults",):
            self._check_keys(table, TIMING_KEYS, path)
        group_by = table.get("group_by", list(base.group_by))
        if not isinstance(group_by, list) or not all(
            isinstance(label, str) and label for label in group_by
        ):
            self._fail((*path, "group_by"), "must be a list of attribute names")
        return Timing(
            group_wait_s=self._number(table, "group_wait_s", path, base.group_wait_s),
            group_interval_s=self._number(
                table, "group_interval_s", path, base.group_interval_s, above=0.0
            ),
            repeat_interval_s=self._number(
                table, "repeat_interval_s", path, base.repeat_interval_s
            ),
            digest_threshold=int(
                self._number(
                    table,
                    "digest_threshold",
                    path,
                    base.digest_threshold,
                    above=0.0,
                    integer=True,
                )
            ),
            group_by=tuple(group_by),
        )

    def _flapping(self, table: dict[str, Any]) -> Flapping:
        path = ("flapping",)
        self._check_keys(table, FLAPPING_KEYS, path)
        base = _flapping_defaults(self.settings)
        return Flapping(
            max_flips=int(
                self._number(
                    table, "max_flips", path, base.max_flips, above=0.0, integer=True
                )
            ),
            window_s=self._number(table, "window_s", path, base.window_s, above=0.0),
            stable_s=self._number(table, "stable_s", path, base.stable_s, above=0.0),
        )

    def _silence(self, entry: object, path: tuple[str, ...]) -> Silence:
        if not isinstance(entry, dict):
            self._fail(path, "must be a table")
        self._check_keys(entry, SILENCE_KEYS, path)
        for key in ("comment", "created_by"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                self._fail((*path, key), "is missing; say why and who")
        starts_ms = self._time(entry, "starts_at", path)
        ends_ms = self._time(entry, "ends_at", path)
        if ends_ms <= starts_ms:
            self._fail((*path, "ends_at"), "must be later than starts_at")
        try:
            matcher = parse_matcher(entry)
        except MatcherError as err:
            self._fail((*path, err.key.split(".")[0]), err.rule)
        if matcher.is_empty:
            self._fail(
                path,
                "has no matcher; add device_prefix, device_glob or attrs, so the "
                "silence cannot hold back every alert",
            )
        key = f"{path[-1]}|{starts_ms}|{ends_ms}|{entry['comment']}"
        return Silence(
            silence_id=str(uuid.uuid5(_SILENCE_NAMESPACE, key)),
            matcher=matcher,
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            comment=entry["comment"],
            created_by=entry["created_by"],
            created_ms=starts_ms,
            source="config",
        )

    def _time(self, table: dict[str, Any], key: str, path: tuple[str, ...]) -> int:
        value = table.get(key)
        if not isinstance(value, datetime) or value.tzinfo is None:
            self._fail(
                (*path, key),
                "must be a TOML date-time with an offset, such as 2025-06-01T20:00:00Z",
            )
        value_ms = epoch_ms(value)
        try:
            check_time_ms(key, value_ms)
        except ValueError as err:
            self._fail((*path, key), str(err).split(": ", 1)[1])
        return value_ms

    def _number(
        self,
        table: dict[str, Any],
        key: str,
        path: tuple[str, ...],
        default: float,
        *,
        above: float | None = None,
        integer: bool = False,
    ) -> float:
        value = table.get(key, default)
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            self._fail((*path, key), f"must be {kind}")
        assert isinstance(value, int | float)
        if value < 0 or (above is not None and value <= above):
            bound = f"above {above:g}" if above is not None else "0 or more"
            self._fail((*path, key), f"must be {bound}, not {value}")
        return float(value)

    def _table(
        self, data: dict[str, Any], key: str, path: tuple[str, ...]
    ) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self._fail((*path, key), "must be a table")
        return value

    def _array(self, data: dict[str, Any], key: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self._fail((key,), f"must be an array of tables ([[{key}]])")
        return value

    def _check_keys(
        self, table: dict[str, Any], allowed: tuple[str, ...], path: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in allowed:
                self._fail(
                    (*path, key), f"unknown key; allowed here: {', '.join(allowed)}"
                )

    def _fail(self, path: tuple[str, ...], rule: str) -> NoReturn:
        raise ConfigError(self.source, line_of(self.lines, path), _dotted(path), rule)


def _dotted(path: tuple[str, ...]) -> str:
    text = ""
    for part in path:
        if part.isdigit():
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "file"


def _timing_defaults(settings: AlerterSettings) -> Timing:
    return Timing(
        group_wait_s=settings.group_wait_s,
        group_interval_s=settings.group_interval_s,
        repeat_interval_s=settings.repeat_interval_s,
        digest_threshold=settings.digest_threshold,
    )


def _flapping_defaults(settings: AlerterSettings) -> Flapping:
    return Flapping(
        max_flips=settings.flap_max_flips,
        window_s=settings.flap_window_s,
        stable_s=settings.flap_stable_s,
    )
