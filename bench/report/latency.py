"""The decision latency section, and the latency floor of Tansu against Apache Kafka."""

from __future__ import annotations

from typing import Any

from bench.report.format import failed, fmt, fmt_spread, table


def latency_section(results: dict[str, Any], broker: str = "Tansu") -> list[str]:
    latency = results.get("latency")
    if not latency:
        return []
    if "error" in latency:
        return failed(f"Decision latency on {broker}", latency["error"])
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
