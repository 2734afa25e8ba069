"""Device matchers shared by routes and silences.

A matcher selects devices by id prefix, by id glob (fnmatch syntax: `*`,
`?`, `[seq]`) and by routing attributes carried in the heartbeat. Every
condition given must hold; within one condition, any listed value may
match. A matcher with no condition matches every event, including
monitoring events, which have no device id and no attributes.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

MATCHER_KEYS = ("device_prefix", "device_glob", "attrs")


@dataclass(frozen=True, slots=True)
class Matcher:
    """Conditions on a device id and its attributes."""

    device_prefix: tuple[str, ...] = ()
    device_glob: tuple[str, ...] = ()
    attrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.device_prefix or self.device_glob or self.attrs)

    def matches(self, device_id: str, attrs: Mapping[str, str] | None) -> bool:
        """Return True when every condition of the matcher holds for the device."""
        if self.device_prefix and not device_id.startswith(self.device_prefix):
            return False
        if self.device_glob and not any(
            fnmatchcase(device_id, pattern) for pattern in self.device_glob
        ):
            return False
        values = attrs or {}
        return all(values.get(name) in allowed for name, allowed in self.attrs.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "device_prefix": list(self.device_prefix),
            "device_glob": list(self.device_glob),
            "attrs": {name: list(values) for name, values in self.attrs.items()},
        }


class MatcherError(ValueError):
    """A matcher field has the wrong type or an empty value."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"{key}: {rule}")
        self.key = key
        self.rule = rule


def parse_matcher(data: Mapping[str, Any]) -> Matcher:
    """Build a Matcher from the matcher keys of a routes-file table or API body.

    `device_prefix` and `device_glob` take a string or a list of strings;
    `attrs` takes a table of attribute name to a string or a list of strings.
    Other keys are ignored.

    Raises:
        MatcherError: a value is not a non-empty string or list of them.
    """
    attrs_value = data.get("attrs", {})
    if not isinstance(attrs_value, Mapping):
        raise MatcherError("attrs", "must be a table of attribute name to value(s)")
    attrs = {
        str(name): _strings(f"attrs.{name}", value)
        for name, value in attrs_value.items()
    }
    return Matcher(
        device_prefix=_strings("device_prefix", data.get("device_prefix", [])),
        device_glob=_strings("device_glob", data.get("device_glob", [])),
        attrs=attrs,
    )


def _strings(key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(
        isinstance(item, str) and item for item in items
    ):
        raise MatcherError(key, "must be a non-empty string or a list of them")
    if key.startswith("attrs.") and not items:
        raise MatcherError(key, "must list at least one value")
    return tuple(items)
