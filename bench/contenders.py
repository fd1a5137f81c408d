"""The consumers the throughput benchmark races, each run alone in a child process over the
same pre-produced topic (bench/workload.py) with a consumer group of its own:

* `bare`:  aiokafka, `getmany(max_records=5000)` in a loop, counting records: the ceiling of any
           aiokafka-based consumer in Python on this machine.
* `confluent`: librdkafka (confluent-kafka), `consume(5000)` in a loop, each value decoded with msgspec into
           the envelope's fields: a second ceiling, for a consumer that reads every record.
* `guard`: the real `guard.runtime.service.Service` (dry run, the shipped rules/, its own group), done when
           its `guard_records_total` (counted + replayed + too_old + ignored + dead_lettered)
           reaches the topic size, then until every partition's offset is committed. `--engine` sets
           GUARD_ENGINE (the race runs it with the compiled core and with the Python engine).
* `quix`:  the peer, Quix Streams: per campaign, the hard-bounce rate over a 1 h tumbling or
           sliding window (`.agg(sent=Sum, hard=Sum).current()`), filtered on the guard's
           `hard-bounce-rate` rule (>= 6 % of >= 200 sends). Every record goes through the window,
           as every record goes through the guard's windows. Quix defaults otherwise
           (at-least-once, changelog topics, RocksDB state in a scratch directory).

The JVM peers (Kafka Streams' windows and a Processor-API ring, the same rule) are in bench/streams.py.

Each prints one result: seconds from start to the first record, to the last record processed, to
the commit, and records/s from the first record to the last (the steady rate, free of the group
join that Tansu delays by half the session timeout). `--limit S` stops Quix after S seconds and
reports the rate over the records it got through (its sliding window cannot finish the topic).

    python -m bench.contenders {bare|confluent|guard|quix} --bootstrap HOST:PORT --topic T --group G --expect N
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.child import ROOT, emit

OUTCOMES = ("counted", "replayed", "too_old", "ignored", "dead_lettered")
POLL_SECONDS = 0.005


def cpu() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _result(
    expect: int,
    started: float,
    first: float,
    first_count: int,
    done: float,
    committed: float,
    cpu_used: float,
    **extra: Any,
) -> dict[str, Any]:
    """`cpu_used`: CPU seconds between the first record and the last; records per CPU second is
    less sensitive than records per second to other work on a shared machine."""
    return {
        "records": expect,
        "to_first_s": first - started,
        "to_done_s": done - started,
        "to_commit_s": committed - started,
        "rate": (expect - first_count) / (done - first) if done > first else None,
        "cpu_rate": (expect - first_count) / cpu_used if cpu_used > 0 else None,
        "cpu_share": cpu_used / (done - first) if done > first else None,
        **extra,
    }


async def bare(bootstrap: str, topic: str, group: str, expect: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from guard.testing.broker import FAST_GROUP

    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP,
    )
    await consumer.start()
    try:
        count, first, first_count = 0, 0.0, 0
        while count < expect:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                count += len(records)
            if not first and count:
                first, first_count, cpu_first = time.perf_counter(), count, cpu()
        done, cpu_done = time.perf_counter(), cpu()
        await consumer.commit()
        committed = time.perf_counter()
    finally:
        await consumer.stop()
    return _result(expect, started, first, first_count, done, committed, cpu_done - cpu_first)


class _Data(msgspec.Struct):
    campaignId: str | None = None
    messageId: str | None = None
    bounceType: str | None = None


class _Envelope(msgspec.Struct):
    """What the second ceiling decodes of every record: the envelope's fields a guard needs."""

    event: str
    data: _Data
    timestamp: str | None = None


def confluent(bootstrap: str, topic: str, group: str, expect: int) -> dict[str, Any]:
    from confluent_kafka import Consumer

    decode = msgspec.json.Decoder(_Envelope).decode
    started = time.perf_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        count, first, first_count, cpu_first = 0, 0.0, 0, 0.0
        while count < expect:
            for message in consumer.consume(5000, 0.2):
                if message.error() is None:
                    decode(message.value())
                    count += 1
            if not first and count:
                first, first_count, cpu_first = time.perf_counter(), count, cpu()
        done, cpu_done = time.perf_counter(), cpu()
        consumer.commit(asynchronous=False)
        committed = time.perf_counter()
    finally:
        consumer.close()
    return _result(expect, started, first, first_count, done, committed, cpu_done - cpu_first)


def guard_service(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    dry_run: bool = True,
    leadterra: Any = None,
    idempotence: bool = False,
    rules: Path | None = None,
    **options: Any,
):
    """The Service as `guard run` builds it, with the shipped rules (or `rules`). `idempotence`: the guard's
    default, on brokers that support it (Tansu does not). `options`: further GuardSettings, e.g.
    state_topic and checkpoint_interval (checkpoints are off unless both are given)."""
    from guard.rules import load_rules
    from guard.runtime.service import Service
    from guard.runtime.settings import GuardSettings, KafkaSettings, LeadterraSettings, Settings
    from guard.testing.broker import FAST_GROUP

    rules_path = rules or ROOT / "rules"
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=idempotence, **FAST_GROUP),
        leadterra=leadterra or LeadterraSettings(),
        guard=GuardSettings(
            rules=rules_path,
            input_topics=(topic,),
            audit_topic=f"{topic}.audit",
            dlq_topic=f"{topic}.dlq",
            scope_topic=f"{group}.scopes",  # its own: a pair's other run must not read its forwards
            group_id=group,
            dry_run=dry_run,
            http_host="127.0.0.1",
            http_port=0,
            **({"checkpoint_interval": 0} | options),
        ),
    )
    return Service(settings, load_rules(rules_path))


def handled(service: Any) -> int:
    """Input records the service is done with, from its guard_records_total (collects the whole
    registry: call it to check, not in a tight loop)."""
    registry = service.metrics.registry
    return int(sum(registry.get_sample_value("guard_records_total", {"outcome": o}) or 0 for o in OUTCOMES))


class HandleClock:
    """Times the pipeline's batches from outside: wraps `Pipeline.handle` (the class attribute, in
    this child only) to note when the first batch and the batch that completes `expect` records
    were handled, and the longest the event loop went without running other tasks."""

    def __init__(self, expect: int, topics: set[str]) -> None:
        from guard.runtime.pipeline import Pipeline

        self.expect, self.count, self.first, self.first_count, self.done = expect, 0, 0.0, 0, 0.0
        self.cpu_first = self.cpu_done = 0.0
        self.max_stall = 0.0
        original = Pipeline.handle
        clock = self

        async def handle(pipeline: Any, tp: Any, records: Any, *more: Any) -> None:
            await original(pipeline, tp, records, *more)
            if records and pipeline.owns(tp) and tp.topic in topics:
                clock.count += len(records)
                now = time.perf_counter()
                if not clock.first:
                    clock.first, clock.first_count, clock.cpu_first = now, clock.count, cpu()
                if clock.count >= clock.expect and not clock.done:
                    clock.done, clock.cpu_done = now, cpu()

        Pipeline.handle = handle  # type: ignore[method-assign]

    async def watch_loop(self) -> None:
        """A task that wants to run every 5 ms: its longest wait is how long the loop was held."""
        last = time.perf_counter()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            now = time.perf_counter()
            self.max_stall = max(self.max_stall, now - last - POLL_SECONDS)
            last = now


async def guard(
    bootstrap: str, topic: str, group: str, expect: int, idempotence: bool = False, forwarded: int = 0, **options: Any
) -> dict[str, Any]:
    """`options`: further GuardSettings (see guard_service). `forwarded`: the records the guard forwards to its
    scope topic (rules over a sender or domain), read back and counted before it is done; 0: none are expected."""
    from guard.telemetry.logs import configure_logging

    configure_logging("INFO")  # as `guard run`: JSON lines on stderr (the child's log file)
    clock = HandleClock(expect + forwarded, {topic, f"{group}.scopes"} if forwarded else {topic})
    started = time.perf_counter()
    service = guard_service(bootstrap, topic, group, idempotence=idempotence, **options)
    running = asyncio.create_task(service.run())
    watcher = asyncio.create_task(clock.watch_loop())
    try:
        while not clock.done:
            if running.done():
                running.result()
                raise RuntimeError("the service stopped before handling every record")
            await asyncio.sleep(POLL_SECONDS)
        while service.pipeline.committable():  # committed every commit_interval (1 s)
            await asyncio.sleep(POLL_SECONDS)
        committed = time.perf_counter()
        if handled(service) < expect:
            raise RuntimeError(f"guard_records_total says {handled(service)} records, the pipeline {clock.count}")
        registry = service.metrics.registry
        outcomes = {o: registry.get_sample_value("guard_records_total", {"outcome": o}) for o in OUTCOMES}
        decisions = sum(
            sample.value
            for metric in service.metrics.decisions.collect()
            for sample in metric.samples
            if sample.name == "guard_decisions_total"
        )
    finally:
        watcher.cancel()
        service.stop()
        async with asyncio.timeout(60):
            await running
    checkpoints = {  # with checkpoints on, the stop wrote one of every partition
        "written": registry.get_sample_value("guard_checkpoints_total", {"result": "written"}) or 0,
        "seconds": registry.get_sample_value("guard_checkpoint_seconds_sum") or 0,
    }
    return _result(
        expect,
        started,
        clock.first,
        clock.first_count,
        clock.done,
        committed,
        clock.cpu_done - clock.cpu_first,
        outcomes={o: int(v) for o, v in outcomes.items() if v},
        decisions=int(decisions),
        loop_max_stall_s=clock.max_stall,
        checkpoints=checkpoints,
        engine=service.kinds.name,
    )


def quix(bootstrap: str, topic: str, group: str, expect: int, window: str, limit: float) -> dict[str, Any]:
    from quixstreams import Application
    from quixstreams.dataframe.windows import Sum

    state_dir = Path(tempfile.mkdtemp(prefix="quix-state-", dir=_scratch()))
    progress = {"count": 0, "first": 0.0, "alerts": set()}
    app: Application | None = None

    def processed(topic_name: str, partition: int, offset: int) -> None:
        progress["count"] += 1
        if progress["count"] == 1:
            progress["first"], progress["cpu_first"] = time.perf_counter(), cpu()
        if progress["count"] >= expect or time.perf_counter() - started > limit:
            if "done" not in progress:
                progress["done"], progress["cpu_done"] = time.perf_counter(), cpu()
            app.stop()

    started = time.perf_counter()
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        # Tansu holds each JoinGroup reply for half the session timeout (librdkafka default 45 s);
        # 6 s is also Apache Kafka's smallest by default (group.min.session.timeout.ms)
        consumer_extra_config={"session.timeout.ms": 6000},
        on_message_processed=processed,
        loglevel="WARNING",
    )
    try:
        sdf = app.dataframe(app.topic(topic, value_deserializer="json", key_deserializer="str"))
        sdf = sdf.apply(
            lambda event: {
                "sent": 1 if event["event"] == "message.sent" else 0,
                "hard": 1 if event["event"] == "message.bounced" and event["data"].get("bounceType") == "hard" else 0,
            }
        )
        hour = 3_600_000
        windowed = sdf.tumbling_window(duration_ms=hour) if window == "tumbling" else sdf.sliding_window(hour)
        sdf = windowed.agg(sent=Sum("sent"), hard=Sum("hard")).current()
        sdf = sdf.filter(lambda w: w["sent"] >= 200 and w["hard"] >= 0.06 * w["sent"])
        sdf = sdf.update(lambda w, key, *_: progress["alerts"].add(key), metadata=True)
        app.run()
        committed = time.perf_counter()  # run() returns after the final checkpoint (commit)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if "done" not in progress:
        raise RuntimeError(f"Quix Streams stopped after {progress['count']} of {expect} records")
    result = _result(
        progress["count"],
        started,
        progress["first"],
        1,
        progress["done"],
        committed,
        progress["cpu_done"] - progress["cpu_first"],
        window=window,
        campaigns_over_threshold=len(progress["alerts"]),
    )
    result["finished"] = progress["count"] >= expect
    return result


def _scratch() -> Path:
    path = ROOT / "bench" / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders")
    parser.add_argument("kind", choices=("bare", "confluent", "guard", "quix"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--window", choices=("tumbling", "sliding"), default="tumbling")
    parser.add_argument("--limit", type=float, default=float("inf"), help="quix: stop after this many seconds")
    parser.add_argument("--idempotence", choices=("true", "false"), default="false", help="guard: idempotent producer")
    parser.add_argument("--state-topic", help="guard: checkpoints to this topic (with --checkpoint-interval)")
    parser.add_argument("--checkpoint-interval", type=float, default=0.0, help="guard: seconds between checkpoints")
    parser.add_argument("--max-campaigns", type=int, help="guard: GUARD_MAX_CAMPAIGNS")
    parser.add_argument("--engine", choices=("auto", "python", "compiled"), default="auto", help="guard: GUARD_ENGINE")
    parser.add_argument("--rules", type=Path, help="guard: GUARD_RULES (default: the shipped rules/)")
    parser.add_argument("--forwarded", type=int, default=0, help="guard: records it forwards to its scope topic")
    args = parser.parse_args()
    options: dict[str, Any] = {"checkpoint_interval": args.checkpoint_interval, "engine": args.engine}
    if args.rules:
        options["rules"] = args.rules
    if args.forwarded:
        options["forwarded"] = args.forwarded
    if args.state_topic:
        options["state_topic"] = args.state_topic
    if args.max_campaigns:
        options["max_campaigns"] = args.max_campaigns
    if args.kind == "bare":
        result = asyncio.run(bare(args.bootstrap, args.topic, args.group, args.expect))
    elif args.kind == "confluent":
        result = confluent(args.bootstrap, args.topic, args.group, args.expect)
    elif args.kind == "guard":
        idempotence = args.idempotence == "true"
        result = asyncio.run(guard(args.bootstrap, args.topic, args.group, args.expect, idempotence, **options))
    else:
        result = quix(args.bootstrap, args.topic, args.group, args.expect, args.window, args.limit)
    emit(result)


if __name__ == "__main__":
    main()
