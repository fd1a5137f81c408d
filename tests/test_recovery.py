"""guard.runtime.recovery on its own: each transition of a newly assigned partition, and what waits on the
audit rescan (no broker needed: the rescan is a coroutine the test holds); and, on a real broker, the decisions
the audit topic holds in flight, as a partition's new owner reads them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from guard.actions.audit import audit_event
from guard.actions.dispatch import Dispatcher
from guard.contracts.audit import AuditEvent
from guard.contracts.events import decode
from guard.engine import Decision, Engine
from guard.rules import load_rules
from guard.runtime import settled as settled_module
from guard.runtime.pipeline import Pipeline
from guard.runtime.recovery import AuditScan, IllegalTransition, PartitionRecovery, Recovery, Stage
from guard.runtime.settings import KafkaSettings
from guard.runtime.settled import Fired, SettledDecisions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent

RULES = Path(__file__).parent.parent / "rules"
A, B = TopicPartition("events", 0), TopicPartition("events", 1)


def bad_list(campaign_id: str, start: float) -> list[bytes]:
    """Sends of which one in four bounce: the shipped rules pause the campaign."""
    values = []
    for n in range(200):
        values.append(sent(campaign_id, start + n))
        if n % 4 == 0:
            values.append(bounced(campaign_id, start + n + 0.5))
    return values


def pause_decision(campaign_id: str) -> Decision:
    engine, start = Engine(load_rules(RULES)), time.time() - 600
    for value in bad_list(campaign_id, start):
        for decision in engine.process(decode(value, time.time())):
            if decision.action == "pause":
                return decision
    raise AssertionError("premise: the shipped rules pause this campaign")


def alert_of(decision: Decision) -> Decision:
    return dataclasses.replace(decision, rule=decision.rule.model_copy(update={"action": "alert"}))


def replaying(committed: int = 10, scan: AuditScan | None = None) -> PartitionRecovery:
    state = PartitionRecovery("events[0]", scan or AuditScan(0))
    state.positioned(committed)
    return state


class TestPartitionTransitions:
    def test_a_new_partition_is_positioning(self) -> None:
        assert PartitionRecovery("events[0]", AuditScan(0)).stage is Stage.POSITIONING

    def test_positioned_replays_up_to_the_committed_offset(self) -> None:
        state = replaying(committed=42)
        assert (state.stage, state.replay_until) == (Stage.REPLAYING, 42)

    def test_a_new_group_has_nothing_to_replay(self) -> None:
        assert replaying(committed=None).replay_until == 0  # type: ignore[arg-type]

    def test_positioned_twice_is_refused(self) -> None:
        state = replaying()
        with pytest.raises(IllegalTransition, match=r"events\[0\]: cannot be positioned while replaying"):
            state.positioned(5)

    def test_keep_holds_pause_decisions_only_and_each_once(self) -> None:
        state, pause = replaying(), pause_decision("camp")
        state.keep([pause, alert_of(pause)])
        state.keep([pause])
        assert state.caught_up(10) == [pause]

    def test_keep_is_refused_before_positioning_and_after_catching_up(self) -> None:
        state = PartitionRecovery("events[0]", AuditScan(0))
        with pytest.raises(IllegalTransition, match="cannot keep replayed decisions while positioning"):
            state.keep([])
        state.positioned(0)
        state.caught_up(0)
        with pytest.raises(IllegalTransition, match="while caught up"):
            state.keep([])

    def test_not_caught_up_before_the_replay_end(self) -> None:
        state = replaying(committed=10)
        assert state.remaining(4) == 6
        assert state.caught_up(9) is None
        assert state.stage is Stage.REPLAYING

    def test_caught_up_hands_the_kept_decisions_over_once(self) -> None:
        state, pause = replaying(committed=10), pause_decision("camp")
        state.keep([pause])
        assert state.caught_up(10) == [pause]
        assert (state.stage, state.remaining(0)) == (Stage.CAUGHT_UP, 0)
        with pytest.raises(IllegalTransition, match="cannot catch up while caught up"):
            state.caught_up(11)

    def test_catching_up_is_refused_while_positioning(self) -> None:
        with pytest.raises(IllegalTransition, match="cannot catch up while positioning"):
            PartitionRecovery("events[0]", AuditScan(0)).caught_up(0)

    def test_ready_waits_for_the_audit_rescan(self) -> None:
        scan = AuditScan(0)
        state = replaying(committed=0, scan=scan)
        state.caught_up(0)
        with pytest.raises(IllegalTransition, match="cannot be ready while the audit rescan runs"):
            state.ready()
        scan.finish()
        state.ready()
        assert state.stage is Stage.READY

    def test_ready_is_refused_before_catching_up(self) -> None:
        with pytest.raises(IllegalTransition, match="cannot be ready while replaying"):
            replaying(scan=AuditScan.finished()).ready()


class TestAuditScan:
    def test_decisions_handed_over_come_back_when_it_finishes(self) -> None:
        scan, pause = AuditScan(0), pause_decision("camp")
        scan.hand_over(A, [pause])
        assert scan.finish() == [(A, pause)]
        assert scan.done and scan.handed_over == []

    def test_finishing_twice_or_handing_over_after_is_refused(self) -> None:
        scan = AuditScan.finished()
        with pytest.raises(IllegalTransition, match="finished twice"):
            scan.finish()
        with pytest.raises(IllegalTransition, match="checked at once"):
            scan.hand_over(A, [])


class Harness:
    """A Recovery whose audit rescans the test finishes by hand."""

    def __init__(self, settled: set[str] | None = None, unrecorded: set[str] | None = None) -> None:
        """`settled`: decisions the audit holds an outcome for; `unrecorded`: those it does not hold as `fired`
        (every other decision it does)."""
        self.health = Health()
        self.settled, self.unrecorded = settled or set(), unrecorded or set()
        self.resumed: list[Decision] = []
        self.resumed_for: list[TopicPartition] = []  # the partition each was resumed for
        self.scans: list[asyncio.Event] = []
        self.in_flight: dict[TopicPartition, list[Decision]] = {}  # what the audit holds in flight, by partition
        self.judged: list[
            tuple[TopicPartition, list[Decision]]
        ] = []  # left to the catch-up: replayed under other rules
        self.recovery = Recovery(
            self.health,
            self.rescan,
            self.unsettled,
            self.resume,
            lambda tp: self.in_flight.get(tp, []),
            lambda tp, decisions: self.judged.append((tp, decisions)),
        )

    def unsettled(self, decision_id: str) -> bool:
        return decision_id not in self.settled and decision_id not in self.unrecorded

    def resume(self, decision: Decision, tp: TopicPartition) -> None:
        self.resumed.append(decision)
        self.resumed_for.append(tp)

    async def rescan(self, since_ms: int) -> None:
        done = asyncio.Event()
        self.scans.append(done)
        await done.wait()

    async def finish_scan(self, n: int) -> None:
        self.scans[n].set()
        for _ in range(3):  # the scan task runs on
            await asyncio.sleep(0)

    async def assign(self, *partitions: TopicPartition, committed: int | None = 10, other_rules: bool = False) -> None:
        self.recovery.assigned([(tp, f"{tp.topic}[{tp.partition}]") for tp in partitions], 0)
        await asyncio.sleep(0)  # the rescan starts
        for tp in partitions:
            self.recovery.positioned(tp, committed, other_rules)


class TestRecovery:
    async def test_assignment_makes_the_guard_recover_until_every_partition_has_caught_up(self) -> None:
        h = Harness()
        h.recovery.assigned([(A, "events[0]"), (B, "events[1]")], 0)
        assert h.health.joined and h.health.recovering
        assert h.recovery.stage(A) is Stage.POSITIONING
        h.recovery.positioned(A, 10)
        h.recovery.positioned(B, 0)
        assert h.recovery.progress({A: 4, B: 0}) == 6
        assert h.recovery.stage(B) is Stage.CAUGHT_UP and h.health.recovering
        assert h.recovery.progress({A: 10}) == 0
        assert not h.health.recovering  # ready on /readyz once replayed, as before, rescan or not
        assert h.recovery.stage(A) is Stage.CAUGHT_UP
        await h.recovery.aclose()

    async def test_an_assignment_without_new_partitions_only_joins(self) -> None:
        h = Harness()
        h.recovery.assigned([], 0)
        assert h.health.joined and not h.health.recovering and h.scans == []

    async def test_kept_decisions_are_checked_once_the_rescan_is_done(self) -> None:
        settled, unsettled = pause_decision("camp_settled"), pause_decision("camp_unsettled")
        h = Harness(settled={settled.id})
        await h.assign(A)
        h.recovery[A].keep([settled, unsettled])
        h.recovery.progress({A: 10})
        assert h.recovery.resuming and h.resumed == []
        await h.finish_scan(0)
        assert h.resumed == [unsettled]
        assert h.recovery.stage(A) is Stage.READY and not h.recovery.resuming

    async def test_a_partition_revoked_before_the_rescan_ends_leaves_its_decisions_to_its_next_owner(self) -> None:
        """Its replayed decisions were handed to the scan; the partition's next owner resumes them from the audit topic,
        so this process acting on them too would make two callers. Those of the partition it keeps are resumed, for it."""
        kept, left = pause_decision("camp_kept"), pause_decision("camp_left")
        h = Harness()
        await h.assign(A, B)
        h.recovery[A].keep([kept])
        h.recovery[B].keep([left])
        h.recovery.progress({A: 10, B: 10})
        h.recovery.revoked(B)
        await h.finish_scan(0)
        assert (h.resumed, h.resumed_for) == ([kept], [A])

    async def test_a_replayed_decision_never_recorded_fired_is_not_acted_on(self) -> None:
        """The guard that read those records live did not take it (its reading differed: a pause acted on at
        catch-up is not in the log); acting on it now would pause a campaign the user resumed since."""
        recorded, unrecorded = pause_decision("camp_recorded"), pause_decision("camp_unrecorded")
        h = Harness(unrecorded={unrecorded.id})
        await h.assign(A)
        h.recovery[A].keep([recorded, unrecorded])
        h.recovery.progress({A: 10})
        await h.finish_scan(0)
        assert h.resumed == [recorded]

    @pytest.mark.parametrize("scan_first", [False, True], ids=["caught-up-during-the-scan", "scan-done-first"])
    async def test_a_replay_under_other_rules_leaves_its_unrecorded_decisions_to_the_catch_up(
        self, scan_first: bool
    ) -> None:
        """The checkpoint was of other rules (a changed rule shipped with a restart): the records before the committed
        offset were read live under those, so a pause the rules in force derive from them was never made. Dropped,
        it left the engine holding a pause nobody made; judged at catch-up as a backlog's, the campaign bad now is
        paused. A recorded one is resumed as ever."""
        recorded, unrecorded = pause_decision("camp_recorded"), pause_decision("camp_unrecorded")
        h = Harness(unrecorded={unrecorded.id})
        await h.assign(A, other_rules=True)
        if scan_first:
            await h.finish_scan(0)
        h.recovery[A].keep([recorded, unrecorded])
        h.recovery.progress({A: 10})
        if not scan_first:
            await h.finish_scan(0)
        assert h.resumed == [recorded] and h.judged == [(A, [unrecorded])]

    async def test_a_replay_under_the_same_rules_judges_nothing(self) -> None:
        unrecorded = pause_decision("camp_unrecorded")
        h = Harness(unrecorded={unrecorded.id})
        await h.assign(A)
        h.recovery[A].keep([unrecorded])
        h.recovery.progress({A: 10})
        await h.finish_scan(0)
        assert h.resumed == [] and h.judged == []

    async def test_a_decision_recorded_in_flight_is_resumed_from_its_record_when_the_replay_does_not_derive_it(
        self,
    ) -> None:
        """The process that recorded it read the campaign otherwise (a pause acted on at catch-up is not in the log):
        the replay derives other decisions, never recorded. The recorded one was being acted on: it is resumed."""
        in_flight, replayed = pause_decision("camp"), pause_decision("camp_replayed")
        h = Harness(unrecorded={replayed.id})
        h.in_flight[A] = [in_flight]
        await h.assign(A)
        h.recovery[A].keep([replayed])
        h.recovery.progress({A: 10})
        assert h.resumed == []  # not before the scan is done
        await h.finish_scan(0)
        assert h.resumed == [in_flight] and h.recovery.stage(A) is Stage.READY

    async def test_a_decision_in_flight_is_resumed_once_when_the_replay_derives_it_too(self) -> None:
        decision = pause_decision("camp")
        h = Harness()
        h.in_flight[A] = [decision]
        await h.assign(A)
        await h.finish_scan(0)
        h.recovery[A].keep([decision])
        h.recovery.progress({A: 10})  # caught up after the scan: ready at once
        assert h.resumed == [decision]

    async def test_decisions_in_flight_wait_for_their_partition_to_catch_up(self) -> None:
        """Which campaigns a partition carries is known once it is replayed: nothing before, each partition's own."""
        on_a, on_b = pause_decision("camp_a"), pause_decision("camp_b")
        h = Harness()
        h.in_flight = {A: [on_a], B: [on_b]}
        await h.assign(A, B)
        await h.finish_scan(0)
        assert h.resumed == []
        h.recovery.progress({A: 10, B: 3})
        assert h.resumed == [on_a]
        h.recovery.progress({B: 10})
        assert h.resumed == [on_a, on_b]

    async def test_caught_up_after_the_rescan_is_ready_at_once(self) -> None:
        unsettled = pause_decision("camp")
        h = Harness()
        await h.assign(A)
        await h.finish_scan(0)
        h.recovery[A].keep([unsettled])
        h.recovery.progress({A: 10})
        assert h.resumed == [unsettled] and h.recovery.stage(A) is Stage.READY

    async def test_a_failed_rescan_still_lets_the_partitions_act(self) -> None:
        async def broken(since_ms: int) -> None:
            raise RuntimeError("a bug")

        recovery = Recovery(Health(), broken, lambda _: False, lambda *_: None, lambda _: [])
        recovery.assigned([(A, "events[0]")], 0)
        recovery.positioned(A, 0)
        recovery.progress({A: 0})
        await asyncio.wait_for(recovery.audit_read(A).wait(), 1)
        assert recovery.stage(A) is Stage.READY

    async def test_a_ready_partition_does_not_wait_for_another_partitions_rescan(self) -> None:
        h = Harness()
        await h.assign(A)
        await h.finish_scan(0)
        h.recovery.progress({A: 10})
        await h.assign(B)  # the rescan for B runs on
        await asyncio.wait_for(h.recovery.audit_read(A).wait(), 1)
        waiting = asyncio.create_task(h.recovery.audit_read(B).wait())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await h.finish_scan(1)
        await asyncio.wait_for(waiting, 1)

    async def test_a_partition_assigned_again_waits_for_its_newest_rescan(self) -> None:
        h = Harness()
        await h.assign(A)
        waiting = asyncio.create_task(h.recovery.audit_read(A).wait())
        h.recovery.revoked(A)
        await h.assign(A)  # back before the first rescan is done: the second one counts
        await h.finish_scan(0)
        assert not waiting.done()
        await h.finish_scan(1)
        await asyncio.wait_for(waiting, 1)


async def test_a_live_pause_of_a_ready_partition_does_not_wait_for_another_partitions_audit_rescan() -> None:
    """Partition A is ready; partition B has just been assigned and its audit rescan is slow. A bad
    campaign on A is paused (dry run: the outcome recorded) without waiting for B's rescan."""
    published: list[AuditEvent] = []

    async def publish(event: AuditEvent) -> None:
        published.append(event)

    h = Harness()
    settled = SettledDecisions(KafkaSettings(), "audit")
    dispatcher = Dispatcher(None, publish, Metrics(), h.health, settled, dry_run=True)
    pipeline = Pipeline(load_rules(RULES), dispatcher, NoDeadLetters(), Metrics(), dedupe_horizon=3 * 3600)
    for tp in (A, B):
        h.recovery.assigned([(tp, str(tp))], 0)
        await asyncio.sleep(0)
        pipeline.assign(tp, None, 0, None, h.recovery.positioned(tp, None), h.recovery.audit_read(tp))
        h.recovery.progress({tp: 0})
        if tp == A:
            await h.finish_scan(0)
    assert h.recovery.stage(A) is Stage.READY and h.recovery.stage(B) is Stage.CAUGHT_UP

    now_ms = int(time.time() * 1000)
    values = bad_list("camp_on_a", time.time() - 250)  # live: acted on at once
    await pipeline.handle(
        A,
        [
            ConsumerRecord(A.topic, A.partition, n, now_ms, 0, b"k", v, None, 1, len(v), ())
            for n, v in enumerate(values)
        ],
    )
    try:
        await asyncio.wait_for(_outcome(published, "dry_run"), 2)
    finally:
        await h.finish_scan(1)
        await dispatcher.drain(5)


async def _outcome(published: list[AuditEvent], outcome: str) -> None:
    while not any(event.outcome == outcome for event in published):
        await asyncio.sleep(0.01)


class NoDeadLetters:
    async def send(self, record: object, reason: str) -> asyncio.Future:
        raise AssertionError(f"nothing here is malformed, got {reason}")


@pytest.mark.timeout(120)
async def test_decisions_recorded_in_flight_are_rebuilt_from_the_audit_topic(kafka_broker, topic_name: str) -> None:
    """On a real broker: a decision recorded `fired` and given no outcome comes back from its audit record as the
    decision it was (for the campaigns the asking partition carries), so its partition's new owner can act on it
    without deriving it again; so does one whose rule has changed since (seen through as recorded, said in a
    warning). A settled one, another partition's, one this process is acting on itself and an alert (its `fired`
    record is all it gets) do not; a dry run's and a live guard's each come back to a guard running as they did
    only. A later read whose look-back no longer holds the record forgets
    it."""
    rules = load_rules(RULES)
    in_flight, elsewhere, settled, mine = (
        pause_decision(c) for c in ("camp_here", "camp_elsewhere", "camp_settled", "camp_mine")
    )
    changed = pause_decision("camp_changed")
    changed_text = changed.rule.model_dump(by_alias=True) | {"description": "edited since"}
    changed_rule = type(changed.rule).model_validate(changed_text)  # another version of it
    changed = dataclasses.replace(changed, rule=changed_rule)
    assert changed_rule.version != in_flight.rule.version, "premise: the rule's text changed"
    now = time.time()
    alert = alert_of(pause_decision("camp_alerted"))
    recorded = (in_flight, elsewhere, settled, changed, mine, alert)
    records = [audit_event(d, "fired", decided_at=now, dry_run=False) for d in recorded]
    records.append(audit_event(settled, "paused", decided_at=now, dry_run=False))
    dry = pause_decision("camp_dry")
    records.append(audit_event(dry, "fired", decided_at=now, dry_run=True))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", **kafka_broker.producer_overrides
    )
    await producer.start()
    try:
        for event in records:
            await producer.send_and_wait(topic_name, event.model_dump_json().encode(), key=event.campaign_id.encode())
    finally:
        await producer.stop()

    decisions = SettledDecisions(KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers), topic_name)
    await asyncio.wait_for(decisions.scan(int(now * 1000) - 60_000), 60)
    decisions.take(mine.id)  # this process's own, under way: not one to resume
    carried = {"camp_here", "camp_settled", "camp_changed", "camp_mine", "camp_alerted", "camp_dry"}.__contains__
    with structlog.testing.capture_logs() as logs:
        rebuilt, rebuilt_changed = decisions.in_flight(carried, rules, dry_run=False)
    assert [d.id for d in decisions.in_flight(carried, rules, dry_run=True)] == [dry.id]  # each mode its own
    assert [decisions.unsettled(d.id, dry_run=False) for d in (in_flight, dry, settled)] == [True, False, False]
    assert [decisions.unsettled(d.id, dry_run=True) for d in (in_flight, dry, settled)] == [False, True, False]

    assert rebuilt.id == in_flight.id and rebuilt.rule == in_flight.rule and rebuilt.campaign_id == "camp_here"
    assert dataclasses.replace(rebuilt, fired_at=0.0, evidence_from=0.0, episode_from=None) == dataclasses.replace(
        in_flight, fired_at=0.0, evidence_from=0.0, episode_from=None
    )
    assert rebuilt.fired_at == pytest.approx(in_flight.fired_at, abs=1e-6)  # through a datetime: microseconds
    assert rebuilt.evidence_from == pytest.approx(in_flight.evidence_from, abs=1e-6)
    assert (rebuilt.episode_from is None) == (in_flight.episode_from is None)
    assert [(line["event"], line["decision_id"]) for line in logs] == [
        ("a decision recorded before a restart names a rule changed or removed since; acted on as recorded", changed.id)
    ]
    assert (rebuilt_changed.id, rebuilt_changed.rule.name, rebuilt_changed.rule.action) == (
        changed.id,
        changed.rule.name,
        "pause",
    )
    assert decisions.recorded(changed.id).rule.version == changed_rule.version  # what its outcome repeats

    await asyncio.wait_for(decisions.scan(int(time.time() * 1000) + 60_000), 60)  # a look-back past every record
    assert decisions.in_flight(carried, rules, dry_run=False) == []


class TestSettledDecisionsOverReads:
    """Audit reads of several assignments may overlap, and one started earlier may end later (without what a newer
    one found): what each found is kept, up to the latest read's look-back."""

    def fired(self, decision: Decision, at_ms: int) -> Fired:
        return Fired(at_ms, audit_event(decision, "fired", decided_at=at_ms / 1000, dry_run=False))

    async def test_an_older_read_ending_later_does_not_forget_what_a_newer_one_found(self, monkeypatch) -> None:
        decision, now_ms = pause_decision("camp"), int(time.time() * 1000)
        reads = {now_ms - 1000: ({}, {}), now_ms - 500: ({}, {decision.id: self.fired(decision, now_ms - 100)})}

        async def read(settings: KafkaSettings, topic: str, since_ms: int) -> tuple[dict[str, str], dict[str, Fired]]:
            return reads[since_ms]

        monkeypatch.setattr(settled_module, "audited_decision_ids", read)
        decisions = SettledDecisions(KafkaSettings(), "audit")
        await decisions.scan(now_ms - 500)  # the newer read ends first
        await decisions.scan(now_ms - 1000)  # the older one, begun before the record was written, ends after
        assert decisions.unsettled(decision.id, dry_run=False)
        assert [d.id for d in decisions.in_flight(lambda _: True, load_rules(RULES), dry_run=False)] == [decision.id]

    async def test_a_record_older_than_the_latest_look_back_is_forgotten(self, monkeypatch) -> None:
        """Its outcome may have been written since, before that look-back: it is not read again, so the record
        alone must not be acted on."""
        decision, now_ms = pause_decision("camp"), int(time.time() * 1000)
        reads = {0: ({}, {decision.id: self.fired(decision, 1000)}), now_ms: ({}, {})}

        async def read(settings: KafkaSettings, topic: str, since_ms: int) -> tuple[dict[str, str], dict[str, Fired]]:
            return reads[since_ms]

        monkeypatch.setattr(settled_module, "audited_decision_ids", read)
        decisions = SettledDecisions(KafkaSettings(), "audit")
        await decisions.scan(0)
        assert decisions.unsettled(decision.id, dry_run=False)
        await decisions.scan(now_ms)
        assert not decisions.unsettled(decision.id, dry_run=False)
        assert decisions.in_flight(lambda _: True, load_rules(RULES), dry_run=False) == []
