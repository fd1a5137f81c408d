"""Which decisions already have an outcome, so a restarted or rebalanced guard never acts twice.

The audit topic is the record: a decision with any outcome but `fired` was acted on (or given
up on) by some guard process. On every assignment of new partitions the audit topic is read again
for the rules' look-back (guard.runtime.recovery): the pauses of those partitions wait for it.
"""

from __future__ import annotations

from contextlib import aclosing

import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from guard.contracts.audit import read_audit_outcome
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import UnknownTopic, read_topic

log = structlog.get_logger("guard.runtime.settled")


async def settled_decision_ids(settings: KafkaSettings, audit_topic: str, since_ms: int) -> set[str]:
    """Decisions with a final outcome (anything but `fired`) in the audit topic since `since_ms`."""
    settled: set[str] = set()
    unreadable = 0
    try:
        async with aclosing(read_topic(settings, audit_topic, since_ms)) as batches:  # closed even if cancelled
            async for records in batches:
                for record in records:
                    try:
                        event = read_audit_outcome(record.value)
                    except ValidationError:
                        unreadable += 1  # not an audit event of ours: nothing to learn from it
                        continue
                    if event.outcome != "fired":
                        settled.add(event.decision_id)
    except UnknownTopic:
        pass  # nothing was ever audited
    if unreadable:
        log.warning("audit records that are no audit event skipped", topic=audit_topic, count=unreadable)
    return settled


class SettledDecisions:
    """Decision ids with an outcome: read from the audit topic (`scan`) and added as this process records them."""

    def __init__(self, settings: KafkaSettings, audit_topic: str) -> None:
        self._settings, self._topic = settings, audit_topic
        self._ids: set[str] = set()

    def __contains__(self, decision_id: str) -> bool:
        return decision_id in self._ids

    def add(self, decision_id: str) -> None:
        self._ids.add(decision_id)

    async def scan(self, since_ms: int) -> None:
        """Read the audit topic from `since_ms` (epoch ms); ids added meanwhile are kept. A read error
        is logged: the guard then acts without knowing earlier outcomes."""
        try:
            self._ids |= await settled_decision_ids(self._settings, self._topic, since_ms)
        except (KafkaError, OSError) as error:
            log.error("cannot read the audit topic; acting without knowing earlier outcomes", error=str(error))
