"""Headline figures of earlier runs (bench/history.json) for the before/after table."""

from __future__ import annotations

import json
import statistics
from typing import Any

from bench.child import ROOT
from bench.report.format import KIB, fmt, table
from bench.report.recovery import recovery_headline

HISTORY = ROOT / "bench" / "history.json"  # headline figures of earlier runs, for before/after


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures a before/after comparison needs, from one run's results."""
    runs = (results.get("throughput") or {}).get("runs", [])
    memory = (results.get("memory") or {}).get("sizes", [])
    pooled = (results.get("latency") or {}).get("pooled") or {}

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "commit": results["machine"]["commit"],
        "started": results["started"],
        "guard_rate": median([run.get("guard", {}).get("rate") for run in runs]),
        "guard_vs_bare": median([run.get("guard_vs_bare") for run in runs]),
        "guard_vs_quix": median([run.get("guard_vs_quix") for run in runs]),
        "latency_p50": pooled.get("p50"),
        "latency_p99": pooled.get("p99"),
        "memory_per_campaign": max((size["per_campaign"] for size in memory), default=None),
        "engine_rate_10k": memory[0]["events_per_s"] if memory else None,
        "recovery_ready_s": recovery_headline(results.get("recovery") or {}),
    }


def remember(results: dict[str, Any]) -> None:
    """Add this run's headline figures to bench/history.json (replacing an entry of the same commit)."""
    history = json.loads(HISTORY.read_text()) if HISTORY.exists() else []
    entry = headline(results)
    history = [old for old in history if old["commit"] != entry["commit"]] + [entry]
    HISTORY.write_text(json.dumps(history, indent=2) + "\n")


def history_section(results: dict[str, Any]) -> list[str]:
    if not HISTORY.exists():
        return []
    now = headline(results)
    earlier = [entry for entry in json.loads(HISTORY.read_text()) if entry["commit"] != now["commit"]]
    rows = [
        [
            f"{entry['commit']}{' (this run)' if entry is now else ''}",
            entry["started"],
            fmt(entry["guard_rate"], "/s"),
            fmt(entry["guard_vs_bare"], "%", 1),
            fmt(entry["guard_vs_quix"], "x", 2),
            fmt(entry["latency_p50"], "ms"),
            fmt(entry["latency_p99"], "ms"),
            fmt(entry["memory_per_campaign"] / KIB, "KiB", 2) if entry["memory_per_campaign"] else "-",
            fmt(entry["engine_rate_10k"], "/s"),
            fmt(entry["recovery_ready_s"], "s", 1),
        ]
        for entry in [*earlier, now]
    ]
    return [
        "## Before and after",
        "",
        "Headline figures of earlier runs (bench/history.json, added with `python -m bench --remember`) and of "
        "this one, medians over the repeats. Each run was measured on a shared machine: the ratios are what compare.",
        "",
        table(
            [
                "commit",
                "run at (UTC)",
                "guard rate",
                "/ bare",
                "/ Quix",
                "latency p50",
                "latency p99",
                "memory / campaign",
                "decode + engine, 10k campaigns",
                "recovery",
            ],
            rows,
        ),
        "",
    ]
