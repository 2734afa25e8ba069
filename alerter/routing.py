"""Routes: which receivers and channels get the notifications for an event.

Routes are tried in the order of the routes file. The first route whose
matcher accepts the event takes it; a route with `continue = true` passes
the event on to later routes as well. An event that no route took goes to
the default route.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from alerter.matchers import Matcher
from hbmon.events import AlertEvent

CHANNEL_KINDS = ("email", "webhook", "slack", "pagerduty")
# The pseudo-attribute that groups by device, so each device gets its own mail.
DEVICE_LABEL = "device_id"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One way to reach a receiver: mail addresses, or an HTTP endpoint.

    `secret` is the webhook's HMAC key and `routing_key` the PagerDuty
    integration key, both read from environment variables at startup.
    """

    kind: str
    addresses: tuple[str, ...] = ()
    url: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    routing_key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Receiver:
    """A named team or person and the channels that reach them."""

    name: str
    channels: tuple[ChannelConfig, ...]


@dataclass(frozen=True, slots=True)
class Timing:
    """Grouping and reminder settings of a route.

    A group waits `group_wait_s` after its first event before the first
    notification, and then at least `group_interval_s` between
    notifications. `repeat_interval_s` = 0 turns reminders off.
    """

    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    digest_threshold: int
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Events that `matcher` accepts go to `receivers`, grouped per `timing`."""

    name: str
    matcher: Matcher
    receivers: tuple[str, ...]
    timing: Timing
    continue_matching: bool = False

    def group_labels(self, event: AlertEvent) -> tuple[tuple[str, str], ...]:
        """Return the (label, value) pairs that pick the event's group in this route."""
        attrs = event.attrs or {}
        return tuple(
            (label, event.device_id if label == DEVICE_LABEL else attrs.get(label, ""))
            for label in self.timing.group_by
        )


class Router:
    """Ordered routes plus a default route. Matching costs O(routes)."""

    def __init__(
        self,
        routes: tuple[Route, ...],
        default_route: Route,
        receivers: Mapping[str, Receiver],
    ) -> None:
        self.routes = routes
        self.default_route = default_route
        self.receivers = dict(receivers)

    def routes_for(self, event: AlertEvent) -> list[Route]:
        """Return the routes that take `event`; never empty."""
        taken: list[Route] = []
        for route in self.routes:
            if not route.matcher.matches(event.device_id, event.attrs):
                continue
            taken.append(route)
            if not route.continue_matching:
                return taken
        return taken or [self.default_route]

    def route_named(self, name: str) -> Route | None:
        if name == self.default_route.name:
            return self.default_route
        return next((route for route in self.routes if route.name == name), None)

    def repeat_interval_s(self, event: AlertEvent) -> float:
        """Return the shortest reminder interval of the routes that take `event`.

        Zero means no reminders. Routes without reminders do not count, so
        one route's reminders are not turned off by another route.
        """
        intervals = [
            route.timing.repeat_interval_s
            for route in self.routes_for(event)
            if route.timing.repeat_interval_s > 0
        ]
        return min(intervals, default=0.0)
