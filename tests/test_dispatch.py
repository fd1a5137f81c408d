"""The dispatcher against the Leadterra stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from guard.actions import dispatch
from guard.actions.boundary import Unavailable, consult
from guard.actions.dispatch import Dispatcher
from guard.actions.exemptions import Exemption, Exemptions, new_exemption
from guard.actions.notify import Notifier
from guard.actions.pause import PauseClient
from guard.contracts.audit import AuditEvent
from guard.engine import Decision, Engine, record_decisions
from guard.rules import load_rules
from guard.runtime import settled as settled_module
from guard.runtime.settings import KafkaSettings
from guard.runtime.settled import Fired, SettledDecisions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn, RecordedRequest
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


async def test_the_decisions_of_a_partition_another_process_owns_now_are_left_to_it(
    standin: LeadterraStandIn, clients: list[PauseClient]
) -> None:
    """Leadterra down, two pauses retrying; a rebalance gives partition 0 to another replica, whose recovery resumes
    its decision from the audit topic: this process stops calling for it (two callers made two outcomes and two
    notices per decision) and goes on with partition 1's."""
    standin.add_campaign("camp_moved")
    standin.add_campaign("camp_kept")
    standin.fail_next(8, 503)
    audit = Audit()
    dispatcher = dispatcher_for(standin, audit, Metrics(), clients)
    moved, kept = pause_decision("camp_moved"), pause_decision("camp_kept")
    dispatcher.submit(moved, lambda: None, partition=("events", 0))
    dispatcher.submit(kept, lambda: None, partition=("events", 1))
    while not (standin.pause_requests("camp_moved") and standin.pause_requests("camp_kept")):
        await asyncio.sleep(0.01)
    assert dispatcher.abandon([("events", 0)]) == 1
    await asyncio.sleep(0.2)  # a call under way when it was stopped may still reach Leadterra: at most one more
    calls = len(standin.pause_requests("camp_moved"))
    assert await dispatcher.drain(10) == 0  # Leadterra is back after the eight failures
    assert len(standin.pause_requests("camp_moved")) == calls
    assert audit.outcomes(moved) == ["fired"] and audit.outcomes(kept) == ["fired", "paused"]


async def test_a_decision_left_to_the_next_owner_is_resumed_here_when_the_partition_comes_back(
    standin: LeadterraStandIn, clients: list[PauseClient]
) -> None:
    """Abandoned, its `fired` record is no longer this process's own: when the partition comes back (a scale-in after
    a scale-out), the audit rescan finds it without an outcome and the recovery resumes it, as any other process's."""
    standin.add_campaign("camp_back")
    standin.fail_next(10_000, 503)
    audit, settled = Audit(), SettledDecisions(KafkaSettings(), "audit")
    client = PauseClient(
        standin.url, SecretStr(standin.api_key), timeout=5, deadline=60, backoff_initial=0.01, backoff_max=0.05
    )
    clients.append(client)
    dispatcher = Dispatcher(client, audit, Metrics(), Health(), settled, dry_run=False)
    decision = pause_decision("camp_back")
    dispatcher.submit(decision, lambda: None, partition=("events", 0))
    while not standin.pause_requests("camp_back"):
        await asyncio.sleep(0.01)
    dispatcher.abandon([("events", 0)])
    await asyncio.sleep(0)
    [fired] = [event for event in audit.events if event.outcome == "fired"]
    settled._fired[decision.id] = Fired(int(time.time() * 1000), fired)  # what the rescan reads from the audit topic
    assert [d.id for d in settled.in_flight(lambda _: True, load_rules(RULES), dry_run=False)] == [decision.id]


async def test_a_decision_resumed_after_a_restart_tells_when_it_was_decided_and_whose_calls_it_counts(
    standin: LeadterraStandIn, clients: list[PauseClient]
) -> None:
    """Recorded `fired` minutes ago by a guard that stopped while Leadterra failed (its calls recorded nowhere),
    then resumed here (review Q1): the outcome keeps the decision's own time, as its `fired` says, not the
    resumption's, and a note says its attempts are this guard's calls only; `guard decisions --explain` shows both."""
    standin.add_campaign("camp_resumed")
    standin.fail_next(3, 503)
    decision = pause_decision("camp_resumed")
    decided_before = decision.fired_at + 1.0  # a second after its crossing event, minutes ago
    assert decided_before < time.time() - 60
    fired = dispatch.audit_event(decision, "fired", decided_at=decided_before, dry_run=False)
    settled = SettledDecisions(KafkaSettings(), "audit")
    settled._fired[decision.id] = Fired(int(decided_before * 1000), fired)  # what the rescan reads from the audit topic
    audit = Audit()
    client = PauseClient(
        standin.url, SecretStr(standin.api_key), timeout=5, deadline=60, backoff_initial=0.01, backoff_max=0.05
    )
    clients.append(client)
    dispatcher = Dispatcher(client, audit, Metrics(), Health(), settled, dry_run=False)
    dispatcher.resume(decision)
    assert await dispatcher.drain(20) == 0
    [outcome] = audit.events
    assert outcome.outcome == "paused" and outcome.result is not None
    assert outcome.timings.decided_at == fired.timings.decided_at
    assert outcome.result.attempts == len(standin.pause_requests("camp_resumed")) == 4
    assert outcome.note is not None and "attempts counts this guard's calls only" in outcome.note
    [record] = fold(event.model_dump_json().encode() for event in [fired, outcome]).decisions
    assert record.when == fired.timings.decided_at  # WHEN in `guard decisions`
    text = explain(record)
    assert "after 4 attempt(s)" in text and "attempts counts this guard's calls only" in text, text


async def test_a_resumed_decision_that_calls_nobody_claims_no_calls_before_it() -> None:
    """Resumed in a dry run (or exempted, or covered): no call here, so its outcome says nothing of the calls of the
    guard before (review S3); its decided_at is still its `fired` record's."""
    decision = pause_decision("camp_dry")
    fired = dispatch.audit_event(decision, "fired", decided_at=decision.fired_at + 1.0, dry_run=True)
    settled = SettledDecisions(KafkaSettings(), "audit")
    settled._fired[decision.id] = Fired(int((decision.fired_at + 1.0) * 1000), fired)
    audit = Audit()
    dispatcher = Dispatcher(None, audit, Metrics(), Health(), settled, dry_run=True)
    dispatcher.resume(decision)
    assert await dispatcher.drain(10) == 0
    [outcome] = audit.events
    assert outcome.outcome == "dry_run" and outcome.note is None
    assert outcome.timings.decided_at == fired.timings.decided_at


class Audit:
    """The audit topic as a list; `fail` makes the next writes raise (a bug in the writer, not Kafka)."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[AuditEvent] = []
        self.fail = fail

    async def __call__(self, event: AuditEvent) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("a bug while writing the audit event")
        self.events.append(event)

    def outcomes(self, decision: Decision) -> list[str]:
        return [event.outcome for event in self.events if event.decision_id == decision.id]


@pytest.fixture
async def clients() -> AsyncIterator[list[PauseClient]]:
    """Pause clients made by `dispatcher_for`, closed after the test."""
    made: list[PauseClient] = []
    yield made
    for client in made:
        await client.aclose()


def dispatcher_for(
    standin: LeadterraStandIn | None, audit: Audit, metrics: Metrics, clients: list[PauseClient], **options: Any
) -> Dispatcher:
    client = None
    if standin is not None:
        client = PauseClient(
            standin.url, SecretStr(standin.api_key), timeout=5, deadline=1, backoff_initial=0.01, backoff_max=0.05
        )
        clients.append(client)
    return Dispatcher(
        client, audit, metrics, Health(), SettledDecisions(KafkaSettings(), "audit"), dry_run=standin is None, **options
    )


async def test_a_decision_whose_times_no_datetime_holds_is_still_recorded(
    clients: list[PauseClient],
) -> None:
    """Evidence stamped before year 1 in UTC: the audit event says the earliest time it can hold, and the
    decision is settled like any other (it used to crash, leaving a `fired` decision without an outcome)."""
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(None, audit, metrics, clients)
    decision = dataclasses.replace(pause_decision("camp_ancient"), fired_at=-62135683140.0)
    released: list[bool] = []
    dispatcher.submit(decision, lambda: released.append(True))
    assert await dispatcher.drain(5) == 0
    assert released == [True]
    assert audit.outcomes(decision) == ["fired", "dry_run"]
    assert audit.events[0].timings.event_time.year == 1
    assert metrics.decision_errors._value.get() == 0


async def test_a_crashed_decision_is_tried_again_and_holds_its_offset_until_recorded(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while recording `fired`: the pause is made all the same (the write is a side surface), the crash is
    counted and the decision tried again, never settled silently; its offset is released only once `fired` is
    written, and the campaign is paused once."""
    monkeypatch.setattr(dispatch, "CRASH_BACKOFF", (0.01, 0.05))
    standin.add_campaign("camp_crash")
    audit, metrics = Audit(fail=1), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    decision = pause_decision("camp_crash")
    released: list[list[str]] = []
    dispatcher.submit(decision, lambda: released.append(audit.outcomes(decision)))
    assert await dispatcher.drain(10) == 0
    assert metrics.decision_errors._value.get() == 1
    assert metrics.side_surface_errors.labels("audit_write")._value.get() == 1
    assert released and "fired" in released[0]  # after the `fired` record, not at the crash
    assert sorted(audit.outcomes(decision)) == ["fired", "paused"]
    assert len(standin.pause_requests("camp_crash")) == 1


class SlowAudit(Audit):
    """An audit topic that takes no write for a while (a broker without the topic, and no auto-create)."""

    def __init__(self, until: asyncio.Event) -> None:
        super().__init__()
        self.until = until

    async def __call__(self, event: AuditEvent) -> None:
        await self.until.wait()
        await super().__call__(event)


async def test_an_audit_topic_that_takes_no_write_holds_the_pause_back_only_briefly(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `fired` record cannot be written: after the wait the pause is made; the offset is released only once
    the record is written, and the outcome says it was acted on before."""
    monkeypatch.setattr(dispatch, "AUDIT_WRITE_WAIT_SECONDS", 0.2)
    standin.add_campaign("camp_w")
    writable, metrics = asyncio.Event(), Metrics()
    audit = SlowAudit(writable)
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    decision = pause_decision("camp_w")
    released: list[bool] = []
    dispatcher.submit(decision, lambda: released.append(True))
    await standin.wait_for_pauses(1, timeout=5)
    assert released == []  # not recorded yet: the offset stays pending
    writable.set()
    assert await dispatcher.drain(10) == 0
    assert released == [True]
    assert sorted(audit.outcomes(decision)) == ["fired", "paused"]
    assert "acted before its `fired` record was written" in (audit.events[-1].note or audit.events[0].note or "")


class BrokenExemptions(Exemptions):
    """An exemption store that raises or hangs: the decision must pause all the same."""

    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang
        self.loaded()

    async def wait(self) -> None:
        if self.hang:
            await asyncio.Event().wait()

    def find(self, campaign_id: str, rule_name: str, now: float) -> Exemption | None:
        raise ValueError("year 0 is out of range")


@pytest.mark.parametrize("hang", [False, True], ids=["raises", "hangs"])
async def test_an_exemption_store_that_fails_does_not_exempt(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch, hang: bool
) -> None:
    monkeypatch.setattr(dispatch, "EXEMPTIONS_WAIT_SECONDS", 0.2)
    standin.add_campaign("camp_x")
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients, exemptions=BrokenExemptions(hang))
    decision = pause_decision("camp_x")
    dispatcher.submit(decision, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(decision) == ["fired", "paused"]
    assert "exemptions not consulted" in (audit.events[-1].note or "")
    assert metrics.side_surface_errors.labels("exemptions")._value.get() == 1
    assert metrics.decision_errors._value.get() == 0


class BrokenNotifier:
    def notify(self, decision: Decision, event: AuditEvent) -> None:
        raise KeyError("campaign")  # e.g. a link format naming an unknown field


async def test_a_notifier_that_raises_never_reaches_the_decision(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    standin.add_campaign("camp_n")
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients, notifier=BrokenNotifier())
    decision = pause_decision("camp_n")
    dispatcher.submit(decision, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(decision) == ["fired", "paused"]
    assert metrics.side_surface_errors.labels("notifications")._value.get() == 2  # about `fired`, then `paused`
    assert metrics.decision_errors._value.get() == 0


class HangingAuditRead:
    async def wait(self) -> None:
        await asyncio.Event().wait()


async def test_an_audit_read_that_hangs_lets_the_pause_go_ahead(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "AUDIT_READ_WAIT_SECONDS", 0.2)
    standin.add_campaign("camp_a")
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    decision = pause_decision("camp_a")
    dispatcher.submit(decision, lambda: None, HangingAuditRead())
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(decision) == ["fired", "paused"]
    assert "audit_read not consulted (no answer in time)" in (audit.events[-1].note or "")


async def test_a_consult_cancelled_as_its_answer_arrives_ends_cancelled() -> None:
    """A shutdown's cancel that lands in the loop turn where the surface answers is not swallowed: the task
    ends cancelled instead of running on (asyncio.wait_for on 3.11 returned the answer, CPython gh-86296)."""

    arriving: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def answer() -> str:
        return await arriving

    asking = asyncio.create_task(consult("exemptions", answer, 5, Metrics()))
    await asyncio.sleep(0)  # it now waits for the answer
    arriving.set_result("exempt")
    asking.cancel()  # in the same turn
    with pytest.raises(asyncio.CancelledError):
        await asking


async def test_a_surface_that_swallows_a_cancel_does_not_keep_the_caller_running() -> None:
    """The surface runs in a task of its own: the caller's cancel (a shutdown's) ends the caller, whatever the
    surface does with the cancel it is passed."""
    stubborn = asyncio.Event()

    async def answer() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stubborn.set()
        return "exempt"

    asking = asyncio.create_task(consult("exemptions", answer, 5, Metrics()))
    await asyncio.sleep(0.01)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    await asyncio.wait_for(stubborn.wait(), 1)  # the surface was passed the cancel too


async def test_a_surface_that_fails_on_its_way_out_after_the_timeout_is_logged_not_left_unretrieved() -> None:
    """Given up at the timeout and not waited for, a surface whose cleanup raises leaves no "exception was never
    retrieved" behind (the loop's handler is not called with it)."""
    loop, reported, gone = asyncio.get_running_loop(), [], asyncio.Event()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))  # shared: earlier tests' leftovers too

    async def answer() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            gone.set()
            raise RuntimeError("cleanup failed")  # in place of the cancel, on purpose

    try:
        given = await consult("exemptions", answer, 0.05, Metrics())
        assert isinstance(given, Unavailable) and given.reason == "no answer in time"
        await gone.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(handler)
    assert [context for context in reported if "cleanup failed" in repr(context.get("exception"))] == []


@pytest.mark.parametrize("how", ["raises before it is awaited", "cancels itself"])
async def test_a_surface_that_fails_oddly_is_unavailable_not_the_callers_error(how: str) -> None:
    def at_once() -> Awaitable[str]:
        raise RuntimeError("no store")

    async def cancelled() -> str:
        raise asyncio.CancelledError

    answer = await consult("exemptions", at_once if how.startswith("raises") else cancelled, 5, Metrics())
    assert isinstance(answer, Unavailable)
    assert answer.reason == ("RuntimeError: no store" if how.startswith("raises") else "RuntimeError: cancelled")


def covered(decision: Decision) -> Decision:
    """Another rule's decision for the same campaign moments later, covered by `decision`."""
    later = decision.rule.model_copy(update={"name": decision.rule.name + "-2"})
    return dataclasses.replace(
        decision, id=decision.id[:-4] + "beef", rule=later, fired_at=decision.fired_at + 1, superseded_by=decision.id
    )


async def test_already_paused_only_over_a_pause_that_landed(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    """The covering pause is under way (a slow API) when the covered decision comes: it waits, then is
    `already_paused` without a call of its own."""
    standin.add_campaign("camp_slow")
    standin.latency = 0.3
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    first = pause_decision("camp_slow")
    second = covered(first)
    dispatcher.submit(first, lambda: None)
    dispatcher.submit(second, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(first) == ["fired", "paused"]
    assert audit.outcomes(second) == ["fired", "already_paused"]
    assert len(standin.pause_requests("camp_slow")) == 1


async def test_a_decision_covered_by_a_failed_pause_calls_for_itself(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    """The covering pause failed (404 here; the same for retries exhausted): the covered decision is not
    `already_paused`, it makes its own call, and its audit event says why."""
    standin.latency = 0.2
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    first = pause_decision("camp_unknown")
    second = covered(first)
    dispatcher.submit(first, lambda: None)
    dispatcher.submit(second, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(first) == ["fired", "failed"]
    assert audit.outcomes(second) == ["fired", "failed"]
    assert len(standin.pause_requests("camp_unknown")) == 2
    assert f"covered by decision {first.id}, whose pause ended failed" in (audit.events[-1].note or "")


async def test_a_decision_covered_by_one_this_process_never_saw_calls_for_itself(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    """After a restart the covering decision's outcome is not known here: an idempotent call of its own."""
    standin.add_campaign("camp_r")
    audit, metrics = Audit(), Metrics()
    dispatcher = dispatcher_for(standin, audit, metrics, clients)
    second = covered(pause_decision("camp_r"))
    dispatcher.submit(second, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(second) == ["fired", "paused"]
    assert len(standin.pause_requests("camp_r")) == 1


@pytest.mark.parametrize(("before", "calls"), [("paused", 0), ("failed", 1)])
async def test_a_decision_covered_by_one_settled_before_a_restart_goes_by_its_audited_outcome(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch, before: str, calls: int
) -> None:
    """The covering pause was made before a restart (a rolling update, a rule edit shipped with one), and its user
    resumed the campaign since; the old list's late bounces carry another rule over its line, covered by that pause.
    The audit topic, read at the partition's assignment, says the pause landed: `already_paused`, no call (one
    undid the user's resume). Said to have failed, the decision calls for itself."""
    standin.add_campaign("camp_resumed", status="running")
    first = pause_decision("camp_resumed")
    second = covered(first)

    async def read(settings: KafkaSettings, topic: str, since_ms: int) -> tuple[dict[str, str], dict[str, Fired]]:
        return {first.id: before}, {}

    monkeypatch.setattr(settled_module, "audited_decision_ids", read)
    settled = SettledDecisions(KafkaSettings(), "audit")
    await settled.scan(0)
    client = PauseClient(standin.url, SecretStr(standin.api_key), timeout=5, deadline=1, backoff_initial=0.01)
    clients.append(client)
    audit = Audit()
    dispatcher = Dispatcher(client, audit, Metrics(), Health(), settled, dry_run=False)
    dispatcher.submit(second, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(second) == ["fired", "already_paused" if before == "paused" else "paused"]
    assert len(standin.pause_requests("camp_resumed")) == calls


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
        # the outcome first: a crash between the two leaves no `fired` without an outcome for a next owner to act on
        assert [(event.outcome, event.note) for event in published] == [("superseded", self.NOTE), ("fired", None)]
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


@pytest.mark.parametrize("outcome", ["paused", "failed", "exempted", "dry_run", "failed before a restart"])
async def test_a_pause_decision_whose_outcome_left_its_campaign_running_is_told(
    clients: list[PauseClient], standin: LeadterraStandIn, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """A scope's firing decides again for a campaign its decision did not pause (guard.engine.scopes): the dispatcher
    tells of each outcome that left it running, recorded here or read in the audit topic before a restart (the
    replay derives the decision again, settled); never of one that paused it."""
    standin.add_campaign("camp_r")
    decision = pause_decision("camp_r")
    told: list[Decision] = []
    audit, options = Audit(), {"left_running": told.append}
    if outcome == "failed":
        standin.fail_next(10_000, 503)
    if outcome == "exempted":
        exemptions = Exemptions()
        exemption = new_exemption("camp_r", seconds=3600, reason="seed list", by="ops", rule=None, now=time.time())
        exemptions.apply(exemption.key, exemption.model_dump_json().encode())
        exemptions.loaded()
        options["exemptions"] = exemptions
    if outcome == "failed before a restart":

        async def read(settings: KafkaSettings, topic: str, since_ms: int) -> tuple[dict[str, str], dict[str, Fired]]:
            return {decision.id: "failed"}, {}

        monkeypatch.setattr(settled_module, "audited_decision_ids", read)
        settled = SettledDecisions(KafkaSettings(), "audit")
        await settled.scan(0)
        client = PauseClient(standin.url, SecretStr(standin.api_key), timeout=5, deadline=1, backoff_initial=0.01)
        clients.append(client)
        dispatcher = Dispatcher(client, audit, Metrics(), Health(), settled, dry_run=False, **options)  # type: ignore[arg-type]
    else:
        dispatcher = dispatcher_for(None if outcome == "dry_run" else standin, audit, Metrics(), clients, **options)
    dispatcher.submit(decision, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert told == ([] if outcome == "paused" else [decision])
    assert audit.outcomes(decision)[-1] == ("fired" if outcome == "failed before a restart" else outcome)


def exempt_after_failures(standin: LeadterraStandIn, exemptions: Exemptions, campaign_id: str, n: int) -> Exemption:
    """At the n-th failed pause request, before its answer reaches the guard: the operator exempts the campaign and
    Leadterra comes back, so a retry made would pause it. (Written from a poll, the exemption could land while a
    retry was already on the wire, which then rightly paused.)"""
    exemption = new_exemption(campaign_id, seconds=3600, reason="seed list", by="ops", rule=None, now=time.time())

    def on_request(request: RecordedRequest) -> None:
        if request.is_pause and len(standin.pause_requests(campaign_id)) == n:
            exemptions.apply(exemption.key, exemption.model_dump_json().encode())
            standin.clear_faults()

    standin.on_request = on_request
    return exemption


async def test_an_exemption_written_while_the_pause_is_retried_stops_the_retries(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    """Leadterra is down, the pause retries; the operator sees it (`guard decisions`: `fired`) and exempts the
    campaign, a seed list. The next retry is not made: `exempted`, naming the exemption and the attempts that
    failed; nor the call of another rule's decision that waited for that pause. The retries went on and paused the
    campaign once Leadterra was back, as `paused`; the waiting decision then called for itself (review M)."""
    standin.add_campaign("camp_seed")
    standin.fail_next(10_000, 503)
    exemptions = Exemptions()
    exemptions.loaded()
    audit = Audit()
    client = PauseClient(
        standin.url, SecretStr(standin.api_key), timeout=5, deadline=30, backoff_initial=0.05, backoff_max=0.1
    )
    clients.append(client)
    dispatcher = Dispatcher(
        client,
        audit,
        Metrics(),
        Health(),
        SettledDecisions(KafkaSettings(), "audit"),
        dry_run=False,
        exemptions=exemptions,
    )
    decision = pause_decision("camp_seed")
    waiting = covered(decision)  # another rule's, waiting for the outcome of the first: it called for itself then
    exemption = exempt_after_failures(standin, exemptions, "camp_seed", 3)
    dispatcher.submit(decision, lambda: None)
    dispatcher.submit(waiting, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(decision) == ["fired", "exempted"]
    assert audit.outcomes(waiting) == ["fired", "exempted"]
    final = next(event for event in audit.events if event.decision_id == decision.id and event.outcome == "exempted")
    assert final.exemption is not None and final.exemption.id == exemption.id
    assert "exempted while its pause was under way" in (final.note or "")
    assert all(request.status != 200 for request in standin.pause_requests("camp_seed"))


class FlakyExemptions(Exemptions):
    """An exemption store whose first answer is an error (a bug path, a stalled read), then answers."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded()
        self.failed = False

    def find(self, campaign_id: str, rule_name: str, now: float) -> Exemption | None:
        if not self.failed:
            self.failed = True
            raise ValueError("year 0 is out of range")
        return super().find(campaign_id, rule_name, now)


async def test_an_exemption_store_that_failed_once_is_still_asked_while_the_pause_is_retried(
    clients: list[PauseClient], standin: LeadterraStandIn
) -> None:
    """The store fails when the decision first asks it (the decision goes on: failing toward the pause, counted
    once), then answers. An exemption written while Leadterra is down still stops the retries (review N: a store
    that failed once was asked no more, and the campaign was paused once Leadterra was back)."""
    standin.add_campaign("camp_seed")
    standin.fail_next(10_000, 503)
    exemptions, audit, metrics = FlakyExemptions(), Audit(), Metrics()
    client = PauseClient(
        standin.url, SecretStr(standin.api_key), timeout=5, deadline=30, backoff_initial=0.05, backoff_max=0.1
    )
    clients.append(client)
    settled = SettledDecisions(KafkaSettings(), "audit")
    dispatcher = Dispatcher(client, audit, metrics, Health(), settled, dry_run=False, exemptions=exemptions)
    decision = pause_decision("camp_seed")
    exempt_after_failures(standin, exemptions, "camp_seed", 3)
    dispatcher.submit(decision, lambda: None)
    assert await dispatcher.drain(10) == 0
    assert audit.outcomes(decision) == ["fired", "exempted"]
    assert all(request.status != 200 for request in standin.pause_requests("camp_seed"))
    assert metrics.side_surface_errors.labels("exemptions")._value.get() == 1
