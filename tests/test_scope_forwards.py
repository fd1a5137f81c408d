"""The scope topic's producer side on a real broker: where each scope's forwards land."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from test_first_contact import make_topic

from guard.runtime.scope_forwards import ScopeForwards
from guard.telemetry.metrics import Metrics

SCOPES = [f"sender_domain:ws_{n % 3}/d{n}.example" for n in range(40)] + [
    "sender_domain:bücher.example",
    "sender:acc_1",
]


async def test_each_scope_lands_where_kafkas_default_partitioner_puts_its_key(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """Any client keying a record by the scope would put it where the guard does (its hashes are cached, so a
    scope seen again must land where it landed first)."""
    await make_topic(kafka_bootstrap, topic_name, partitions=5)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        forwards = ScopeForwards(producer, topic_name, Metrics())
        assert await forwards.learn(timeout=10.0)
        for _ in range(2):  # the second time from the cache
            deliveries = await forwards.send([(scope, b"x", 1_000) for scope in SCOPES], "test")
            await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    landed: dict[bytes, set[int]] = {}
    read, deadline = 0, asyncio.get_running_loop().time() + 30
    try:
        while read < 2 * len(SCOPES) and asyncio.get_running_loop().time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                for record in records:
                    landed.setdefault(record.key, set()).add(tp.partition)
                    read += 1
    finally:
        await consumer.stop()
    assert read == 2 * len(SCOPES)
    default = DefaultPartitioner()
    assert {key: partitions for key, partitions in landed.items()} == {
        scope.encode(): {default(scope.encode(), [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])} for scope in SCOPES
    }
    assert len({p for partitions in landed.values() for p in partitions}) > 1  # spread, not all on one
