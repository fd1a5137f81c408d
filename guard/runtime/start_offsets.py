"""Where reading partitions starts so the rules' windows see all evidence since a cut-off."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def start_offsets(
    consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int | None], since_ms: int
) -> tuple[dict[TopicPartition, int], bool]:
    """Where to start reading each partition of `committed` (its committed offset or None) so the
    windows see all evidence since `since_ms` (epoch ms), and whether the broker could not look up
    offsets by time: those partitions start at their beginning, and records older than `since_ms`
    are skipped by their timestamp as they arrive.

    A few requests for any number of partitions (offsets by time, then ends or beginnings): a
    partition's start never waits on the consumer's fetches of others."""
    if not committed:
        return {}, False
    found = await consumer.offsets_for_times(dict.fromkeys(committed, since_ms))
    starts: dict[TopicPartition, int] = {}
    at_end, at_beginning = [], []
    for tp, offset in committed.items():
        match = found.get(tp)
        if match is None:  # nothing newer than the cut-off
            if offset is None:
                at_end.append(tp)
            else:
                starts[tp] = offset
        elif match.timestamp < since_ms:  # a broker that ignores the timestamp (e.g. the embedded test broker)
            at_beginning.append(tp)
        else:
            starts[tp] = match.offset if offset is None else min(match.offset, offset)
    if at_end:
        starts |= await consumer.end_offsets(at_end)
    if at_beginning:
        starts |= await consumer.beginning_offsets(at_beginning)
    return starts, bool(at_beginning)


async def seek_to_start(consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int | None], since_ms: int) -> bool:
    """Position each partition of `committed` at its start (`start_offsets`); True when some start at
    their beginning because the broker cannot look up offsets by time."""
    starts, from_beginning = await start_offsets(consumer, committed, since_ms)
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    return from_beginning
