"""Decision -> audited action, one task per decision so a slow campaign never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Hashable
from typing import Any, Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from guard.actions.audit import audit_event
from guard.actions.boundary import Unavailable, consult, tell
from guard.actions.exemptions import Exemption, Exemptions
from guard.actions.keys import PauseKeys
from guard.actions.notify import Notifier
from guard.actions.pause import STOPPED, PauseClient
from guard.actions.tasks import wait_then_cancel
from guard.actions.workspaces import WorkspaceMap
from guard.contracts.audit import AuditEvent, ExemptionRef, Outcome, Result
from guard.engine import Decision
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.actions")
# A decision resumed after a restart, whose pause this guard called: the guard before it may have called Leadterra too,
# and recorded none of its calls
RESUMED_NOTE = (
    "resumed after the guard that recorded its decision stopped: attempts counts this guard's calls only, the "
    "one before may have made more"
)

Publish = Callable[[AuditEvent], Awaitable[None]]

# The control topic is read to its end before the first pause (no exemption missed); a pause waits no longer.
EXEMPTIONS_WAIT_SECONDS = 30.0
# After a restart a pause waits for the audit rescan that may hold its outcome; a read slower than this is
# treated as failed: the pause goes ahead (an idempotent call), its audit event says so.
AUDIT_READ_WAIT_SECONDS = 120.0
# A decision's `fired` record is written before its pause is made; an audit topic that takes no write for this
# long does not hold the pause back any longer (the record is written when the topic takes it).
AUDIT_WRITE_WAIT_SECONDS = 10.0
# Outcomes after which the campaign is not sending: a decision covered by one is `already_paused`.
LANDED = frozenset({"paused", "already_paused", "not_running", "dry_run"})
# outcomes after which the campaign runs on, as far as the guard knows: a scope's firing decides for it again
LEFT_RUNNING = frozenset({"failed", "exempted", "dry_run"})
REMEMBERED_OUTCOMES = 10_000  # settled outcomes kept for decisions covered by them (a cooldown's worth and more)
CRASH_BACKOFF = (0.5, 30.0)  # a crashed decision is tried again after this (initial, most) seconds


class Settled(Protocol):
    """Decision ids with an outcome in the audit topic (the runtime reads it: guard.runtime.settled)."""

    def __contains__(self, decision_id: str) -> bool: ...

    def add(self, decision_id: str) -> None: ...

    def take(self, decision_id: str) -> None:
        """This process records and acts on the decision: a `fired` record of it is no other process's to resume."""

    def give_back(self, decision_id: str) -> None:
        """This process no longer acts on the decision: its `fired` record is for whoever reads its partition next."""

    def fired_at(self, decision_id: str) -> float | None:
        """When the decision's `fired` record was written before a restart (epoch seconds); None if not known."""

    def outcome(self, decision_id: str) -> str | None:
        """What the audit topic says became of the decision (written before a restart); None if not known."""

    def recorded(self, decision_id: str) -> AuditEvent | None:
        """The decision's `fired` record written before a restart, whose rule and evidence its outcome repeats."""


class AuditRead(Protocol):
    """What a live pause waits for: the audit rescan that may hold its outcome (guard.runtime.recovery)."""

    async def wait(self) -> None: ...


Work = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]  # given `release`, settles one decision


class Dispatcher:
    """Runs each decision to a settled state: `fired` audited, pause called (unless alert or dry
    run), outcome audited. `on_recorded` is called once `fired` is written, which lets the offset
    be committed: a restart finds a recorded decision without an outcome and resumes it.

    Side surfaces (exemptions, notifications, the audit read) are consulted through guard.actions.boundary:
    none of them can stop, skip or crash a pause. A decision that crashes all the same (a bug) is retried
    until it settles, its offset held meanwhile: never settled silently."""

    def __init__(
        self,
        pause_client: PauseClient | None,
        publish: Publish,
        metrics: Metrics,
        health: Health,
        settled: Settled,
        *,
        dry_run: bool,
        exemptions: Exemptions | None = None,
        notifier: Notifier | None = None,
        workspace_clients: dict[str, PauseClient] | None = None,
        workspaces: WorkspaceMap | None = None,
        left_running: Callable[[Decision], None] | None = None,
    ) -> None:
        self._publish, self._metrics = publish, metrics
        self._left_running = left_running  # told of each pause decision whose outcome left its campaign running
        self._settled, self._exemptions, self._notifier, self._workspaces = settled, exemptions, notifier, workspaces
        self._keys = PauseKeys(pause_client, workspace_clients or {}, health, metrics)
        self._dry_run = dry_run or self._keys.none
        self._tasks: set[asyncio.Task[None]] = set()
        # the input partition a decision in flight is of, and its id
        self._partition: dict[asyncio.Task[None], tuple[Hashable, str]] = {}
        self._acting: set[str] = set()  # decision ids whose pause call is under way in this process
        # a pause decision under way -> its outcome once recorded (None: not known), for the decisions it covers
        self._landing: dict[str, asyncio.Future[str | None]] = {}
        self._outcomes: OrderedDict[str, str] = OrderedDict()  # recent pause decisions' recorded outcomes

    @property
    def dry_run(self) -> bool:
        """Decisions are recorded, never acted on (GUARD_DRY_RUN, or no API key)."""
        return self._dry_run

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def submit(
        self,
        decision: Decision,
        on_recorded: Callable[[], None],
        audit_read: AuditRead | None = None,
        *,
        partition: Hashable | None = None,
    ) -> None:
        """Record, act and record the outcome, in a task of its own; a pause first waits for `audit_read`. `partition`:
        the one whose records made the decision (`abandon`)."""
        work: Work = lambda release: self._record_and_act(decision, release, audit_read)  # noqa: E731 (a Work, typed)
        self._spawn(decision, work, on_recorded, partition)

    def abandon(self, partitions: Collection[Hashable]) -> int:
        """Stop working on the decisions of `partitions`, which another process owns now: its recovery reads their
        `fired` records without an outcome from the audit topic and acts on them, so carrying on here too would make
        two callers, two outcomes and two notices per decision (at most one more call, as after a crash, when one
        is under way). Returns how many were stopped."""
        abandoned = [
            (task, decision_id) for task, (partition, decision_id) in self._partition.items() if partition in partitions
        ]
        for task, decision in abandoned:
            task.cancel()
            self._settled.give_back(decision)  # the partition may come back here: its recovery resumes it then
        if abandoned:
            log.warning("decisions in flight left to the partitions' next owner", decisions=len(abandoned))
        return len(abandoned)

    def resume(self, decision: Decision, *, partition: Hashable | None = None) -> None:
        """Act on a decision recorded before a restart whose outcome never was."""
        log.warning(
            "resuming a decision recorded before a restart", campaign_id=decision.campaign_id, decision_id=decision.id
        )
        # when this guard took it up: its action's duration counts from here (its outcome's `decided_at` is the one
        # its `fired` record says, audit_event)
        decided_at = time.time()
        # its first call was made after that record: a pause Leadterra dates from then on is this decision's
        first_call = self._settled.fired_at(decision.id)
        work: Work = lambda _: self._pause(decision, decided_at, first_call=first_call)  # noqa: E731 (a Work, typed)
        self._spawn(decision, work, lambda: None, partition)

    def _spawn(
        self, decision: Decision, work: Work, on_recorded: Callable[[], None], partition: Hashable | None
    ) -> None:
        landing = None
        if decision.rule.action == "pause":
            self._settled.take(decision.id)
            if decision.id not in self._landing:
                landing = self._landing[decision.id] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._settle(decision, work, on_recorded, landing), name=f"decision-{decision.id}")
        self._tasks.add(task)
        if partition is not None:
            self._partition[task] = partition, decision.id
        self._metrics.unsettled(acting=len(self._tasks))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._partition.pop(task, None)
        self._metrics.unsettled(acting=len(self._tasks))
        if not task.cancelled() and task.exception() is not None:
            log.error("decision task crashed", exc_info=task.exception())

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` s for in-flight decisions; cancel the rest (a restart resumes them:
        recorded ones from the audit topic, unrecorded ones from their uncommitted offsets).
        Returns how many were cancelled."""
        return await wait_then_cancel(self._tasks, timeout)

    async def _settle(
        self,
        decision: Decision,
        work: Work,
        on_recorded: Callable[[], None],
        landing: asyncio.Future[str | None] | None,
    ) -> None:
        """`work` until it returns. A crash is logged, counted and tried again with backoff; the offset is
        released only by `work` (once `fired` is written), so a crash never lets a commit pass the decision."""
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                on_recorded()

        def crashed(state: RetryCallState) -> None:
            self._metrics.decision_errors.inc()
            error = state.outcome.exception() if state.outcome is not None else None
            log.error(
                "decision crashed before it was settled; trying again",
                campaign_id=decision.campaign_id,
                rule=decision.rule.name,
                decision_id=decision.id,
                recorded=released,
                attempt=state.attempt_number,
                exc_info=error,
            )
            if landing is not None and not landing.done():
                landing.set_result(None)  # the decisions it covers stop waiting and call for themselves

        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=CRASH_BACKOFF[0], max=CRASH_BACKOFF[1]),
            retry=retry_if_exception_type(Exception),
            before_sleep=crashed,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await work(release)
        finally:
            if landing is not None:
                if not landing.done():
                    landing.set_result(self._outcomes.get(decision.id))
                if self._landing.get(decision.id) is landing:
                    del self._landing[decision.id]

    async def _record_and_act(
        self, decision: Decision, on_recorded: Callable[[], None], audit_read: AuditRead | None
    ) -> None:
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
        fired = audit_event(
            decision, "fired", decided_at=decided_at, dry_run=self._dry_run, workspace_id=self._workspace(decision)
        )
        writing = asyncio.ensure_future(self._publish(fired))
        try:
            # recorded first, so that a restart resumes it; but an audit topic that cannot be written does not
            # hold a pause back for long: after a wait it is made, and recorded once the topic takes it
            written = await consult(
                "audit_write",
                lambda: asyncio.shield(writing),
                AUDIT_WRITE_WAIT_SECONDS,
                self._metrics,
                decision_id=decision.id,
            )
            notes = []
            if isinstance(written, Unavailable):
                notes.append(f"acted before its `fired` record was written ({written.reason}); recorded once written")
            else:
                on_recorded()
                self._notify(decision, fired)
            if rule.action == "pause":
                await self._pause(decision, decided_at, audit_read, notes)
            if isinstance(written, Unavailable):
                await writing
                on_recorded()
                self._notify(decision, fired)
        finally:
            writing.cancel()  # a crash or shutdown: the offset stays pending, a restart derives the decision again

    def _notify(self, decision: Decision, event: AuditEvent) -> None:
        if self._notifier is not None:
            notifier = self._notifier
            tell("notifications", lambda: notifier.notify(decision, event), self._metrics, decision_id=decision.id)

    async def _pause(
        self,
        decision: Decision,
        decided_at: float,
        audit_read: AuditRead | None = None,
        notes: list[str] | None = None,
        first_call: float | None = None,
    ) -> None:
        notes = notes if notes is not None else []
        if audit_read is not None:
            read = await consult(
                "audit_read", audit_read.wait, AUDIT_READ_WAIT_SECONDS, self._metrics, decision_id=decision.id
            )
            if isinstance(read, Unavailable):
                notes.append(read.note)
        if decision.id in self._settled:
            # acted on before a restart or rebalance (the audit says so): never again, even if the
            # user has resumed the campaign since
            log.info(
                "decision already settled before a restart", campaign_id=decision.campaign_id, decision_id=decision.id
            )
            self._tell_left_running(decision, self._settled.outcome(decision.id))
            return
        if decision.id in self._acting:
            # met again while its call is under way: a partition revoked and assigned back replays
            # the decision before the audit can say it is settled
            log.info("decision already being acted on", campaign_id=decision.campaign_id, decision_id=decision.id)
            return
        self._acting.add(decision.id)
        try:
            await self._act(decision, decided_at, notes, first_call)
        finally:
            self._acting.discard(decision.id)

    async def _exempting(self, decision: Decision) -> Exemption | None | Unavailable:
        """The exemption covering the decision now, if any; Unavailable when the store fails or hangs: no exemption."""
        exemptions = self._exemptions
        if exemptions is None:
            return None

        async def find() -> Exemption | None:
            await exemptions.wait()  # the control topic read to its end: no exemption missed
            # wall clock now, not event time: an exemption is an operator's word about the present
            return exemptions.find(decision.campaign_id, decision.rule.name, time.time())

        return await consult("exemptions", find, EXEMPTIONS_WAIT_SECONDS, self._metrics, decision_id=decision.id)

    async def _covering_outcome(self, decision: Decision) -> str | None:
        """What became of the pause decision that covers this one: waited for while it is under way here, else as
        this process recorded it or read it in the audit topic (decided before a restart, or by the partition's
        owner before); None when not known."""
        covering = decision.superseded_by
        assert covering is not None
        landing = self._landing.get(covering)
        if landing is not None:
            return await asyncio.shield(landing)  # a cancelled waiter must not cancel the covering decision
        return self._outcomes.get(covering) or self._settled.outcome(covering)

    def _workspace(self, decision: Decision) -> str | None:
        """The workspace the decision was made in: the engine's (restored with a checkpoint, unlike the
        map of what events named since the start), else the latest one the campaign's events named."""
        if decision.workspace_id is not None:
            return decision.workspace_id
        return self._workspaces.of(decision.campaign_id) if self._workspaces is not None else None

    async def _act(self, decision: Decision, decided_at: float, notes: list[str], first_call: float | None) -> None:
        """Exempted, covered, or called: `first_call` is when an earlier process first called for the decision (a
        resumed one), else its `fired` record written here (`decided_at`)."""
        exemption = await self._exempting(decision)
        if isinstance(exemption, Unavailable):
            notes.append(exemption.note)  # an exemption that cannot be evaluated does not exempt
        elif exemption is not None:
            log.info(
                "pause not made: the campaign is exempted",
                campaign_id=decision.campaign_id,
                rule=decision.rule.name,
                decision_id=decision.id,
                exemption=exemption.id,
            )
            await self._record(decision, "exempted", decided_at, exemption=exemption.ref(), notes=notes)
            return
        if decision.superseded_by is not None:
            covering = await self._covering_outcome(decision)
            if covering in LANDED:
                await self._record(decision, "already_paused", decided_at, notes=notes)
                return
            # the covering pause failed, or its outcome is not known here: this decision calls for itself
            notes.append(
                f"covered by decision {decision.superseded_by}, whose pause "
                + (f"ended {covering}" if covering is not None else "is not known to have landed")
                + ": called for itself"
            )
        if self._dry_run:
            await self._record(decision, "dry_run", decided_at, notes=notes)
            return
        since = decided_at if first_call is None else min(first_call, decided_at)
        # one written while the pause, or the one covering it, was tried (Leadterra down): no call after it
        exempted: list[Exemption] = []
        store_failed = isinstance(exemption, Unavailable)  # a store that fails is counted once per decision

        def exempted_now() -> bool:
            nonlocal store_failed

            def find() -> None:
                exemptions = self._exemptions
                if exemptions is not None and exemptions.is_loaded and not exempted:
                    if (found := exemptions.find(decision.campaign_id, decision.rule.name, time.time())) is not None:
                        exempted.append(found)

            if store_failed:  # asked all the same at each attempt (it may answer now); failing, it does not exempt
                with contextlib.suppress(Exception):
                    find()
            else:
                store_failed = tell("exemptions", find, self._metrics, decision_id=decision.id) is not None
            return bool(exempted)

        outcome = await self._keys.pause(
            decision.campaign_id, self._workspace(decision), decision.id, since, stop=exempted_now
        )
        self._metrics.api_attempts.inc(outcome.attempts)
        if first_call is not None and outcome.attempts:  # resumed: a guard before this one called too
            notes.append(RESUMED_NOTE)
        if outcome.error_code == STOPPED and exempted:
            log.info(
                "pause stopped: the campaign was exempted while it was tried",
                campaign_id=decision.campaign_id,
                decision_id=decision.id,
                exemption=exempted[0].id,
                attempts=outcome.attempts,
            )
            notes.append(f"exempted while its pause was under way, after {outcome.attempts} failed attempts")
            await self._record(decision, "exempted", decided_at, outcome, outcome.answered_at, exempted[0].ref(), notes)
            return
        self._metrics.action_seconds.observe(outcome.answered_at - decided_at)
        (log.error if outcome.outcome == "failed" else log.info)(
            "pause " + outcome.outcome,
            campaign_id=decision.campaign_id,
            decision_id=decision.id,
            http_status=outcome.http_status,
            attempts=outcome.attempts,
            error_code=outcome.error_code,
        )
        await self._record(decision, outcome.outcome, decided_at, outcome, outcome.answered_at, notes=notes)

    async def _record(
        self,
        decision: Decision,
        outcome: Outcome,
        decided_at: float,
        result: Result | None = None,
        answered_at: float | None = None,
        exemption: ExemptionRef | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """Audit the outcome; from then on no guard process acts on this decision again."""
        self._metrics.actions.labels(outcome).inc()
        dry_run = self._dry_run or outcome == "dry_run"
        event = audit_event(
            decision,
            outcome,
            decided_at=decided_at,
            dry_run=dry_run,
            result=result,
            answered_at=answered_at,
            workspace_id=self._workspace(decision),
            exemption=exemption,
            note="; ".join(notes) if notes else None,
            as_recorded=self._settled.recorded(decision.id),
        )
        await self._publish(event)
        self._settled.add(decision.id)
        self._landed(decision.id, outcome)
        self._notify(decision, event)  # after the outcome is recorded; it only starts a task
        self._tell_left_running(decision, outcome)

    def _tell_left_running(self, decision: Decision, outcome: str | None) -> None:
        """A pause decision whose outcome left its campaign running is told to whoever decides again for it."""
        if (told := self._left_running) is not None and decision.rule.action == "pause" and outcome in LEFT_RUNNING:
            tell("left_running", lambda: told(decision), self._metrics, decision_id=decision.id)

    def _landed(self, decision_id: str, outcome: str) -> None:
        """Remember a pause decision's outcome for the decisions it covers, and wake those waiting for it."""
        self._outcomes[decision_id] = outcome
        self._outcomes.move_to_end(decision_id)
        if len(self._outcomes) > REMEMBERED_OUTCOMES:
            self._outcomes.popitem(last=False)
        landing = self._landing.get(decision_id)
        if landing is not None and not landing.done():
            landing.set_result(outcome)

    def supersede(
        self,
        decision: Decision,
        on_recorded: Callable[[], None],
        note: str,
        audit_read: AuditRead | None = None,
        *,
        partition: Hashable | None = None,
    ) -> None:
        """Record a pause decision of a backlog that is no longer current (guard.runtime.catchup), in a task of
        its own: `superseded` with `note` saying why, then `fired`; no pause call, and no notification unless
        a rule asks for `superseded`. `on_recorded` is called once both are written: a restart must not find a
        `fired` without its outcome and act on it. A decision with an outcome already keeps it."""
        work: Work = lambda release: self._supersede(decision, release, note, audit_read)  # noqa: E731 (a Work, typed)
        self._spawn(decision, work, on_recorded, partition)

    async def _supersede(
        self, decision: Decision, release: Callable[[], None], note: str, audit_read: AuditRead | None
    ) -> None:
        if audit_read is not None:
            await consult(
                "audit_read", audit_read.wait, AUDIT_READ_WAIT_SECONDS, self._metrics, decision_id=decision.id
            )
        if decision.id in self._settled or decision.id in self._acting:  # acted on already, or being
            release()
            return
        decided_at, rule, workspace = time.time(), decision.rule, self._workspace(decision)
        self._metrics.decisions.labels(rule.name, rule.action).inc()
        log.info(
            "pause decision superseded: its episode ended before the guard caught up",
            campaign_id=decision.campaign_id,
            rule=rule.name,
            decision_id=decision.id,
            note=note,
        )
        # the outcome before `fired`: a crash between the two must not leave a `fired` without its outcome, which
        # the partition's next owner would act on (guard.runtime.settled)
        await self._record(decision, "superseded", decided_at, notes=[note])
        await self._publish(
            audit_event(decision, "fired", decided_at=decided_at, dry_run=self._dry_run, workspace_id=workspace)
        )
        release()
