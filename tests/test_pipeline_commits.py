"""The commit rule where it lives (Pipeline.committable): an offset is committable only once every decision
it caused is recorded. No broker needed: a dispatcher that records when told shows each step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from guard.contracts.events import decode
from guard.engine import Decision
from guard.rules import load_rules
from guard.runtime.pipeline import Pipeline
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent, started

RULES = Path(__file__).parent.parent / "rules"
TP = TopicPartition("events", 0)


class UnrecordedDecisions:
    """A dispatcher whose `fired` records are never written until `record()` says so."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Decision, Callable[[], None]]] = []

    def submit(
        self, decision: Decision, on_recorded: Callable[[], None], audit_read: object = None, **_: object
    ) -> None:
        self.waiting.append((decision, on_recorded))

    def abandon(self, partitions: object) -> int:
        return 0

    def record(self, count: int) -> None:
        for _, on_recorded in self.waiting[:count]:
            on_recorded()
        del self.waiting[:count]


class NoDeadLetters:
    async def send(self, record: object, reason: str) -> asyncio.Future:
        raise AssertionError(f"nothing here is malformed, got {reason}")


def bad_campaign(campaign_id: str, start: float) -> list[bytes]:
    """A list gone bad: every fourth send bounces, enough for the shipped rules to pause it."""
    values = [started(campaign_id, start)]
    for n in range(300):
        values.append(sent(campaign_id, start + 1 + n))
        if n % 4 == 0:
            values.append(bounced(campaign_id, start + 1.5 + n))
    return values


def as_records(values: list[bytes]) -> list[ConsumerRecord]:
    now_ms = int(time.time() * 1000)
    return [
        ConsumerRecord(TP.topic, TP.partition, offset, now_ms, 0, b"camp", value, None, 4, len(value), ())
        for offset, value in enumerate(values)
    ]


async def test_an_offset_is_not_committable_before_its_decisions_are_recorded() -> None:
    dispatcher = UnrecordedDecisions()
    pipeline = Pipeline(load_rules(RULES), dispatcher, NoDeadLetters(), Metrics(), dedupe_horizon=3 * 3600)
    pipeline.assign(TP, committed=None, since_ms=0)
    start = time.time() - 250  # live mail: decisions go to the dispatcher at once
    stream = as_records(bad_campaign("camp_a", start) + bad_campaign("camp_b", start))
    await pipeline.handle(TP, stream)
    assert len(dispatcher.waiting) >= 2, "premise: both campaigns fire"
    offsets = [stream_offset(stream, decision) for decision, _ in dispatcher.waiting]
    assert pipeline.committable() == {TP: offsets[0]}, "held at the first unrecorded decision's offset"
    dispatcher.record(1)
    later = min(offsets[1:])
    assert pipeline.committable() == {TP: later}, "moves only up to the next unrecorded one"
    dispatcher.record(len(dispatcher.waiting))
    assert pipeline.committable() == {TP: len(stream)}, "all recorded: the next offset to read"


def stream_offset(stream: list[ConsumerRecord], decision: Decision) -> int:
    """The offset of the record whose event crossed the line."""
    for record in stream:
        event = decode(record.value, record.timestamp / 1000)
        if event.campaign_id == decision.campaign_id and event.time == decision.fired_at:
            return record.offset
    raise AssertionError(f"no record of {decision.id}")
