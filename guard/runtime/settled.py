"""Which decisions already have an outcome, so a restarted or rebalanced guard never acts twice.

The audit topic is the record: a decision with any outcome but `fired` was acted on (or given
up on) by some guard process. On every assignment of new partitions the audit topic is read again
for the rules' look-back (guard.runtime.recovery): the pauses of those partitions wait for it. A
decision recorded `fired` and given no outcome was being acted on when its process stopped: the
replay that derives it again resumes it. A replayed decision never recorded `fired` was not taken
by the guard that read those records live (its reading differed: a pause acted on at catch-up is
not in the log), and is not acted on.
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


async def audited_decision_ids(settings: KafkaSettings, audit_topic: str, since_ms: int) -> tuple[set[str], set[str]]:
    """Decisions with a final outcome (anything but `fired`) in the audit topic since `since_ms`, and those
    recorded `fired`."""
    settled: set[str] = set()
    fired: set[str] = set()
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
                    (fired if event.outcome == "fired" else settled).add(event.decision_id)
    except UnknownTopic:
        pass  # nothing was ever audited
    if unreadable:
        log.warning("audit records that are no audit event skipped", topic=audit_topic, count=unreadable)
    return settled, fired


class SettledDecisions:
    """Decision ids with an outcome: read from the audit topic (`scan`) and added as this process records them;
    and those the audit topic holds as `fired`."""

    def __init__(self, settings: KafkaSettings, audit_topic: str) -> None:
        self._settings, self._topic = settings, audit_topic
        self._ids: set[str] = set()
        self._fired: set[str] = set()
        self._blind = False  # the last audit read failed: which decisions were recorded is not known

    def __contains__(self, decision_id: str) -> bool:
        return decision_id in self._ids

    def add(self, decision_id: str) -> None:
        self._ids.add(decision_id)

    def unsettled(self, decision_id: str) -> bool:
        """Recorded `fired` before a restart and given no outcome: to act on. While the last audit read has
        failed, any decision without an outcome (failing toward the pause)."""
        return decision_id not in self._ids and (self._blind or decision_id in self._fired)

    async def scan(self, since_ms: int) -> None:
        """Read the audit topic from `since_ms` (epoch ms); ids added meanwhile are kept. A read error
        is logged: the guard then acts without knowing earlier outcomes."""
        try:
            settled, fired = await audited_decision_ids(self._settings, self._topic, since_ms)
        except (KafkaError, OSError) as error:
            self._blind = True
            log.error("cannot read the audit topic; acting without knowing earlier outcomes", error=str(error))
            return
        except BaseException:
            self._blind = True
            raise
        self._ids |= settled
        self._fired |= fired
        self._blind = False  # a read from the look-back covers whatever a failed one would have found
