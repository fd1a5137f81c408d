"""Which decisions already have an outcome, so a restarted or rebalanced guard never acts twice.

The audit topic is the record: a decision with any outcome but `fired` was acted on (or given
up on) by some guard process. On every assignment of new partitions the audit topic is read again
for the rules' look-back (guard.runtime.recovery): the pauses of those partitions wait for it.

A decision recorded `fired` and given no outcome was being acted on when its process stopped: the
owner of its campaign's partition resumes it from that record once the partition has caught up,
whether or not its replay derives the decision again (it may not: a pause acted on at catch-up is
not in the log, so a replay can read the campaign otherwise than the process that recorded it). A
replayed decision never recorded `fired` was not taken by the guard that read those records live,
and is not acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from guard.actions.audit import recorded_decision
from guard.contracts.audit import AuditEvent, read_audit, read_audit_outcome
from guard.engine import Decision
from guard.rules.models import RuleSet
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import UnknownTopic, read_topic

log = structlog.get_logger("guard.runtime.settled")


@dataclass(frozen=True, slots=True)
class Fired:
    """A `fired` record: when it was written (its Kafka timestamp, epoch ms) and, for a pause decision, the record
    whole (what a restart may act on; None for an alert's, which gets no more, or a later version's)."""

    at_ms: int
    event: AuditEvent | None

    def matches(self, dry_run: bool) -> bool:
        """Recorded by a guard running as this one does: a dry run's decision is never made real, a live one's
        never settled as a dry run."""
        return (self.event is not None and self.event.dry_run) == dry_run


async def audited_decision_ids(
    settings: KafkaSettings, audit_topic: str, since_ms: int
) -> tuple[dict[str, str], dict[str, Fired]]:
    """Decisions with a final outcome (anything but `fired`) in the audit topic since `since_ms`, with that outcome,
    and those recorded `fired`."""
    settled: dict[str, str] = {}
    fired: dict[str, Fired] = {}
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
                        settled[event.decision_id] = event.outcome
                    elif event.decision_id not in fired:
                        fired[event.decision_id] = Fired(record.timestamp, _whole(record.value))
    except UnknownTopic:
        pass  # nothing was ever audited
    if unreadable:
        log.warning("audit records that are no audit event skipped", topic=audit_topic, count=unreadable)
    return settled, fired


def _whole(value: bytes) -> AuditEvent | None:
    try:
        event = read_audit(value)
    except ValidationError:
        return None
    return event if event.rule.action == "pause" else None


class SettledDecisions:
    """Decision ids with an outcome: read from the audit topic (`scan`) and added as this process records them;
    and those the audit topic holds as `fired`."""

    def __init__(self, settings: KafkaSettings, audit_topic: str) -> None:
        self._settings, self._topic = settings, audit_topic
        self._ids: set[str] = set()
        self._outcomes: dict[str, str] = {}  # of the decisions the audit topic holds an outcome of, read there
        self._fired: dict[str, Fired] = {}
        self._taken: set[str] = set()  # decisions this process records and acts on itself
        self._blind = False  # the last audit read failed: which decisions were recorded is not known

    def __contains__(self, decision_id: str) -> bool:
        return decision_id in self._ids

    def add(self, decision_id: str) -> None:
        self._ids.add(decision_id)
        self._taken.discard(decision_id)

    def take(self, decision_id: str) -> None:
        self._taken.add(decision_id)

    def give_back(self, decision_id: str) -> None:
        self._taken.discard(decision_id)

    def paused_in_episode(self, decision: Decision) -> bool:
        """Whether the audit holds a pause of the decision's campaign by a rule of its name (of any version) from its
        episode on: that breach was acted on already, under the rule as it was then (a description, a cooldown or a
        threshold edited since gives the decisions a replay derives from it new ids)."""
        since = decision.episode_from if decision.episode_from is not None else float("-inf")
        return any(
            (event := fired.event) is not None
            and event.campaign_id == decision.campaign_id
            and event.rule.name == decision.rule.name
            and event.timings.event_time.timestamp() >= since
            for fired in self._fired.values()
        )

    def outcome(self, decision_id: str) -> str | None:
        """What the audit topic says became of a decision (read there: `paused`, `failed`, ...); None if not read."""
        return self._outcomes.get(decision_id)

    def recorded(self, decision_id: str) -> AuditEvent | None:
        """A pause decision's `fired` record read from the audit topic (written before a restart); None if not read."""
        fired = self._fired.get(decision_id)
        return fired.event if fired is not None else None

    def fired_at(self, decision_id: str) -> float | None:
        """When the decision's `fired` record was written (its Kafka timestamp, epoch seconds); None if not read."""
        fired = self._fired.get(decision_id)
        return fired.at_ms / 1000 if fired is not None else None

    def unsettled(self, decision_id: str, *, dry_run: bool) -> bool:
        """Recorded `fired` before a restart, by a guard running as this one does, and given no outcome: to act on.
        While the last audit read has failed, any decision without an outcome (failing toward the pause)."""
        if decision_id in self._ids:
            return False
        fired = self._fired.get(decision_id)
        return self._blind or (fired is not None and fired.matches(dry_run))

    def in_flight(self, carried: Callable[[str], bool], rules: RuleSet, *, dry_run: bool) -> list[Decision]:
        """Pause decisions another process recorded `fired` and gave no outcome, for the campaigns (for decisions of a
        scope rule, the scopes: guard.engine.scopes) `carried` says are read here, rebuilt from their record with the
        loaded rules: to act on, as their recording process would have. None while the last audit read failed (what
        was recorded is not known), and only those recorded by a guard running as this one does (dry or not)."""
        decisions = []
        for decision_id, fired in [] if self._blind else self._fired.items():
            event = fired.event
            if event is None or decision_id in self._ids or decision_id in self._taken:
                continue
            # a scope's decision is the business of the scope's reader, which may not read the campaign
            if not fired.matches(dry_run) or not carried(event.scope.key if event.scope else event.campaign_id):
                continue
            decision = recorded_decision(event, rules)
            if decision is None or decision.rule.version != event.rule.version:
                log.warning(
                    "a decision recorded before a restart names "
                    + (
                        "no rule that can be made; not acted on"
                        if decision is None
                        else "a rule changed or removed since; acted on as recorded"
                    ),
                    campaign_id=event.campaign_id,
                    decision_id=decision_id,
                    rule=event.rule.name,
                    rule_version=event.rule.version,
                )
            if decision is not None:
                decisions.append(decision)
        return decisions

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
        self._ids |= settled.keys()
        self._outcomes |= settled
        # kept over reads (one that started earlier may end later, without what a newer one found), but never
        # beyond this read's look-back: an older one's outcome may have been recorded since, and not read again
        self._fired = {i: f for i, f in (self._fired | fired).items() if f.at_ms >= since_ms}
        self._blind = False  # a read from the look-back covers whatever a failed one would have found
