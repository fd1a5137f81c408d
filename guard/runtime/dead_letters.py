"""The dead-letter sink: malformed records go to their own topic, as they came, with the reason."""

from __future__ import annotations

import asyncio
from typing import NamedTuple, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter

log = structlog.get_logger("guard.runtime.dead_letters")

TRUNCATED_BYTES = 16 * 1024  # what a dead letter keeps of a record too big to copy whole
MAX_REASON_CHARS = 1000


class DeadLetterMetrics(Protocol):
    dead_letters: Counter  # labelled by result: written, truncated, failed


class DeadLetters:
    """Malformed records go to the dead-letter topic as they came, with the reason in headers.

    A record that cannot be written whole (over the producer's request limit or the broker's
    message size, say) is written cut to TRUNCATED_BYTES, without its own headers, naming its
    source (topic/partition/offset, or the HTTP route it came in by) and original size; if even
    that fails it is skipped with an error log and a metric. The reason is cut to MAX_REASON_CHARS.
    `send` and the future it returns never raise: no input record can stop a partition. The future's
    result is what happened: "written", "truncated" or "failed".
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: DeadLetterMetrics) -> None:
        self._producer, self._topic, self._metrics = producer, topic, metrics

    async def send(self, record: ConsumerRecord, reason: str) -> asyncio.Future[str]:
        """A record read from a topic: its own headers kept, its offset named as the source."""
        letter = Letter(record.value, record.key, tuple(record.headers or ()), _source(record), record.timestamp)
        return await self.send_letter(letter, reason)

    async def send_letter(self, letter: Letter, reason: str) -> asyncio.Future[str]:
        reason = reason[:MAX_REASON_CHARS]
        try:
            headers = [*letter.headers, *_why(letter, reason)]
            delivery: asyncio.Future | None = await self._producer.send(
                self._topic, value=letter.value, key=letter.key, headers=headers
            )
            error: Exception | None = None
        except Exception as refused:  # e.g. MessageSizeTooLargeError, raised before anything is sent
            delivery, error = None, refused
        return asyncio.create_task(self._settle(letter, reason, delivery, error))

    async def _settle(
        self, letter: Letter, reason: str, delivery: asyncio.Future | None, error: Exception | None
    ) -> str:
        if delivery is not None:
            try:
                await delivery
                self._metrics.dead_letters.labels("written").inc()
                return "written"
            except Exception as failed:  # the broker refused it (too large, ...) or gave no answer
                error = failed
        source, size = letter.source, len(letter.value or b"")
        headers = [*_why(letter, reason), ("guard.truncated", b"true"), ("guard.source.size", str(size).encode())]
        try:
            cut = await self._producer.send(
                self._topic, value=_cut(letter.value), key=_cut(letter.key, 256), headers=headers
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
            return "failed"
        self._metrics.dead_letters.labels("truncated").inc()
        log.warning("dead letter written truncated", source=source, size=size, error=repr(error))
        return "truncated"


class Letter(NamedTuple):
    """What a dead letter is made of: the bytes as they came and where they came from."""

    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    source: str  # topic/partition/offset, or how the bytes arrived ("ingest /v1/...")
    timestamp: int  # ms since the epoch


def _source(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _why(letter: Letter, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("guard.error", reason.encode(errors="replace")),
        ("guard.source", letter.source.encode(errors="replace")),
        ("guard.source.timestamp", str(letter.timestamp).encode()),
    ]


def _cut(data: bytes | None, limit: int = TRUNCATED_BYTES) -> bytes | None:
    return data[:limit] if data is not None else None
