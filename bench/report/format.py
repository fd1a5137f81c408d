"""Figures as text: units, spreads over repeats, markdown tables, a target met or missed."""

from __future__ import annotations

import statistics

KIB = 1024
MIB = 1024 * KIB


def spread(values: list[float | None]) -> tuple[float, float, float] | None:
    known = [v for v in values if v is not None]
    return (min(known), statistics.median(known), max(known)) if known else None


def fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value * 100:.{digits}f} %"
    if unit == "ms":
        return f"{value * 1000:.{digits}f} ms"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def fmt_spread(values: list[float | None], unit: str = "", digits: int = 0) -> str:
    """`median (min – max)`, or the one value."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, mid, high = spread(known)  # type: ignore[misc]
    if len(known) == 1:
        return fmt(mid, unit, digits)
    return f"{fmt(mid, unit, digits)} ({fmt(low, unit, digits)} – {fmt(high, unit, digits)})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def row(name: str, value: str, target: str, met: bool | None) -> list[str]:
    return [name, value, target, "-" if met is None else ("met" if met else "**missed**")]


def failed(title: str, error: str) -> list[str]:
    """A section whose measurement failed: its title and the error's end (where the cause is)."""
    return [f"## {title}", "", "Failed:", "", *quoted(error)]


def quoted(error: str) -> list[str]:
    return ["```", error[-2500:], "```", ""]
