"""Pipeline.handle on its own: records in, counted outcomes and decisions out (no broker needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from guard.contracts.events import Event, Signal, decode
from guard.engine import Decision, Engine, record_decisions
from guard.engine import snapshot as snapshots
from guard.engine.episodes import DEFAULT_RESUME_GRACE, EpisodeStart
from guard.engine.snapshot import FORMAT, rules_version, snapshot
from guard.rules import load_rules
from guard.rules.loader import parse_rules
from guard.runtime.catchup import DEFAULT_CATCH_UP_LIMIT, QUIET_SECONDS
from guard.runtime.checkpoint_records import Found, partition_key, whole
from guard.runtime.checkpoint_records import records as records_of_checkpoint
from guard.runtime.checkpoints import Checkpointer, _to_thread_whole
from guard.runtime.pipeline import Pipeline, name
from guard.runtime.recovery import AuditScan, PartitionRecovery
from guard.telemetry.metrics import Metrics
from guard.testing.events import bounced, sent, started

RULES = Path(__file__).parent.parent / "rules"
TP = TopicPartition("events", 0)


class Decisions:
    """The dispatcher's side: keeps what it is given and records it at once."""

    def __init__(self) -> None:
        self.submitted: list[Decision] = []
        self.superseded: list[tuple[Decision, str]] = []
        self.abandoned: list[object] = []  # partitions whose decisions were left to their next owner

    def submit(
        self, decision: Decision, on_recorded: Callable[[], None], audit_read: object = None, *, partition: object
    ) -> None:
        self.submitted.append(decision)
        on_recorded()

    def supersede(
        self, decision: Decision, on_recorded: Callable[[], None], note: str, audit_read: object = None, **_: object
    ) -> None:
        self.superseded.append((decision, note))
        on_recorded()

    def abandon(self, partitions: object) -> int:
        self.abandoned.extend(partitions)  # type: ignore[call-overload]
        return 0

    def pauses(self, campaign_id: str) -> list[Decision]:
        """The pause calls this campaign's decisions came to (not those covered by another decision)."""
        return [d for d in self.submitted if d.campaign_id == campaign_id and d.superseded_by is None]

    def superseded_of(self, campaign_id: str) -> list[Decision]:
        return [decision for decision, _ in self.superseded if decision.campaign_id == campaign_id]


class NoDeadLetters:
    async def send(self, record: object, reason: str) -> asyncio.Future:
        raise AssertionError(f"nothing here is malformed, got {reason}")


def records(values: list[bytes], first_offset: int = 0) -> list[ConsumerRecord]:
    now_ms = int(time.time() * 1000)
    return [
        ConsumerRecord(TP.topic, TP.partition, first_offset + n, now_ms, 0, b"camp", value, None, 4, len(value), ())
        for n, value in enumerate(values)
    ]


STILL_BAD, HEALTHY_SINCE = "camp_still_bad", "camp_healthy_since"


def steady(campaign_id: str, start: float, end: float, bounce_every: int) -> list[tuple[str, bytes, float]]:
    """A send every 2 s from `start` until `end`, each `bounce_every`-th followed by its hard bounce."""
    events = []
    for n in range(int((end - start) / 2)):
        at = start + 2 * n
        events.append((campaign_id, sent(campaign_id, at), at))
        if (n + 1) % bounce_every == 0:
            events.append((campaign_id, bounced(campaign_id, at + 0.5), at + 0.5))
    return events


def three_hours(end: float, *, sending_to_the_end: bool = False) -> list[tuple[str, bytes, float]]:
    """Three hours of history up to `end`, in event-time order (key, value, event time): `camp_still_bad` at
    12.5% hard bounces, `camp_healthy_since` at 12.5% for its first 20 minutes and 1% since. The engine
    reads each pause decision followed by sends past the grace as a resume: judged as logged, the first
    is paused 22 times, the second 3. The first's sends stop a minute after its last pause decision, so
    it is paused now in that reading (bad now) whichever phase of its cycle the three hours end in."""
    start = end - 3 * 3600
    still_bad = steady(STILL_BAD, start, end, 8)
    decided = [
        decision.fired_at
        for _, decision in record_decisions(Engine(load_rules(RULES)), ((value, at) for _, value, at in still_bad))
        if decision.action == "pause" and decision.superseded_by is None
    ]
    events = still_bad if sending_to_the_end else [event for event in still_bad if event[2] <= decided[-1] + 60]
    events += steady(HEALTHY_SINCE, start, start + 1200, 8) + steady(HEALTHY_SINCE, start + 1200, end, 100)
    return sorted(events, key=lambda event: event[2])


def logged(events: list[tuple[str, bytes, float]]) -> list[ConsumerRecord]:
    """As a producer logs them as they happen: each record's Kafka timestamp is its event time."""
    return [
        ConsumerRecord(TP.topic, TP.partition, n, int(at * 1000), 0, key.encode(), value, None, 4, len(value), ())
        for n, (key, value, at) in enumerate(events)
    ]


def outcome(metrics: Metrics, name: str) -> float:
    return metrics.records.labels(name)._value.get()


async def test_records_delivered_again_within_an_assignment_count_once() -> None:
    """The consumer going back within an assignment (a fetch reset) must not count evidence twice
    nor take a decision twice; the engine's dedupe cannot tell when a campaign.started among the
    records starts the campaign afresh."""
    metrics, decisions = Metrics(), Decisions()
    pipeline = Pipeline(load_rules(RULES), decisions, NoDeadLetters(), metrics, dedupe_horizon=3 * 3600)
    pipeline.assign(TP, committed=None, since_ms=0)
    start = time.time() - 200  # live: decisions are acted on at once
    values = [started("camp", start)]
    for n in range(300):  # a list gone bad: every fourth send bounces
        values.append(sent("camp", start + 1 + n / 2))
        if n % 4 == 0:
            values.append(bounced("camp", start + 1.25 + n / 2))
    stream = records(values)
    await pipeline.handle(TP, stream[:250])
    await pipeline.handle(TP, stream)  # from the start again, then the rest
    assert outcome(metrics, "counted") == len(stream)
    assert outcome(metrics, "redelivered") == 250
    await pipeline.handle(TP, stream[100:200])  # nothing new at all
    assert outcome(metrics, "redelivered") == 350
    assert outcome(metrics, "counted") == len(stream)
    ids = [decision.id for decision in decisions.submitted]
    assert ids and len(ids) == len(set(ids)), "a decision was taken twice"


async def test_each_partition_remembers_its_share_of_the_dedupe_budget() -> None:
    """GUARD_MAX_DEDUPE_KEYS over 4 input partitions: a partition flooded with unique message ids
    keeps at most a quarter of it, and what it forgets is counted."""
    metrics = Metrics()
    pipeline = Pipeline(
        load_rules(RULES),
        Decisions(),
        NoDeadLetters(),
        metrics,
        dedupe_horizon=12 * 3600,
        max_dedupe_keys=4_000,
        partition_count=lambda: 4,
    )
    assert pipeline.dedupe_key_share() == 1_000
    pipeline.assign(TP, committed=None, since_ms=0)
    start = time.time() - 600
    await pipeline.handle(TP, records([sent("camp", start + n * 0.01) for n in range(5_000)]))
    assert 0 < pipeline.dedupe_keys() <= 1_000
    assert pipeline.dedupe_evicted == metrics.dedupe_evicted._value.get() == 5_000 - pipeline.dedupe_keys()


class TestBacklog:
    """A backlog ends as if the guard had kept up and been obeyed (DESIGN promise 10, guard.runtime.catchup)."""

    now = 0.0  # the pipeline's wall clock: time.time() at the start of each test

    @pytest.fixture(autouse=True)
    def _clock(self) -> None:
        self.now = time.time()

    def pipeline(self, decisions: Decisions, metrics: Metrics | None = None, log_end: int | None = None) -> Pipeline:
        pipeline = Pipeline(
            load_rules(RULES),
            decisions,
            NoDeadLetters(),
            metrics or Metrics(),
            dedupe_horizon=3600,
            clock=lambda: self.now,
        )
        recovery = PartitionRecovery(name(TP), AuditScan.finished())
        recovery.positioned(None)  # a first deploy: no committed offset
        recovery.caught_up(0)  # nothing to replay: checkpoints may be taken
        pipeline.assign(TP, committed=None, since_ms=0, recovery=recovery, log_end=log_end)
        return pipeline

    def quiet(self, pipeline: Pipeline, end: int) -> None:
        """The poll loop's ticks with the partition read to `end`, its log end: when it gets there, and once the
        log end has stayed put for QUIET_SECONDS (the history is all in)."""
        pipeline.caught_up(TP, position=end, log_end=end)
        self.now += QUIET_SECONDS
        pipeline.caught_up(TP, position=end, log_end=end)

    async def test_a_first_deploy_pauses_the_campaign_still_bad_once_and_the_one_healthy_since_never(self) -> None:
        """Three hours logged, the last record seven minutes old, read in batches of 500: nothing is acted on
        until the partition reaches its log end; then one pause for the campaign still paused in the engine's
        reading, and every other decision superseded with a note saying why."""
        decisions, metrics = Decisions(), Metrics()
        pipeline = self.pipeline(decisions, metrics)
        stream = logged(three_hours(time.time() - 420))
        batches = [stream[n : n + 500] for n in range(0, len(stream), 500)]
        held = []
        for batch in batches[:-1]:
            await pipeline.handle(TP, batch, log_end=len(stream))
            assert decisions.submitted == []
            held.append(metrics.held._value.get())
        assert max(held) > 0
        await pipeline.handle(TP, batches[-1], log_end=len(stream))
        assert decisions.submitted == [], "at the log end, but it may still grow"
        self.quiet(pipeline, len(stream))

        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []
        assert len(decisions.superseded_of(STILL_BAD)) >= 20
        assert len(decisions.superseded_of(HEALTHY_SINCE)) == 3
        assert pipeline.held() == metrics.held._value.get() == 0
        assert pipeline.committable() == {TP: len(stream)}  # every decision recorded: nothing pending
        notes = {note.split(" (")[0] for _, note in decisions.superseded}
        assert "the campaign kept sending after this decision and its resume grace" in notes

    async def test_a_backlog_is_judged_at_the_end_it_had_when_positioned_whatever_the_high_watermark_says(
        self,
    ) -> None:
        """The consumer's high watermark is unknown before its first fetch answers and comes from an earlier
        fetch afterwards: neither a batch without one nor a position at an early one counts as caught up before
        the end the log had when the partition was positioned."""
        decisions = Decisions()
        stream = logged(three_hours(time.time() - 420))
        pipeline = self.pipeline(decisions, log_end=len(stream))
        batches = [stream[n : n + 500] for n in range(0, len(stream), 500)]
        for batch in batches[:-1]:
            await pipeline.handle(TP, batch, log_end=None)  # no fetch has answered with a high watermark
            end = batch[-1].offset + 1
            await pipeline.handle(TP, batch, log_end=end)  # delivered again, at an early fetch's watermark
            pipeline.caught_up(TP, position=end, log_end=end)  # the poll loop's tick, at that watermark
            assert decisions.submitted == [], f"acted on before the end of the backlog, at offset {end}"
        await pipeline.handle(TP, batches[-1], log_end=None)
        self.quiet(pipeline, len(stream))
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []

    async def test_the_first_fetch_raises_a_backlog_end_looked_up_short(self) -> None:
        """Looked up at positioning, a log end may be the start of the last batch (the embedded broker answers
        so): the first fetch's high watermark raises it, and an early tick at the short end acts on nothing."""
        decisions = Decisions()
        stream = logged(three_hours(time.time() - 420))
        pipeline = self.pipeline(decisions, log_end=500)  # the last batch starts at 500
        await pipeline.handle(TP, stream[:500], log_end=len(stream))
        assert pipeline.backlog_end(TP) == len(stream)
        await pipeline.handle(TP, stream[500:1000], log_end=1000)  # a later fetch cannot lower it
        pipeline.caught_up(TP, position=1000, log_end=1000)
        assert pipeline.backlog_end(TP) == len(stream) and decisions.submitted == []
        await pipeline.handle(TP, stream[1000:], log_end=len(stream))
        self.quiet(pipeline, len(stream))
        assert len(decisions.pauses(STILL_BAD)) == 1 and decisions.pauses(HEALTHY_SINCE) == []

    async def test_a_history_forwarded_in_chunks_is_judged_once_it_is_all_in(self) -> None:
        """A bridge forwards three hours of buffered mail in chunks, the guard reading each as it lands: the log
        end is reached after every chunk, yet the history is not all in. Judged there, a campaign would be judged
        on part of its history, once per chunk (the still-bad one paused again and again, the one healthy
        since paused for its first twenty minutes). Judged once the log end stays put: one pause in all."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(time.time() - 420))
        for n in range(0, len(stream), 300):
            end = min(n + 300, len(stream))
            await pipeline.handle(TP, stream[n:end], log_end=end)
            pipeline.caught_up(TP, position=end, log_end=end)  # the tick, at the log end for now
            self.now += 0.5  # the next chunk lands
            pipeline.caught_up(TP, position=end, log_end=end)
            assert decisions.submitted == [], f"judged on the history up to offset {end} of {len(stream)}"
        self.quiet(pipeline, len(stream))
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []

    async def test_a_campaign_read_up_to_the_present_is_judged_whatever_else_the_partition_carries(self) -> None:
        """After an outage the backlog is read to the end it had; the still-bad campaign's mail is read up to a
        minute ago, but the log end keeps moving and every batch carries a webhook retried from ten minutes
        ago: neither a quiet log end nor a batch all live ever comes. The campaign is judged on its own
        reading (its newest event younger than the grace): paused within the second, not at the catch-up
        limit."""
        decisions = Decisions()
        backlog = logged(three_hours(self.now - 60, sending_to_the_end=True))
        pipeline = self.pipeline(decisions, log_end=len(backlog))
        await pipeline.handle(TP, backlog, log_end=len(backlog))
        assert len(decisions.pauses(STILL_BAD)) == 1 and decisions.pauses(HEALTHY_SINCE) == []
        offset = len(backlog)
        for _ in range(3):  # live traffic goes on, with the retries
            self.now += 1
            retried = bounced("camp_other", self.now - 600)
            batch = records([sent("camp_live", self.now - 0.5), retried], first_offset=offset)
            offset += len(batch)
            await pipeline.handle(TP, batch, log_end=offset + 5)
        assert len(decisions.pauses(STILL_BAD)) == 1 and pipeline.held() == 0

    async def test_a_history_forwarded_beside_live_traffic_is_judged_campaign_by_campaign(self) -> None:
        """A bridge forwards three hours of buffered mail in chunks (fresh record times, old event times) while
        other sources write live mail between the chunks: a batch all live, or the log end reached, says
        nothing of the buffered campaigns. Each is judged once its own mail is read up to the present: the
        one healthy for hours since is never paused, the still-bad one once."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions, log_end=0)  # caught up: nothing in the log when positioned
        history = three_hours(self.now - 60, sending_to_the_end=True)
        offset = 0
        for n in range(0, len(history), 300):
            chunk = records([value for _, value, _ in history[n : n + 300]], first_offset=offset)
            offset += len(chunk)
            await pipeline.handle(TP, chunk, log_end=offset)
            live = records([sent(f"camp_live_{k}", self.now - 1) for k in range(5)], first_offset=offset)
            offset += len(live)
            await pipeline.handle(TP, live, log_end=offset)
            pipeline.caught_up(TP, position=offset, log_end=offset)
            self.now += 1
        assert decisions.pauses(HEALTHY_SINCE) == []
        assert len(decisions.pauses(STILL_BAD)) == 1

    async def test_a_batch_with_nothing_counted_does_not_read_as_caught_up(self) -> None:
        """A batch of events the guard does not count (opens, replies) says nothing about how far behind the
        partition is: the held decisions stay held."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(time.time() - 420))
        half = len(stream) // 2
        await pipeline.handle(TP, stream[:half], log_end=len(stream))
        assert decisions.submitted == [] and pipeline.held() > 0, "premise: behind, holding"
        opened = [
            dataclasses.replace(record, value=re.sub(rb'"event": "[^"]+"', b'"event": "message.opened"', record.value))
            for record in stream[half : half + 50]
        ]
        assert all(b'"message.opened"' in record.value for record in opened), "premise: a batch of opens"
        await pipeline.handle(TP, opened, log_end=len(stream))
        assert decisions.submitted == []

    async def test_decisions_are_held_while_the_partition_is_behind_and_no_checkpoint_covers_them(self) -> None:
        """Short of the log end nothing is acted on, the offset commits stop before the first held decision
        and no snapshot is taken; once the consumer's position reaches the log end, the current one is acted on."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(time.time() - 420))
        await pipeline.handle(TP, stream, log_end=len(stream) + 10)  # more in the log than this batch
        assert decisions.submitted == []
        # each campaign's latest decision waits to be judged at catch-up; the earlier ones were superseded at once
        assert pipeline.held() == 2
        assert pipeline.snapshot(TP) is None
        assert pipeline.committable()[TP] < len(stream)
        self.quiet(pipeline, len(stream) + 10)  # control records at the end
        assert [decision.campaign_id for decision in decisions.submitted] == [STILL_BAD]
        assert pipeline.snapshot(TP) is not None
        assert pipeline.committable() == {TP: len(stream)}

    async def test_a_revoked_partition_drops_its_held_decisions_a_parked_one_keeps_them(self) -> None:
        """Revoked, the held decisions go with the partition (their offsets were never committed: the next
        owner derives them again); parked, they wait for the partition to come back."""
        metrics = Metrics()
        pipeline = self.pipeline(Decisions(), metrics)
        stream = logged(three_hours(time.time() - 420))
        await pipeline.handle(TP, stream, log_end=len(stream) + 10)
        pipeline.park(TP)
        assert pipeline.held() == metrics.held._value.get() == 2
        pipeline.unpark(TP)
        pipeline.revoke(TP)
        assert pipeline.held() == metrics.held._value.get() == 0

    async def test_decisions_in_flight_are_left_to_the_next_owner_only_when_the_partition_moves(self) -> None:
        """Parked over a rebalance, its decisions in flight go on here; revoked, or not given back, they are abandoned:
        the next owner resumes them from the audit topic (two callers made two outcomes per decision)."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        other = TopicPartition("events", 1)
        pipeline.assign(other, committed=None, since_ms=0)
        await pipeline.handle(TP, logged(three_hours(time.time() - 420)))
        pipeline.park(TP)
        pipeline.drop_parked(keep=[TP])
        assert decisions.abandoned == []  # given back: this process goes on acting on them
        pipeline.drop_parked()
        pipeline.revoke(other)
        assert decisions.abandoned == [TP, other]

    async def test_a_guard_that_keeps_up_acts_at_once(self) -> None:
        """Records younger than the resume grace: the pause goes to the dispatcher within the batch that
        caused it, however much the log holds after it."""
        decisions, metrics = Decisions(), Metrics()
        pipeline = self.pipeline(decisions, metrics)
        start = time.time() - 200
        values = [value for key, value, _ in steady(STILL_BAD, start, start + 200, 4)]
        await pipeline.handle(TP, records(values), log_end=10**6)
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.superseded == []
        assert pipeline.held() == metrics.held._value.get() == 0

    async def test_a_history_that_ends_mid_episode_still_bad_is_paused_once(self) -> None:
        """The still-bad campaign sends to the end of its history, so the engine's reading ends in a new episode
        not yet proven bad but leaning bad (its cusum past half its level): its latest decision stands and is
        acted on at catch-up, once. The campaign healthy for hours since leans nowhere: never paused."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(time.time() - 30, sending_to_the_end=True))
        engine = Engine(load_rules(RULES))
        for record in stream:
            engine.process(decode(record.value, record.timestamp / 1000))
        assert engine.episode(STILL_BAD).pause is None, "premise: the history ends in a new episode"
        assert engine.leans_bad(STILL_BAD) and not engine.leans_bad(HEALTHY_SINCE)
        for n in range(0, len(stream), 500):
            await pipeline.handle(TP, stream[n : n + 500], log_end=len(stream))
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []
        assert len(decisions.superseded_of(HEALTHY_SINCE)) == 3

    async def test_a_batch_that_ends_early_in_a_new_episode_does_not_judge_it(self) -> None:
        """A batch boundary where the still-bad campaign's new episode is a few sends old (not leaning bad yet):
        its latest decision is not superseded there; it is judged when the partition has caught up, by what the
        campaign shows then (leaning bad: paused once), as it would be had the whole backlog come in one batch."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(time.time() - 30, sending_to_the_end=True))
        engine = Engine(load_rules(RULES))
        latest = None
        boundary = None
        for n, record in enumerate(stream):
            for decision in engine.process(decode(record.value, record.timestamp / 1000)):
                if decision.action == "pause" and decision.campaign_id == STILL_BAD and decision.superseded_by is None:
                    latest, boundary = decision.id, None
            episode = engine.episode(STILL_BAD)
            if boundary is None and episode.pause is None and not engine.leans_bad(STILL_BAD):
                boundary = n + 1  # the campaign's latest decision is no longer in force, and it leans nowhere yet
        assert boundary is not None and engine.leans_bad(STILL_BAD), "premise: a young episode, leaning bad later"
        pipeline = self.pipeline(decisions, log_end=len(stream))  # a first deploy: the log's end known
        await pipeline.handle(TP, stream[:boundary], log_end=len(stream))
        await pipeline.handle(TP, stream[boundary:], log_end=len(stream))
        assert [decision.id for decision in decisions.pauses(STILL_BAD)] == [latest]
        assert decisions.pauses(HEALTHY_SINCE) == []

    async def test_a_history_that_ends_a_few_sends_into_a_new_episode_is_judged_by_what_the_campaign_sends_next(
        self,
    ) -> None:
        """The still-bad campaign's history ends a few sends after its latest decision plus the grace: the engine
        reads a resume there, and a new episode too young to lean either way. Its latest decision is superseded
        (nothing in the history says the campaign is bad now); the bad list it keeps sending proves it again
        within a few dozen sends, and that decision pauses it, once."""
        still_bad = steady(STILL_BAD, 0, 3 * 3600, 8)
        engine, length = Engine(load_rules(RULES)), None
        for n, (_, value, at) in enumerate(still_bad):
            engine.process(decode(value, at))
            episode = engine.episode(STILL_BAD)
            if episode.began is EpisodeStart.RESUMED and at - episode.since < 10 and not engine.leans_bad(STILL_BAD):
                length = n + 1  # a few sends into a new episode, leaning nowhere yet
        assert length is not None, "premise: the history can end a few sends into a new episode"
        start = time.time() - 420 - still_bad[length - 1][2]  # the history ends seven minutes ago: it is held
        events = steady(STILL_BAD, start, start + 3 * 3600, 8)[:length]
        decided = record_decisions(Engine(load_rules(RULES)), ((value, at) for _, value, at in events))
        latest = [d.id for _, d in decided if d.action == "pause" and d.superseded_by is None][-1]
        stream = logged(events)
        decisions = Decisions()
        pipeline = self.pipeline(decisions, log_end=len(stream))
        for n in range(0, len(stream), 500):
            await pipeline.handle(TP, stream[n : n + 500], log_end=len(stream))
        self.quiet(pipeline, len(stream))
        assert decisions.pauses(STILL_BAD) == []
        assert latest in {decision.id for decision in decisions.superseded_of(STILL_BAD)}
        live = [value for _, value, _ in steady(STILL_BAD, time.time() - 120, time.time(), 4)]
        await pipeline.handle(TP, records(live, first_offset=len(stream)))
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(STILL_BAD)[0].id not in {decision.id for decision, _ in decisions.superseded}

    async def test_a_campaign_paused_at_catch_up_is_not_paused_again_by_the_mail_in_flight(self) -> None:
        """The still-bad campaign's backlog ends in a new episode leaning bad: its latest decision is acted on at
        catch-up. The sends and bounces still arriving for it (mail in flight, lagging webhooks) carry its
        evidence over the line moments later: that decision is covered by the pause just made, no second call."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        end = self.now - 30
        backlog = three_hours(end, sending_to_the_end=True)
        stream = logged(backlog + steady(STILL_BAD, end + 2, self.now + 120, 8))
        await pipeline.handle(TP, stream[: len(backlog)], log_end=len(backlog))
        self.quiet(pipeline, len(backlog))
        assert len(decisions.pauses(STILL_BAD)) == 1, "premise: acted on at catch-up, leaning bad"
        await pipeline.handle(TP, stream[len(backlog) :], log_end=len(stream))
        covered = [d for d in decisions.submitted if d.campaign_id == STILL_BAD and d.superseded_by is not None]
        assert covered, "premise: the evidence in flight crosses a pause rule's line"
        assert len(decisions.pauses(STILL_BAD)) == 1

    @pytest.mark.parametrize("lands", [True, False], ids=["resumed", "premise"])
    async def test_a_pause_resumed_from_another_process_record_lands_in_the_reading_at_the_call(
        self, lands: bool
    ) -> None:
        """A new owner replays the still-bad campaign's backlog (its decisions kept aside, as below a committed
        offset) and resumes, from its audit record, the pause the process before was making when it died
        (guard.runtime.settled): that pause lands now in the partition's reading, so the mail still in flight,
        crossing a rule's line again, is covered by it and calls nobody. Were it left at the reading's own decision
        times, that mail would read as a resume past the grace and be paused anew (the premise case)."""
        decisions = Decisions()
        pipeline = Pipeline(
            load_rules(RULES), decisions, NoDeadLetters(), Metrics(), dedupe_horizon=3600, clock=lambda: self.now
        )
        end = self.now - 30
        backlog = three_hours(end, sending_to_the_end=True)
        recovery = PartitionRecovery(name(TP), AuditScan.finished())
        recovery.positioned(len(backlog))  # the previous owner read it all
        pipeline.assign(TP, committed=len(backlog), since_ms=0, recovery=recovery, log_end=len(backlog))
        stream = logged(backlog + steady(STILL_BAD, end + 2, self.now + 120, 8))  # in flight: within the grace
        await pipeline.handle(TP, stream[: len(backlog)], log_end=len(backlog))
        kept = recovery.caught_up(len(backlog))
        assert decisions.submitted == [] and kept, "premise: replayed, its decisions kept aside"
        # the record's decision: one the replay need not derive (its id is the other process's), covered by a pause
        # that process made before it (whose outcome this one does not know: the resumed decision calls for itself)
        recorded = dataclasses.replace(kept[-1], id="recorded-by-the-process-before", superseded_by="its-earlier-pause")
        if lands:
            pipeline.resumed(TP, recorded)
        self.now += 120
        await pipeline.handle(TP, stream[len(backlog) :], log_end=len(stream))
        assert (decisions.pauses(STILL_BAD) == []) is lands
        if lands:  # the mail in flight is covered by the resumed decision's own call
            covered = {d.superseded_by for d in decisions.submitted if d.campaign_id == STILL_BAD}
            assert covered == {recorded.id}

    async def paused_at_catch_up_then_resumed(self, bounce_every: int) -> tuple[Decisions, Pipeline, float]:
        """The still-bad campaign paused at catch-up as leaning bad, then resumed by the user (its sends from past
        the grace, for ten minutes, each `bounce_every`-th bouncing): the decisions, the pipeline, the resume."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        backlog = three_hours(self.now - 30, sending_to_the_end=True)
        resumed = self.now + DEFAULT_RESUME_GRACE + 60
        stream = logged(backlog + steady(STILL_BAD, resumed, resumed + 600, bounce_every))
        await pipeline.handle(TP, stream[: len(backlog)], log_end=len(backlog))
        self.quiet(pipeline, len(backlog))
        assert len(decisions.pauses(STILL_BAD)) == 1, "premise: acted on at catch-up, leaning bad"
        self.now = resumed + 600
        await pipeline.handle(TP, stream[len(backlog) :], log_end=len(stream))
        return decisions, pipeline, resumed

    async def test_a_campaign_resumed_after_its_pause_at_catch_up_is_paused_again_when_it_proves_bad(self) -> None:
        """Resumed and bad again (a quarter of its new sends bounce): its new evidence pauses it again."""
        decisions, _, _ = await self.paused_at_catch_up_then_resumed(bounce_every=4)
        assert len(decisions.pauses(STILL_BAD)) == 2

    async def test_a_campaign_resumed_after_its_pause_at_catch_up_is_judged_on_its_new_sends_only(self) -> None:
        """Resumed and clean (one send in twenty bounces): its sends past the grace are a new episode, so the
        evidence from before the pause (leaning bad, halfway to a rule) no longer counts, and the few bounces do
        not pause it again; the checkpoint holds the new episode too."""
        decisions, pipeline, resumed = await self.paused_at_catch_up_then_resumed(bounce_every=20)
        assert len(decisions.pauses(STILL_BAD)) == 1
        checkpointed = pipeline.restored_engine(pipeline.snapshot(TP)[0].finish())
        assert checkpointed.episode(STILL_BAD).since == pytest.approx(resumed, abs=0.001)

    async def test_a_partition_that_stays_behind_acts_on_its_held_decisions_within_the_catch_up_limit(self) -> None:
        """A guard whose partition never catches up (its traffic outruns it: the log end always ahead, every record
        older than the grace) would hold its decisions for as long as the lag lasts and pause nothing. Held past
        the catch-up limit, they are judged on what has been read: the campaign still bad is paused, the one
        healthy since is not."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        stream = logged(three_hours(self.now - 7200))  # read two hours late, batch after batch
        half = len(stream) // 2
        await pipeline.handle(TP, stream[:half], log_end=10**9)
        assert decisions.submitted == [] and pipeline.held() > 0, "premise: behind, holding"
        self.now += DEFAULT_CATCH_UP_LIMIT + 1
        await pipeline.handle(TP, stream[half:], log_end=10**9)
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []
        assert pipeline.held() == 0

    async def test_a_history_produced_all_at_once_is_judged_by_its_event_times(self) -> None:
        """A bridge that forwards three hours of history in a minute: the records are fresh, their events are
        not. Held by event time until the log end; one pause, as for a history logged as it happened."""
        decisions = Decisions()
        pipeline = self.pipeline(decisions)
        events = three_hours(time.time() - 420)
        stream = records([value for _, value, _ in events])  # every Kafka timestamp is now
        for n in range(0, len(stream), 500):
            await pipeline.handle(TP, stream[n : n + 500], log_end=len(stream))
            assert decisions.submitted == []
        self.quiet(pipeline, len(stream))
        assert len(decisions.pauses(STILL_BAD)) == 1
        assert decisions.pauses(HEALTHY_SINCE) == []


class WrittenCheckpoints:
    """The state topic's side of `Checkpointer.write`: keeps what it is given, and how many writes overlapped."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, int, str]] = []
        self.writing = self.most_at_once = 0

    async def write(
        self, tp: TopicPartition, data: bytes, offset: int, rules_version: str, snapshot_format: int
    ) -> int:
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        await asyncio.sleep(0)  # a write to Kafka awaits its acks
        self.written.append((data, offset, rules_version))
        self.writing -= 1
        return len(data)


class StoredCheckpoint:
    """The state topic's side of `Checkpointer.restore`: one stored checkpoint of TP."""

    def __init__(self, checkpoint: Found) -> None:
        self.checkpoint, self.records_read = checkpoint, 1
        self.written: list[int] = []
        self.in_use_slots: list[int] = []

    def in_use(self, tp: TopicPartition, slot: int) -> None:
        self.in_use_slots.append(slot)

    async def load(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Found]:
        return {TP: self.checkpoint} if TP in partitions else {}

    async def offset_ranges(self, partitions: list[TopicPartition]) -> dict[TopicPartition, range]:
        return {tp: range(0, self.checkpoint.offset + 1) for tp in partitions}

    async def write(self, tp: TopicPartition, data: bytes, offset: int, *rules_and_format: object) -> int:
        self.written.append(offset)
        return len(data)


async def checkpointed_campaigns(count: int) -> tuple[Pipeline, tuple[bytes, int, str]]:
    """A pipeline that read a send of each of `count` campaigns, and the checkpoint it wrote: (data, offset, version)."""
    pipeline = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
    start = time.time() - 3600
    await pipeline.handle(TP, logged([(f"c{n}", sent(f"c{n}", start + n), start + n) for n in range(count)]))
    written = WrittenCheckpoints()
    await Checkpointer(written, pipeline, Metrics(), idle=lambda: True).write([TP])  # type: ignore[arg-type]
    [checkpoint] = written.written
    return pipeline, checkpoint


class TestCheckpointWhileCounting:
    async def test_a_checkpoint_lets_the_partition_go_on_and_holds_the_state_of_its_offset(self) -> None:
        """A checkpoint of 2,000 campaigns is encoded in steps: a batch of the same partition is handled while
        it is under way, and the checkpoint still holds the state at its offset: restored, then given that
        batch, it is the live engine's state, byte for byte."""
        pipeline = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
        start = time.time() - 3600
        first = logged([(f"c{n}", sent(f"c{n}", start + n / 10), start + n / 10) for n in range(2000)])
        await pipeline.handle(TP, first)
        later = records([bounced(f"c{n}", start + 300 + n) for n in range(50)], first_offset=2000)
        store = WrittenCheckpoints()
        # one slice a step: the batch surely comes between two
        checkpointer = Checkpointer(store, pipeline, Metrics(), idle=lambda: True, step_seconds=0)  # type: ignore[arg-type]
        writing = asyncio.create_task(checkpointer.write([TP]))
        await asyncio.sleep(0)  # the checkpoint is begun, its first step taken
        await pipeline.handle(TP, later)
        assert not writing.done()  # the batch was handled while the checkpoint was under way
        await writing
        [(data, offset, version)] = store.written
        assert offset == 2000 and version == rules_version(pipeline.rules)
        restored = pipeline.restored_engine(data)
        for record in later:
            restored.process(decode(record.value, record.timestamp / 1000))
        engine = pipeline._partitions[TP][0]
        assert snapshot(restored, pipeline.rules) == snapshot(engine, pipeline.rules)

    async def test_two_checkpoints_asked_for_at_once_are_written_one_after_the_other(self) -> None:
        """The periodic checkpoint and a revoke's: one at a time, or they would write the same slot."""
        pipeline = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
        start = time.time() - 3600
        await pipeline.handle(TP, logged([(f"c{n}", sent(f"c{n}", start + n), start + n) for n in range(1000)]))
        store = WrittenCheckpoints()
        checkpointer = Checkpointer(store, pipeline, Metrics(), idle=lambda: True)  # type: ignore[arg-type]
        await asyncio.gather(checkpointer.write([TP]), checkpointer.write([TP]))
        assert len(store.written) == 2
        assert store.most_at_once == 1

    async def test_a_restore_leaves_the_loop_free_and_waits_for_an_encoding(self) -> None:
        """A partition's checkpoint is decoded in a worker thread: the loop goes on meanwhile (heartbeats, the other
        partitions, /livez), where on the loop a restore of tens of thousands of campaigns held it for a second and
        cost the group membership under load. An encoding never runs beside it (each pauses the collector)."""
        pipeline = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
        start = time.time() - 3600
        await pipeline.handle(
            TP, logged([(f"c{n}", sent(f"c{n}", start + n / 10), start + n / 10) for n in range(20_000)])
        )
        written = WrittenCheckpoints()
        await Checkpointer(written, pipeline, Metrics(), idle=lambda: True).write([TP])  # type: ignore[arg-type]
        [(data, offset, version)] = written.written
        written_records = records_of_checkpoint("g", TP, data, offset, version, FORMAT, slot=0)
        [found] = whole(partition_key("g", TP), [(written_records[-1][1], 1)], dict(written_records))
        stored = StoredCheckpoint(found)  # type: ignore[arg-type]
        checkpointer = Checkpointer(stored, pipeline, Metrics(), idle=lambda: True)  # type: ignore[arg-type]
        live = pipeline._partitions[TP][0]
        ticks, restoring = 0, asyncio.create_task(checkpointer.restore([TP], lookback_ms=0))
        encoding = asyncio.create_task(checkpointer.write([TP]))  # asked for while the restore is under way
        while not restoring.done():
            await asyncio.sleep(0.001)
            ticks += 1
            # the encoding is begun (the snapshot taken at its offset) but encodes no campaign until the restore ends
            assert restoring.done() or live._snapshot is None or live._snapshot._next == 0
        [(engine, restored_offset)] = restoring.result().values()
        await encoding
        assert stored.written == [offset]
        assert restored_offset == offset and engine.campaigns == 20_000
        assert ticks >= 10, ticks  # on the loop: none while the partition decoded
        assert gc.isenabled()

    async def test_a_restore_that_takes_the_checkpoint_before_the_newest_keeps_it_for_the_next_write(self) -> None:
        """The newest checkpoint's chunks do not add up (found so as it is assembled, in the restore): the one before
        it is restored, and the store is told its slot is in use, so the next write goes to the other one and a
        write torn there still leaves a whole checkpoint."""
        pipeline, (data, offset, version) = await checkpointed_campaigns(100)
        older = records_of_checkpoint("g", TP, data, offset, version, FORMAT, slot=0)
        newer = records_of_checkpoint("g", TP, data, offset, version, FORMAT, slot=1)
        values = dict(older) | dict(newer[:-1]) | {newer[0][0]: b"garbage"}
        [found] = whole(partition_key("g", TP), [(newer[-1][1], 2), (older[-1][1], 1)], values)
        stored, metrics = StoredCheckpoint(found), Metrics()  # type: ignore[arg-type]
        restored = await Checkpointer(stored, pipeline, metrics, idle=lambda: True).restore([TP], lookback_ms=0)  # type: ignore[arg-type]
        assert list(restored) == [TP] and restored[TP][0].campaigns == 100
        assert metrics.checkpoints.labels("corrupt")._value.get() == 1
        assert stored.in_use_slots == [0]

    @pytest.mark.parametrize(
        "case", ["restored", "stale", "unusable", "rules too large to carry", "of the rules in force"]
    )
    async def test_a_partition_read_under_other_rules_is_marked_whatever_becomes_of_its_checkpoint(
        self, case: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint of other rules (a rule file edited before the restart): the records after it were read live
        under those, so the partition is marked (`other_rules`: a replay's unrecorded pauses are judged at catch-up,
        not dropped) whether the checkpoint is restored (under the rules it carries, then reloaded), stale, unusable,
        or of rules too large to carry (counted `mismatch`); of the rules in force, it is not marked."""
        if case == "rules too large to carry":
            monkeypatch.setattr(snapshots, "MAX_CARRIED_RULES_BYTES", 100)
        _, (data, offset, version) = await checkpointed_campaigns(100)
        stored_records = records_of_checkpoint("g", TP, data, offset, version, FORMAT, slot=0)
        values = dict(stored_records) | ({stored_records[0][0]: b"garbage"} if case == "unusable" else {})
        [found] = whole(partition_key("g", TP), [(stored_records[-1][1], 1)], values)
        second = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
        if case != "of the rules in force":
            text = (RULES / "default.yaml").read_text().replace("cooldown: 1h", "cooldown: 2h", 1)
            second.set_rules(parse_rules([("default.yaml", text)]))
        metrics = Metrics()
        checkpointer = Checkpointer(StoredCheckpoint(found), second, metrics, idle=lambda: True)  # type: ignore[arg-type]
        lookback_ms = int(time.time() * 1000) + 10**7 if case == "stale" else 0
        restored = await checkpointer.restore([TP], lookback_ms=lookback_ms)
        assert bool(restored) == (case in ("restored", "of the rules in force"))
        assert checkpointer.other_rules(TP) == (case != "of the rules in force")
        assert metrics.checkpoints.labels("mismatch")._value.get() == (case == "rules too large to carry")

    async def test_a_cancelled_restore_holds_on_until_its_thread_ends_even_cancelled_twice(self) -> None:
        """A stop while a restore decodes: a thread cannot be stopped, so the cancel waits for it (the lock the restore
        holds then covers the whole decode), and a second cancel (a stop during a revoke's) does not end the wait."""
        started, release, ended = threading.Event(), threading.Event(), threading.Event()

        def decode() -> None:
            started.set()
            release.wait(10)
            ended.set()

        restoring = asyncio.create_task(_to_thread_whole(decode))
        assert await asyncio.to_thread(started.wait, 10)
        restoring.cancel()
        await asyncio.sleep(0.01)
        restoring.cancel()
        await asyncio.sleep(0.05)
        assert not restoring.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await restoring
        assert ended.is_set()

    async def test_a_snapshot_that_cannot_be_encoded_is_a_failed_checkpoint_not_an_error(self) -> None:
        pipeline = TestBacklog.pipeline(TestBacklog(), Decisions())  # type: ignore[arg-type]
        engine = pipeline._partitions[TP][0]
        engine.process(Event(Signal.SENT, "odd", time.time() - 60, message_id="m\ud800"))  # no UTF-8 holds it
        engine.process(Event(Signal.BOUNCED, "odd", time.time() - 60, message_id="m\ud800", bounce_type="hard"))
        await pipeline.handle(TP, records([sent("camp", time.time() - 30)]))
        store, metrics = WrittenCheckpoints(), Metrics()
        await Checkpointer(store, pipeline, metrics, idle=lambda: True).write([TP])  # type: ignore[arg-type]
        assert store.written == []
        assert metrics.checkpoints.labels("failed")._value.get() == 1
        assert engine._snapshot is None
