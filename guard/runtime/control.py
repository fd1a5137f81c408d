"""The control topic (GUARD_CONTROL_TOPIC): a compacted topic of operator records (exemptions), made
by guard.runtime.internal_topics.

`follow` is the running guard's reader: it reads the whole topic from the beginning, marks the
store loaded once it has reached the end the topic had when reading started, then keeps
following it, so a new record is honoured within about a second. It reads without a consumer
group: every replica sees every record, whatever partitions of the input it owns, and a
rebalance changes nothing. Each reading from the beginning goes into a fresh store, in force once
read to the end. A topic deleted, recreated or truncated under it is noticed (the topic gone, other
partitions, a partition ending before the position read to, a position out of range): what the
old topic said is dropped at once, and the new one is read from its beginning, as its records sit
below the old position.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord

from guard.actions.exemptions import Exemptions
from guard.runtime.kafka import client_options, start_producer
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import log_ends, read_topic, topic_partitions
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.control")

RETRY_SECONDS = 5.0  # between attempts to find or read the control topic when it is missing or unreachable
POLL_TIMEOUT_MS = 500
REREAD_SECONDS = 1.0  # after a replaced topic, before it is read again


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
    await start_producer(producer, settings)  # a broker that refuses the idempotent producer: said as guard run says it
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def follow(settings: KafkaSettings, topic: str, store: Exemptions, metrics: Metrics | None = None) -> None:
    """Keep `store` in step with the control topic until cancelled. The store is marked loaded
    once the topic was read to its end, or at once when it cannot be read (then the guard acts
    without exemptions rather than not at all, and says so). A topic deleted, recreated or
    truncated under the reader drops every exemption read from it, and is read again from its
    beginning: a revocation written to the new topic is never skipped."""
    while True:
        try:
            await _follow(settings, topic, store)
        except asyncio.CancelledError:
            raise
        except TopicReplaced as replaced:
            log.warning(
                "the control topic was deleted, recreated or truncated; its exemptions are dropped and it is read "
                "again from its beginning",
                topic=topic,
                seen=str(replaced),
            )
            if metrics is not None:
                metrics.control_topic_replaced.inc()
            store.replace(store.empty())  # nothing the old topic said exempts any more
            await asyncio.sleep(REREAD_SECONDS)  # brokers that disagree about it for a while are not asked in a loop
            continue
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


class TopicReplaced(Exception):
    """The control topic the reader follows is gone, or is another topic by the same name: its
    partitions are not the ones read, or a partition ends before the reader's position."""


async def _follow(settings: KafkaSettings, topic: str, store: Exemptions) -> None:
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        if len(store):
            raise TopicReplaced("it no longer exists")
        if not store.is_loaded:
            log.info("no control topic yet: no exemptions", topic=topic)
            store.loaded()
        return  # looked for again after RETRY_SECONDS
    # no reset: a position out of the log's range means the topic changed, and it is read afresh
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="none", **client_options(settings))
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await log_ends(consumer, partitions)
        # read whole before it is in force: the store never holds an exemption a later record revokes
        fresh, shrunk = store.empty(), set[TopicPartition]()
        behind = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while behind:
            for record in await _fetch(consumer, topic, partitions, shrunk):
                fresh.apply(record.key, record.value)
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
        store.replace(fresh)
        log.info("control topic read", topic=topic, exemptions=len(store))
        store.loaded()
        while True:
            for record in await _fetch(consumer, topic, partitions, shrunk):
                store.apply(record.key, record.value)
    finally:
        await consumer.stop()


async def _fetch(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[TopicPartition], shrunk: set[TopicPartition]
) -> list[ConsumerRecord]:
    """The next records, in offset order within each partition; TopicReplaced when the topic is no
    longer the one read. `shrunk`: the partitions whose log end was last seen before the position."""
    try:
        fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=1000)
    except OffsetOutOfRangeError as error:
        raise TopicReplaced(f"a position out of its partition's range: {error}") from None
    # the metadata a fetch error (an unknown topic, a partition without its leader) makes the consumer refresh
    if not (now := consumer.partitions_for_topic(topic)):
        raise TopicReplaced("it no longer exists")
    if now != {tp.partition for tp in partitions}:
        raise TopicReplaced(f"it has {len(now)} partitions, not the {len(partitions)} read")
    for tp in partitions:
        # the log end a fetch reported (the embedded test broker answers a fetch past it with nothing)
        if (end := consumer.highwater(tp)) is not None and end < await consumer.position(tp):
            if tp in shrunk:  # at two polls running: a newly elected leader may answer a lower end for a moment
                raise TopicReplaced(f"{tp.topic}[{tp.partition}] ends at {end}, before the position read to")
            shrunk.add(tp)
        else:
            shrunk.discard(tp)
    return [record for records in fetched.values() for record in records]
