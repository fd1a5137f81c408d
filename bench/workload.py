"""The workload every Kafka benchmark reads: seeded synthetic Leadterra traffic, pre-produced.

~1M events over 50,100 campaigns and two hours of event time ending a minute before the run
starts (so every event is inside the guard's 24 h lookback):

* 50,000 small campaigns sending 8-18 messages each (most of the key space, few events each),
* 100 large campaigns sending 1,000-3,000 messages each, 10 of which turn bad (stale list or
  offensive template) part-way, so some rules fire.

Both come from `guard.tools.generate` (seeds 6 and 7), merged by event time. Generating takes ~7 s, so
nothing is cached: fresh traffic anchored to the current clock is simpler than re-timing a cache.
The records are produced once to a 4-partition topic of each broker (Tansu, Apache Kafka), keyed by
campaign, with the record timestamp (CreateTime) set to the event time, before any contender
runs: what is measured is consuming, never producing.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import log_ends, topic_partitions
from guard.tools.generate import Record, generate

PARTITIONS = 4
DURATION = 7200.0  # seconds of event time
SMALL = {"seed": 6, "campaigns": 50_000, "bad": 0, "sends": (10, 20)}
LARGE = {"seed": 7, "campaigns": 100, "bad": 10, "sends": (1000, 3000)}
RETENTION_MS = 7 * 24 * 3600 * 1000  # Quix Streams refuses an input topic without retention.ms


@dataclass(frozen=True)
class Workload:
    records: list[Record]
    campaigns: int
    bad: int
    start: float  # event time of the first and last possible event
    end: float

    def describe(self) -> str:
        return (
            f"{len(self.records):,} events over {self.campaigns:,} campaigns "
            f"({SMALL['campaigns']:,} sending {SMALL['sends'][0]}-{SMALL['sends'][1]} messages, "
            f"{LARGE['campaigns']} sending {LARGE['sends'][0]:,}-{LARGE['sends'][1]:,} of which {self.bad} turn bad), "
            f"{DURATION / 3600:g} h of event time, guard.tools.generate seeds {SMALL['seed']} and {LARGE['seed']}"
        )


def build(scale: float = 1.0, now: float | None = None, senders: int = 0) -> Workload:
    """The traffic, ending a minute before `now`. `scale` shrinks the small campaigns (quick runs); with `senders`,
    every campaign sends from one of that many domains (`data.from`), for rules over a sender or domain."""
    end = (now if now is not None else time.time()) - 60.0
    start = end - DURATION
    small = dict(SMALL, campaigns=max(1, int(SMALL["campaigns"] * scale)))
    parts = [
        generate(
            spec["seed"],
            spec["campaigns"],
            spec["bad"],
            start=start,
            duration=DURATION,
            sends=spec["sends"],
            senders=senders,
        )
        for spec in (small, LARGE)
    ]
    records = list(heapq.merge(*(part.records for part in parts), key=lambda record: record.time))
    bad = sum(len(part.bad) for part in parts)
    return Workload(records, small["campaigns"] + LARGE["campaigns"], bad, start, end)


def new_name(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"retention.ms": str(RETENTION_MS)})])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[Record]) -> dict[int, int]:
    """Produce every record (acks=all), keyed by campaign (Kafka's murmur2 partitioner), CreateTime =
    event time, in hand-built batches (~5x faster than one `send()` per record).
    Returns partition -> number of records, which is also its end offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,  # Tansu rejects InitProducerId v0
        max_batch_size=1 << 20,
        max_request_size=16 << 20,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[Record]] = {p: [] for p in partitions}
        partition_of: dict[str, int] = {}
        for record in records:
            partition = partition_of.get(record.key)
            if partition is None:
                hashed = murmur2(record.key.encode()) & 0x7FFFFFFF
                partition = partition_of[record.key] = partitions[hashed % len(partitions)]
            by_partition[partition].append(record)
        pending = []
        for partition, share in by_partition.items():
            batch = producer.create_batch()
            for record in share:
                args = {"key": record.key.encode(), "value": record.value, "timestamp": int(record.time * 1000)}
                if batch.append(**args) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(**args)
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            if len(pending) > 32:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {partition: len(share) for partition, share in by_partition.items()}


async def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end (Tansu's ListOffsets LATEST is short: `log_ends` reads the high watermark)."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        return {tp.partition: end for tp, end in (await log_ends(consumer, partitions)).items()}
    finally:
        await consumer.stop()
