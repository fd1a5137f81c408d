"""The control topic (GUARD_CONTROL_TOPIC): a compacted topic of operator records (exemptions), made
by guard.runtime.internal_topics.

`follow` is the running guard's reader: it reads the whole topic from the beginning, marks the
store loaded once it has reached the end the topic had when reading started, then keeps
following it, so a new record is honoured within about a second. It reads without a consumer
group: every replica sees every record, whatever partitions of the input it owns, and a
rebalance changes nothing.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from guard.actions.exemptions import Exemptions
from guard.runtime.kafka import client_options
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import log_ends, read_topic, topic_partitions

log = structlog.get_logger("guard.runtime.control")

RETRY_SECONDS = 5.0  # between attempts to find or read the control topic when it is missing or unreachable
POLL_TIMEOUT_MS = 500


async def read_all(settings: KafkaSettings, topic: str) -> Exemptions:
    """The control topic's exemptions up to its end now (empty when the topic does not exist); the
    records skipped are in its `skipped`, for the caller to show."""
    store = Exemptions(log_skipped=False)
    if await topic_partitions(settings, topic):
        async with aclosing(read_topic(settings, topic, 0)) as batches:
            async for records in batches:
                for record in records:
                    store.apply(record.key, record.value)
    store.loaded()
    return store


async def write(settings: KafkaSettings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Write (key, value) records, a None value being a tombstone; acknowledged by all replicas."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=settings.enable_idempotence, **client_options(settings))
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def follow(settings: KafkaSettings, topic: str, store: Exemptions) -> None:
    """Keep `store` in step with the control topic until cancelled. The store is marked loaded
    once the topic was read to its end, or at once when it cannot be read (then the guard acts
    without exemptions rather than not at all, and says so)."""
    while True:
        try:
            await _follow(settings, topic, store)
        except asyncio.CancelledError:
            raise
        except (KafkaError, OSError) as error:
            if not store.is_loaded:
                log.error(
                    "cannot read the control topic; acting without exemptions until it can be read",
                    topic=topic,
                    error=repr(error),
                )
                store.loaded()
            else:
                log.warning("control topic reader failed; starting again", topic=topic, error=repr(error))
        await asyncio.sleep(RETRY_SECONDS)


async def _follow(settings: KafkaSettings, topic: str, store: Exemptions) -> None:
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        if not store.is_loaded:
            log.info("no control topic yet: no exemptions", topic=topic)
            store.loaded()
        return  # looked for again after RETRY_SECONDS
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await log_ends(consumer, partitions)
        behind = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        if not behind:
            store.loaded()
        while True:
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=1000)
            for records in fetched.values():
                for record in records:
                    store.apply(record.key, record.value)
            if behind:
                behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
                if not behind:
                    log.info("control topic read", topic=topic, exemptions=len(store))
                    store.loaded()
    finally:
        await consumer.stop()
