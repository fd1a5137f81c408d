"""`python -m bench`: every benchmark of the guard, on this machine, in one go (~15-18 minutes on
2 cores), then a table on stdout and bench/RESULTS.md.

1. workload   ~1M seeded events (bench/workload.py) produced once to each broker: the embedded Tansu,
              and a single-node Apache Kafka (KRaft, from Maven Central jars, guard/testing/apache_kafka.py)
2. throughput bare aiokafka and confluent-kafka vs the guard vs Quix Streams and Kafka Streams (the JVM peers,
              bench/streams.py) on that topic, 3 repeats (throughput.py), per broker
3. recovery   restart -> ready with and without checkpoints, over 1M and 5M events of history; checkpoint size
              and time; throughput with checkpoints on / off (recovery.py, its own topics), Tansu
4. profile    py-spy over the guard consuming that topic (profile.py), Tansu
5. latency    a live `guard run` at 20k events/s, crossings injected, pause requests timed (latency.py), per broker
6. memory     state per active campaign at 10k and 100k campaigns, no Kafka (memory.py)

On Apache Kafka the guard runs with its default idempotent producer (Tansu cannot). When Java 17+ or
Maven is missing, the Kafka half and the JVM peers are left out and the report says why.

Options: --repeats N (default 3), --scale F (shrinks the workload's small campaigns, e.g. 0.1 for
a quick check), --only SECTION[,SECTION...], --recovery-sizes N[,N...] (events of history, default
1M and 5M), --brokers tansu,kafka (a partial run writes
bench/.cache/RESULTS.partial.md and leaves RESULTS.md alone), --report-only (rewrite RESULTS.md
from the last full run's figures, e.g. after editing bench/profile_notes.md), --remember (add the
last full run's headline figures to bench/history.json, the before/after table). Every child process
has a timeout; brokers and children are stopped on the way out, Ctrl-C included. Raw figures: bench/.cache/results.json,
children's logs: bench/.cache/logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bench import latency, memory, profile, recovery, report, throughput, workload
from bench.child import CACHE, ChildFailed

SECTIONS = ("throughput", "recovery", "profile", "latency", "memory")
BROKERS = ("tansu", "kafka")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--brokers", default=",".join(BROKERS), help=f"comma-separated, of: {', '.join(BROKERS)}")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--recovery-sizes",
        default=",".join(str(size) for size in recovery.SIZES),
        help="comma-separated events of history for the recovery section",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite RESULTS.md from bench/.cache/results.json, run nothing"
    )
    parser.add_argument(
        "--remember", action="store_true", help="add the last full run's headline figures to bench/history.json"
    )
    args = parser.parse_args()
    if args.report_only:
        print(report.write(json.loads((CACHE / "results.json").read_text())))
        return 0
    if args.remember:
        report.remember(json.loads((CACHE / "results.json").read_text()))
        return 0
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    brokers = [name.strip() for name in args.brokers.split(",") if name.strip()]
    if set(brokers) - set(BROKERS):
        parser.error(f"unknown brokers: {', '.join(sorted(set(brokers) - set(BROKERS)))}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": report.machine(),
        "errors": [],
        "sections": {},
    }
    CACHE.mkdir(parents=True, exist_ok=True)

    def section(name: str, work: Any, into: dict[str, Any], broker: str) -> None:
        if name not in only:
            return
        label = name if broker == "tansu" else f"{name} ({broker})"
        print(f"[bench] {label} ({time.monotonic() - started:.0f} s in)", flush=True)
        load_before, clock = os.getloadavg()[0], time.monotonic()
        try:
            into[name] = work()
        except (ChildFailed, Exception) as error:  # one failed section must not lose the others
            into[name] = {"error": f"{type(error).__name__}: {error}"}
            results["errors"].append(f"{label}: {type(error).__name__}: {str(error).splitlines()[0]}")
            traceback.print_exc()
        results["sections"][label] = {
            "seconds": time.monotonic() - clock,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }

    traffic, generated = None, 0.0
    sizes = tuple(int(size) for size in args.recovery_sizes.split(","))
    if only & {"throughput", "profile"}:
        print("[bench] workload", flush=True)
        clock = time.perf_counter()
        traffic = workload.build(scale=args.scale)
        generated = time.perf_counter() - clock

    def measure(broker: str, bootstrap: str, into: dict[str, Any], latency_bootstrap: Any) -> None:
        """The sections on one broker. Tansu: all; Apache Kafka: throughput and latency (recovery and
        profile measure the guard, not the broker: once is enough)."""
        idempotence = broker != "tansu"  # the guard's default; Tansu rejects the idempotent producer
        if traffic is not None:
            topic = workload.new_name("events")
            asyncio.run(workload.create_topic(bootstrap, topic))
            clock = time.perf_counter()
            counts = asyncio.run(workload.produce(bootstrap, topic, traffic.records))
            produced = time.perf_counter() - clock
            expect = sum(counts.values())
            ends = asyncio.run(workload.high_watermarks(bootstrap, topic))
            if sum(ends.values()) != expect:
                raise RuntimeError(f"produced {expect} records but the partitions end at {ends}")
            into["workload"] = {
                "description": traffic.describe(),
                "records": expect,
                "partitions": counts,
                "generate_s": generated,
                "produce_s": produced,
                "produce_rate": expect / produced,
            }
            section(
                "throughput", lambda: throughput.run(bootstrap, topic, expect, args.repeats, idempotence), into, broker
            )
            if broker == "tansu":
                section(
                    "profile",
                    lambda: profile.record(bootstrap, topic, workload.new_name("profile"), expect, 300),
                    into,
                    broker,
                )
        if broker == "tansu":
            section("recovery", lambda: recovery.run(bootstrap, sizes), into, broker)
        if "latency" in only:
            with latency_bootstrap() as where:
                section("latency", lambda: asyncio.run(latency.run(where, idempotence=idempotence)), into, broker)

    if "tansu" in brokers:
        from guard.testing.broker import EmbeddedBroker

        @contextlib.contextmanager
        def fresh_tansu() -> Iterator[str]:  # a fresh broker for latency: the big topic out of the way
            with EmbeddedBroker() as broker:
                yield broker.bootstrap_servers

        with EmbeddedBroker() as broker:
            measure("tansu", broker.bootstrap_servers, results, fresh_tansu)
    if "kafka" in brokers and only & {"throughput", "latency"}:
        from guard.testing.apache_kafka import KAFKA_VERSION, ApacheKafka, KafkaUnavailable, kafka_classpath

        kafka: dict[str, Any] = {"version": KAFKA_VERSION}
        results["kafka"] = kafka
        try:
            classpath = kafka_classpath()
        except KafkaUnavailable as why:
            kafka["unavailable"] = str(why)
            results["errors"].append(f"Apache Kafka: {str(why).splitlines()[0]}")
        else:
            clock = time.monotonic()
            with ApacheKafka(classpath=classpath) as node:
                kafka["ready_s"] = time.monotonic() - clock

                @contextlib.contextmanager
                def same_node() -> Iterator[str]:  # the big topic stays: Kafka serves a fresh one from its own log
                    yield node.bootstrap_servers

                measure("kafka", node.bootstrap_servers, kafka, same_node)
    traffic = None  # ~400 MB the memory section does not need
    section("memory", memory.run, results, "tansu")  # no broker involved

    results["elapsed"] = time.monotonic() - started
    results["fingerprint_end"] = report.fingerprint()
    results["commit_end"] = report.machine()["commit"]
    complete = only == set(SECTIONS) and set(brokers) == set(BROKERS)
    (CACHE / ("results.json" if complete else "results.partial.json")).write_text(
        json.dumps(results, indent=1, default=str)
    )
    target = report.RESULTS if complete else CACHE / "RESULTS.partial.md"  # a partial run keeps RESULTS.md
    print(report.write(results, target))
    print(f"\n[bench] wrote {target} in {results['elapsed'] / 60:.1f} minutes", flush=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
