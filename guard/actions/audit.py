"""What a decision and its outcome become on the audit topic: the `AuditEvent` of guard.contracts.audit,
built from the engine's decision, with error texts redacted and cut."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pydantic import ValidationError

from guard.contracts.audit import (
    AuditEvent,
    Evidence,
    ExemptionRef,
    NotificationFailure,
    Outcome,
    Result,
    RuleRef,
    ScopeRef,
    Timings,
    audit_id,
)
from guard.engine import Decision
from guard.engine.episodes import EpisodeStart
from guard.redact import redact
from guard.rules.durations import format_duration
from guard.rules.models import Rule, RuleSet

MAX_ERROR_CHARS = 500


def audit_event(
    decision: Decision,
    outcome: Outcome,
    *,
    decided_at: float,
    dry_run: bool,
    result: Result | None = None,
    answered_at: float | None = None,
    workspace_id: str | None = None,
    exemption: ExemptionRef | None = None,
    notification: NotificationFailure | None = None,
    note: str | None = None,
    as_recorded: AuditEvent | None = None,
) -> AuditEvent:
    """The audit event of `decision`'s `outcome`. `as_recorded`: the decision's `fired` record written before a
    restart, whose rule and evidence the outcome repeats (the rule may have changed since, or be gone)."""
    rule = decision.rule
    if result is not None and result.error is not None:
        # redacted before it is cut, so a cut cannot leave half a secret
        result = result.model_copy(update={"error": redact(result.error)[:MAX_ERROR_CHARS]})
    if notification is not None:
        notification = notification.model_copy(update={"error": redact(notification.error)[:MAX_ERROR_CHARS]})
    return AuditEvent(
        id=audit_id(decision.id, outcome, notification.channel if notification is not None else ""),
        decision_id=decision.id,
        outcome=outcome,
        campaign_id=decision.campaign_id,
        workspace_id=workspace_id,
        dry_run=dry_run,
        rule=as_recorded.rule
        if as_recorded is not None
        else RuleRef(
            name=rule.name,
            version=rule.version,
            action=rule.action,
            severity=rule.severity,
            description=rule.description,
            labels=rule.labels,
        ),
        evidence=as_recorded.evidence
        if as_recorded is not None
        else Evidence(
            window=_window_text(rule),
            numerator=decision.numerator,
            denominator=decision.denominator,
            value=decision.value,
            threshold=rule.level,
            min_volume=rule.min_volume,
            evidence_from=_utc(decision.evidence_from),
            evidence_to=_utc(decision.fired_at),
            episode_from=_utc(decision.episode_from) if decision.episode_from is not None else None,
            episode_began=decision.episode_began.value if decision.episode_began is not None else None,
            message_ids=list(decision.message_ids),
            lower_bound=decision.lower_bound,
        ),
        result=result,
        superseded_by=decision.superseded_by,
        scope=(
            ScopeRef(key=decision.scope, decision_id=decision.scope_decision_id or "")
            if decision.scope is not None
            else None
        ),
        exemption=exemption,
        notification=notification,
        note=redact(note)[:MAX_ERROR_CHARS] if note is not None else None,
        timings=Timings(
            event_time=_utc(decision.fired_at),
            # a decision recorded before a restart was decided then, whenever its outcome came
            decided_at=as_recorded.timings.decided_at if as_recorded is not None else _utc(decided_at),
            answered_at=_utc(answered_at) if answered_at is not None else None,
        ),
    )


def recorded_decision(event: AuditEvent, rules: RuleSet) -> Decision | None:
    """The pause decision an audit event was written for, rebuilt with the loaded rule it names. A rule changed or
    removed since stands in as recorded (`rule_as_recorded`): a pause recorded `fired` is seen through whatever the
    rules say now, its outcome audited with the rule and evidence of its record. None: a record no rule can be
    made of (forged)."""
    rule = next((r for r in rules.rules if r.name == event.rule.name and r.version == event.rule.version), None)
    if rule is None:
        rule = rule_as_recorded(event.rule, rules)
        if rule is None:
            return None
    evidence = event.evidence
    return Decision(
        id=event.decision_id,
        campaign_id=event.campaign_id,
        rule=rule,
        fired_at=evidence.evidence_to.timestamp(),
        numerator=evidence.numerator,
        denominator=evidence.denominator,
        value=evidence.value,
        evidence_from=evidence.evidence_from.timestamp(),
        message_ids=tuple(evidence.message_ids),
        lower_bound=evidence.lower_bound,
        superseded_by=event.superseded_by,
        episode_from=evidence.episode_from.timestamp() if evidence.episode_from is not None else None,
        episode_began=EpisodeStart(evidence.episode_began) if evidence.episode_began is not None else None,
        workspace_id=event.workspace_id,
        scope=event.scope.key if event.scope is not None else None,
        scope_decision_id=event.scope.decision_id if event.scope is not None else None,
    )


def rule_as_recorded(recorded: RuleRef, rules: RuleSet) -> Rule | None:
    """A pause rule to see a recorded decision through when the rule it names has changed or gone: the loaded rule
    of that name (its notification targets), as a pause; else one made of the record's name, description, severity
    and labels, whose condition is never evaluated. None when the record cannot make a valid rule."""
    loaded = next((r for r in rules.rules if r.name == recorded.name), None)
    if loaded is not None:
        return loaded if loaded.action == "pause" else loaded.model_copy(update={"action": "pause"})
    fields = recorded.model_dump(include={"name", "description", "severity", "labels"})
    try:
        return Rule.model_validate({**fields, "action": "pause", "count": "bounced", "window": "1h", "threshold": 1})
    except ValidationError:
        return None


def _window_text(rule: Rule) -> str:
    if rule.cusum is not None:
        return f"cusum {rule.cusum.healthy * 100:.6g}% vs {rule.cusum.bad * 100:.6g}%"
    return format_duration(rule.window) if rule.window is not None else f"last {rule.last}"


# The times a datetime can hold: an audit event is written for any decision, whatever its evidence's times.
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _utc(epoch: float) -> datetime:
    if not math.isfinite(epoch) or not _EARLIEST.timestamp() <= epoch <= _LATEST.timestamp():
        return _EARLIEST if not epoch > 0 else _LATEST
    return datetime.fromtimestamp(epoch, tz=UTC)
