"""Audit events: one per decision and one per outcome, keyed by campaign, with deterministic ids.

The id of an audit event depends only on the decision and the outcome kind, so a decision replayed
after a crash produces events with the same ids and consumers can drop the repeats.

`AuditEvent` is the one definition of the record: the guard writes it, and every reader decodes
through it (`read_audit`, or `read_audit_outcome` for readers that need only the outcome), validated;
a record that does not validate is no audit event of this version, and readers skip and count it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

SCHEMA_VERSION = 1
_AUDIT_NAMESPACE = uuid.UUID("0b5e8f4a-3c1d-4e7a-9f2b-6a8d1c3e5f70")

Outcome = Literal[
    "fired", "paused", "already_paused", "not_running", "dry_run", "failed", "exempted", "superseded", "notify_failed"
]
# what became of the decision itself; `notify_failed` only reports on a notification about it
FINAL_OUTCOMES = ("paused", "already_paused", "not_running", "dry_run", "failed", "exempted", "superseded")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleRef(_Model):
    name: str
    version: str = Field(description="Hash of the rule's text: which exact rule fired.")
    action: Literal["pause", "alert"]
    severity: str
    description: str
    labels: dict[str, str]


class Evidence(_Model):
    window: str = Field(
        description="The rule's sliding window, e.g. '1h', or 'last 200' for a count window, or 'cusum 2% vs 8%' "
        "(healthy vs bad rate) for a cusum rule."
    )
    numerator: int = Field(
        description="Matching events in the window (the count, for count rules); cusum rules: `of` events since "
        "the statistic last rose from zero."
    )
    denominator: int | None = Field(
        description="`per` events in the window; null for count rules; cusum rules: `per` events since the "
        "statistic last rose from zero."
    )
    value: float = Field(
        description="numerator/denominator for rates, the count for counts; for cusum rules the CUSUM statistic "
        "(the log-likelihood ratio of the bad rate against the healthy one, in nats)."
    )
    threshold: float = Field(
        description="What the value had to reach; for cusum rules the alarm level its false-alarm budget sets."
    )
    min_volume: int | None
    evidence_from: datetime = Field(
        description="Event time where the counted evidence starts: the oldest send a count window counted, the "
        "start of the oldest bucket still inside a time window, the first event since a cusum statistic last rose "
        "from zero. Never before `episode_from`."
    )
    evidence_to: datetime = Field(description="Event time of the event that crossed the threshold.")
    episode_from: datetime | None = Field(
        None,
        description="Event time where the episode this decision judges began: the campaign's start "
        "(`campaign.started`) or its resume (its first send later than a pause decision plus the resume grace). "
        "Evidence from before it never counts. Null when the guard saw neither.",
    )
    episode_began: Literal["started", "resumed"] | None = Field(
        None, description="How the episode began: `started` (campaign.started) or `resumed`; null with episode_from."
    )
    message_ids: list[str] = Field(description="A few of the latest matching message ids.")
    lower_bound: float | None = Field(
        None,
        description="Wilson lower bound of the rate, for rules with `confidence` (what must reach the threshold).",
    )

    @property
    def sequential(self) -> bool:
        """A cusum rule's evidence: its value is a statistic in nats, not a rate or a count."""
        return self.window.startswith("cusum ")

    def readable(self) -> tuple[str, str, str]:
        """(the value the rule compared, its threshold, what was counted), as a person reads them."""
        if self.sequential:
            counted = f"{self.numerator} of {self.denominator} since it rose"
            return f"{self.value:.2f}", f"{self.threshold:.2f}", counted
        compared = self.lower_bound if self.lower_bound is not None else self.value
        if self.denominator is not None:
            return f"{compared:.2%}", f"{self.threshold:.2%}", f"{self.numerator} of {self.denominator}"
        return f"{compared:g}", f"{self.threshold:g}", f"{self.numerator} events"


class Result(_Model):
    """What the pause call came to, as audited (`PauseClient.pause` answers with one)."""

    http_status: int | None = Field(description="Last HTTP status from Leadterra; null if none arrived.")
    attempts: int
    paused_at: str | None = Field(description="`pausedAt` as Leadterra returned it.")
    campaign_status: str | None = Field(description="`status` as Leadterra returned it.")
    error_code: str | None = Field(description="Leadterra's error code, or the guard's reason for giving up.")
    error: str | None


class ExemptionRef(_Model):
    """The exemption that kept the guard from acting (`exempted` events)."""

    id: str
    campaigns: str = Field(description="The campaign id or glob the exemption covers, e.g. 'camp_seed_*'.")
    rule: str | None = Field(description="The rule name (or glob) it covers; null: every rule.")
    reason: str
    by: str
    expires_at: datetime


class NotificationFailure(_Model):
    """A notification about an outcome that could not be delivered (`notify_failed` events)."""

    channel: str = Field(description="`slack` or `webhook`, and the channel's name in the rule file.")
    about: str = Field(description="The outcome the notification was about.")
    attempts: int
    error: str


class ScopeRef(_Model):
    """The scope decision a campaign's decision is one of (rules with a `scope` beyond the campaign)."""

    key: str = Field(
        description="The scope that fired, e.g. 'sender_domain:acme.com', 'sender:acc_7', 'workspace:ws_1'."
    )
    decision_id: str = Field(description="The scope's decision: equal for every campaign it paused.")


class Timings(_Model):
    event_time: datetime = Field(description="When the crossing event happened (event time).")
    decided_at: datetime = Field(description="Wall clock when the guard decided.")
    answered_at: datetime | None = Field(None, description="Wall clock when the API answered (outcomes).")


class AuditEvent(_Model):
    """One audit record on the audit topic (JSON value, key = campaign id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(description="Deterministic: uuid5 of decision id and outcome. Dedupe on it.")
    decision_id: str = Field(description="Deterministic id of the decision; equal for its fired and outcome events.")
    outcome: Outcome
    campaign_id: str
    workspace_id: str | None = Field(None, description="The Leadterra workspace of the campaign; null: not known.")
    dry_run: bool
    rule: RuleRef
    evidence: Evidence
    result: Result | None = Field(None, description="The API call's outcome; null on `fired` events.")
    superseded_by: str | None = Field(
        None,
        description="A pause decision for this campaign made moments earlier (another rule's, or one acted on "
        "at catch-up): this one calls nobody and is recorded as already_paused.",
    )
    exemption: ExemptionRef | None = Field(None, description="Why the guard did not act (`exempted`).")
    notification: NotificationFailure | None = Field(None, description="What failed (`notify_failed`).")
    scope: ScopeRef | None = Field(
        None, description="A rule over a workspace, sender or domain fired: the scope, whose evidence this is."
    )
    note: str | None = Field(
        None,
        description="Why the guard acted as it did where the outcome alone does not say: why a decision was "
        "`superseded` (a backlog: the campaign's episode ended before the guard caught up), or a side surface "
        "that failed and was left out (an exemption that could not be evaluated does not exempt).",
    )
    timings: Timings


def audit_id(decision_id: str, outcome: Outcome, detail: str = "") -> str:
    """`detail` tells apart events of one outcome kind, e.g. failed notifications per channel."""
    name = f"{decision_id}/{outcome}" + (f"/{detail}" if detail else "")
    return str(uuid.uuid5(_AUDIT_NAMESPACE, name))


def read_audit(value: bytes | None) -> AuditEvent:
    """Decode one audit record value, validated; raises pydantic's ValidationError for what is none."""
    return AuditEvent.model_validate_json(value or b"")


# The outcome of an audit event and the decision it is about, in AuditEvent's own field definitions,
# for readers that need no more (a restart rescans the whole recent audit topic for them): later
# fields, and events of a later version that adds some, do not stop them.
AuditOutcome = create_model(
    "AuditOutcome",
    __config__=ConfigDict(frozen=True, extra="ignore"),
    **{
        name: (AuditEvent.model_fields[name].annotation, AuditEvent.model_fields[name])
        for name in ("decision_id", "outcome")
    },  # type: ignore[call-overload]
)


def read_audit_outcome(value: bytes | None) -> BaseModel:
    """(decision_id, outcome) of one audit record value, validated; raises pydantic's ValidationError."""
    return AuditOutcome.model_validate_json(value or b"")


def audit_json_schema() -> dict:
    return AuditEvent.model_json_schema()
