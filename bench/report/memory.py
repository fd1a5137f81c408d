"""The memory section: state per active campaign, where it goes, and floods of ids against the caps."""

from __future__ import annotations

from typing import Any

from bench.report.format import KIB, failed, fmt, table


def memory_section(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory")
    if not memory:
        return []
    if "error" in memory:
        return failed("Memory", memory["error"])
    rows = [
        [
            f"{size['campaigns']:,}",
            f"{size['events'] / size['campaigns']:.1f}",
            fmt(size["rss_delta"] / KIB / KIB, "MiB", 1),
            f"**{fmt(size['per_campaign'] / KIB, 'KiB', 2)}**",
            fmt(size["events_per_s"], "/s"),
        ]
        for size in memory["sizes"]
    ]
    busy = memory.get("busy")
    if busy:
        rows.append(
            [
                f"{busy['campaigns']:,} (busy: {busy['sends'][0]}-{busy['sends'][1]} sends)",
                f"{busy['events'] / busy['campaigns']:.1f}",
                fmt(busy["rss_delta"] / KIB / KIB, "MiB", 1),
                fmt(busy["per_campaign"] / KIB, "KiB", 2),
                fmt(busy["events_per_s"], "/s"),
            ]
        )
    out = [
        "## Memory",
        "",
        "RSS growth of a process feeding decoded events straight into one `Engine` (shipped rules), divided by the "
        "active campaigns (all within one hour of event time).",
        "",
        table(["active campaigns", "events / campaign", "RSS growth", "per campaign", "decode + engine"], rows),
        "",
    ]
    if memory.get("per_extra_event") is not None:
        out += [
            f"Each further event of a campaign inside the windows costs about {memory['per_extra_event']:.0f} bytes "
            "(from the busy run).",
            "",
        ]
    trace = memory.get("trace")
    if trace and trace.get("top"):
        out += [
            f"Where it goes (tracemalloc, {trace['campaigns']:,} campaigns, "
            f"{trace['traced_per_campaign'] / KIB:.2f} KiB traced per campaign), by the line that allocated it:",
            "",
            table(
                ["line", "per campaign", "share", "source"],
                [
                    [t["where"], f"{t['per_campaign']:.0f} B", fmt(t["share"], "%"), f"`{t['line']}`"]
                    for t in trace["top"]
                ],
            ),
            "",
        ]
    floods = [run for run in memory.get("flood", []) if "error" not in run]
    if floods:
        out += [
            "A flood of distinct campaign ids, one `message.sent` each, through one engine (RSS read every 10,000 "
            "events; the cap is GUARD_MAX_CAMPAIGNS):",
            "",
            table(
                ["campaign ids", "cap", "tracked at the end", "evicted", "RSS growth at the end", "peak", "events/s"],
                [
                    [
                        f"{run['campaigns']:,}",
                        f"{run['cap']:,}" if run["cap"] else "none",
                        f"{run['tracked']:,}",
                        f"{run['evicted']:,}",
                        fmt(run["rss_delta"] / KIB / KIB, "MiB", 1),
                        fmt(run["rss_peak_delta"] / KIB / KIB, "MiB", 1),
                        fmt(run["events_per_s"], "/s"),
                    ]
                    for run in floods
                ],
            ),
            "",
        ]
    id_floods = [run for run in memory.get("id_flood", []) if "error" not in run]
    if id_floods:
        out += [
            "A flood of distinct message ids into three campaigns, one `message.sent` each, through one engine (the "
            "budget is its share of GUARD_MAX_DEDUPE_KEYS):",
            "",
            table(
                ["message ids", "budget", "keys at the end", "forgotten early", "RSS growth", "peak", "per key"],
                [
                    [
                        f"{run['ids']:,}",
                        f"{run['budget']:,}" if run["budget"] else "none",
                        f"{run['keys']:,}",
                        f"{run['evicted']:,}",
                        fmt(run["rss_delta"] / KIB / KIB, "MiB", 1),
                        fmt(run["rss_peak_delta"] / KIB / KIB, "MiB", 1),
                        f"{run['per_key']:.1f} B",
                    ]
                    for run in id_floods
                ],
            ),
            "",
        ]
    return out
