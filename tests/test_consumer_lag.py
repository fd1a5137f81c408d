"""guard_consumer_lag_records: what the consumer has not read yet, from what it already knows."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from guard.runtime.kafka import consumer_lag

A, B, C = (TopicPartition("leadterra.events", n) for n in range(3))


class Consumer:
    """The three calls consumer_lag makes of an AIOKafkaConsumer, over fixed numbers."""

    def __init__(self, ends: dict[TopicPartition, int | None], positions: dict[TopicPartition, int]) -> None:
        self.ends, self.positions = ends, positions

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        if tp not in self.positions:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        return self.positions[tp]


async def test_the_lag_is_the_log_end_less_the_position_summed_over_the_partitions() -> None:
    consumer = Consumer({A: 120, B: 40}, {A: 100, B: 40})
    assert await consumer_lag(consumer, [A, B]) == 20


async def test_a_partition_whose_end_is_unknown_or_that_was_revoked_counts_nothing() -> None:
    """No fetch answered yet (no high watermark), revoked between the assignment and the tick: 0, no error."""
    consumer = Consumer({A: None, B: 50}, {A: 0})
    assert await consumer_lag(consumer, [A, B, C]) == 0


async def test_a_position_past_the_end_last_seen_is_no_lag() -> None:
    """The end is as of the last fetch; the position may have moved past it since."""
    assert await consumer_lag(Consumer({A: 10}, {A: 12}), [A]) == 0
