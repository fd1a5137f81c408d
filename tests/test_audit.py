"""The audit event: one definition, written and read through it; the pause result is its `result`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from guard.actions.audit import audit_event, recorded_decision
from guard.actions.pause import PauseResult
from guard.contracts.audit import AuditEvent, Result, read_audit, read_audit_outcome
from guard.engine import Decision, Engine, record_decisions
from guard.rules import RuleSet, load_rules
from guard.testing.events import bounced, sent

RULES = Path(__file__).parent.parent / "rules"


def pause_decision() -> Decision:
    """A real decision of the shipped rules: a campaign whose sends bounce one in four."""
    start = time.time() - 600
    values = [
        v for n in range(200) for v in [sent("camp_a", start + n), *([bounced("camp_a", start + n)] * (n % 4 == 0))]
    ]
    return next(d for _, d in record_decisions(Engine(load_rules(RULES)), ((v, start) for v in values)))


class TestWrittenAndRead:
    def test_an_event_reads_back_as_it_was_written(self) -> None:
        """The bytes the guard writes decode, validated, to an equal event."""
        result = Result(
            http_status=200, attempts=1, paused_at="2026-01-01T00:00:00Z", campaign_status="paused",
            error_code=None, error=None,
        )  # fmt: skip
        event = audit_event(pause_decision(), "paused", decided_at=time.time(), dry_run=False, result=result)
        assert read_audit(event.model_dump_json().encode()) == event

    @pytest.mark.parametrize(
        "value",
        [None, b"", b"{not json", b'{"outcome": "paused"}', b'{"decision_id": "d", "outcome": "vanished"}'],
        ids=["tombstone", "empty", "not-json", "no-decision-id", "unknown-outcome"],
    )
    def test_what_is_no_audit_event_does_not_validate(self, value: bytes | None) -> None:
        """Readers skip these: neither the whole event nor its outcome can be read from them."""
        with pytest.raises(ValidationError):
            read_audit(value)
        with pytest.raises(ValidationError):
            read_audit_outcome(value)

    def test_the_outcome_reads_from_an_event_with_more_fields(self) -> None:
        """The rescan after an assignment needs only the outcome: a later version's extra fields do not hide it."""
        value = json.dumps({"decision_id": "d", "outcome": "paused", "added_later": 1}).encode()
        outcome = read_audit_outcome(value)
        assert (outcome.decision_id, outcome.outcome) == ("d", "paused")  # type: ignore[attr-defined]


class TestRecordedDecision:
    """A pause recorded `fired` before a restart, rebuilt by the next process to see it through."""

    def test_a_rule_edited_since_stands_in_as_a_pause(self) -> None:
        """Its loaded namesake, now an alert, still pauses; the outcome repeats the record's rule and evidence."""
        decision = pause_decision()
        fired = audit_event(decision, "fired", decided_at=time.time(), dry_run=False)
        rules = load_rules(RULES)
        edited = RuleSet(
            rules=[r.model_copy(update={"action": "alert"}) if r.name == decision.rule.name else r for r in rules.rules]
        )
        rebuilt = recorded_decision(fired, edited)
        assert rebuilt is not None and (rebuilt.id, rebuilt.rule.action) == (decision.id, "pause")
        outcome = audit_event(rebuilt, "paused", decided_at=time.time(), dry_run=False, as_recorded=fired)
        assert (outcome.rule, outcome.evidence) == (fired.rule, fired.evidence)

    def test_a_rule_removed_since_is_made_of_the_record(self) -> None:
        decision = pause_decision()
        fired = audit_event(decision, "fired", decided_at=time.time(), dry_run=False)
        rebuilt = recorded_decision(fired, RuleSet(rules=[]))
        assert rebuilt is not None
        assert (rebuilt.rule.name, rebuilt.rule.action, rebuilt.rule.labels) == (
            decision.rule.name,
            "pause",
            decision.rule.labels,
        )

    def test_a_record_no_rule_can_be_made_of_is_not_acted_on(self) -> None:
        """A forged record (a name no rule file may hold) gives no decision: nothing is known to act on."""
        fired = audit_event(pause_decision(), "fired", decided_at=time.time(), dry_run=False)
        forged = fired.model_copy(update={"rule": fired.rule.model_copy(update={"name": "../../etc"})})
        assert recorded_decision(forged, RuleSet(rules=[])) is None


class TestPauseResult:
    def test_written_as_the_audit_result_with_nothing_more(self) -> None:
        """The client's answer is the audit `result` itself: its outcome and answer time stay off the wire."""
        answer = PauseResult(
            outcome="already_paused", http_status=200, attempts=2, paused_at="2026-01-01T00:00:00Z",
            campaign_status="paused", answered_at=time.time(),
        )  # fmt: skip
        decision = pause_decision()
        event = audit_event(decision, "already_paused", decided_at=time.time(), dry_run=False, result=answer)
        written = json.loads(event.model_dump_json())["result"]
        assert written == {
            "http_status": 200, "attempts": 2, "paused_at": "2026-01-01T00:00:00Z", "campaign_status": "paused",
            "error_code": None, "error": None,
        }  # fmt: skip
        assert read_audit(event.model_dump_json().encode()).result == Result(**written)

    def test_what_the_answer_did_not_give_is_null(self) -> None:
        """A call that got no answer has no status; the attempts are always said."""
        answer = PauseResult(outcome="failed", attempts=0, error_code="no_api_key", error="no key")
        assert (answer.http_status, answer.paused_at, answer.campaign_status) == (None, None, None)
        with pytest.raises(ValidationError):
            PauseResult(outcome="failed", error_code="internal_error", error="boom")

    def test_the_json_schema_is_that_of_the_audit_event(self) -> None:
        """The schema the CLI prints knows no pause result: only the audited fields."""
        assert set(AuditEvent.model_json_schema()["$defs"]["Result"]["properties"]) == set(Result.model_fields)
