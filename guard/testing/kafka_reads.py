"""Reading topics back after a test: every record of a topic, a group's committed offsets."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import log_ends, topic_partitions

__all__ = ["committed", "read_all"]


async def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of every partition of `topic`, up to where each partition ends once read."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), topic)
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await log_ends(consumer, partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        reading = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while reading:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {len(records)} records, still reading {reading}")
            for batch in (await consumer.getmany(*reading, timeout_ms=200, max_records=20_000)).values():
                records.extend(batch)
            reading = {tp for tp in reading if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The group's committed offset per partition (0 where none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()
