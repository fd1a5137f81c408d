"""The dispatcher against the Leadterra stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import structlog.testing
from pydantic import SecretStr

from guard.actions.dispatch import Dispatcher
from guard.actions.notify import Notifier
from guard.actions.pause import PauseClient
from guard.contracts.audit import AuditEvent
from guard.engine import Decision, Engine, record_decisions
from guard.rules import load_rules
from guard.runtime.settings import KafkaSettings
from guard.runtime.settled import SettledDecisions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn
from guard.tools.decisions import explain, fold

RULES = Path(__file__).parent.parent / "rules"


def pause_decision(campaign_id: str) -> Decision:
    """A real decision of the shipped rules: a campaign whose sends bounce one in four."""
    start = time.time() - 600
    values = (
        value
        for n in range(200)
        for value in [sent(campaign_id, start + n), *([bounced(campaign_id, start + n + 0.5)] if n % 4 == 0 else [])]
    )
    for _, decision in record_decisions(Engine(load_rules(RULES)), ((value, time.time()) for value in values)):
        if decision.action == "pause":
            return decision
    raise AssertionError("premise: the shipped rules pause this campaign")


async def test_a_decision_met_again_while_its_call_is_under_way_is_not_called_twice(
    standin: LeadterraStandIn,
) -> None:
    """After a rebalance the partition's new engine replays the decision and the service resumes
    it while this process's first call is still held by a slow API: one request, one outcome."""
    standin.add_campaign("camp_slow")
    standin.latency = 0.5
    published: list[AuditEvent] = []

    async def publish(event: AuditEvent) -> None:
        published.append(event)

    client = PauseClient(
        standin.url, SecretStr(standin.api_key), timeout=5, deadline=10, backoff_initial=0.01, backoff_max=0.05
    )
    dispatcher = Dispatcher(
        client, publish, Metrics(), Health(), SettledDecisions(KafkaSettings(), "audit"), dry_run=False
    )
    decision = pause_decision("camp_slow")
    try:
        dispatcher.submit(decision, lambda: None)
        while not standin.in_flight:
            await asyncio.sleep(0.01)
        dispatcher.resume(decision)  # as guard.runtime.recovery does once the replay is checked against the audit
        await dispatcher.drain(10)
    finally:
        await client.aclose()
    assert len(standin.pause_requests()) == 1
    assert [event.outcome for event in published] == ["fired", "paused"]


async def test_a_decision_no_audit_event_can_hold_is_logged_counted_and_releases_its_offset() -> None:
    """Evidence stamped before year 1 in UTC cannot be written as an audit event: the crash is
    logged and counted, and the offset is released, so the partition's commits go on."""
    published: list[AuditEvent] = []

    async def publish(event: AuditEvent) -> None:
        published.append(event)

    metrics = Metrics()
    dispatcher = Dispatcher(None, publish, metrics, Health(), SettledDecisions(KafkaSettings(), "audit"), dry_run=True)
    decision = dataclasses.replace(pause_decision("camp_ancient"), fired_at=-62135683140.0)
    released: list[bool] = []
    with structlog.testing.capture_logs() as logs:
        dispatcher.submit(decision, lambda: released.append(True))
        assert await dispatcher.drain(5) == 0
    assert released == [True]
    assert published == []
    assert metrics.decision_errors._value.get() == 1
    [crash] = [entry for entry in logs if entry["log_level"] == "error"]
    assert crash["decision_id"] == decision.id and crash["recorded"] is False


class TestSupersede:
    """A pause decision of a backlog whose episode ended before the guard caught up (guard.runtime.catchup)."""

    NOTE = "the campaign kept sending after this decision and its resume grace"

    async def test_it_is_recorded_with_its_note_and_calls_no_one(self, standin: LeadterraStandIn) -> None:
        """`fired`, then `superseded` with the note; no pause call, no notification (Slack hears of pauses and
        failures only), counted as an action's outcome, its offset released once both are written."""
        standin.add_campaign("camp_over")
        published: list[AuditEvent] = []

        async def publish(event: AuditEvent) -> None:
            published.append(event)

        metrics, settled = Metrics(), SettledDecisions(KafkaSettings(), "audit")
        client = PauseClient(
            standin.url, SecretStr(standin.api_key), timeout=5, deadline=10, backoff_initial=0.01, backoff_max=0.05
        )
        notifier = Notifier(publish, metrics, global_slack_url=SecretStr(f"{standin.url}/slack"), deadline=1)
        dispatcher = Dispatcher(client, publish, metrics, Health(), settled, dry_run=False, notifier=notifier)
        decision = pause_decision("camp_over")
        released: list[int] = []
        try:
            dispatcher.supersede(decision, lambda: released.append(len(published)), self.NOTE)
            assert await dispatcher.drain(5) == 0
            await notifier.aclose(2)
        finally:
            await client.aclose()
        assert [(event.outcome, event.note) for event in published] == [("fired", None), ("superseded", self.NOTE)]
        assert released == [2]
        assert standin.requests == []
        assert decision.id in settled
        assert metrics.actions.labels("superseded")._value.get() == 1
        assert metrics.notifications.labels("slack", "sent")._value.get() == 0
        [record] = fold(event.model_dump_json().encode() for event in published).decisions
        assert f"note      {self.NOTE}" in explain(record)  # what `guard decisions --explain` shows

    async def test_a_decision_with_an_outcome_keeps_it(self) -> None:
        """Acted on before a restart (the audit says so): nothing more is written, the offset is released."""
        published: list[AuditEvent] = []

        async def publish(event: AuditEvent) -> None:
            published.append(event)

        settled = SettledDecisions(KafkaSettings(), "audit")
        dispatcher = Dispatcher(None, publish, Metrics(), Health(), settled, dry_run=True)
        decision = pause_decision("camp_paused_before")
        settled.add(decision.id)
        released: list[bool] = []
        dispatcher.supersede(decision, lambda: released.append(True), self.NOTE)
        assert await dispatcher.drain(5) == 0
        assert published == []
        assert released == [True]
