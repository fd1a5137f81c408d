"""Rules over a scope against what an adversary or a failing broker does: a scope topic that cannot be written,
a forged far-future time, inbox rotation over a backlog, made-up senders by the thousand, forged scope topic
records, two kinds of scope at once (no broker needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from aiokafka.errors import KafkaTimeoutError
from test_pipeline import Decisions
from test_scopes import (
    DOMAIN,
    INPUTS,
    SCOPES,
    Forwards,
    domain_event,
    forwarded,
    input_records,
    rules,
    scoped_pipeline,
)

from guard.actions.workspaces import WorkspaceMap
from guard.contracts.events import Signal
from guard.engine.kinds import PYTHON
from guard.engine.scopes import Forwarded, ScopeEngine, forward
from guard.rules.models import Rule, RuleSet
from guard.runtime.catchup import Held, release
from guard.runtime.pipeline import Pipeline
from guard.runtime.scope_forwards import ScopeForwards
from guard.telemetry.metrics import Metrics


class _Cluster:
    def __init__(self, partitions: set[int] | None) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions


class _Client:
    def __init__(self, partitions: set[int] | None) -> None:
        self.cluster, self.asked = _Cluster(partitions), 0

    def add_topic(self, topic: str) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()  # metadata that never comes

    def force_metadata_update(self) -> asyncio.Future:
        self.asked += 1
        return asyncio.get_running_loop().create_future()


class MissingTopicProducer:
    """aiokafka's producer when the scope topic does not exist (not created: refused, deleted): no metadata for it,
    and `send_batch` would first wait on it for `request_timeout_ms` (40 s)."""

    def __init__(self) -> None:
        self.client = _Client(None)

    async def send_batch(self, *_: object, **__: object) -> asyncio.Future:
        await asyncio.sleep(40)
        raise KafkaTimeoutError("no metadata")


class RefusingProducer:
    """The topic is known; the brokers refuse every batch after the producer's retries."""

    def __init__(self) -> None:
        self.client = _Client({0})

    def create_batch(self) -> object:
        class Batch:
            def append(self, **_: object) -> object:
                return object()

        return Batch()

    async def send_batch(self, *_: object, **__: object) -> asyncio.Future:
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError("refused"))
        return failed


def pipeline_with(forwards: object, decisions: Decisions, **options: object) -> Pipeline:
    return scoped_pipeline(forwards, decisions, **options)


def burning_campaign(now: float) -> list[bytes]:
    """One campaign of acme.com over its own campaign rule: 100 sends, then hard bounces."""
    values = [domain_event("message.sent", "camp_burn", now - 200 + k, "a@acme.com") for k in range(100)]
    values += [domain_event("message.bounced", "camp_burn", now - 90 + k, "a@acme.com") for k in range(10)]
    return values


async def test_a_scope_topic_that_cannot_be_written_does_not_hold_back_a_campaigns_pause() -> None:
    """Promise 8: the events are counted as not forwarded, the producer is asked to learn the topic, and nothing
    waits on it."""
    decisions, metrics, producer = Decisions(), Metrics(), MissingTopicProducer()
    pipeline = pipeline_with(ScopeForwards(producer, "guard.scopes", metrics), decisions)  # type: ignore[arg-type]
    now = time.time()
    handled = asyncio.ensure_future(pipeline.handle(INPUTS[0], input_records(INPUTS[0], burning_campaign(now))))
    try:
        await asyncio.wait_for(asyncio.shield(handled), 2.0)
    except TimeoutError:
        pass
    finally:
        handled.cancel()
    # the campaign rule fired on its own evidence: its pause must not wait on 40 s per forwarded event
    assert [d.campaign_id for d in decisions.submitted] == ["camp_burn"]
    assert handled.done() and not handled.cancelled()
    assert metrics.scope_forwards.labels("failed")._value.get() == 110 and producer.client.asked == 1


async def test_an_event_the_brokers_refuse_is_counted_and_its_offset_moves_on() -> None:
    """README: a forward that fails after the producer's retries is counted and logged, and the offset moves on:
    a scope topic that stays unwritable must not hold every later commit back (the input would be read again
    from there at each restart)."""
    metrics = Metrics()
    pipeline = pipeline_with(ScopeForwards(RefusingProducer(), "guard.scopes", metrics), Decisions())  # type: ignore[arg-type]
    values = [domain_event("message.sent", "camp_1", time.time() - 10, "a@acme.com")]
    await pipeline.handle(INPUTS[0], input_records(INPUTS[0], values))
    for _ in range(3):
        await asyncio.sleep(0)
    assert pipeline.committable().get(INPUTS[0]) == 1
    assert metrics.scope_forwards.labels("failed")._value.get() == 1


def small_campaigns(engine: ScopeEngine, count: int, start: float = 1_000.0) -> list:
    decisions = []
    for n in range(count):
        campaign = f"camp_{n:02}"
        for k in range(10):
            decisions += engine.process(forwarded(campaign, Signal.SENT, start + n * 20 + k, f"{campaign}-s{k}"))
        decisions += engine.process(forwarded(campaign, Signal.BOUNCED, start + n * 20 + 9.5, f"{campaign}-b"))
    return decisions


def test_a_forged_far_future_event_does_not_end_the_pausing_of_joiners() -> None:
    """The engine counts a far-future event at its clock (Engine._on_clock); ScopeEngine sweeps with its raw time:
    every other scope's members and firings go, and no sweep runs again before that time (unbounded memory)."""
    engine = ScopeEngine(rules(), dedupe_horizon=3600.0, kinds=PYTHON)
    assert len(small_campaigns(engine, 10)) == 10  # acme.com fires: its ten campaigns decided
    # any input event stamped far ahead (its record's CreateTime is the producer's), forwarded with its raw time
    stamp = 200_000_000_000.0  # year 8307, inside LATEST_EVENT_TIME
    engine.process(Forwarded("sender_domain:other.io", "camp_x", Signal.SENT, stamp, "x1"))
    joined = engine.process(forwarded("camp_new", Signal.SENT, 1_300.0, "new-s0"))
    assert [d.campaign_id for d in joined] == ["camp_new"]  # a joiner of a firing scope is still paused


def test_catch_up_pauses_a_campaign_whose_first_scope_is_still_bad() -> None:
    """Inbox rotation: camp_x sends from acc_1 and acc_2. Over a backlog both scopes fire (acc_1 first); acc_1 is
    still firing at the end, acc_2 recovered. camp_x is bad now (promise 10) but both held decisions are superseded:
    `latest` in release() is per campaign, and ScopeEngine.leans_bad asks only the scope of its latest decision."""
    complaints = Rule.model_validate(
        {"name": "r", "description": "d", "count": "complained", "window": "1h", "threshold": 3, "scope": "sender"}
    )
    engine = ScopeEngine(RuleSet(rules=(complaints,)), dedupe_horizon=3600.0, kinds=PYTHON)

    def send(scope: str, signal: Signal, at: float, message: str) -> list:
        return engine.process(Forwarded(scope, "camp_x", signal, at, message))

    decisions = []
    for k in range(3):
        decisions += send("sender:acc_1", Signal.COMPLAINED, 1_000.0 + k, f"a1-c{k}")
    for k in range(3):
        decisions += send("sender:acc_2", Signal.COMPLAINED, 1_100.0 + k, f"a2-c{k}")
    for k in range(30):  # two more hours: acc_1 keeps drawing complaints, acc_2 only sends
        decisions += send("sender:acc_1", Signal.COMPLAINED, 1_200.0 + k * 240, f"a1-late{k}")
        decisions += send("sender:acc_2", Signal.SENT, 1_200.0 + k * 240, f"a2-s{k}")
    assert [d.scope for d in decisions] == ["sender:acc_1", "sender:acc_2"]
    assert engine.engine.firing("sender:acc_1", "r") and engine.engine.leans_bad("sender:acc_1")
    assert not engine.engine.leans_bad("sender:acc_2")
    held = {d.id: Held(d, n, 0.0) for n, d in enumerate(decisions)}
    outcomes = list(release(held, engine.episode, engine.leans_bad, lambda _decision: True))
    assert [entry.decision.scope for entry, note in outcomes if note is None] == ["sender:acc_1"]


def test_the_engine_of_scopes_is_bounded_like_the_campaigns_engine() -> None:
    pipeline = pipeline_with(Forwards(), Decisions(), max_campaigns=100)
    engine = pipeline._partitions[SCOPES][0]
    for n in range(1_000):  # senders (or `from` domains) an input writer makes up, one per event
        engine.process(Forwarded(f"sender:acc_{n}", f"camp_{n}", Signal.SENT, 1_000.0 + n, f"m{n}"))
    assert engine.campaigns <= (pipeline.campaign_share() or 0) == 100
    assert len(engine._seen) <= 100


async def test_a_scope_topic_record_does_not_say_which_key_pauses_a_campaign() -> None:
    workspaces = WorkspaceMap(100)
    pipeline = pipeline_with(Forwards(), Decisions(), workspaces=workspaces)
    workspaces.note("camp_victim", "ws_acme")
    value = forward(DOMAIN, _event_of("camp_victim", "ws_other"), "x/0/0")
    record = dataclasses.replace(input_records(SCOPES, [value])[0], key=DOMAIN.encode())  # keyed as the guard keys
    await pipeline.handle(SCOPES, [record])
    assert pipeline.committable()[SCOPES] == 1  # read and counted
    assert workspaces.of("camp_victim") == "ws_acme"  # its pause goes out with its own workspace's key


def _event_of(campaign: str, workspace: str):  # noqa: ANN202
    from guard.contracts.events import Event

    return Event(Signal.SENT, campaign, time.time(), "m-forged", workspace_id=workspace, sender_domain="acme.com")


def test_a_sender_rule_does_not_fire_over_a_sending_domain() -> None:
    """Two kinds in force: a sender rule (3 complaints of one sender account) and a domain rule. Three accounts of
    acme.com draw one complaint each: no sender reached 3, yet the engine of scopes evaluates the sender rule over
    "sender_domain:acme.com" too (compile_plan/rules_for know no scope kind) and pauses every campaign of the domain."""
    sender_rule = Rule.model_validate(
        {
            "name": "sender-complaints",
            "description": "d",
            "count": "complained",
            "window": "1h",
            "threshold": 3,
            "scope": "sender",
        }
    )
    domain_rule = Rule.model_validate(
        {
            "name": "domain-complaints",
            "description": "d",
            "count": "complained",
            "window": "1h",
            "threshold": 50,
            "scope": "sender_domain",
        }
    )
    engine = ScopeEngine(RuleSet(rules=(sender_rule, domain_rule)), dedupe_horizon=3600.0, kinds=PYTHON)
    from guard.contracts.events import Event

    decisions = []
    for n in range(3):
        complaint = Event(
            Signal.COMPLAINED, f"camp_{n}", 1_000.0 + n, f"c{n}", sender_account_id=f"acc_{n}", sender_domain="acme.com"
        )
        decisions += engine.count(complaint, "")
    assert [(d.scope, d.rule.name) for d in decisions] == []  # no sender reached 3


async def test_a_scope_topic_made_a_moment_ago_is_learnt_by_asking_again() -> None:
    """A topic just made is missing from the brokers' first metadata answer, and aiokafka asks once per topic it
    is told of: `learn` asks until the producer knows it, and `send` asks again (once a second) while it does not."""
    producer = MissingTopicProducer()
    real_update = producer.client.force_metadata_update

    def update() -> asyncio.Future:
        if producer.client.asked >= 2:  # the second request finds it
            producer.client.cluster.partitions = {0, 1}
        return real_update()

    producer.client.force_metadata_update = update  # type: ignore[method-assign]
    forwards = ScopeForwards(producer, "guard.scopes", Metrics())  # type: ignore[arg-type]
    assert await forwards.learn(timeout=5.0)
    assert producer.client.asked >= 2


def test_the_campaigns_of_one_scope_are_bounded() -> None:
    """Campaign ids an input writer makes up, all from one domain: the least recently seen are forgotten."""
    from guard.engine.scopes import MAX_MEMBERS

    engine = ScopeEngine(rules(), dedupe_horizon=3600.0, kinds=PYTHON)
    for n in range(MAX_MEMBERS + 10):
        engine.process(forwarded(f"camp_{n}", Signal.SENT, 1_000.0 + n / 100, f"m{n}"))
    members = engine._seen[DOMAIN]
    assert len(members) <= MAX_MEMBERS and f"camp_{MAX_MEMBERS + 9}" in members and "camp_0" not in members


class StuckProducer(RefusingProducer):
    """The scope partition's leader does not answer: the producer's queue for it stays full, `send_batch` waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = 0

    async def send_batch(self, *_: object, **__: object) -> asyncio.Future:
        self.waited += 1
        await asyncio.sleep(3600)
        raise AssertionError("never")


async def test_a_scope_topic_whose_queue_is_full_holds_the_poll_loop_half_a_second_at_most() -> None:
    """Promise 8: a batch waits 0.5 s for room, then forwards are skipped (counted) for 5 s; the campaign's own
    decision goes out at once and the next batches do not wait at all."""
    decisions, metrics, producer = Decisions(), Metrics(), StuckProducer()
    pipeline = pipeline_with(ScopeForwards(producer, "guard.scopes", metrics), decisions)  # type: ignore[arg-type]
    now = time.time()
    started = time.monotonic()
    await asyncio.wait_for(pipeline.handle(INPUTS[0], input_records(INPUTS[0], burning_campaign(now))), 5)
    more = [domain_event("message.sent", "camp_more", now - 1, "a@acme.com")]
    await asyncio.wait_for(pipeline.handle(INPUTS[1], input_records(INPUTS[1], more)), 5)
    assert time.monotonic() - started < 2.0 and producer.waited == 1
    assert [d.campaign_id for d in decisions.submitted] == ["camp_burn"]
    assert metrics.scope_forwards.labels("failed")._value.get() == 111
    assert pipeline.committable() == {INPUTS[0]: 110, INPUTS[1]: 1}
