"""The scope topic's producer side: each input partition forwards the events it counts, keyed by scope
(guard.engine.scopes), stamped with their input record's time so that a forwarded backlog reads as one.

A batch of input records is forwarded as one record batch per partition of the scope topic (aiokafka's
`send_batch`), partitioned as Kafka's default partitioner does (murmur2 of the key): a `send()` per event
would cost several times the engine's own work per event."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer

from guard.runtime.placement import key_hash
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.scope_forwards")

Forward = tuple[str, bytes, int]  # scope, value, timestamp (ms)
COMPLAIN_EVERY = 60.0  # seconds between error lines while forwards fail
ASK_EVERY = 1.0  # seconds between metadata requests for a scope topic the producer does not know
# A batch waits at most this long for room in the producer's queue of its scope partition (a leader that does not
# answer fills it); then forwards are skipped, and counted, for STALLED_SECONDS: the poll loop is never held longer.
ENQUEUE_WAIT_SECONDS = 0.5
STALLED_SECONDS = 5.0
LEARN_POLL_SECONDS = 0.1


@functools.lru_cache(maxsize=16_384)  # ~6 MB of keys; more scopes than that cost as without it
def _hashed(scope: str) -> tuple[bytes, int]:
    """A scope's key, and its murmur2 hash as Kafka's default partitioner takes it: aiokafka's murmur2 is pure
    Python, and a scope's events keep coming, so it is hashed once (else 15% of the CPU in bench.scopes)."""
    key = scope.encode()
    return key, key_hash(key)


class ScopeForwards:
    """`send` and the futures it returns never raise, and `send` never waits on the topic's metadata: a scope's
    evidence never stops or delays a campaign's pause. Events that cannot be written (the topic is missing or not
    known yet, the brokers refuse them after the producer's retries) are counted and logged, never retried here."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics) -> None:
        self._producer, self._topic, self._metrics = producer, topic, metrics
        self._complained_at = self._asked_at = self._stalled_until = -math.inf

    async def learn(self, timeout: float) -> bool:
        """Ask for the topic's metadata until the producer knows it (a topic just made takes a moment to show in
        the brokers' metadata), at most `timeout` seconds: `send` only writes to a topic the producer knows."""
        deadline = time.monotonic() + timeout
        while not self._known():
            if time.monotonic() >= deadline:
                return False
            self._ask()
            await asyncio.sleep(LEARN_POLL_SECONDS)
        return True

    def _known(self) -> set[int] | None:
        return self._producer.client.cluster.partitions_for_topic(self._topic)

    def _ask(self) -> None:
        """A metadata request for the topic, in the background (aiokafka asks once per topic it is told of)."""
        client = self._producer.client
        client.add_topic(self._topic)
        client.force_metadata_update()

    async def send(self, forwards: Sequence[Forward], source: str) -> list[asyncio.Future]:
        """Write `forwards` (of the input records at `source`); one future per record batch written, done once
        it is acknowledged or has failed (counted and logged, with `source`)."""
        try:
            known = self._known()
            if not known:  # aiokafka would wait on its metadata for a request timeout: asked for, skipped meanwhile
                if time.monotonic() - self._asked_at >= ASK_EVERY:
                    self._asked_at = time.monotonic()
                    self._ask()
                self._failed(len(forwards), source, f"the topic {self._topic} is not known (yet)")
                return []
            if time.monotonic() < self._stalled_until:
                self._failed(len(forwards), source, f"the producer's queue for {self._topic} was full")
                return []
            partitions = sorted(known)
            by_partition: dict[int, list[tuple[bytes, bytes, int]]] = {}
            for scope, value, timestamp in forwards:
                key, hashed = _hashed(scope)
                partition = partitions[hashed % len(partitions)]
                by_partition.setdefault(partition, []).append((key, value, timestamp))
            deliveries, left = [], len(forwards)
            for partition, share in by_partition.items():
                for batch, count in self._batches(share):
                    try:
                        queued = self._producer.send_batch(batch, self._topic, partition=partition)
                        async with asyncio.timeout(ENQUEUE_WAIT_SECONDS):
                            delivery = await queued
                    except TimeoutError:
                        self._stalled_until = time.monotonic() + STALLED_SECONDS
                        self._failed(left, source, f"the producer's queue for {self._topic} is full")
                        return deliveries
                    delivery.add_done_callback(lambda done, count=count: self._settled(done, count, source))
                    deliveries.append(delivery)
                    left -= count
            return deliveries
        except Exception as error:  # refused before anything was sent: those events miss their scopes
            self._failed(len(forwards), source, error)
            return []

    def _batches(self, records: list[tuple[bytes, bytes, int]]):  # noqa: ANN202 - (BatchBuilder, records in it)
        batch, count = self._producer.create_batch(), 0
        for key, value, timestamp in records:
            if batch.append(key=key, value=value, timestamp=timestamp) is None:  # full: on to the next
                yield batch, count
                batch, count = self._producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=timestamp) is None:
                    raise ValueError(f"a forwarded event of {len(value)} bytes does not fit a record batch")
            count += 1
        if count:
            yield batch, count

    def _settled(self, delivery: asyncio.Future, count: int, source: str) -> None:
        error = delivery.exception() if not delivery.cancelled() else asyncio.CancelledError()
        if error is None:
            self._metrics.scope_forwards.labels("written").inc(count)
        else:
            self._failed(count, source, error)

    def _failed(self, count: int, source: str, error: BaseException | str) -> None:
        self._metrics.scope_forwards.labels("failed").inc(count)
        now = time.monotonic()
        if now - self._complained_at >= COMPLAIN_EVERY:  # one line a minute while it lasts, the metric counts all
            self._complained_at = now
            log.error(
                "events not forwarded to the scope topic (GUARD_SCOPE_TOPIC): rules over a scope miss them",
                count=count,
                source=source,
                error=error if isinstance(error, str) else repr(error),
            )
