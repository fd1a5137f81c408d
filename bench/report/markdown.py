"""bench/RESULTS.md: the machine, the workload, the targets, then every section in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.child import ROOT
from bench.report.format import fmt, table
from bench.report.history import history_section
from bench.report.latency import floor_comparison, latency_section
from bench.report.memory import memory_section
from bench.report.profile import profile_section
from bench.report.recovery import recovery_section
from bench.report.targets import all_targets
from bench.report.throughput import throughput_section

RESULTS = ROOT / "bench" / "RESULTS.md"


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    changed = f"; uncommitted changes in {', '.join(c.split()[-1] for c in info['changed'])}" if info["changed"] else ""
    workload = results.get("workload", {})
    lines = [
        "# Benchmark results",
        "",
        f"`python -m bench` at {results['started']} UTC, {results['elapsed'] / 60:.1f} minutes in total. "
        "Written by bench/report/: run it again rather than editing by hand.",
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
