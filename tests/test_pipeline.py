"""Pipeline.handle on its own: records in, counted outcomes and decisions out (no broker needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from guard.engine import Decision
from guard.rules import load_rules
from guard.runtime.pipeline import Pipeline
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent, started

RULES = Path(__file__).parent.parent / "rules"
TP = TopicPartition("events", 0)


class Decisions:
    """The dispatcher's side: keeps what it is given and records it at once."""

    def __init__(self) -> None:
        self.submitted: list[Decision] = []

    def submit(self, decision: Decision, on_recorded: Callable[[], None], audit_read: object = None) -> None:
        self.submitted.append(decision)
        on_recorded()


class NoDeadLetters:
    async def send(self, record: object, reason: str) -> asyncio.Future:
        raise AssertionError(f"nothing here is malformed, got {reason}")


def records(values: list[bytes], first_offset: int = 0) -> list[ConsumerRecord]:
    now_ms = int(time.time() * 1000)
    return [
        ConsumerRecord(TP.topic, TP.partition, first_offset + n, now_ms, 0, b"camp", value, None, 4, len(value), ())
        for n, value in enumerate(values)
    ]


def outcome(metrics: Metrics, name: str) -> float:
    return metrics.records.labels(name)._value.get()


async def test_records_delivered_again_within_an_assignment_count_once() -> None:
    """The consumer going back within an assignment (a fetch reset) must not count evidence twice
    nor take a decision twice; the engine's dedupe cannot tell when a campaign.started among the
    records starts the campaign afresh."""
    metrics, decisions = Metrics(), Decisions()
    pipeline = Pipeline(load_rules(RULES), decisions, NoDeadLetters(), metrics, dedupe_horizon=3 * 3600)
    pipeline.assign(TP, committed=None, since_ms=0)
    start = time.time() - 600
    values = [started("camp", start)]
    for n in range(300):  # a list gone bad: every fourth send bounces
        values.append(sent("camp", start + 1 + n))
        if n % 4 == 0:
            values.append(bounced("camp", start + 1.5 + n))
    stream = records(values)
    await pipeline.handle(TP, stream[:250])
    await pipeline.handle(TP, stream)  # from the start again, then the rest
    assert outcome(metrics, "counted") == len(stream)
    assert outcome(metrics, "redelivered") == 250
    await pipeline.handle(TP, stream[100:200])  # nothing new at all
    assert outcome(metrics, "redelivered") == 350
    assert outcome(metrics, "counted") == len(stream)
    ids = [decision.id for decision in decisions.submitted]
    assert ids and len(ids) == len(set(ids)), "a decision was taken twice"


async def test_each_partition_remembers_its_share_of_the_dedupe_budget() -> None:
    """GUARD_MAX_DEDUPE_KEYS over 4 input partitions: a partition flooded with unique message ids
    keeps at most a quarter of it, and what it forgets is counted."""
    metrics = Metrics()
    pipeline = Pipeline(
        load_rules(RULES),
        Decisions(),
        NoDeadLetters(),
        metrics,
        dedupe_horizon=12 * 3600,
        max_dedupe_keys=4_000,
        partition_count=lambda: 4,
    )
    assert pipeline.dedupe_key_share() == 1_000
    pipeline.assign(TP, committed=None, since_ms=0)
    start = time.time() - 600
    await pipeline.handle(TP, records([sent("camp", start + n * 0.01) for n in range(5_000)]))
    assert 0 < pipeline.dedupe_keys() <= 1_000
    assert pipeline.dedupe_evicted == metrics.dedupe_evicted._value.get() == 5_000 - pipeline.dedupe_keys()
