"""Decision -> audited action, one task per decision so a slow campaign never holds up the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from guard.actions.pause import PauseClient, PauseResult
from guard.audit import AuditEvent, Outcome, Result, audit_event
from guard.engine import Decision
from guard.health import Health
from guard.metrics import Metrics
from guard.settled import SettledDecisions

log = structlog.get_logger("guard.actions")

Publish = Callable[[AuditEvent], Awaitable[None]]


class Dispatcher:
    """Runs each decision to a settled state: `fired` audited, pause called (unless alert or dry
    run), outcome audited. `on_recorded` is called once `fired` is written, which lets the offset
    be committed: a restart finds a recorded decision without an outcome and resumes it."""

    def __init__(
        self,
        pause_client: PauseClient | None,
        publish: Publish,
        metrics: Metrics,
        health: Health,
        settled: SettledDecisions,
        *,
        dry_run: bool,
    ) -> None:
        self._client, self._publish, self._metrics, self._health = pause_client, publish, metrics, health
        self._settled = settled
        self._dry_run = dry_run or pause_client is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acting: set[str] = set()  # decision ids whose pause call is under way in this process

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(self, decision: Decision, on_recorded: Callable[[], None]) -> None:
        """Record, act and record the outcome, in a task of its own."""
        self._spawn(self._settle(decision, on_recorded), decision)

    def resume(self, decision: Decision) -> None:
        """Act on a decision recorded before a restart whose outcome never was."""
        log.warning(
            "resuming a decision recorded before a restart", campaign_id=decision.campaign_id, decision_id=decision.id
        )
        self._spawn(self._pause(decision, time.time()), decision)

    def _spawn(self, work: Coroutine[Any, Any, None], decision: Decision) -> None:
        task = asyncio.create_task(work, name=f"decision-{decision.id}")
        self._tasks.add(task)
        self._metrics.inflight.set(len(self._tasks))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.inflight.set(len(self._tasks))
        if not task.cancelled() and task.exception() is not None:
            log.error("decision task crashed", exc_info=task.exception())

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for in-flight decisions; cancel the rest (a restart resumes them:
        recorded ones from the audit topic, unrecorded ones from their uncommitted offsets).
        Returns how many were cancelled."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return len(left)

    async def _settle(self, decision: Decision, on_recorded: Callable[[], None]) -> None:
        """`_record_and_act`, with a crash (a bug, or evidence no audit event can hold) logged and
        counted and the decision's offset released all the same: a partition never stalls on one."""
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                on_recorded()

        try:
            await self._record_and_act(decision, release)
        except Exception:
            self._metrics.decision_errors.inc()
            log.exception(
                "decision crashed before it was settled; its input offset moves on",
                campaign_id=decision.campaign_id,
                rule=decision.rule.name,
                decision_id=decision.id,
                recorded=released,
            )
            release()

    async def _record_and_act(self, decision: Decision, on_recorded: Callable[[], None]) -> None:
        decided_at = time.time()
        rule = decision.rule
        self._metrics.decisions.labels(rule.name, rule.action).inc()
        self._metrics.decision_lag.observe(max(0.0, decided_at - decision.fired_at))
        log.warning(
            "rule fired",
            campaign_id=decision.campaign_id,
            rule=rule.name,
            action=rule.action,
            value=decision.value,
            threshold=rule.level,
            decision_id=decision.id,
        )
        await self._publish(audit_event(decision, "fired", decided_at=decided_at, dry_run=self._dry_run))
        on_recorded()
        if rule.action == "pause":
            await self._pause(decision, decided_at)

    async def _pause(self, decision: Decision, decided_at: float) -> None:
        await self._settled.wait()
        if decision.id in self._settled:
            # acted on before a restart or rebalance (the audit says so): never again, even if the
            # user has resumed the campaign since
            log.info(
                "decision already settled before a restart", campaign_id=decision.campaign_id, decision_id=decision.id
            )
            return
        if decision.id in self._acting:
            # met again while its call is under way: a partition revoked and assigned back replays
            # the decision before the audit can say it is settled
            log.info("decision already being acted on", campaign_id=decision.campaign_id, decision_id=decision.id)
            return
        self._acting.add(decision.id)
        try:
            await self._act(decision, decided_at)
        finally:
            self._acting.discard(decision.id)

    async def _act(self, decision: Decision, decided_at: float) -> None:
        if decision.superseded_by is not None:
            await self._record(decision, "already_paused", decided_at)
            return
        if self._dry_run or self._client is None:
            await self._record(decision, "dry_run", decided_at)
            return
        try:
            outcome = await self._client.pause(decision.campaign_id, idempotency_key=decision.id)
        except Exception as error:  # a bug must still leave an audited outcome, never a silent task
            log.exception("pause call crashed", campaign_id=decision.campaign_id, decision_id=decision.id)
            outcome = PauseResult(
                "failed", None, 1, error_code="internal_error", error=repr(error), answered_at=time.time()
            )
        self._metrics.api_attempts.inc(outcome.attempts)
        self._metrics.action_seconds.observe(outcome.answered_at - decided_at)
        if outcome.authentication_failed:
            self._health.authentication_failed()
            self._metrics.auth_failed.set(1)
            log.error("Leadterra rejected the API key: no campaign can be paused", campaign_id=decision.campaign_id)
        (log.error if outcome.outcome == "failed" else log.info)(
            "pause " + outcome.outcome,
            campaign_id=decision.campaign_id,
            decision_id=decision.id,
            http_status=outcome.http_status,
            attempts=outcome.attempts,
            error_code=outcome.error_code,
        )
        result = Result(
            http_status=outcome.http_status,
            attempts=outcome.attempts,
            paused_at=outcome.paused_at,
            campaign_status=outcome.campaign_status,
            error_code=outcome.error_code,
            error=outcome.error,
        )
        await self._record(decision, outcome.outcome, decided_at, result, outcome.answered_at)

    async def _record(
        self,
        decision: Decision,
        outcome: Outcome,
        decided_at: float,
        result: Result | None = None,
        answered_at: float | None = None,
    ) -> None:
        """Audit the outcome; from then on no guard process acts on this decision again."""
        self._metrics.actions.labels(outcome).inc()
        dry_run = self._dry_run or outcome == "dry_run"
        await self._publish(
            audit_event(
                decision, outcome, decided_at=decided_at, dry_run=dry_run, result=result, answered_at=answered_at
            )
        )
        self._settled.add(decision.id)
