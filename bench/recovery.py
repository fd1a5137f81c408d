"""Recovery: how long a restarted guard takes to be ready, with and without checkpoints, against
the history behind its committed offsets.

Per history size (1M and 5M events; `SIZES`): 100,000 campaigns (`guard.tools.generate`, no bad ones,
sends spread so the events add up to the size) over 40 h of event time ending a minute ago, all
inside the shipped rules' look-back (the complaint rule's 48 h window). Produced once to a
4-partition Tansu topic. Then guards consume it in fresh groups, dry run, `GUARD_MAX_CAMPAIGNS`
200,000 (no campaign evicted), in two pairs (off-on, on-off): without checkpoints, and writing
them every CHECKPOINT_INTERVAL seconds to a compacted state topic (and on stop); the on/off
throughput ratio is taken within each pair, then averaged. A group of each kind then gets a
restarted guard (a new process: interpreter start and imports count) in `recover`: without
checkpoints it replays every record; with them it restores each partition's checkpoint and reads
nothing before it. Ready = `/readyz` ready after the partitions were assigned and replayed (or
restored). The checkpoints' size is read back from the state topic (every partition's newest,
summed); the time one takes is guard_checkpoint_seconds (snapshot encoding and writing, per
partition) of the checkpoints written at stop.

    python -m bench.recovery --bootstrap HOST:PORT --topic T --group G --expect N --t0 EPOCH [--state-topic S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.request
from typing import Any

from bench.child import ChildFailed, emit, run_child
from bench.contenders import HandleClock, guard_service, handled

POLL_SECONDS = 0.005
SIZES = (1_000_000, 5_000_000)
CAMPAIGNS = 100_000
HISTORY_HOURS = 40.0
MAX_CAMPAIGNS = 200_000
CHECKPOINT_INTERVAL = 10.0  # harsher than the default (60 s): the cost shows within a short run
SEED = 16


async def recover(
    bootstrap: str, topic: str, group: str, expect: int, t0: float, state_topic: str | None = None
) -> dict[str, Any]:
    """A restarted guard in `group`; `state_topic`: with checkpoints (else it replays `expect` records)."""
    from guard.telemetry.logs import configure_logging

    configure_logging("INFO")
    imported = time.time() - t0
    options: dict[str, Any] = {"max_campaigns": MAX_CAMPAIGNS}
    if state_topic:
        options |= {"state_topic": state_topic, "checkpoint_interval": 3600.0}  # restore; no write while measured
    clock = HandleClock(0 if state_topic else expect, {topic})  # notes when the pipeline has handled `expect` records
    service = guard_service(bootstrap, topic, group, **options)
    registry = service.metrics.registry
    running = asyncio.create_task(service.run())
    first_ready = assigned = replayed = ready = None
    try:
        async with asyncio.timeout(600):
            while ready is None:
                if running.done():
                    running.result()
                    raise RuntimeError("the service stopped while recovering")
                now = time.time() - t0
                is_ready = service.health.ready()[0]
                if is_ready and first_ready is None:
                    first_ready = now
                if service.assigned and assigned is None:
                    assigned = now
                if replayed is None and state_topic and assigned is not None:
                    restored = registry.get_sample_value("guard_checkpoints_total", {"result": "restored"}) or 0
                    replayed = now if restored >= service.assigned else None
                elif replayed is None and not state_topic and clock.done:
                    replayed = clock.done - time.perf_counter() + now
                if replayed is not None and is_ready:
                    ready = now
                await asyncio.sleep(POLL_SECONDS)
        url = f"http://127.0.0.1:{service.server.port}/readyz"
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).status)
        if not state_topic and handled(service) < expect:
            raise RuntimeError(f"guard_records_total says {handled(service)} records, the pipeline {clock.count}")
        outcomes = {
            o: int(registry.get_sample_value("guard_records_total", {"outcome": o}) or 0)
            for o in ("replayed", "counted", "too_old")
        }
        checkpoints = {
            r: int(registry.get_sample_value("guard_checkpoints_total", {"result": r}) or 0)
            for r in ("restored", "torn", "corrupt", "mismatch", "stale")
        }
        state_records_read = int(registry.get_sample_value("guard_checkpoint_records_read") or 0)
    finally:
        service.stop()
        async with asyncio.timeout(60):
            await running
    return {
        "imported_s": imported,
        "first_ready_s": first_ready,
        "assigned_s": assigned,
        "replayed_s": replayed,
        "ready_s": ready,
        "readyz_status": status,
        "outcomes": outcomes,
        "checkpoints": checkpoints,
        "state_records_read": state_records_read,  # the state topic's tail the restore read
        "replay_rate": expect / (replayed - assigned) if replayed and assigned and not state_topic else None,
    }


# --------------------------------------------------------------------------- the parent side


def run(bootstrap: str, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    return {"sizes": [history(bootstrap, size) for size in sizes], "campaigns": CAMPAIGNS, "hours": HISTORY_HOURS}


def history(bootstrap: str, size: int) -> dict[str, Any]:
    """One history size: produce, consume paired (checkpoints off / on), restart each group."""
    from bench import throughput, workload
    from guard.tools.generate import generate

    clock = time.perf_counter()
    per_campaign = size / CAMPAIGNS / 1.05  # guard.tools.generate draws ~1.05 events per send
    sends = (max(1, round(per_campaign * 0.9)), max(2, round(per_campaign * 1.1)))
    end = time.time() - 60.0
    records = generate(
        SEED, CAMPAIGNS, 0, start=end - HISTORY_HOURS * 3600, duration=HISTORY_HOURS * 3600, sends=sends
    ).records
    generated = time.perf_counter() - clock
    topic, state = workload.new_name("recovery"), workload.new_name("state")
    asyncio.run(workload.create_topic(bootstrap, topic))
    asyncio.run(create_state_topic(bootstrap, state))
    clock = time.perf_counter()
    expect = sum(asyncio.run(workload.produce(bootstrap, topic, list(records))).values())
    produced = time.perf_counter() - clock
    del records
    common = {"idempotence": "false", "max-campaigns": str(MAX_CAMPAIGNS)}
    checkpointing = {"state-topic": state, "checkpoint-interval": str(CHECKPOINT_INTERVAL)}

    def consume(checkpoints: bool) -> dict[str, Any]:
        options = common | checkpointing if checkpoints else common
        return throughput.contender("guard", bootstrap, topic, expect, 900, **options)

    # two pairs, off-on then on-off, so neither side always runs first on a warming machine
    pairs = []
    for first in (False, True):
        runs = {first: consume(first)}
        runs[not first] = consume(not first)
        pairs.append({"off": runs[False], "on": runs[True]})
    on, off = pairs[-1]["on"], pairs[0]["off"]  # the restarts' groups: the last on and the first off
    ratios = [
        (pair["on"]["rate"] / pair["off"]["rate"], pair["on"]["cpu_rate"] / pair["off"]["cpu_rate"])
        for pair in pairs
        if pair["on"].get("rate") and pair["off"].get("rate")
    ]
    result: dict[str, Any] = {
        "events": expect,
        "sends_per_campaign": sends,
        "generate_s": generated,
        "produce_s": produced,
        "pairs": pairs,
        "off": off,
        "on": on,
    }
    if ratios:
        result["rate_ratio"] = statistics.mean(ratio for ratio, _ in ratios)
        result["cpu_rate_ratio"] = statistics.mean(ratio for _, ratio in ratios)
    result["state_bytes"] = asyncio.run(state_bytes(bootstrap, state, on["group"], topic))
    for mode, group, state_topic in (("restart_off", off["group"], None), ("restart_on", on["group"], state)):
        args = ["--bootstrap", bootstrap, "--topic", topic, "--group", group, "--expect", str(expect)]
        if state_topic:
            args += ["--state-topic", state_topic]
        try:
            result[mode] = run_child("bench.recovery", [*args, "--t0", str(time.time())], 900, f"{mode}-{size}")
        except ChildFailed as error:
            result[mode] = {"error": str(error)}
    return result


async def create_state_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


async def state_bytes(bootstrap: str, state: str, group: str, topic: str) -> dict[str, int]:
    """Each input partition's newest checkpoint size in the state topic."""
    from aiokafka import AIOKafkaProducer, TopicPartition

    from guard.runtime.checkpoints import Checkpoint, CheckpointStore
    from guard.runtime.settings import KafkaSettings

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)  # the store's writer, not used to read
    await producer.start()
    try:
        store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), producer, state, group)
        found = await store.load([TopicPartition(topic, p) for p in range(4)])
    finally:
        await producer.stop()
    return {str(tp.partition): len(c.data) for tp, c in found.items() if isinstance(c, Checkpoint)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--t0", type=float, required=True, help="time.time() when the parent started this process")
    parser.add_argument("--state-topic", help="restore from the checkpoints in this topic")
    args = parser.parse_args()
    emit(asyncio.run(recover(args.bootstrap, args.topic, args.group, args.expect, args.t0, args.state_topic)))


if __name__ == "__main__":
    main()
