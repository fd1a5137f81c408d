"""Reading topics without a consumer group: their partitions, where each ends, every record of a
time range up to those ends, and a topic's tail, newest windows first."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from tenacity import retry, retry_if_exception, stop_before_delay, wait_exponential_jitter

from guard.errors import GuardError
from guard.runtime.kafka import client_options
from guard.runtime.settings import KafkaSettings
from guard.runtime.start_offsets import seek_to_start

LOG_END_TIMEOUT = 30.0  # a fetch from a record the log holds is answered at once; this is for a broker in trouble


class UnknownTopic(GuardError):
    """The topic does not exist (or has no partitions)."""


def names(partitions: Iterable[TopicPartition]) -> list[str]:
    """`topic[partition]` of each, sorted: how logs name partitions."""
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


async def read_topic(
    settings: KafkaSettings, topic: str, since_ms: int, until_ms: int | None = None
) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of the records of every partition of `topic` with record time in [since, until],
    up to the end each partition had when reading started. Reads without a consumer group."""
    async with _reader(settings, topic) as (consumer, partitions):
        await seek_to_start(consumer, dict.fromkeys(partitions), since_ms)
        ends = await log_ends(consumer, partitions)
        reading = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while reading:
            fetched = await consumer.getmany(*reading, timeout_ms=1000, max_records=10_000)
            batch = []
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp] or (until_ms is not None and record.timestamp > until_ms):
                        reading.discard(tp)
                        break
                    if record.timestamp >= since_ms:
                        batch.append(record)
                if tp in reading and await consumer.position(tp) >= ends[tp]:
                    reading.discard(tp)
            if batch:
                yield batch


@dataclass(frozen=True, slots=True)
class Window:
    records: list[ConsumerRecord]  # in offset order within each partition
    at_start: frozenset[TopicPartition]  # partitions read back to their start: nothing older is left


async def read_backwards(settings: KafkaSettings, topic: str, first: int) -> AsyncIterator[Window]:
    """Windows of every partition of `topic`, from the end each had when reading started back to its start:
    the newest `first` offsets, then the `2 * first` before them, and so on, each twice the one before.
    The caller stops iterating (in `contextlib.aclosing`) once it has what it needs."""
    async with _reader(settings, topic) as (consumer, partitions):
        starts = await consumer.beginning_offsets(partitions)
        lower = await log_ends(consumer, partitions)
        size = first
        while any(lower[tp] > starts[tp] for tp in partitions):
            upper = dict(lower)
            lower = {tp: max(starts[tp], upper[tp] - size) for tp in partitions}
            records = await _read_range(consumer, lower, upper)
            yield Window(records, frozenset(tp for tp in partitions if lower[tp] <= starts[tp]))
            size *= 2


@asynccontextmanager
async def _reader(settings: KafkaSettings, topic: str) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer without a group, assigned every partition of `topic` (UnknownTopic if it has none)."""
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        raise UnknownTopic(f"topic {topic!r} does not exist or has no partitions")
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    try:
        await consumer.start()
        consumer.assign(partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()


async def _read_range(
    consumer: AIOKafkaConsumer, lower: dict[TopicPartition, int], upper: dict[TopicPartition, int]
) -> list[ConsumerRecord]:
    """The records of each partition from `lower` (inclusive) to `upper` (exclusive)."""
    reading = {tp for tp in lower if lower[tp] < upper[tp]}
    for tp in reading:
        consumer.seek(tp, lower[tp])
    read: list[ConsumerRecord] = []
    while reading:
        fetched = await consumer.getmany(*reading, timeout_ms=1000, max_records=10_000)
        for tp, records in fetched.items():
            for record in records:
                if record.offset >= upper[tp]:
                    reading.discard(tp)
                    break
                read.append(record)
            if tp in reading and await consumer.position(tp) >= upper[tp]:
                reading.discard(tp)
    return read


@retry(
    # the admin client asks one broker; while that one is down (a failover) another answers on retry
    retry=retry_if_exception(lambda error: isinstance(error, KafkaError) and error.retriable),
    wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
    stop=stop_before_delay(30),
    reraise=True,
)
async def _describe_topics(settings: KafkaSettings) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return await admin.describe_topics()
    finally:
        await admin.close()


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, asked of the brokers; [] when it does not exist.

    A consumer's first metadata names no topics on Apache Kafka (the embedded test broker lists them
    all), and a request that names the topic would create it where brokers auto-create topics: so
    this asks for the metadata of every topic.
    """
    described = await _describe_topics(settings)
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0:
            return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
    return []


async def offset_ranges(settings: KafkaSettings, partitions: list[TopicPartition]) -> dict[TopicPartition, range]:
    """The offsets a reader of each partition can be positioned at: its log start to its log end, both
    included. Reads without a consumer group."""
    ranges: dict[TopicPartition, range] = {}
    for topic in sorted({tp.topic for tp in partitions}):
        async with _reader(settings, topic) as (consumer, every):
            asked = [tp for tp in every if tp in set(partitions)]
            starts = await consumer.beginning_offsets(asked)
            ends = await log_ends(consumer, asked)
            ranges |= {tp: range(starts[tp], ends[tp] + 1) for tp in asked}
    return ranges


async def log_ends(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end when reading starts.

    `end_offsets` (ListOffsets LATEST) is the end on Apache Kafka; the embedded test broker answers
    the start of the last batch instead, so the high watermark of a fetch from just before that
    offset (where the log has a record, so the broker answers at once) raises it to the true end.
    An end that cannot be learnt is an error, never 0: that would skip the partition's records.
    """
    ends = await consumer.end_offsets(partitions)
    positions = {tp: await consumer.position(tp) for tp in partitions}
    for tp in partitions:
        consumer.seek(tp, max(0, ends[tp] - 1))
    unknown = set(partitions)
    deadline = time.monotonic() + LOG_END_TIMEOUT
    while unknown:
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"no high watermark within {LOG_END_TIMEOUT:.0f} s for {names(unknown)}")
        await consumer.getmany(*unknown, timeout_ms=100, max_records=1)
        for tp in list(unknown):
            if (highwater := consumer.highwater(tp)) is not None:
                ends[tp] = max(ends[tp], highwater)
                unknown.discard(tp)
    for tp, position in positions.items():
        consumer.seek(tp, position)
    return ends
