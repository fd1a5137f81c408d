"""guard.runtime.rebalance on a real broker: new partitions are paused in the assignment callback and
positioned by a task beside it (aiokafka sends no heartbeats during the callback); a revoke or a
shutdown cancels that task and leaves nothing half-assigned."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, KafkaTimeoutError, NotLeaderForPartitionError

from guard.actions.dispatch import Dispatcher
from guard.contracts.audit import AuditEvent
from guard.rules import load_rules
from guard.runtime.pipeline import Pipeline
from guard.runtime.rebalance import Rebalance, retriable
from guard.runtime.recovery import Recovery, Stage
from guard.runtime.settings import KafkaSettings
from guard.runtime.settled import SettledDecisions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics
from guard.testing.broker import BrokerInfo
from guard.testing.events import sent

RULES = Path(__file__).parent.parent / "rules"
PARTITIONS = 3


class NoDeadLetters:
    async def send(self, record: object, reason: str) -> asyncio.Future:
        raise AssertionError(f"nothing here is malformed: {reason}")


class Harness:
    def __init__(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        self.consumer, self.tps, self.health = consumer, tps, Health()

        async def publish(event: AuditEvent) -> None:
            return None

        async def rescan(since_ms: int) -> None:
            return None

        settled = SettledDecisions(KafkaSettings(), "audit")
        dispatcher = Dispatcher(None, publish, Metrics(), self.health, settled, dry_run=True)
        self.pipeline = Pipeline(load_rules(RULES), dispatcher, NoDeadLetters(), Metrics(), dedupe_horizon=3600)
        unsettled = functools.partial(settled.unsettled, dry_run=True)
        self.recovery = Recovery(self.health, rescan, unsettled, lambda *_: None, lambda _: [])
        self.generation = 0  # the group's generation as the coordinator would give it; +1 per rebalance
        self.rebalance = Rebalance(consumer, self.pipeline, self.recovery, generation=lambda: self.generation)

    async def rebalance_to(self, tps: list[TopicPartition], generations: int = 1) -> None:
        """What aiokafka does at a rebalance: revoke everything, then assign `tps` in a later generation."""
        await self.rebalance.on_partitions_revoked(self.tps)
        self.generation += generations
        await self.rebalance.on_partitions_assigned(tps)

    async def positioned(self, timeout: float = 20) -> None:
        await self.positioned_only(self.tps, timeout)

    async def positioned_only(self, tps: list[TopicPartition], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not all(self.pipeline.owns(tp) for tp in tps):
                await asyncio.sleep(0.01)


async def produce(broker: BrokerInfo, topic: str, counts: dict[int, int]) -> None:
    """`count` recent sends of campaign `camp_<partition>` to each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, **broker.producer_overrides)
    await producer.start()
    try:
        now = time.time()
        for partition, count in counts.items():
            for n in range(count):
                await producer.send_and_wait(topic, sent(f"camp_{partition}", now - 60 + n), partition=partition)
    finally:
        await producer.stop()


@pytest.fixture
async def harness(kafka_broker: BrokerInfo, topic_name: str, group_id: str) -> AsyncIterator[Harness]:
    """A topic of 3 partitions holding 5, 0 and 20 recent records, and a consumer of the group
    `group_id` given its partitions by hand (the group's assignment is not what is tested here)."""
    bootstrap = kafka_broker.bootstrap_servers
    await produce(kafka_broker, topic_name, {0: 5, 2: 20})
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    try:
        yield Harness(consumer, tps)
    finally:
        await consumer.stop()


async def test_new_partitions_are_paused_then_positioned_beside_the_callback(harness: Harness) -> None:
    """When the callback returns the partitions are paused, not yet the pipeline's, and /readyz says
    recovering; the task then seeks each to its start (the committed offset of partition 2), hands them to
    the pipeline and resumes them."""
    consumer, tps = harness.consumer, harness.tps
    await consumer.commit({tps[2]: 7})
    await harness.rebalance.on_partitions_assigned(tps)
    assert consumer.paused() == set(tps)
    assert not any(harness.pipeline.owns(tp) for tp in tps)
    assert {harness.recovery.stage(tp) for tp in tps} == {Stage.POSITIONING}
    assert harness.health.recovering

    await harness.positioned()
    assert consumer.paused() == set()
    assert [await consumer.position(tp) for tp in tps] == [0, 0, 0]  # the committed 7 is replayed from the start
    assert [harness.pipeline.backlog_end(tp) for tp in tps] == [5, 0, 20]  # held decisions wait for these
    assert harness.recovery[tps[2]].replay_until == 7
    assert harness.recovery[tps[0]].replay_until == 0


async def test_a_revoke_while_positioning_leaves_nothing_half_assigned(harness: Harness) -> None:
    tps = harness.tps
    await harness.rebalance.on_partitions_assigned(tps)
    await harness.rebalance.on_partitions_revoked(tps)
    await asyncio.sleep(1)  # a positioning task left running would hand them to the pipeline meanwhile
    assert not any(harness.pipeline.owns(tp) for tp in tps)
    assert all(harness.recovery.stage(tp) is None for tp in tps)
    assert not harness.health.recovering

    await harness.rebalance.on_partitions_assigned(tps)  # the next assignment positions them afresh
    await harness.positioned()
    assert harness.health.stuck is None


async def test_after_shutdown_began_nothing_is_positioned(harness: Harness) -> None:
    await harness.rebalance.close()
    await harness.rebalance.on_partitions_assigned(harness.tps)
    await asyncio.sleep(1)
    assert harness.consumer.paused() == set(harness.tps)
    assert not any(harness.pipeline.owns(tp) for tp in harness.tps)


async def read_and_ready(harness: Harness, count: int) -> None:
    """Read `count` records through the pipeline and bring every partition to READY (what the
    service's poll loop does)."""
    consumer, pipeline = harness.consumer, harness.pipeline
    read = 0
    async with asyncio.timeout(20):
        while read < count:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                await pipeline.handle(tp, records)
                read += len(records)
        while not all(harness.recovery.stage(tp) is Stage.READY for tp in harness.pipeline.assigned):
            harness.recovery.progress({tp: await consumer.position(tp) for tp in harness.pipeline.assigned})
            await asyncio.sleep(0.01)


async def commit(harness: Harness, offsets: dict[TopicPartition, int]) -> None:
    await harness.consumer.commit(offsets)
    harness.pipeline.committed(offsets)


async def test_partitions_given_back_by_the_next_generation_are_ready_at_once(
    harness: Harness, kafka_broker: BrokerInfo
) -> None:
    """aiokafka revokes every partition at each rebalance: those the next generation gives back keep
    their engines and read on from the next record, not from the committed offset, without a restore, a
    replay or an audit rescan; one never read is positioned afresh; one not given back is dropped."""
    tps, pipeline, consumer = harness.tps, harness.pipeline, harness.consumer
    await harness.rebalance.on_partitions_assigned(tps)
    await harness.positioned()
    await read_and_ready(harness, 25)
    await commit(harness, {tps[0]: 2})  # partition 0 committed up to 2 of its 5, partition 2 not at all
    assert pipeline.campaigns() == 2

    await harness.rebalance_to(tps)
    await harness.positioned()
    assert pipeline.campaigns() == 2  # the same engines: nothing replayed
    assert [harness.recovery.stage(tp) for tp in (tps[0], tps[2])] == [Stage.READY, Stage.READY]
    assert [await consumer.position(tp) for tp in tps] == [5, 0, 20]

    await produce(kafka_broker, tps[0].topic, {0: 3})
    await read_and_ready(harness, 3)  # read on: new records counted once, the commit moves past them
    assert pipeline.committable()[tps[0]] == 8

    await harness.rebalance_to([tps[0]])  # partition 2 goes to another member
    await harness.positioned_only([tps[0]])
    assert pipeline.parked(tps[2]) is None and pipeline.campaigns() == 1


async def test_a_partition_whose_offset_moved_meanwhile_is_positioned_afresh(
    harness: Harness, kafka_broker: BrokerInfo, group_id: str
) -> None:
    """Another member committed partition 0 further while it was away: the parked engine is stale."""
    tps = harness.tps
    await harness.rebalance.on_partitions_assigned(tps)
    await harness.positioned()
    await read_and_ready(harness, 25)
    await commit(harness, {tps[0]: 2, tps[2]: 20})
    await harness.rebalance.on_partitions_revoked(tps)

    # No auto-commit: its last one, at stop, would write back the position it fetched before this commit
    other = AIOKafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await other.start()
    try:
        other.assign([tps[0]])
        await other.commit({tps[0]: 4})
    finally:
        await other.stop()
    async with asyncio.timeout(10):  # premise: the group's coordinator answers with the other member's commit
        while await harness.consumer.committed(tps[0]) != 4:
            await asyncio.sleep(0.1)
    harness.generation += 1
    await harness.rebalance.on_partitions_assigned(tps)
    await harness.positioned()
    assert harness.recovery.stage(tps[2]) is Stage.READY
    assert harness.recovery.stage(tps[0]) is Stage.REPLAYING and harness.recovery[tps[0]].replay_until == 4


async def test_nothing_is_kept_when_a_generation_went_by_without_this_process(harness: Harness) -> None:
    """Expelled or late to a rebalance, it missed a generation: another member may have read its
    partitions and committed nothing yet, so the parked engines are stale although the offsets did not move."""
    tps = harness.tps
    await harness.rebalance.on_partitions_assigned(tps)
    await harness.positioned()
    await read_and_ready(harness, 25)
    await harness.rebalance_to(tps, generations=2)
    await harness.positioned()
    assert [harness.recovery.stage(tp) for tp in tps] == [Stage.REPLAYING] * 3  # new engines, positioned afresh
    assert harness.pipeline.campaigns() == 0


def test_only_errors_worth_another_try_are_retried() -> None:
    assert retriable(KafkaTimeoutError()) and retriable(NotLeaderForPartitionError()) and retriable(OSError())
    assert not retriable(GroupAuthorizationFailedError()) and not retriable(ValueError())


def test_partitions_that_cannot_be_positioned_make_the_guard_not_live() -> None:
    """Paused partitions nobody reads must go to another replica: /livez fails, Kubernetes restarts the pod."""
    health = Health()
    recovery = Recovery(health, lambda since_ms: asyncio.sleep(0), lambda _: False, lambda *_: None, lambda _: [])
    recovery.stuck(["events[0]"], GroupAuthorizationFailedError())
    live, reason = health.live()
    assert not live and "events[0]" in reason and "GroupAuthorizationFailedError" in reason
