"""decode -> evaluate -> act -> audit -> commit, per partition, in that order.

For each batch of records of one partition:
1. Records older than the look-back cut-off that need no replay are skipped. The look-back is the
   longest any rule looks back (window, cooldown or `for`); the cut-off (`since_ms`) is that far
   before the partition was assigned.
2. Each record is decoded; a malformed one is sent to the dead-letter topic, an unknown event
   name is counted and skipped. An event of a topic mapped to a workspace (GUARD_TOPIC_WORKSPACES)
   is in that workspace; one whose `workspaceId` names another is dead-lettered as misrouted.
3. The event goes through the partition's engine. Records before the committed offset were
   handled before a restart or rebalance: they only rebuild the windows and rule states. Their
   pause decisions are kept aside: once the partition has caught up, guard.runtime.recovery checks them
   against the audit topic and acts on any whose outcome was never recorded (the guard died mid-call).
4. Each live decision goes to the dispatcher, which records it (`fired`) in the audit topic,
   then acts and records the outcome in its own task. Its record's offset is pending until the
   `fired` record is written: from then on a restart finds it (step 3), so nothing is lost.
   A pause decision of a partition that is behind is held instead, its offset pending, until the
   partition catches up; then it is acted on if still current, else audited `superseded`
   (guard.runtime.catchup).
5. Dead-letter writes are awaited before the batch counts as handled.
Records at offsets this partition's engine has already handled (the consumer went back within
one assignment) are skipped and counted as `redelivered`: evidence counts once.
An offset is committable once every record before it is handled and its decisions recorded: the
lowest pending offset, or the next offset to read when nothing is pending. Commits never move
backwards.
Checkpoints (guard/runtime/checkpoints.py) are a stronger point than a commit: a partition's engine
snapshot covers offset O (its next record) only between batches, after its replay is handed to the
audit check (guard.runtime.recovery: caught up), and while no decision of the process is in flight nor held:
every decision before O is then settled, not just recorded. A partition restored from one starts reading
at O with the committed offset C as usual: records in [O, C) only rebuild state (step 3), and when C < O the records in
[C, O) are neither replayed nor acted on again, their decisions being settled already.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import structlog

from guard.actions.workspaces import WorkspaceMap
from guard.contracts.events import IgnoredEvent, MalformedEvent, Signal, in_workspace
from guard.engine import Decision, Engine
from guard.engine.episodes import DEFAULT_RESUME_GRACE, Episode, EpisodeStart
from guard.engine.kinds import PYTHON, Kinds
from guard.engine.scope_snapshot import ScopeSnapshot, engine_part, restore_scopes
from guard.engine.scopes import InvalidForward, ScopeEngine, forward, read_forwarded, scope_key
from guard.engine.snapshot import PendingSnapshot, restore, rules_taken_under
from guard.rules import RuleSet
from guard.runtime.catchup import DEFAULT_CATCH_UP_LIMIT, QUIET_SECONDS, Held, behind, overdue, release
from guard.runtime.progress import PartitionProgress
from guard.runtime.recovery import RECOVERING, AuditRead, AuditScan, PartitionRecovery, Stage
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.pipeline")


class Partition(Hashable, Protocol):
    """An input partition (aiokafka's TopicPartition is one): the pipeline needs no Kafka client."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


def name(tp: Partition) -> str:
    return f"{tp.topic}[{tp.partition}]"


class Dispatch(Protocol):
    def submit(
        self, decision: Decision, on_recorded: Callable[[], None], audit_read: AuditRead | None, *, partition: Hashable
    ) -> None: ...

    def supersede(
        self,
        decision: Decision,
        on_recorded: Callable[[], None],
        note: str,
        audit_read: AuditRead | None,
        *,
        partition: Hashable,
    ) -> None: ...

    def abandon(self, partitions: Collection[Hashable]) -> int: ...


class DeadLetterSink(Protocol):
    async def send(self, record: Any, reason: str) -> asyncio.Future: ...


class ScopeSink(Protocol):
    """Where events are forwarded for rules over a scope (guard.runtime.scope_forwards): (scope, value, record
    timestamp) of the records at `source`; the futures are done once written or failed, and never raise."""

    async def send(self, forwards: Sequence[tuple[str, bytes, int]], source: str) -> list[asyncio.Future]: ...


@dataclass(slots=True)
class Tally:
    """What became of one batch's records, for the `records` metric."""

    too_old: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    invalid: int = 0  # scope topic records that are no forwarded event
    replayed: int = 0
    counted: int = 0


class Pipeline:
    """One engine and one progress per assigned partition; the rules are shared.

    The cap on tracked campaigns (`max_campaigns`, per process) is shared out evenly over all the
    input partitions, assigned here or not: each engine gets a fixed share, so what a partition's
    engine evicts, and so decides, depends on its own log only, never on which other partitions
    this process owns or how their batches interleave. The price: a process that owns some of
    the partitions uses only their shares, and a partition with more campaigns than its share
    evicts although others have room (keys are hashed, so the shares fill evenly in practice).
    The budget of dedupe keys (`max_dedupe_keys`) is shared out the same way.
    """

    def __init__(
        self,
        rules: RuleSet,
        dispatcher: Dispatch,
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        *,
        dedupe_horizon: float,
        max_campaigns: int | None = None,
        max_dedupe_keys: int | None = None,
        partition_count: Callable[[], int] = lambda: 1,
        resume_grace: float = DEFAULT_RESUME_GRACE,
        catch_up_limit: float = DEFAULT_CATCH_UP_LIMIT,
        workspaces: WorkspaceMap | None = None,
        topic_workspaces: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        kinds: Kinds = PYTHON,
        scope_topic: str | None = None,
        forwards: ScopeSink | None = None,
        placement: Callable[[str, int, str, bytes | None], None] | None = None,
        stamped_behind: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.rules = rules
        # (topic, partition, campaign id, key) of each campaign's first event a partition reads: runtime.placement
        self._placement = placement
        # (topic, partition, seconds) of an input partition whose fresh records arrive stamped behind: runtime.stamps
        self._stamped_behind = stamped_behind
        # rules over a workspace, sender or domain: counted from the events forwarded to `scope_topic` (scopes.py)
        self._scope_topic, self._forwards = scope_topic, forwards
        self.kinds = kinds  # the series every engine of this pipeline counts with (GUARD_ENGINE)
        self._workspaces = workspaces  # which workspace each campaign's events name, for the action
        self._topic_workspaces = topic_workspaces or {}  # topic -> the workspace of its events
        self._dispatcher, self._dead_letters, self._metrics = dispatcher, dead_letters, metrics
        self._dedupe_horizon, self._resume_grace, self._catch_up_limit = dedupe_horizon, resume_grace, catch_up_limit
        self._max_campaigns, self._max_dedupe_keys = max_campaigns, max_dedupe_keys
        self._partition_count = partition_count
        self._clock = clock  # wall clock, against the records' Kafka timestamps: is a partition behind?
        self._partitions: dict[Partition, tuple[Engine | ScopeEngine, PartitionProgress]] = {}
        # revoked partitions the rebalance may give back to this process (aiokafka revokes every partition
        # at each one): their engines and progress, kept until the assignment says
        self._parked: dict[Partition, tuple[Engine | ScopeEngine, PartitionProgress]] = {}
        self.evicted = 0  # campaigns evicted at capacity, over every engine this process had
        self.dedupe_evicted = 0  # dedupe keys forgotten at the budget, likewise

    def owns(self, tp: Partition) -> bool:
        return tp in self._partitions

    def carries(self, tp: Partition, reading: str) -> bool:
        """Whether `tp`'s reading holds the campaign, or the scope for a partition of the scope topic (its events are
        read from `tp`)."""
        if tp not in self._partitions:
            return False
        engine = self._partitions[tp][0]
        counted = engine.engine if isinstance(engine, ScopeEngine) else engine
        return counted.latest_event(reading) is not None

    def assign(
        self,
        tp: Partition,
        committed: int | None,
        since_ms: int,
        engine: Engine | None = None,
        recovery: PartitionRecovery | None = None,
        audit_read: AuditRead | None = None,
        log_end: int | None = None,
    ) -> None:
        """Own `tp`, with a fresh engine or one restored from a checkpoint (`restored_engine`), positioned
        in `recovery` (guard.runtime.recovery.Recovery.positioned); its live pauses wait for `audit_read`.
        `log_end` is the partition's end looked up at positioning: held decisions wait at least for it."""
        if recovery is None:  # on its own (tools, tests): nothing else to wait for
            recovery = PartitionRecovery(name(tp), AuditScan.finished())
            recovery.positioned(committed)
        progress = PartitionProgress(committed, since_ms, recovery, audit_read, log_end)
        self._partitions[tp] = (engine or self._new_engine(self.counts_scopes(tp)), progress)

    def counts_scopes(self, tp: Partition) -> bool:
        """Whether `tp` is a partition of the scope topic: its engine counts scopes (guard.engine.scopes)."""
        return tp.topic == self._scope_topic

    def _new_engine(self, scopes: bool = False, rules: RuleSet | None = None) -> Engine | ScopeEngine:
        rules = self.rules if rules is None else rules
        if scopes:  # scopes count against the same caps as campaigns: one per partition's share
            return ScopeEngine(
                rules,
                self._dedupe_horizon,
                self.dedupe_key_share(),
                self.kinds,
                self.campaign_share(),
                resume_grace=self._resume_grace,
            )
        return Engine(
            rules,
            self._dedupe_horizon,
            self._resume_grace,
            self.campaign_share(),
            self.dedupe_key_share(),
            kinds=self.kinds,
        )

    def restored_engine(
        self, data: bytes, scopes: bool = False, rules: RuleSet | None = None, *, other_rules: bool = False
    ) -> Engine | ScopeEngine:
        """An engine as this pipeline builds them for a partition of the input or (`scopes`) of the scope topic,
        with a snapshot's state (SnapshotError if it does not fit, a snapshot of the other kind included); with
        `rules` (the pipeline's by default): a restore in a worker thread keeps the rules it began with. A snapshot
        of `other_rules` (its manifest says so: a rule file edited before the restart) is restored under the rules
        it carries, then set to `rules`; reading which costs a pass over the whole snapshot, so only then."""
        rules = self.rules if rules is None else rules
        taken = rules_taken_under(engine_part(data), rules) if other_rules else None
        engine = self._new_engine(scopes, taken or rules)
        if isinstance(engine, ScopeEngine):
            restore_scopes(data, taken or rules, engine)
        else:
            restore(data, taken or rules, engine)
        if taken is not None:
            engine.set_rules(rules)  # as a hot reload: what the rules in force still count is kept, none replayed
        return engine

    def snapshot(self, tp: Partition) -> tuple[PendingSnapshot, int] | None:
        """A snapshot of `tp`'s engine state begun now, and the offset it covers (its next record), or None
        while that is not a resting point: mid-batch, before any record, before the replay is over and handed
        over, or while a decision is pending (held ones included: a checkpoint past them would lose them).
        The caller encodes it in steps while the engine goes on (snapshot.PendingSnapshot)."""
        owned = self._partitions.get(tp)
        if owned is None:
            return None
        engine, progress = owned
        if progress.busy or progress.next_offset is None or progress.recovery.stage in RECOVERING or progress.pending:
            return None
        if isinstance(engine, ScopeEngine):  # its engine's snapshot and the campaigns of each scope
            return ScopeSnapshot(engine, self.rules), progress.next_offset  # type: ignore[return-value]
        return PendingSnapshot(engine, self.rules), progress.next_offset

    def campaign_share(self) -> int | None:
        """The most campaigns one partition's engine tracks: the cap over every input partition."""
        return self._share(self._max_campaigns)

    def dedupe_key_share(self) -> int | None:
        """The most dedupe keys one partition's engine remembers: the budget over every input partition."""
        return self._share(self._max_dedupe_keys)

    def _share(self, limit: int | None) -> int | None:
        return None if limit is None else math.ceil(limit / max(1, self._partition_count()))

    def revoke(self, tp: Partition) -> None:
        """Forget `tp`, its held decisions too: their offsets were never committed, the next owner derives them."""
        self._partitions.pop(tp, None)
        self._dispatcher.abandon([tp])
        self._count_held()

    def park(self, tp: Partition) -> None:
        """Revoke `tp` but keep its engine and progress (held decisions too), in case the rebalance gives it back."""
        if (owned := self._partitions.pop(tp, None)) is not None:
            self._parked[tp] = owned

    def parked(self, tp: Partition) -> tuple[int | None, int | None] | None:
        """A parked partition's last committed offset and next offset to read, or None if not parked."""
        if tp not in self._parked:
            return None
        progress = self._parked[tp][1]
        return progress.last_committed, progress.next_offset

    def unpark(self, tp: Partition) -> tuple[PartitionRecovery, int]:
        """Own a parked partition again, its engine and progress as they are; returns its recovery (ready)
        and the next offset to read (a batch handled while it was parked counts)."""
        progress = self._parked[tp][1]
        if progress.next_offset is None:
            raise ValueError(f"{name(tp)} was parked before reading anything: nothing to keep")
        self._partitions[tp] = self._parked.pop(tp)
        return progress.recovery, progress.next_offset

    def drop_parked(self, keep: Iterable[Partition] = ()) -> None:
        """Forget the parked partitions but those in `keep`: another process owns them now."""
        kept = set(keep)
        self._dispatcher.abandon([tp for tp in self._parked if tp not in kept])
        self._parked = {tp: owned for tp, owned in self._parked.items() if tp in kept}
        self._count_held()

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rules of every partition at once (parked ones too); counted evidence is kept."""
        self.rules = rules
        for engine, _ in [*self._partitions.values(), *self._parked.values()]:
            engine.set_rules(rules)

    def left_running(self, decision: Decision) -> None:
        """A decision's outcome did not pause its campaign (failed, exempted, dry run): one of a scope rule is made
        again by its firing (ScopeEngine.left_running) in whichever engine of scopes here holds that firing."""
        if decision.scope is None:
            return  # a campaign rule's: the campaign's sends past the grace read as a resume (episodes.py)
        for engine, _ in [*self._partitions.values(), *self._parked.values()]:
            if isinstance(engine, ScopeEngine):
                engine.left_running(decision)

    @property
    def assigned(self) -> list[Partition]:
        return list(self._partitions)

    def committable(self) -> dict[Partition, int]:
        offsets = {tp: progress.committable() for tp, (_, progress) in self._partitions.items()}
        return {tp: offset for tp, offset in offsets.items() if offset is not None}

    def committed(self, offsets: dict[Partition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp][1].last_committed = offset

    def held(self) -> int:
        """Pause decisions held until their partition catches up (parked partitions' too)."""
        return sum(len(progress.held) for _, progress in [*self._partitions.values(), *self._parked.values()])

    def backlog_end(self, tp: Partition) -> int | None:
        """The log end `tp` had when positioned: its held decisions are not judged before it is read."""
        return self._partitions[tp][1].end_when_positioned if tp in self._partitions else None

    def holding(self) -> list[Partition]:
        """The owned partitions that hold decisions."""
        return [tp for tp, (_, progress) in self._partitions.items() if progress.held]

    def caught_up(self, tp: Partition, position: int, log_end: int | None) -> None:
        """Act on `tp`'s held decisions once its `position` has been at `log_end`, and `log_end` has not moved,
        for QUIET_SECONDS (called by the poll loop's tick, with no batch to say so): the history is all in, and
        they are judged on all of it (catchup.py)."""
        if tp not in self._partitions:
            return
        engine, progress = self._partitions[tp]
        if progress.held and not progress.busy and progress.read_backlog(position):
            if progress.quiet_at_end(position, log_end, self._clock(), QUIET_SECONDS):
                self._settle_held(tp, engine, progress, f"at the log end {log_end} for {QUIET_SECONDS:g} s")

    def campaigns(self) -> int:
        return sum(engine.campaigns for engine, _ in self._partitions.values())

    def dedupe_keys(self) -> int:
        return sum(engine.dedupe_keys for engine, _ in self._partitions.values())

    async def handle(self, tp: Partition, records: Sequence[Any], log_end: int | None = None) -> None:
        """Steps 1-5 for one batch of one partition; `log_end` is the partition's end as the consumer
        last saw it (its high watermark): the first one raises the backlog's end (catchup.py)."""
        if not records or tp not in self._partitions:
            return
        engine, progress = self._partitions[tp]
        progress.busy = True
        try:
            await self._handle(tp, records, engine, progress, log_end)
        finally:
            progress.busy = False

    async def _handle(
        self,
        tp: Partition,
        records: Sequence[Any],
        engine: Engine | ScopeEngine,
        progress: PartitionProgress,
        log_end: int | None,
    ) -> None:
        progress.fetched(log_end)
        records = self._new_records(tp, records, progress)
        if not records:
            return
        now, grace = self._clock(), self._resume_grace
        stats = engine.stats
        before = (
            stats.duplicates,
            stats.late,
            stats.ahead,
            stats.evicted_campaigns,
            engine.dedupe_evicted,
            engine.unsealed,
        )
        tally, dead_letters = Tally(), []
        process, recovery = engine.process, progress.recovery
        replay_until, new_group, since_ms = recovery.replay_until, progress.new_group, progress.since_ms
        topic_workspace = self._topic_workspaces.get(tp.topic)
        source = f"topic {tp.topic} (GUARD_TOPIC_WORKSPACES)"
        scoped = isinstance(engine, ScopeEngine)  # a partition of the scope topic: forwarded events
        forwarding = () if scoped or self._forwards is None else self.rules.scope_kinds
        placement = None if scoped else self._placement  # forwards are keyed by scope, by the guard itself
        latest_event = engine.latest_event
        forwards: list[tuple[str, bytes, int]] = []
        first_forwarded: int | None = None
        now_ms = int(now * 1000)
        for record in records:
            offset = record.offset
            replaying = offset < replay_until
            if record.timestamp < since_ms and (replaying or new_group):
                tally.too_old += 1
                continue
            try:
                if scoped:
                    event = read_forwarded(record.value, record.key)
                else:
                    event = self.kinds.decode(record.value, record.timestamp / 1000)
                    if topic_workspace is not None:
                        event = in_workspace(event, topic_workspace, source)
            except IgnoredEvent:
                tally.ignored += 1
                continue
            except MalformedEvent as error:
                if not replaying:  # dead-lettered before the restart already
                    dead_letters.append(await self._dead_letters.send(record, str(error)))
                tally.dead_lettered += 1
                continue
            except InvalidForward as error:  # written by whoever could write to the topic: skipped, never trusted
                tally.invalid += 1
                log.warning("scope topic record skipped", partition=name(tp), offset=offset, error=str(error))
                continue
            if placement is not None and latest_event(event.campaign_id) is None:
                placement(tp.topic, tp.partition, event.campaign_id, record.key)  # its first event this partition reads
            if event.workspace_id is not None and self._workspaces is not None and not scoped:
                # a campaign's workspace (and key) is its own events' say, never a scope topic record's
                self._workspaces.note(event.campaign_id, event.workspace_id)
            # a ScopeEngine takes what read_forwarded gives, and its record's time
            decisions = process(event, record.timestamp / 1000) if scoped else process(event)  # type: ignore[arg-type,call-arg]
            if replaying:
                tally.replayed += 1
                if decisions and recovery.stage is Stage.REPLAYING:  # kept aside until caught up
                    recovery.keep(decisions)
                continue
            tally.counted += 1
            if forwarding and event.signal is not Signal.STARTED:
                # names an event without a message id
                position = "" if event.message_id else f"{tp.topic}/{tp.partition}/{offset}"
                for kind in forwarding:
                    if (scope := scope_key(kind, event)) is not None:  # type: ignore[arg-type]
                        # stamped no later than now: a record stamped far ahead would hold the scope topic's retention
                        stamp = min(record.timestamp, now_ms)
                        forwards.append((scope, forward(scope, event, position), stamp))  # type: ignore[arg-type]
                        first_forwarded = offset if first_forwarded is None else first_forwarded
            for decision in decisions:
                progress.pending[offset] += 1
                held = progress.held
                # a scope's decision is a campaign's at this event (one joining its firing, or decided again): the
                # scope decision's time says how old the firing is, not how far behind this reading is
                decided = event.time if scoped else decision.fired_at
                if decision.action == "pause" and (
                    behind(record.timestamp, decided, now, grace) or decision.superseded_by in held
                ):
                    held[decision.id] = Held(decision, offset, now)
                else:
                    recorded = partial(progress.recorded, offset)
                    self._dispatcher.submit(decision, recorded, progress.audit_read, partition=tp)
        if dead_letters:
            await asyncio.gather(*dead_letters)
        if forwards:
            await self._forward(tp, forwards, first_forwarded, progress)  # type: ignore[arg-type]
        progress.next_offset = records[-1].offset + 1
        if not scoped and self._stamped_behind is not None:
            reached_end = log_end is not None and progress.next_offset >= log_end
            if (late := progress.stamps.batch(records[-1].timestamp, reached_end, now, grace)) is not None:
                self._stamped_behind(tp.topic, tp.partition, late)
        if progress.held:
            too_long = overdue(progress.held, now, self._catch_up_limit)
            why = f"a decision held over {self._catch_up_limit:g} s" if too_long else None
            self._settle_held(tp, engine, progress, why, still_behind=too_long)
        self._count(tally, engine, before)

    async def _forward(
        self, tp: Partition, forwards: list[tuple[str, bytes, int]], first: int, progress: PartitionProgress
    ) -> None:
        """Forward a batch's counted events to the scope topic, once per scope each is in. From its first forwarded
        record on, the batch's offsets stay uncommitted until every write is done (written, or failed and counted),
        so a restart forwards again what was under way (the scope's engine dedupes what was written: scopes.py)."""
        assert self._forwards is not None
        written = await self._forwards.send(forwards, f"{tp.topic}/{tp.partition}/{first}..")
        for delivery in written:
            progress.forwarded(first, delivery)

    def forwarding(self, tp: Partition) -> list[asyncio.Future]:
        """The writes to the scope topic of `tp`'s records under way: a checkpoint of it waits for them."""
        owned = self._partitions.get(tp)
        return [delivery for deliveries in owned[1].forwarding.values() for delivery in deliveries] if owned else []

    def _settle_held(
        self,
        tp: Partition,
        engine: Engine | ScopeEngine,
        progress: PartitionProgress,
        caught_up: str | None,
        still_behind: bool = False,
    ) -> None:
        """Supersede the held decisions no longer current; act on the others of each campaign caught up: all of
        them once the partition has (`caught_up` says why), else those of campaigns read up to the present
        (catchup.py). `still_behind`: judged at the catch-up limit, where a run read as a resume may be young."""
        now, grace = self._clock(), self._resume_grace
        live: set[str] = set()  # campaigns read up to the present (a partition of scopes: scopes all read up)
        scoped = isinstance(engine, ScopeEngine)
        if caught_up is None and progress.read_backlog(progress.next_offset or 0):
            if scoped:
                scopes = {held.decision.scope for held in progress.held.values()} - {None}
                live = {scope for scope in scopes if engine.read_up_to(scope, now - grace)}  # type: ignore[arg-type,union-attr]
            else:
                for campaign in {held.decision.campaign_id for held in progress.held.values()}:
                    latest = engine.latest_event(campaign)
                    if latest is not None and now - latest <= grace:
                        live.add(campaign)
        if caught_up is not None or live:
            log.info(
                "caught up: held pause decisions judged",
                partition=progress.recovery.name,
                held=len(progress.held),
                why=caught_up
                or f"newest event {'of every campaign of a scope ' if scoped else ''}younger than {grace:g} s",
                **{"scopes" if scoped else "campaigns": sorted(live) if caught_up is None else "all"},
            )

        def judged(decision: Decision) -> bool:
            return caught_up is not None or (decision.scope if scoped else decision.campaign_id) in live

        def too_young(campaign: str, episode: Episode) -> bool:  # catchup.py, points 2 and 5
            if not still_behind:
                return False  # caught up: what the campaign sends next proves it bad again, as a live decision
            latest = engine.latest_event(campaign)
            resumed = episode.began is EpisodeStart.RESUMED and episode.since is not None
            return resumed and latest is not None and latest - episode.since < grace  # type: ignore[operator]

        for held, note in release(progress.held, engine.episode, engine.leans_bad, judged, too_young):
            recorded = partial(progress.recorded, held.offset)
            if note is None:
                decision = held.decision  # covered by the pause it was superseded by, when this process made that
                self._lands_now(engine, decision.campaign_id, decision.superseded_by or decision.id)
                self._dispatcher.submit(decision, recorded, progress.audit_read, partition=tp)
            else:
                self._dispatcher.supersede(held.decision, recorded, note, progress.audit_read, partition=tp)
        self._count_held()

    def _lands_now(self, engine: Engine | ScopeEngine, campaign_id: str, pause_id: str) -> None:
        """A pause acted on apart from the engine's reading of the log (held over a backlog, or resumed from another
        process's record) lands at the call, not at its event time; later decisions are covered by `pause_id`."""
        if engine.episode(campaign_id) is not None:
            engine.note_pause(campaign_id, pause_id, self._clock())

    def resumed(self, tp: Partition, decision: Decision) -> None:
        """A decision another process recorded and never saw through is acted on now, from `tp`: its own call (what
        it was superseded by is the other process's, not known here) covers the decisions after it."""
        if tp in self._partitions:
            self._lands_now(self._partitions[tp][0], decision.campaign_id, decision.id)

    def hold_replayed(self, tp: Partition, decisions: list[Decision]) -> None:
        """Pause decisions `tp`'s replay derived under other rules than its previous owner ran, which that owner never
        made: held as a backlog's (catchup.py), so the campaign bad now is paused once, at catch-up, and one healthy
        since is not; dropped, they left the engine holding a pause nobody made, and the campaign's next sends read as
        its resume, which dropped the evidence (a changed rule shipped with a restart paused minutes late). No commit
        passes them meanwhile."""
        if tp not in self._partitions or not decisions:
            return
        progress, now = self._partitions[tp][1], self._clock()
        offset = progress.recovery.replay_until
        for decision in decisions:
            if decision.id not in progress.held:
                progress.pending[offset] += 1
                progress.held[decision.id] = Held(decision, offset, now)
        log.info("pause decisions of changed rules held for the catch-up", partition=name(tp), held=len(decisions))
        self._count_held()

    def _count_held(self) -> None:
        self._metrics.unsettled(held=self.held())

    def _new_records(self, tp: Partition, records: Sequence[Any], progress: PartitionProgress) -> Sequence[Any]:
        """`records` without those this partition's engine has handled already (counted `redelivered`)."""
        if progress.next_offset is None or records[0].offset >= progress.next_offset:
            return records
        again = sum(1 for record in records if record.offset < progress.next_offset)
        log.warning(
            "records delivered again; skipped",
            partition=name(tp),
            first_offset=records[0].offset,
            handled_up_to=progress.next_offset - 1,
            skipped=again,
        )
        self._metrics.records.labels("redelivered").inc(again)
        return records[again:]  # offsets ascend within a batch

    def _count(self, tally: Tally, engine: Engine | ScopeEngine, before: tuple[int, ...]) -> None:
        """The batch's outcomes, and what the engine counted meanwhile, into the metrics."""
        stats = engine.stats
        outcomes = {
            "too_old": tally.too_old,
            "ignored": tally.ignored,
            "dead_lettered": tally.dead_lettered,
            "invalid": tally.invalid,
            "replayed": tally.replayed,
            "counted": tally.counted,
            "duplicate": stats.duplicates - before[0],
            "late": stats.late - before[1],
            "ahead": stats.ahead - before[2],
        }
        for outcome, count in outcomes.items():
            if count:
                self._metrics.records.labels(outcome).inc(count)
        if evicted := stats.evicted_campaigns - before[3]:
            self.evicted += evicted
            self._metrics.evicted.inc(evicted)
        if forgotten := engine.dedupe_evicted - before[4]:
            self.dedupe_evicted += forgotten
            self._metrics.dedupe_evicted.inc(forgotten)
        if unsealed := engine.unsealed - before[5]:
            self._metrics.unsealed.inc(unsealed)
