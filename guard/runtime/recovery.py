"""What a newly assigned partition goes through before this guard acts on it, in one place.

Each partition this process is given goes, in this order and no other:

    POSITIONING -> REPLAYING -> CAUGHT_UP -> READY

- POSITIONING: assigned and paused; a task of the rebalance listener restores its checkpoint or looks up
  its start offset, beside the heartbeats (guard.runtime.rebalance).
- REPLAYING: positioned. Records below `replay_until` (its committed offset: where the previous owner
  stopped) only rebuild the engine's state; the pause decisions met there are kept aside.
- CAUGHT_UP: read up to `replay_until`. The kept-aside decisions are handed to the audit check.
- READY: the audit rescan its assignment started is done, and the decisions the audit holds as `fired`
  without an outcome for campaigns the partition carries have been resumed (acted on: a guard died
  between recording them and acting), whether its replay derived them again or not.

Every assignment that brings new partitions starts one rescan of the audit topic over the rules'
look-back (an `AuditScan`). Only the partitions it brought wait on it: a live pause from one of them
waits until that scan is done, so a decision the previous owner settled is never acted on twice, while
partitions owned before the rebalance act at once. A partition revoked while its decisions wait for the
scan leaves them with the scan: they are still checked and resumed, as its next owner would do.

A READY partition revoked and given back to this process untouched (guard.runtime.rebalance keeps it)
is READY again at once (`kept`).

`Recovery` alone moves partitions between stages, and alone decides `Health.recovering` (some
partition positioning or replaying: /readyz answers 503 until every one has caught up).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine, Hashable, Iterable
from typing import Any

import structlog

from guard.engine import Decision
from guard.telemetry.health import Health

log = structlog.get_logger("guard.runtime.recovery")


class Stage(enum.Enum):
    POSITIONING = "positioning"
    REPLAYING = "replaying"
    CAUGHT_UP = "caught up"
    READY = "ready"


RECOVERING = frozenset({Stage.POSITIONING, Stage.REPLAYING})  # not ready: the partition's state is not rebuilt yet


class IllegalTransition(RuntimeError):
    """A transition asked of a partition (or scan) in a stage that does not allow it: a bug in the caller."""


class AuditScan:
    """One rescan of the audit topic, started by an assignment of new partitions: running, then done.

    Decisions handed over (`hand_over`) wait here until it is done."""

    def __init__(self, since_ms: int) -> None:
        self.since_ms = since_ms  # epoch ms: outcomes recorded since then are read
        self._done = asyncio.Event()
        self.handed_over: list[tuple[Hashable, Decision]] = []  # (partition, decision)

    @classmethod
    def finished(cls) -> AuditScan:
        """A scan with nothing to wait for (a pipeline used on its own)."""
        scan = cls(0)
        scan.finish()
        return scan

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()

    def hand_over(self, tp: Hashable, decisions: Iterable[Decision]) -> None:
        if self.done:
            raise IllegalTransition("the audit rescan is done: decisions are checked at once, not handed to it")
        self.handed_over.extend((tp, decision) for decision in decisions)

    def finish(self) -> list[tuple[Hashable, Decision]]:
        """Mark the scan done; returns the decisions handed to it, to check against the audit now."""
        if self.done:
            raise IllegalTransition("the audit rescan finished twice")
        self._done.set()
        handed, self.handed_over = self.handed_over, []
        return handed


class PartitionRecovery:
    """One assigned partition's way from POSITIONING to READY. Each transition refuses any other stage."""

    __slots__ = ("name", "stage", "scan", "replay_until", "other_rules", "_kept")

    def __init__(self, name: str, scan: AuditScan) -> None:
        self.name = name  # for messages: `topic[partition]`
        self.stage = Stage.POSITIONING
        self.scan = scan  # the audit rescan this partition's assignment started
        self.replay_until = 0  # records below this offset only rebuild state
        self.other_rules = False  # those records were read live under other rules (Recovery: `judge`)
        self._kept: dict[str, Decision] = {}  # pause decisions met while replaying, by id

    def _expect(self, stage: Stage, transition: str) -> None:
        if self.stage is not stage:
            raise IllegalTransition(f"{self.name}: cannot {transition} while {self.stage.value}")

    def positioned(self, committed: int | None, other_rules: bool = False) -> None:
        """POSITIONING -> REPLAYING: reading starts; records before `committed` were handled by the previous owner
        (under other rules than those in force, says `other_rules`)."""
        self._expect(Stage.POSITIONING, "be positioned")
        self.replay_until, self.other_rules = committed or 0, other_rules
        self.stage = Stage.REPLAYING

    def keep(self, decisions: Iterable[Decision]) -> None:
        """While REPLAYING: keep the replayed pause decisions aside for the audit check."""
        self._expect(Stage.REPLAYING, "keep replayed decisions")
        self._kept.update((decision.id, decision) for decision in decisions if decision.action == "pause")

    def remaining(self, position: int) -> int:
        """Records still to replay when the next one to read is at `position`."""
        return max(0, self.replay_until - position) if self.stage is Stage.REPLAYING else 0

    def caught_up(self, position: int) -> list[Decision] | None:
        """REPLAYING -> CAUGHT_UP once `position` reaches `replay_until`: returns the kept-aside decisions
        (once); None while there is more to replay."""
        self._expect(Stage.REPLAYING, "catch up")
        if position < self.replay_until:
            return None
        kept, self._kept = list(self._kept.values()), {}
        self.stage = Stage.CAUGHT_UP
        return kept

    def ready(self) -> None:
        """CAUGHT_UP -> READY, once the audit rescan is done (and the handed-over decisions checked)."""
        self._expect(Stage.CAUGHT_UP, "be ready")
        if not self.scan.done:
            raise IllegalTransition(f"{self.name}: cannot be ready while the audit rescan runs")
        self.stage = Stage.READY


class AuditRead:
    """Waits until the audit rescan of one partition's newest assignment is done (at once when the
    partition is ready, or no longer assigned: its next owner's rescan covers it)."""

    __slots__ = ("_partitions", "_tp")

    def __init__(self, partitions: dict[Hashable, PartitionRecovery], tp: Hashable) -> None:
        self._partitions, self._tp = partitions, tp

    async def wait(self) -> None:
        while (state := self._partitions.get(self._tp)) is not None and not state.scan.done:
            await state.scan.wait()


class Recovery:
    """Every assigned partition's stage, the audit rescans, and `health.recovering`.

    `rescan(since_ms)` is the audit read (guard.runtime.settled.SettledDecisions.scan); `unsettled(id)` says whether
    the audit holds a decision as `fired` and no outcome for it; `in_flight(tp)` gives those the audit holds for
    campaigns of partition `tp`, from their records; `resume(decision, tp)` acts on such a one, for `tp`;
    `judge(tp, decisions)` has the pause decisions a replay under other rules than the previous owner's derived, and
    the audit holds no `fired` of, judged as a backlog's are (guard.runtime.catchup): that owner never made them."""

    def __init__(
        self,
        health: Health,
        rescan: Callable[[int], Coroutine[Any, Any, None]],
        unsettled: Callable[[str], bool],
        resume: Callable[[Decision, Hashable], None],
        in_flight: Callable[[Hashable], list[Decision]],
        judge: Callable[[Hashable, list[Decision]], None] = lambda tp, decisions: None,
    ) -> None:
        self._health, self._rescan, self._unsettled, self._resume = health, rescan, unsettled, resume
        self._in_flight, self._judge = in_flight, judge
        self._partitions: dict[Hashable, PartitionRecovery] = {}
        self._scans: set[AuditScan] = set()  # running
        self._tasks: set[asyncio.Task[None]] = set()

    def stage(self, tp: Hashable) -> Stage | None:
        state = self._partitions.get(tp)
        return state.stage if state is not None else None

    def __getitem__(self, tp: Hashable) -> PartitionRecovery:
        return self._partitions[tp]

    @property
    def recovering(self) -> bool:
        return any(state.stage in RECOVERING for state in self._partitions.values())

    @property
    def resuming(self) -> bool:
        """Replayed decisions handed over and not yet checked: they are not settled."""
        return any(scan.handed_over for scan in self._scans)

    def replaying(self) -> list[Hashable]:
        return [tp for tp, state in self._partitions.items() if state.stage is Stage.REPLAYING]

    def assigned(self, fresh: list[tuple[Hashable, str]], since_ms: int) -> None:
        """New partitions (key, name) assigned: each starts POSITIONING, and one audit rescan from
        `since_ms` starts for them. Call before positioning: the poll loop runs meanwhile."""
        self._health.joined = True
        if not fresh:
            return
        scan = AuditScan(since_ms)
        self._scans.add(scan)
        for tp, name in fresh:
            self._partitions[tp] = PartitionRecovery(name, scan)
        self._update()
        task = asyncio.create_task(self._run(scan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def positioned(self, tp: Hashable, committed: int | None, other_rules: bool = False) -> PartitionRecovery:
        state = self._partitions[tp]
        state.positioned(committed, other_rules)
        return state

    def audit_read(self, tp: Hashable) -> AuditRead:
        """What a live pause from `tp` waits on: the audit rescan of `tp`'s newest assignment."""
        return AuditRead(self._partitions, tp)

    def stuck(self, names: list[str], error: BaseException) -> None:
        """New partitions could not be positioned: /livez fails, so the process is restarted and the
        group hands them to a replica that can read them, instead of holding them unread."""
        self._health.stuck = f"partitions {', '.join(names)} cannot be positioned: {error!r}"

    def kept(self, tp: Hashable, state: PartitionRecovery) -> None:
        """`tp` was revoked and given back, its state untouched meanwhile: it is READY again at once, with
        nothing to replay and no audit rescan to wait for (this process has been acting on it)."""
        if state.stage is not Stage.READY:
            raise IllegalTransition(f"{state.name}: only a ready partition is kept over a rebalance")
        self._partitions[tp] = state
        self._update()

    def revoked(self, tp: Hashable) -> None:
        self._partitions.pop(tp, None)
        self._update()

    def progress(self, positions: dict[Hashable, int]) -> int:
        """The next offset to read of replaying partitions: those caught up hand their decisions over
        (checked at once if their scan is done). Returns how many records are left to replay."""
        remaining = 0
        for tp, position in positions.items():
            state = self._partitions.get(tp)
            if state is None or state.stage is not Stage.REPLAYING:
                continue
            remaining += state.remaining(position)
            kept = state.caught_up(position)
            if kept is None:
                continue
            if state.scan.done:
                self._ready(tp, state, kept)
            else:
                state.scan.hand_over(tp, kept)
        self._update()
        return remaining

    async def _run(self, scan: AuditScan) -> None:
        try:
            await self._rescan(scan.since_ms)
        except Exception:  # a bug: acting without knowing earlier outcomes beats never acting
            log.exception("audit rescan failed; acting without knowing earlier outcomes")
        self._scans.discard(scan)
        resumed: set[str] = set()
        for tp, decision in scan.finish():  # of partitions caught up meanwhile
            if self._partitions.get(tp) is not None and self._partitions[tp].scan is scan:  # else another owner's now
                resumed |= self._check(tp, [decision], resumed)
        for tp, state in list(self._partitions.items()):
            if state.scan is scan and state.stage is Stage.CAUGHT_UP:
                self._ready(tp, state, [], resumed)

    def _ready(
        self, tp: Hashable, state: PartitionRecovery, kept: list[Decision], resumed: set[str] | None = None
    ) -> None:
        """CAUGHT_UP -> READY with its scan done: its replayed decisions checked, then what the audit holds in flight
        for its campaigns (the replay may not derive it again) resumed, each decision once."""
        resumed = (resumed or set()) | self._check(tp, kept)
        state.ready()
        for decision in self._in_flight(tp):
            if decision.id not in resumed:
                resumed.add(decision.id)
                self._resume(decision, tp)

    def _check(self, tp: Hashable, decisions: list[Decision], resumed: set[str] | None = None) -> set[str]:
        """`tp`'s decisions recorded (`fired`) before a restart but never given an outcome: act on them. A replayed
        decision never recorded was not taken by the guard that read its records live: nothing to resume; when that
        guard ran other rules, the rest go to `judge` (the rules in force would have made them).
        Returns the ids acted on (those in `resumed` are not acted on again)."""
        acted: set[str] = set()
        others = []
        for decision in decisions:
            if decision.id in acted or decision.id in (resumed or ()):
                continue
            if self._unsettled(decision.id):
                acted.add(decision.id)
                self._resume(decision, tp)
            else:
                others.append(decision)
        state = self._partitions.get(tp)
        if others and state is not None and state.other_rules:
            self._judge(tp, others)
        return acted

    def _update(self) -> None:
        self._health.recovering = self.recovering

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
