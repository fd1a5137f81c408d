"""Whether the guard reads every input topic it is configured with (GUARD_INPUT_TOPICS).

A topic is missing while the brokers do not know it (a typo, or not made yet: the guard never creates
one, see guard.runtime.kafka.InputConsumer), and unread while the brokers know partitions of it that
the consumer's own metadata does not hold yet (created or grown since the consumer last asked): the
group assigns only what its members' metadata holds, and aiokafka asks again only every 5 minutes.
Either keeps /readyz at 503 naming the topic, with a metric, and makes the watch look every second,
refreshing the consumer's metadata, so a topic created later is read within seconds.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka.errors import KafkaError

from guard.runtime.kafka import InputConsumer
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.service")  # the service's lines, under the name they always had

WATCH_SECONDS = 1.0  # how often a missing or unread topic is looked for again
ASK_SECONDS = 5.0  # longest a metadata request may take before the look is given up (the probe reports Kafka)


class InputTopics:
    """The configured input topics against the brokers and the consumer's metadata, in `health` and `metrics`."""

    def __init__(self, consumer: InputConsumer, configured: tuple[str, ...], health: Health, metrics: Metrics) -> None:
        self._consumer, self._configured, self._health, self._metrics = consumer, configured, health, metrics

    @property
    def complete(self) -> bool:
        """Every configured topic exists and the consumer has seen all its partitions."""
        return not (self._health.missing_topics or self._health.unread_topics)

    async def check(self, known: dict[str, int] | None = None) -> None:
        """Compare with `known` (every topic the brokers know, with its partition count), or ask the
        brokers; an unread topic gets the consumer's metadata refreshed at once."""
        try:
            if known is None:
                async with asyncio.timeout(ASK_SECONDS):
                    known = await self._consumer.partition_counts()
            if self._unread(known):
                async with asyncio.timeout(ASK_SECONDS):
                    await self._consumer.refresh_metadata()
        except (KafkaError, OSError, TimeoutError):
            return  # the reachability probe reports that
        self._record(tuple(topic for topic in self._configured if not known.get(topic)), self._unread(known))

    async def watch(self) -> None:
        """Until cancelled: look again every WATCH_SECONDS while some topic is missing or unread (the
        reachability probe looks every few seconds otherwise)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if not self.complete:
                await self.check()

    def _unread(self, known: dict[str, int]) -> tuple[str, ...]:
        seen = self._consumer.partitions_for_topic
        return tuple(topic for topic in self._configured if known.get(topic, 0) > len(seen(topic) or ()))

    def _record(self, missing: tuple[str, ...], unread: tuple[str, ...]) -> None:
        health = self._health
        self._metrics.topics_missing.set(len(missing))
        self._metrics.topics_unread.set(len(unread))
        if missing != health.missing_topics and missing:
            log.error(
                "input topics do not exist; nothing on them is protected",
                missing=list(missing),
                present=[topic for topic in self._configured if topic not in missing],
                setting="GUARD_INPUT_TOPICS",
            )
        if found := [topic for topic in health.missing_topics if topic not in missing]:
            log.info("input topics found", topics=found)
        if unread != health.unread_topics:
            if unread:
                log.info("input topics not read yet; refreshing the consumer's metadata", topics=list(unread))
            else:
                log.info("input topics read", topics=list(health.unread_topics))
        health.missing_topics, health.unread_topics = missing, unread
