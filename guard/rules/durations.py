"""Prometheus-style durations ("90s", "15m", "1h30m", "7d") as float seconds."""

from __future__ import annotations

import math
import re
from decimal import Decimal

# in decimal: "1.1h" is 3960 s exactly, where 1.1 * 3600.0 is 3960.0000000000005, which reads back as another rule
_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
_UNITS["w"] = Decimal(604800)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"


def parse_duration(value: object) -> float:
    """Seconds from a duration string or a plain number of seconds, to the millisecond: what `format_duration`
    writes reads back as the same number (a rule's version, a checkpoint's carried rules)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '15m' or '1h', not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration is a finite number of seconds >= 0, got {value!r}")
        return round(float(value), 3)
    if not isinstance(value, str) or not re.fullmatch(PATTERN, value.strip()):
        raise ValueError(f"{value!r} is not a duration; write e.g. '90s', '15m', '1h30m', '7d'")
    return round(float(sum(Decimal(number) * _UNITS[unit] for number, unit in _PART.findall(value.strip()))), 3)


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
