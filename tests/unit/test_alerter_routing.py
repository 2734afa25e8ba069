"""Matchers, routes in order with continue, and TOML line lookup."""

import pytest

from alerter._toml_lines import key_lines, line_of
from alerter.matchers import Matcher, MatcherError, parse_matcher
from alerter.routing import Route, Router, Timing
from hbmon.events import DEVICE_DOWN, AlertEvent

TIMING = Timing(1.0, 1.0, 0.0, 10)


def event(device_id: str, **attrs: str) -> AlertEvent:
    return AlertEvent(
        event_id="e",
        type=DEVICE_DOWN,
        device_id=device_id,
        severity="critical",
        last_seen_ms=0,
        deadline_ms=0,
        timeout_ms=0,
        detected_ms=0,
        partition=0,
        message="m",
        attrs=attrs or None,
    )


@pytest.mark.parametrize(
    ("matcher", "device_id", "attrs", "expected"),
    [
        (Matcher(), "", None, True),
        (Matcher(device_prefix=("pump-",)), "pump-1", None, True),
        (Matcher(device_prefix=("pump-",)), "sensor-1", None, False),
        (Matcher(device_glob=("*-safety-?",)), "pump-safety-1", None, True),
        (Matcher(device_glob=("*-safety-?",)), "pump-safety-12", None, False),
        (Matcher(attrs={"site": ("a", "b")}), "x", {"site": "b"}, True),
        (Matcher(attrs={"site": ("a",)}), "x", {"site": "c"}, False),
        (Matcher(attrs={"site": ("a",)}), "x", None, False),
        (
            Matcher(device_prefix=("pump-",), attrs={"site": ("a",)}),
            "pump-1",
            {"site": "b"},
            False,
        ),
    ],
)
def test_matcher_needs_every_condition(
    matcher: Matcher, device_id: str, attrs: dict | None, expected: bool
) -> None:
    assert matcher.matches(device_id, attrs) is expected


def test_parse_matcher_accepts_string_or_list() -> None:
    matcher = parse_matcher({"device_prefix": "p-", "attrs": {"site": ["a", "b"]}})

    assert matcher.device_prefix == ("p-",)
    assert matcher.attrs == {"site": ("a", "b")}


def test_parse_matcher_rejects_empty_value() -> None:
    with pytest.raises(MatcherError, match="device_glob"):
        parse_matcher({"device_glob": [""]})


def route(name: str, prefix: str, follow: bool = False) -> Route:
    return Route(name, Matcher(device_prefix=(prefix,)), ("r",), TIMING, follow)


def test_first_matching_route_wins() -> None:
    router = Router((route("a", "p"), route("b", "p")), route("default", ""), {})

    assert [r.name for r in router.routes_for(event("p-1"))] == ["a"]


def test_continue_passes_event_on() -> None:
    router = Router((route("a", "p", True), route("b", "p")), route("default", ""), {})

    assert [r.name for r in router.routes_for(event("p-1"))] == ["a", "b"]


def test_unmatched_event_goes_to_default_route() -> None:
    router = Router((route("a", "p"),), route("default", ""), {})

    assert [r.name for r in router.routes_for(event("x-1"))] == ["default"]


def test_group_labels_read_attributes_and_device() -> None:
    timing = Timing(1.0, 1.0, 0.0, 10, group_by=("site", "device_id", "zone"))
    labelled = Route("a", Matcher(), ("r",), timing)

    labels = labelled.group_labels(event("d-1", site="s"))

    assert labels == (("site", "s"), ("device_id", "d-1"), ("zone", ""))


def test_key_lines_index_arrays_of_tables() -> None:
    text = (
        '[defaults]\nx = 1\n[[routes]]\nname = "a"\n'
        '[[routes]]\nname = "b"\nattrs.site = "s"\n'
    )

    lines = key_lines(text)

    assert lines[("defaults", "x")] == 2
    assert lines[("routes", "1", "name")] == 6
    assert line_of(lines, ("routes", "1", "attrs", "site", "deeper")) == 7
    assert line_of(lines, ("nothing",)) is None
