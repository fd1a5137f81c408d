"""The profile section: py-spy over the guard consuming the throughput topic, with the notes on it."""

from __future__ import annotations

from typing import Any

from bench.child import ROOT
from bench.report.format import failed, fmt, table

NOTES = ROOT / "bench" / "profile_notes.md"


def profile_section(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile")
    if not profile:
        return []
    if "error" in profile:
        return failed("Profile", profile["error"])
    parsed, run = profile["profile"], profile["run"]
    out = [
        "## Profile",
        "",
        f"py-spy 100 Hz over the guard consuming the throughput topic (one run, {fmt(run.get('rate'), '/s')} under the "
        f"profiler); {parsed['samples']:,} samples of the running event loop, of which "
        f"{fmt(parsed['idle_share'], '%')} waiting for the network (idle, mostly the group join). "
        "Shares are of those samples.",
        "",
        "Self time (the function on top of the stack):",
        "",
        table(["share", "function"], [[fmt(share, "%", 1), f"`{name}`"] for name, share in parsed["self"][:15]]),
        "",
        "Inclusive time of the throughput path (the function anywhere on the stack):",
        "",
    ]
    wanted = [
        (name, share)
        for name, share in parsed["inclusive"]
        if ("guard/" in name or "aiokafka/" in name or "prometheus" in name) and share >= 0.01
    ]
    out += [table(["share", "function"], [[fmt(share, "%", 1), f"`{name}`"] for name, share in wanted[:20]]), ""]
    if parsed.get("guard_lines"):
        out += [
            "Hottest lines of guard/ (samples whose innermost guard/ frame is that line):",
            "",
            table(
                ["share", "line", "source"],
                [[fmt(share, "%", 1), where, f"`{source}`"] for where, share, source in parsed["guard_lines"][:15]],
            ),
            "",
        ]
    if NOTES.exists():
        out += [NOTES.read_text().strip(), ""]
    return out
