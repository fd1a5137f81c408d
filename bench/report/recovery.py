"""The recovery section, its targets and its headline figure (restart -> ready, checkpoints)."""

from __future__ import annotations

import statistics
from typing import Any

from bench.report.format import MIB, fmt, row, table


def recovery_section(results: dict[str, Any]) -> list[str]:
    recovery = results.get("recovery")
    if not recovery:
        return []
    if "error" in recovery:
        return ["## Recovery", "", "Failed:", "", "```", recovery["error"][-2500:], "```", ""]
    sizes = recovery.get("sizes")
    if not sizes:  # a run from before the recovery section measured checkpoints
        return []
    out = [
        "## Recovery",
        "",
        f"State built from N events over {recovery['campaigns']:,} campaigns and {recovery['hours']:g} h of event "
        "time (all inside the shipped rules' look-back; the complaint rule's window is 48 h), 4 partitions on Tansu, "
        "dry run, `GUARD_MAX_CAMPAIGNS` 200,000. Per size, guards consume the topic in fresh groups, in two pairs "
        "(off-on, on-off): without checkpoints, and with a checkpoint of every partition every 10 s (the default is "
        "60 s) and on stop; the on/off ratio is taken within each pair, then averaged. Then a group of each kind gets "
        "a restarted guard (a new process; interpreter start and imports count): without checkpoints it replays "
        "every record, with them it restores each partition's newest checkpoint and reads nothing before it, "
        "reading the state topic from its end back to the newest checkpoints. One "
        "restart each; the checkpoint's time is guard_checkpoint_seconds (encode + write, per partition) of the "
        "checkpoints written at stop (bench/recovery.py).",
        "",
    ]
    rows = []
    for size in sizes:
        off, on = size.get("restart_off", {}), size.get("restart_on", {})
        state = sum(size.get("state_bytes", {}).values())
        written = (size.get("on") or {}).get("checkpoints") or {}
        per_checkpoint = written["seconds"] / written["written"] if written.get("written") else None
        rows.append(
            [
                f"{size['events']:,}",
                fmt(off.get("ready_s"), "s", 1),
                fmt(on.get("ready_s"), "s", 2),
                fmt(on.get("state_records_read")),
                " / ".join(fmt(pair["off"].get("rate"), "/s") for pair in size.get("pairs", [])),
                " / ".join(fmt(pair["on"].get("rate"), "/s") for pair in size.get("pairs", [])),
                fmt(size.get("rate_ratio"), "x", 3),
                fmt(size.get("cpu_rate_ratio"), "x", 3),
                f"{state / MIB:.1f} MiB ({state / recovery['campaigns']:,.0f} B)" if state else "-",
                fmt(per_checkpoint, "s", 2),
            ]
        )
    out += [
        table(
            [
                "events of history",
                "ready after restart, no checkpoints (replay)",
                "ready after restart, checkpoints",
                "state topic records the restore read",
                "throughput off (pair 1 / 2)",
                "throughput on (pair 1 / 2)",
                "on / off",
                "on / off per CPU s",
                "checkpoint size, 4 partitions (per campaign)",
                "one partition's checkpoint (encode + write)",
            ],
            rows,
        ),
        "",
    ]
    for size in sizes:
        for part in ("off", "on", "restart_off", "restart_on"):
            if "error" in (size.get(part) or {}):
                out += [f"{size['events']:,} events, {part} failed:", "", "```", size[part]["error"][-2500:], "```", ""]
    return out


def recovery_targets(recovery: dict[str, Any]) -> list[list[str]]:
    sizes = [size for size in recovery.get("sizes", []) if "ready_s" in size.get("restart_on", {})]
    if not sizes:
        return []
    largest = sizes[-1]
    ready = largest["restart_on"]["ready_s"]
    costs = [1 - size["rate_ratio"] for size in sizes if size.get("rate_ratio")]
    rows = [
        row(
            f"restart -> ready with checkpoints ({largest['events']:,} events of history)",
            fmt(ready, "s", 1),
            "< 5 s",
            ready < 5,
        )
    ]
    if costs:
        rows.append(
            row(
                "throughput cost of checkpoints (worst of the sizes)",
                fmt(max(costs), "%", 1),
                "< 10%",
                max(costs) < 0.10,
            )
        )
    return rows


def recovery_headline(recovery: dict[str, Any]) -> float | None:
    """Restart -> ready: with checkpoints at the largest history size (older runs: the replay of 1M events)."""
    if "runs" in recovery:
        known = [run["ready_s"] for run in recovery["runs"] if run.get("ready_s") is not None]
        return statistics.median(known) if known else None
    sizes = recovery.get("sizes") or [{}]
    return (sizes[-1].get("restart_on") or {}).get("ready_s")
