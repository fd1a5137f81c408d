"""The dead-letter sink: malformed records go to their own topic, as they came, with the reason."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.dead_letters")

TRUNCATED_BYTES = 16 * 1024  # what a dead letter keeps of a record too big to copy whole
MAX_REASON_CHARS = 1000


class DeadLetters:
    """Malformed records go to the dead-letter topic as they came, with the reason in headers.

    A record that cannot be written whole (over the producer's request limit or the broker's
    message size, say) is written cut to TRUNCATED_BYTES, without its own headers, naming its
    source (topic/partition/offset) and original size; if even that fails it is skipped with an
    error log and a metric. `send` and the future it returns never raise: no input record can
    stop a partition.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics) -> None:
        self._producer, self._topic, self._metrics = producer, topic, metrics

    async def send(self, record: ConsumerRecord, reason: str) -> asyncio.Future:
        reason = reason[:MAX_REASON_CHARS]
        try:
            headers = [*(record.headers or ()), *_why(record, reason)]
            delivery: asyncio.Future | None = await self._producer.send(
                self._topic, value=record.value, key=record.key, headers=headers
            )
            error: Exception | None = None
        except Exception as refused:  # e.g. MessageSizeTooLargeError, raised before anything is sent
            delivery, error = None, refused
        return asyncio.create_task(self._settle(record, reason, delivery, error))

    async def _settle(
        self, record: ConsumerRecord, reason: str, delivery: asyncio.Future | None, error: Exception | None
    ) -> None:
        if delivery is not None:
            try:
                await delivery
                self._metrics.dead_letters.labels("written").inc()
                return
            except Exception as failed:  # the broker refused it (too large, ...) or gave no answer
                error = failed
        source, size = _source(record), len(record.value or b"")
        headers = [*_why(record, reason), ("guard.truncated", b"true"), ("guard.source.size", str(size).encode())]
        try:
            cut = await self._producer.send(
                self._topic, value=_cut(record.value), key=_cut(record.key, 256), headers=headers
            )
            await cut
        except Exception as failed:
            self._metrics.dead_letters.labels("failed").inc()
            log.error(
                "dead letter not written; the record is skipped",
                source=source,
                size=size,
                reason=reason,
                error=repr(failed),
                first_error=repr(error),
            )
            return
        self._metrics.dead_letters.labels("truncated").inc()
        log.warning("dead letter written truncated", source=source, size=size, error=repr(error))


def _source(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _why(record: ConsumerRecord, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("guard.error", reason.encode(errors="replace")),
        ("guard.source", _source(record).encode()),
        ("guard.source.timestamp", str(record.timestamp).encode()),
    ]


def _cut(data: bytes | None, limit: int = TRUNCATED_BYTES) -> bytes | None:
    return data[:limit] if data is not None else None
