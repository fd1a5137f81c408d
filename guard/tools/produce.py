"""`guard produce FILE kafka:TOPIC`: a history of events (JSONL, e.g. `guard generate`'s) into a topic,
keyed by campaign id as the guard expects, so a first live run needs no script of one's own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec
from aiokafka.errors import KafkaTimeoutError

from guard.errors import GuardError
from guard.runtime.kafka import PROBE_SECONDS, make_producer, reach, start_producer
from guard.runtime.settings import KafkaSettings

# records sent before waiting for their acknowledgements: enough to fill the producer's batches
_IN_FLIGHT = 2000


@dataclass
class Produced:
    written: int = 0
    unkeyed: int = 0  # lines the guard will dead-letter (no campaign id, not an event): sent as they are


class _Data(msgspec.Struct):
    campaignId: str | None = None  # noqa: N815 (the envelope's spelling)


class _Envelope(msgspec.Struct):
    data: _Data | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def campaign_key(value: bytes) -> bytes | None:
    """The record key the guard expects: `data.campaignId`; None for a line without one (the guard
    dead-letters it, as it would from any other writer)."""
    try:
        data = _envelope.decode(value).data
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return data.campaignId.encode() if data is not None and data.campaignId else None


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level, logger.level = logger.level, logging.CRITICAL
    try:
        yield
    finally:
        logger.setLevel(level)


async def produce(settings: KafkaSettings, topic: str, lines: Iterable[bytes]) -> Produced:
    """Send every line to `topic` (acks=all) and wait until the brokers have each one."""
    await reach(settings, PROBE_SECONDS)  # a broker that refuses or never answers: one line within seconds
    producer = make_producer(settings)
    await start_producer(producer, settings)
    produced = Produced()
    try:
        with contextlib.suppress(KafkaTimeoutError), _quiet("aiokafka.cluster"):  # "not found" while it is created
            async with asyncio.timeout(PROBE_SECONDS * 2):
                await producer.partitions_for(topic)
        if not producer.client.cluster.partitions_for_topic(topic):
            raise GuardError(f"topic {topic} does not exist and the brokers did not create it: create it first")
        pending = []
        for value in lines:
            key = campaign_key(value)
            produced.unkeyed += key is None
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                produced.written += len(pending)
                pending.clear()
        await asyncio.gather(*pending)
        produced.written += len(pending)
    finally:
        await producer.stop()
    return produced
