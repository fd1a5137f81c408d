"""The targets table: each figure against its target, on Tansu and, for the broker-bound ones, Apache Kafka."""

from __future__ import annotations

from typing import Any

from bench.report.format import KIB, fmt, fmt_spread, row, spread
from bench.report.recovery import recovery_targets


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    throughput = results.get("throughput") or {}
    runs = throughput.get("runs", [])
    vs_bare = spread([run.get("guard_vs_bare") for run in runs])
    vs_quix = spread([run.get("guard_vs_quix") for run in runs])

    rows.append(
        row(
            "guard throughput / bare aiokafka",
            fmt_spread([run.get("guard_vs_bare") for run in runs], "%"),
            ">= 60 %",
            None if vs_bare is None else vs_bare[1] >= 0.60,
        )
    )
    rows.append(
        row(
            "guard throughput / Quix Streams (tumbling)",
            fmt_spread([run.get("guard_vs_quix") for run in runs], "x", 2),
            ">= 3x",
            None if vs_quix is None else vs_quix[1] >= 3,
        )
    )
    latency = results.get("latency") or {}
    pooled = latency.get("pooled")
    rows.append(
        row(
            "p99 decision latency (produce -> pause request)",
            fmt(pooled["p99"], "ms") if pooled else "-",
            "< 50 ms",
            None if not pooled else pooled["p99"] < 0.050,
        )
    )
    memory = results.get("memory") or {}
    sizes = memory.get("sizes", [])
    worst = max((size["per_campaign"] for size in sizes), default=None)
    rows.append(
        row(
            "memory per active campaign (worst of 10k, 100k)",
            fmt(worst / KIB, "KiB", 2) if worst is not None else "-",
            "<= 1 KiB",
            None if worst is None else worst <= KIB,
        )
    )
    rows += recovery_targets(results.get("recovery") or {})
    return rows


def all_targets(results: dict[str, Any]) -> list[list[str]]:
    """The targets on Tansu, then the broker-bound ones (throughput ratios, latency) on Apache Kafka."""
    rows = targets(results)
    kafka = results.get("kafka") or {}
    if not (kafka.get("throughput") or kafka.get("latency")):
        return rows
    for figure in rows[:3]:
        figure[0] += ", Tansu"
    for figure in targets(kafka)[:3]:
        rows.insert(rows.index(rows[-2]), [f"{figure[0]}, Apache Kafka", *figure[1:]])
    return rows
