"""The throughput section: bare aiokafka, the guard, Quix Streams and the JVM peers on the same topic."""

from __future__ import annotations

from typing import Any

from bench.report.format import failed, fmt, fmt_spread, quoted, spread, table
from bench.streams import LABELS as JVM_LABELS

JVM_KINDS = {"streams_tumbling": "tumbling", "streams_ring": "ring"}


def throughput_section(results: dict[str, Any], broker: str = "Tansu") -> list[str]:
    throughput = results.get("throughput")
    if not throughput:
        return []
    if "error" in throughput:
        return failed(f"Throughput on {broker}", throughput["error"])
    runs = throughput["runs"]
    cut = throughput.get("repeats_asked", len(runs)) > len(runs)
    out = [
        f"## Throughput on {broker}",
        "",
        f"{len(runs)} repeat(s){' (cut by the time budget)' if cut else ''}; in each, "
        f"the contenders read the same {throughput['records']:,}-record topic "
        "one after the other, each in a fresh process and consumer group. **rate** = records / s from the first "
        "record handled to the last (steady state; excludes the group join, which Tansu stretches to half the "
        "session timeout); **per CPU s** = records per CPU second of the consumer's process over the same span "
        "(robust to other load on the machine; the broker's CPU is not counted); **start -> done / committed** "
        "is wall time from process start (imports excluded) to the last record handled / to its offsets committed. "
        "Median (min – max).",
        "",
    ]
    rows = []
    engine = next((run["guard"].get("engine") for run in runs if run["guard"].get("engine")), "default")
    labels = {
        "bare": "bare aiokafka (ceiling)",
        "confluent": "confluent-kafka (librdkafka) + msgspec decode per record (second ceiling)",
        "guard": f"guard (Service, dry run), {engine} engine",
        "guard_python": "guard (Service, dry run), Python engine",
        "quix": "Quix Streams, 1 h tumbling",
        **{kind: f"{JVM_LABELS[mode]} (after warm-up)" for kind, mode in JVM_KINDS.items()},
    }
    labels = {kind: label for kind, label in labels.items() if any(kind in run for run in runs)}  # older runs
    for kind, label in labels.items():
        skipped = next((run[kind]["skipped"] for run in runs if "skipped" in run.get(kind, {})), None)
        got = [run[kind] for run in runs if kind in run and not {"error", "skipped"} & run[kind].keys()]
        if skipped or not got:
            rows.append([label, f"skipped: {skipped}" if skipped else "failed", "", "", "", "", ""])
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
    hopping = throughput.get("hopping") or {}
    if hopping:
        rows.append(jvm_limited_row(hopping))
    partial = [run["quix"] for run in runs if "error" not in run["quix"] and not run["quix"].get("finished", True)]
    if partial:
        rows[list(labels).index("quix")][0] += (
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
                fmt(run.get("compiled_vs_python_cpu"), "x", 2),
                fmt(run.get("guard_vs_streams_tumbling_cpu"), "x", 2),
                fmt(run.get("guard_vs_streams_ring_cpu"), "x", 2),
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
                "guard / guard with the Python engine (per CPU s)",
                "guard / Streams tumbling (per CPU s)",
                "guard / Processor-API ring (per CPU s)",
            ],
            ratio_rows,
        ),
        "",
    ]
    out += jvm_notes(runs, hopping)
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
    for kind in labels:
        for number, run in enumerate(runs, 1):
            if "error" in run.get(kind, {}):
                out += [f"**{kind}, repeat {number} failed:**", "", *quoted(run[kind]["error"])]
    if "error" in hopping:
        out += ["**Kafka Streams hopping window failed:**", "", *quoted(hopping["error"])]
    if "error" in sliding:
        out += ["**Quix Streams sliding window failed:**", "", *quoted(sliding["error"])]
    elif sliding and sliding.get("campaigns_over_threshold") is not None:
        out += [
            "Quix Streams' sliding window updates every window of the key that the record falls in, so its cost per "
            "record grows with the key's events inside the hour; the 100 large campaigns (1,000-3,000 sends over "
            "two hours) make it crawl. The ratios above therefore use the tumbling window, Quix's fastest 1 h window, "
            "although the guard's windows slide (in 1/60 steps).",
            "",
        ]
    return out


def jvm_limited_row(hopping: dict[str, Any]) -> list[str]:
    """Kafka Streams' hopping window: one run, stopped at its time limit."""
    label = f"{JVM_LABELS['hopping']} (after warm-up)"
    if "skipped" in hopping:
        return [label, f"skipped: {hopping['skipped']}", "", "", "", "", ""]
    if "error" in hopping:
        return [label, "failed", "", "", "", "", ""]
    stopped = "" if hopping.get("finished") else f", stopped after {hopping['to_done_s']:.0f} s"
    return [
        f"{label[:-1]}; 1 run{stopped}: {hopping['records']:,} records)",
        fmt(hopping["rate"], "/s"),
        fmt(hopping["cpu_rate"], "/s"),
        fmt(hopping["cpu_share"], "%"),
        fmt(hopping["to_first_s"], "s", 1),
        fmt(hopping["to_done_s"], "s", 1) if hopping.get("finished") else "-",
        fmt(hopping["to_commit_s"], "s", 1) if hopping.get("finished") else "-",
    ]


def jvm_notes(runs: list[dict[str, Any]], hopping: dict[str, Any]) -> list[str]:
    """The JVM peers' warm-up: their rates over the whole run beside those after it."""
    rows = []
    for kind, mode in JVM_KINDS.items():
        got = [run[kind] for run in runs if kind in run and not {"error", "skipped"} & run[kind].keys()]
        rows += [_warmup_row(JVM_LABELS[mode], got)] if got else []
    if hopping and not {"error", "skipped"} & hopping.keys():
        rows.append(_warmup_row(JVM_LABELS["hopping"], [hopping]))
    if not rows:
        return []
    return [
        "The JVM peers (Kafka Streams 4.1.1 from Maven Central, each in a fresh JVM with G1 and C2, one stream "
        "thread; per CPU s counts all the JVM's threads) are rated above over the second half of the records they "
        "processed, after the warm-up (class loading, JIT compilation); from the first record:",
        "",
        table(
            ["contender", "rate, whole run", "per CPU s, whole run", "warm-up records", "campaigns over the rule"],
            rows,
        ),
        "",
    ]


def _warmup_row(label: str, got: list[dict[str, Any]]) -> list[str]:
    return [
        label,
        fmt_spread([r["whole_rate"] for r in got], "/s"),
        fmt_spread([r["whole_cpu_rate"] for r in got], "/s"),
        fmt_spread([r["warmup_records"] for r in got]),
        fmt_spread([r["campaigns_over_threshold"] for r in got]),
    ]
