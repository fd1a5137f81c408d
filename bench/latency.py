"""Decision latency: from producing the record that crosses a rule's line to the pause request
arriving at Leadterra, under a steady background load.

Workload: a real `guard run` process (not dry run; the shipped rules/) reads a fresh 4-partition
topic and calls a `LeadterraStandIn(create_unknown=True)` served by this process. A child process
produces a steady 20,000 events/s to that topic (guard.tools.generate traffic of 12,500 healthy
campaigns, seed 9, re-stamped with the current time as it goes, cycled). Meanwhile this process
injects crossings for fresh campaigns, 3 blocks of 40. A campaign's sequence is a start, 200
sends, then hard bounces; the crossing record is the first of them at which the shipped rules
decide to pause (found by running the guard's own Engine over the sequence, so it follows rule
changes). Everything before it is produced first; 0.2 s later the crossing record. The latency
of one injection is the stand-in's `received_at` of the campaign's pause request minus the wall
clock just before the crossing record was handed to the producer (same machine, same clock). It is split
at the guard's `decided_at` (from the `fired` record of the audit topic): produce -> decision
(fetch, decode, rules, the decision task getting the event loop) and decision -> request (the
`fired` audit write, acks=all, then the HTTP call). A canary injection first makes sure the guard
has joined its group and the whole path works. As a floor, two bare aiokafka consumers (own
groups, the guard's getmany settings; fetch_max_wait_ms 500 as the guard's aiokafka default, and
50) read the same topic meanwhile and report each record's delivery lag (getmany return minus
CreateTime): what the broker and client alone cost, and what a shorter fetch wait would save.

    python -m bench.latency load --bootstrap HOST:PORT --topic T --rate 20000 --seconds S
    python -m bench.latency control --bootstrap HOST:PORT --topic T --seconds S [--fetch-max-wait-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.child import ROOT, Background, emit, until_terminated
from bench.workload import PARTITIONS, create_topic, new_name

RATE = 20_000
CONTROL_WAITS = (500, 50)  # fetch_max_wait_ms of the bare consumers: aiokafka's default (the guard's), and low
BLOCKS, PER_BLOCK = 3, 40
STRAGGLERS = 20.0  # seconds to wait for the last pause requests after the last injection
GAP = 0.2  # seconds between the pre-produced evidence and the crossing record
SENDS = 200
_encode = msgspec.json.Encoder().encode


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(name: str, campaign: str, at: float, data: dict[str, Any]) -> bytes:
    return _encode({"event": name, "timestamp": _iso(at), "data": {"campaignId": campaign, **data}})


def injection(campaign: str, at: float, rules: Any) -> tuple[list[bytes], bytes, str]:
    """(evidence, crossing record, rule) for a fresh campaign: a start, SENDS sends, then hard
    bounces one at a time; the crossing record is the first at which the shipped rules decide to
    pause, found by running the guard's own Engine over the sequence (so it follows rule changes)."""
    from guard.engine import Engine, record_decisions

    values = [_event("campaign.started", campaign, at, {})]
    for n in range(SENDS):
        values.append(_event("message.sent", campaign, at, {"messageId": f"m{n}", "recipient": f"lead{n}@acme.com"}))
    for n in range(SENDS):
        data = {"messageId": f"m{n}", "recipient": f"lead{n}@acme.com", "bounceType": "hard"}
        values.append(_event("message.bounced", campaign, at, {**data, "bounceReason": "550 5.1.1 no such user"}))
    for position, decision in record_decisions(Engine(rules), ((value, at) for value in values)):
        if decision.action == "pause":
            return values[:position], values[position], decision.rule.name
    raise RuntimeError(f"no shipped rule pauses a campaign with {SENDS} sends, all hard-bounced")


# ----------------------------------------------------------------------------- the load child


async def load(bootstrap: str, topic: str, rate: int, seconds: float) -> dict[str, Any]:
    """Produce `rate` events/s for `seconds`, in 5 ms ticks, each record re-stamped to now."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    from guard.tools.generate import generate

    records = generate(9, 12_500, 0, start=time.time() - 3600, duration=3600.0, sends=(10, 20)).records
    marker = b'"timestamp":"'
    prepared = []
    for record in records:
        at = record.value.index(marker) + len(marker)
        key = record.key.encode()
        prepared.append((key, record.value[:at], record.value[at + 24 :], (murmur2(key) & 0x7FFFFFFF) % PARTITIONS))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    terminated = until_terminated()
    sent, pending, started = 0, [], time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds and not terminated.is_set():
            due = int(elapsed * rate)
            now = time.time()
            stamp, stamp_ms = _iso(now).encode(), int(now * 1000)
            batches: dict[int, Any] = {}
            for i in range(sent, due):
                key, head, tail, partition = prepared[i % len(prepared)]
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=head + stamp + tail, timestamp=stamp_ms) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=head + stamp + tail, timestamp=stamp_ms)
            for partition, batch in batches.items():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            sent = max(sent, due)
            if len(pending) > 200:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {"sent": sent, "seconds": time.monotonic() - started, "rate": sent / (time.monotonic() - started)}


async def control(
    bootstrap: str, topic: str, seconds: float, fetch_max_wait_ms: int = 500, warmup: float = 5.0
) -> dict[str, Any]:
    """The floor: a bare aiokafka consumer (the guard's getmany settings, aiokafka's defaults
    otherwise: fetch_max_wait_ms=500 unless told) on the same topic, measuring each record's
    delivery lag: wall clock when getmany returned it minus its CreateTime."""
    from aiokafka import AIOKafkaConsumer

    from guard.testing.broker import FAST_GROUP

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=new_name("latency-control"),
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **FAST_GROUP,
    )
    await consumer.start()
    terminated = until_terminated()
    lags: list[float] = []
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds and not terminated.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            if elapsed > warmup:
                lags.extend(now - record.timestamp / 1000 for records in batches.values() for record in records)
    finally:
        await consumer.stop()
    return summarize(lags) if lags else {"n": 0}


# ----------------------------------------------------------------------------- the benchmark


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summarize(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50": statistics.median(latencies),
        "p99": _percentile(latencies, 0.99),
        "max": max(latencies),
    }


async def run(
    bootstrap: str, timeout: float = 180.0, guard_command: list[str] | None = None, idempotence: bool = False
) -> dict[str, Any]:
    """`guard_command` replaces `guard run` (experiments with a patched guard); same environment.
    `idempotence`: the guard's KAFKA_ENABLE_IDEMPOTENCE (its default, true, where the broker supports it)."""
    from aiokafka import AIOKafkaProducer

    from guard.rules import load_rules
    from guard.testing.broker import FAST_GROUP
    from guard.testing.leadterra import LeadterraStandIn

    rules, rules_seen = load_rules(ROOT / "rules"), set()
    topic = new_name("latency")
    await create_topic(bootstrap, topic)
    async with LeadterraStandIn(create_unknown=True) as standin:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_ENABLE_IDEMPOTENCE": str(idempotence).lower(),
            "KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
            "KAFKA_HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
            "LEADTERRA_API_URL": standin.url,
            "LEADTERRA_API_KEY": standin.api_key,
            "GUARD_RULES": str(ROOT / "rules"),
            "GUARD_INPUT_TOPICS": topic,
            "GUARD_AUDIT_TOPIC": f"{topic}.audit",
            "GUARD_DLQ_TOPIC": f"{topic}.dlq",
            "GUARD_GROUP_ID": new_name("latency-guard"),
            "GUARD_HTTP_HOST": "127.0.0.1",
            "GUARD_HTTP_PORT": "0",
        }
        command = guard_command or [str(Path(sys.executable).parent / "guard"), "run"]
        guard = Background(command, "latency-guard", env).start()
        seconds = timeout  # at most; both children are asked to finish once the injections are done
        args = ["load", "--bootstrap", bootstrap, "--topic", topic, "--rate", str(RATE), "--seconds", f"{seconds:.0f}"]
        load_child = Background([sys.executable, "-m", "bench.latency", *args], "latency-load").start()
        controls = {}
        for wait in CONTROL_WAITS:
            args = ["control", "--bootstrap", bootstrap, "--topic", topic, "--seconds", f"{seconds:.0f}"]
            args += ["--fetch-max-wait-ms", str(wait)]
            command = [sys.executable, "-m", "bench.latency", *args]
            controls[wait] = Background(command, f"latency-control-{wait}").start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0)
        await producer.start()
        try:
            async with asyncio.timeout(timeout):
                run_id = uuid.uuid4().hex[:6]
                canary = await _inject(producer, topic, f"lat-{run_id}-canary", rules, rules_seen)
                await standin.wait_for_pauses(1, timeout=60, campaign_id=canary[0])
                cpu_before, wall_before = guard.cpu_seconds(), time.monotonic()
                injected = [
                    [
                        await _inject(producer, topic, f"lat-{run_id}-{block}-{k}", rules, rules_seen)
                        for k in range(PER_BLOCK)
                    ]
                    for block in range(BLOCKS)
                ]
                guard_cpu = (guard.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
                try:  # late pauses still count; "missed" means none arrived within STRAGGLERS s
                    await standin.wait_for_pauses(1 + BLOCKS * PER_BLOCK, timeout=STRAGGLERS)
                except TimeoutError:
                    pass
            floors = {wait: await asyncio.to_thread(child.finish) for wait, child in controls.items()}
            produced = await asyncio.to_thread(load_child.finish)
        finally:
            await producer.stop()
            guard.stop()
            load_child.stop()
            for child in controls.values():
                child.stop()
        requests = {r.campaign_id: r.received_at for r in reversed(standin.pause_requests())}
    decided = await decided_at(bootstrap, f"{topic}.audit", {c for block in injected for c, _, _ in block})
    blocks, missed, pooled, to_decision, to_request = [], 0, [], [], []
    for block in injected:
        latencies = [requests[c] - at for c, at, _ in block if c in requests]
        missed += len(block) - len(latencies)
        pooled.extend(latencies)
        blocks.append(summarize(latencies))
        for c, at, _ in block:
            if c in decided and c in requests:
                to_decision.append(decided[c] - at)
                to_request.append(requests[c] - decided[c])
    acks = [acked - at for block in injected for _, at, acked in block]
    return {
        "blocks": blocks,
        "pooled": summarize(pooled),
        "missed": missed,
        "injected": BLOCKS * PER_BLOCK,
        "produce_ack_p50": statistics.median(acks),
        "to_decision": summarize(to_decision) if to_decision else None,
        "decision_to_request": summarize(to_request) if to_request else None,
        "guard_cpu_share": guard_cpu,
        "rate": RATE,
        "load": produced,
        "controls": {str(wait): floor for wait, floor in floors.items()},
        "rules": sorted(rules_seen),
        "evidence": len(injection("lat-probe", time.time(), rules)[0]),
    }


async def decided_at(bootstrap: str, audit_topic: str, campaigns: set[str]) -> dict[str, float]:
    """campaign -> `timings.decided_at` of its `fired` audit record (when the guard decided)."""
    from aiokafka import AIOKafkaConsumer

    from guard.contracts.audit import read_audit

    consumer = AIOKafkaConsumer(audit_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 15
        while len(found) < len(campaigns) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = read_audit(record.value)  # the guard's own audit topic: anything else is a bug
                    if event.outcome == "fired" and event.campaign_id in campaigns:
                        found[event.campaign_id] = event.timings.decided_at.timestamp()
    finally:
        await consumer.stop()
    return found


async def _inject(
    producer: Any, topic: str, campaign: str, rules: Any, rules_seen: set[str]
) -> tuple[str, float, float]:
    """Evidence, a pause of GAP, then the crossing record; returns (campaign, produced at, acked at)."""
    key = campaign.encode()
    evidence, _, _ = injection(campaign, time.time(), rules)
    for value in evidence:
        await producer.send(topic, key=key, value=value)
    await producer.flush()
    await asyncio.sleep(GAP)
    at = time.time()
    _, crossing, rule = injection(campaign, at, rules)  # the same sequence, stamped now
    rules_seen.add(rule)
    await producer.send_and_wait(topic, key=key, value=crossing)
    return campaign, at, time.time()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency")
    parser.add_argument("what", choices=("load", "control"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=int, default=RATE)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=500)
    args = parser.parse_args()
    if args.what == "load":
        emit(asyncio.run(load(args.bootstrap, args.topic, args.rate, args.seconds)))
    else:
        emit(asyncio.run(control(args.bootstrap, args.topic, args.seconds, args.fetch_max_wait_ms)))


if __name__ == "__main__":
    main()
