"""Which decisions already have an outcome, so a restarted or rebalanced guard never acts twice.

The audit topic is the record: a decision with any outcome but `fired` was acted on (or given
up on) by some guard process. On every assignment of new partitions the service rescans the
audit topic for the rules' look-back; until that scan is done, pause calls wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from guard.kafka import settled_decision_ids
from guard.settings import KafkaSettings

log = structlog.get_logger("guard.settled")


class SettledDecisions:
    def __init__(self, settings: KafkaSettings, audit_topic: str) -> None:
        self._settings, self._topic = settings, audit_topic
        self._ids: set[str] = set()
        self._ready = asyncio.Event()
        self._ready.set()  # nothing assigned yet: nothing to wait for

    def __contains__(self, decision_id: str) -> bool:
        return decision_id in self._ids

    def add(self, decision_id: str) -> None:
        self._ids.add(decision_id)

    async def wait(self) -> None:
        await self._ready.wait()

    def refresh(self, since_ms: int) -> Coroutine[Any, Any, None]:
        """Rescan the audit topic from `since_ms` (ids added meanwhile are kept). Waiters wait from
        this call on, not from when the returned coroutine starts running."""
        self._ready.clear()
        return self._scan(since_ms)

    async def _scan(self, since_ms: int) -> None:
        try:
            self._ids |= await settled_decision_ids(self._settings, self._topic, since_ms)
        except (KafkaError, OSError) as error:
            log.error("cannot read the audit topic; acting without knowing earlier outcomes", error=str(error))
        finally:
            self._ready.set()
