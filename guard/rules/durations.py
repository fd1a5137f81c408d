"""Prometheus-style durations ("90s", "15m", "1h30m", "7d") as float seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"


def parse_duration(value: object) -> float:
    """Seconds from a duration string or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '15m' or '1h', not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration is a finite number of seconds >= 0, got {value!r}")
        return float(value)
    if not isinstance(value, str) or not re.fullmatch(PATTERN, value.strip()):
        raise ValueError(f"{value!r} is not a duration; write e.g. '90s', '15m', '1h30m', '7d'")
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(value.strip()))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style spelling of a whole number of seconds ("1h30m")."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    remaining, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
