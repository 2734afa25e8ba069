"""Typed readers for settings that come from environment variables.

Every reader fails at startup with the variable's name and the rule it broke,
so a bad deployment stops before it serves anything.
"""

import math
import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingError(ValueError):
    """A setting from the environment is invalid."""


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError as err:
        raise SettingError(f"{name}={raw!r} is not an integer") from err
    if minimum is not None and value < minimum:
        raise SettingError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{name}={value} is above the maximum {maximum}")
    return value


def env_port(name: str, default: int, *, allow_zero: bool = True) -> int:
    """Read a TCP port; 0 is allowed where it turns a listener off."""
    return env_int(name, default, minimum=0 if allow_zero else 1, maximum=65535)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError as err:
        raise SettingError(f"{name}={raw!r} is not a number") from err
    if not math.isfinite(value):
        raise SettingError(f"{name}={raw!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise SettingError(f"{name}={value} is below the minimum {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingError(f"{name}={raw!r} is not a boolean; use true or false")


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated list; blank items are dropped."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]
