"""`python -m bench.scopes`: what rules over a sending domain cost the guard, end to end, on real brokers.

Workload: bench/workload.py's traffic (`--scale` of its 50,000 small campaigns, its 100 large ones), every
campaign sending from one of `--senders` domains (`data.from`: team@sender<N>.example, in turn), produced once
to a 4-partition topic of each broker.

Contenders, on the same topic, in pairs whose order alternates (`--repeats` pairs), each in a fresh group and
process (bench/contenders.py, dry run, the default engine):
* `campaign rules`: the guard with the shipped rules (rules/), as `guard run` deploys it;
* `+ domain rules`: the same and rules/domains/sender-domain.yaml. Each counted event is forwarded, keyed by its
  domain, to the guard's scope topic, read back by the same group and counted by the engine of scopes; the
  contender is done once it has handled every input record and every forwarded one.

Printed: events per second and per CPU second (of the guard's process, all threads) of each, and within each
pair the ratio `+ domain rules` / `campaign rules`: the share of the campaign-only rate left with domain rules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import workload
from bench.throughput import contender

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def broker(name: str) -> Iterator[str]:
    if name == "tansu":
        from guard.testing.broker import EmbeddedBroker

        with EmbeddedBroker() as embedded:
            yield embedded.bootstrap_servers
    else:
        from guard.testing.apache_kafka import ApacheKafka, kafka_classpath

        with ApacheKafka(classpath=kafka_classpath()) as node:
            yield node.bootstrap_servers


def pairs(bootstrap: str, traffic: workload.Workload, repeats: int, idempotence: bool) -> list[dict[str, Any]]:
    topic = workload.new_name("scopes")
    asyncio.run(workload.create_topic(bootstrap, topic))
    expect = sum(asyncio.run(workload.produce(bootstrap, topic, traffic.records)).values())
    forwarded = sum(1 for record in traffic.records if b'"campaign.started"' not in record.value)
    with tempfile.TemporaryDirectory() as scratch:
        both = Path(scratch)
        (both / "default.yaml").write_text((ROOT / "rules" / "default.yaml").read_text())
        (both / "sender-domain.yaml").write_text((ROOT / "rules" / "domains" / "sender-domain.yaml").read_text())
        options = {"idempotence": str(idempotence).lower()}
        runs = []
        for number in range(repeats):
            order = ("campaign", "domain") if number % 2 == 0 else ("domain", "campaign")
            run: dict[str, Any] = {}
            for kind in order:
                extra = {"rules": str(both), "forwarded": str(forwarded)} if kind == "domain" else {}
                run[kind] = contender("guard", bootstrap, topic, expect, 600, **options, **extra)
            if run["campaign"].get("cpu_rate") and run["domain"].get("cpu_rate"):
                run["ratio_cpu"] = run["domain"]["cpu_rate"] / run["campaign"]["cpu_rate"]
                run["ratio"] = run["domain"]["rate"] / run["campaign"]["rate"]
            runs.append(run)
            print(summary(run), flush=True)
    return runs


def summary(run: dict[str, Any]) -> str:
    def rate(result: dict[str, Any]) -> str:
        if result.get("error"):
            return f"error: {result['error'].splitlines()[0]}"
        return f"{result['rate']:,.0f} /s, {result['cpu_rate']:,.0f} per CPU s"

    ratio = f"; ratio {run['ratio']:.2f}, per CPU s {run['ratio_cpu']:.2f}" if "ratio_cpu" in run else ""
    return f"  campaign rules {rate(run['campaign'])}; + domain rules {rate(run['domain'])}{ratio}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scopes", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--senders", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--brokers", default="tansu,kafka")
    args = parser.parse_args(argv)
    traffic = workload.build(scale=args.scale, senders=args.senders)
    print(f"workload: {traffic.describe()}, sent from {args.senders} domains", flush=True)
    for name in args.brokers.split(","):
        print(f"{name}:", flush=True)
        with broker(name) as bootstrap:
            runs = pairs(bootstrap, traffic, args.repeats, idempotence=name != "tansu")
        ratios = [run["ratio_cpu"] for run in runs if "ratio_cpu" in run]
        if ratios:
            print(f"  per CPU s, + domain rules / campaign rules: median {statistics.median(ratios):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
