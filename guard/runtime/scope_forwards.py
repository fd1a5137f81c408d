"""The scope topic's producer side: each input partition forwards the events it counts, keyed by scope
(guard.engine.scopes), stamped with their input record's time so that a forwarded backlog reads as one."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer

from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.scope_forwards")


class ScopeForwards:
    """`send` and the future it returns never raise: a scope's evidence never stops a campaign's pause."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics) -> None:
        self._producer, self._topic, self._metrics = producer, topic, metrics

    async def send(self, scope: str, value: bytes, timestamp_ms: int, source: str) -> asyncio.Future[bool]:
        try:
            delivery: asyncio.Future | None = await self._producer.send(
                self._topic, value=value, key=scope.encode(), timestamp_ms=timestamp_ms
            )
            error: Exception | None = None
        except Exception as refused:
            delivery, error = None, refused
        return asyncio.create_task(self._settle(scope, source, delivery, error))

    async def _settle(self, scope: str, source: str, delivery: asyncio.Future | None, error: Exception | None) -> bool:
        if delivery is not None:
            try:
                await delivery
                self._metrics.scope_forwards.labels("written").inc()
                return True
            except Exception as failed:
                error = failed
        self._metrics.scope_forwards.labels("failed").inc()
        log.error("event not forwarded to the scope topic", scope=scope, source=source, error=repr(error))
        return False
