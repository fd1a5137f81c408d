"""`guard decisions`: what the audit topic says the guard decided, for a person.

Every decision has a `fired` event and, once settled, an outcome event (and maybe
`notify_failed` events after it); they share a `decision_id`. This module folds them into one
row per decision, filters the rows and renders them as a table, JSON lines or a full explanation.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from guard.contracts.audit import FINAL_OUTCOMES, AuditEvent, ScopeRef


@dataclass
class DecisionRecord:
    """One decision as the audit topic tells it: its `fired` event, its outcome, what else was said."""

    fired: AuditEvent | None = None
    outcome: AuditEvent | None = None
    notes: list[AuditEvent] = field(default_factory=list)  # notify_failed events

    @property
    def latest(self) -> AuditEvent:
        event = self.outcome or self.fired or self.notes[0]
        return event

    @property
    def outcome_name(self) -> str:
        """The outcome; `fired` while a pause decision is not settled, `alert` for an alert (it calls nobody, so
        its `fired` event is all there is)."""
        if self.outcome is not None:
            return self.outcome.outcome
        return "alert" if self.fired is not None and self.fired.rule.action == "alert" else "fired"

    @property
    def when(self) -> datetime:
        return self.latest.timings.decided_at


@dataclass
class Filters:
    since: float | None = None  # wall clock of the decision, epoch seconds
    campaign: str | None = None  # id or glob
    rule: str | None = None  # name or glob
    outcome: str | None = None
    workspace: str | None = None

    def keep(self, record: DecisionRecord) -> bool:
        event = record.latest
        return (
            (self.since is None or record.when.timestamp() >= self.since)
            and (self.campaign is None or fnmatch.fnmatchcase(event.campaign_id, self.campaign))
            and (self.rule is None or fnmatch.fnmatchcase(event.rule.name, self.rule))
            and (self.outcome is None or record.outcome_name == self.outcome)
            and (self.workspace is None or event.workspace_id == self.workspace)
        )


@dataclass
class Folded:
    decisions: list[DecisionRecord]
    unreadable: int  # records that are not audit events of this version


def fold(values: Iterable[bytes | None]) -> Folded:
    """Audit record values (in topic order per campaign) -> one record per decision, oldest first."""
    by_id: dict[str, DecisionRecord] = {}
    unreadable = 0
    for value in values:
        try:
            event = AuditEvent.model_validate_json(value or b"")
        except ValidationError:
            unreadable += 1
            continue
        record = by_id.setdefault(event.decision_id, DecisionRecord())
        if event.outcome == "fired":
            record.fired = event
        elif event.outcome in FINAL_OUTCOMES:
            record.outcome = event
        else:
            record.notes.append(event)
    return Folded(sorted(by_id.values(), key=lambda r: (r.when, r.latest.campaign_id)), unreadable)


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def table(records: list[DecisionRecord]) -> str:
    header = ("CAMPAIGN", "WORKSPACE", "RULE", "VALUE / THRESHOLD", "WINDOW", "OUTCOME", "WHEN (UTC)")
    rows = [header]
    for record in records:
        event = record.latest
        compared, threshold, _ = event.evidence.readable()
        value = f"{compared} / {threshold}"
        rows.append(
            (
                event.campaign_id,
                event.workspace_id or "-",
                event.rule.name,
                value,
                event.evidence.window,
                record.outcome_name + (" (notify failed)" if record.notes else ""),
                _utc(record.when),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "".join(line + "\n" for line in lines)


def _scope_lines(scope: ScopeRef, every: Iterable[DecisionRecord]) -> list[str]:
    """The scope's decision and each campaign it came to, with its outcome."""
    campaigns = sorted(
        (r.latest.campaign_id, r.outcome_name)
        for r in every
        if r.latest.scope is not None and r.latest.scope.decision_id == scope.decision_id
    )
    lines = [
        f"  scope     {scope.key}: the evidence above is the scope's, over every campaign of it",
        f"            its decision {scope.decision_id} came to {len(campaigns)} campaign(s) read here:",
    ]
    lines.extend(f"              {campaign}  {outcome}" for campaign, outcome in campaigns)
    return lines


def json_lines(records: list[DecisionRecord]) -> str:
    """Each decision's latest audit event (its outcome, else its `fired`), one JSON object a line."""
    return "".join(record.latest.model_dump_json() + "\n" for record in records)


def explain(record: DecisionRecord, every: Iterable[DecisionRecord] = ()) -> str:
    """One decision's whole evidence, the way a person reads it; for a decision of a rule over a scope, with what
    became of the other campaigns of the scope's decision among `every` (the decisions read)."""
    event = record.latest
    rule, evidence, timings = event.rule, event.evidence, event.timings
    rate = evidence.denominator is not None
    lines = [
        f"Campaign {event.campaign_id}" + (f" (workspace {event.workspace_id})" if event.workspace_id else ""),
        f"  rule      {rule.name} (version {rule.version}, action {rule.action}, severity {rule.severity})",
        f"            {rule.description}",
    ]
    if evidence.sequential:
        lines.append(
            f"  evidence  a cusum of {evidence.value:.2f} ({evidence.numerator} of {evidence.denominator} since it "
            f"rose from zero) against its alarm level {evidence.threshold:.2f}"
        )
    elif rate:
        counted = f"{evidence.numerator} of {evidence.denominator} ({evidence.value:.2%})"
        if evidence.lower_bound is not None:
            counted += f", lower bound {evidence.lower_bound:.2%}"
        lines.append(f"  evidence  {counted} against a threshold of {evidence.threshold:.2%}")
        if evidence.min_volume is not None:
            lines.append(f"            judged from {evidence.min_volume} events on (min_volume)")
    else:
        lines.append(f"  evidence  {evidence.numerator} events against a threshold of {evidence.threshold:g}")
    lines.append(f"  window    {evidence.window}: {_utc(evidence.evidence_from)} .. {_utc(evidence.evidence_to)} UTC")
    if evidence.episode_from is not None:
        lines.append(f"  episode   {evidence.episode_began} {_utc(evidence.episode_from)} UTC")
    if evidence.message_ids:
        lines.append(f"  messages  {', '.join(evidence.message_ids)}")
    if event.scope is not None:
        lines.extend(_scope_lines(event.scope, every))
    lines.append(f"  decided   {_utc(timings.decided_at)} UTC (crossing event at {_utc(timings.event_time)} UTC)")
    lines.append(f"  outcome   {record.outcome_name}" + (" (dry run)" if event.dry_run else ""))
    if event.superseded_by:
        lines.append(f"            covered by the pause of decision {event.superseded_by}, made moments before")
    if record.outcome_name == "superseded":
        lines.append("            not acted on: decided in a backlog, no longer in force when the guard caught up")
    if event.note:
        lines.append(f"  note      {event.note}")
    if event.exemption is not None:
        exemption = event.exemption
        scope = f"rule {exemption.rule}" if exemption.rule else "every rule"
        lines.append(
            f"            exemption {exemption.id} for {exemption.campaigns} ({scope}) by {exemption.by}: "
            f"{exemption.reason!r}, until {_utc(exemption.expires_at)} UTC"
        )
    if event.result is not None:
        result = event.result
        answer = f"HTTP {result.http_status}" if result.http_status is not None else "no HTTP answer"
        lines.append(f"            {answer} after {result.attempts} attempt(s)")
        if result.paused_at:
            lines.append(f"            pausedAt {result.paused_at}")
        if result.error_code or result.error:
            lines.append(f"            error {result.error_code or ''} {result.error or ''}".rstrip())
    if timings.answered_at is not None:
        lines.append(f"  answered  {_utc(timings.answered_at)} UTC")
    for note in record.notes:
        if note.notification is not None:
            failure = note.notification
            lines.append(
                f"  notify    {failure.channel}: not delivered after {failure.attempts} attempt(s): {failure.error}"
            )
    lines.append(f"  decision  {event.decision_id}")
    return "\n".join(lines) + "\n"
