"""Where reading a partition starts so the rules' windows see all evidence since a cut-off."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def start_offset(
    consumer: AIOKafkaConsumer, tp: TopicPartition, committed: int | None, since_ms: int
) -> int | None:
    """Where to start reading `tp` so the windows see all evidence since `since_ms` (epoch ms).

    Returns an offset, or None for "from the beginning" when the broker cannot look up offsets by
    time (records older than `since_ms` are then skipped by their timestamp as they arrive).
    """
    found = (await consumer.offsets_for_times({tp: since_ms})).get(tp)
    if found is None:  # nothing newer than the cut-off
        if committed is not None:
            return committed
        await consumer.seek_to_end(tp)
        return await consumer.position(tp)
    if found.timestamp < since_ms:  # a broker that ignores the timestamp (e.g. the embedded test broker)
        return None
    return found.offset if committed is None else min(found.offset, committed)


async def seek_to_start(consumer: AIOKafkaConsumer, tp: TopicPartition, committed: int | None, since_ms: int) -> bool:
    """Position `tp` at its `start_offset`, or at its beginning when there is none. True for the beginning."""
    start = await start_offset(consumer, tp, committed, since_ms)
    if start is None:
        await consumer.seek_to_beginning(tp)
        return True
    consumer.seek(tp, start)
    return False
