"""Rules over a scope beyond one campaign: the rule language, the forwarded events and the engine of scopes
(no broker; tests/test_scopes_kafka.py runs them through guards on real brokers)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from test_pipeline import Decisions, NoDeadLetters

from guard.contracts.events import Event, Signal, decode
from guard.engine.kinds import PYTHON, choose
from guard.engine.scope_snapshot import ScopeSnapshot
from guard.engine.scopes import Forwarded, InvalidForward, ScopeEngine, forward, read_forwarded, scope_key
from guard.rules.loader import load_rules, parse_rules
from guard.rules.models import Rule, RuleSet
from guard.runtime.pipeline import Pipeline, name
from guard.runtime.recovery import AuditScan, PartitionRecovery
from guard.telemetry.metrics import Metrics
from guard.testing.events import envelope

DOMAIN_RULE = """
groups:
  - name: domains
    rules:
      - name: domain-hard-bounces
        description: The sending domain's hard bounces, over every campaign that sends from it.
        scope: sender_domain
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        window: 1h
        threshold: 5%
        min_volume: 100
        cooldown: 1h
      - name: campaign-hard-bounces
        description: One campaign's hard bounces.
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        window: 1h
        threshold: 5%
        min_volume: 100
"""


def rules(text: str = DOMAIN_RULE) -> RuleSet:
    return parse_rules([("rules.yaml", text)])


def rule(**fields: object) -> Rule:
    base = {"name": "r", "description": "d", "count": "complained", "window": "1h", "threshold": 3}
    return Rule.model_validate(base | fields)


class TestTheRule:
    def test_scope_defaults_to_the_campaign_and_keeps_the_rule_version(self) -> None:
        """Rules written before scopes existed keep their version: their decisions' ids stay the same."""
        assert rule().scope == "campaign"
        assert rule().version == rule(scope="campaign").version
        assert rule(scope="sender").version != rule().version

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"scope": "sender", "campaigns": {"include": ["camp_*"]}}, "`campaigns` applies to campaign rules only"),
            ({"scope": "sender_domain", "workspaces": ["ws_1"]}, "`workspaces` applies to campaign and workspace"),
            ({"scope": "domain"}, "Input should be 'campaign', 'workspace', 'sender' or 'sender_domain'"),
        ],
    )
    def test_what_a_scope_rule_cannot_say_is_refused_clearly(self, fields: dict, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            rule(**fields)

    def test_a_workspace_rule_may_name_workspaces(self) -> None:
        assert rule(scope="workspace", workspaces=["ws_eu_*"]).workspaces is not None

    def test_engines_of_campaigns_and_of_scopes_count_their_own_rules(self) -> None:
        both = rules()
        assert both.scope_kinds == ("sender_domain",)
        assert [r.name for r in both.for_engine(False).rules] == ["campaign-hard-bounces"]
        assert [r.name for r in both.for_engine(True).rules] == ["domain-hard-bounces"]
        campaigns_only = RuleSet(rules=both.for_engine(False).rules)
        assert campaigns_only.for_engine(False) is campaigns_only  # the common case costs nothing
        assert campaigns_only.for_engine(True).rules == ()


class TestTheSenderInEvents:
    @pytest.mark.parametrize("kinds", ["python", "compiled"])
    @pytest.mark.parametrize(
        ("sender", "domain"),
        [
            ("ann@Acme.COM", "acme.com"),
            ("Ann Lee <ann@mail.acme.com>", "mail.acme.com"),
            ("no address", None),
            ("", None),
            (None, None),
        ],
    )
    def test_the_sending_domain_is_read_from_from(self, kinds: str, sender: str | None, domain: str | None) -> None:
        """Both decoders agree: the domain after the last '@', without a closing '>', in lower case."""
        try:
            decoder = choose(kinds).decode
        except Exception:
            pytest.skip("the compiled core is not installed")
        extra = {} if sender is None else {"from": sender}
        value = envelope("message.sent", "camp_1", 1_700_000_000.0, messageId="m1", senderAccountId="acc_7", **extra)
        event = decoder(value, 1_700_000_000.0)
        assert (event.sender_domain, event.sender_account_id) == (domain, "acc_7")

    def test_an_overlong_or_unsafe_from_is_malformed(self) -> None:
        from guard.contracts.events import MalformedEvent

        for sender in ("a@" + "x" * 400, "ann@acme.com\u202e"):
            value = envelope("message.sent", "camp_1", 1_700_000_000.0, **{"from": sender})
            with pytest.raises(MalformedEvent):
                decode(value, 1_700_000_000.0)


def event(campaign: str, signal: Signal, at: float, message: str, **fields: object) -> Event:
    return Event(signal, campaign, at, message, **fields)  # type: ignore[arg-type]


class TestForwarded:
    def test_an_event_goes_and_comes_back_keyed_by_its_scope(self) -> None:
        sent = event("camp_1", Signal.SENT, 100.0, "m1", sender_domain="acme.com", workspace_id="ws_1")
        assert scope_key("sender_domain", sent) == "sender_domain:ws_1/acme.com"  # one tenant's domain
        assert scope_key("workspace", sent) == "workspace:ws_1"
        assert scope_key("sender", sent) is None  # the event names no sender account
        assert scope_key("sender_domain", msgspec.structs.replace(sent, workspace_id=None)) == "sender_domain:acme.com"
        back = read_forwarded(forward("sender_domain:acme.com", sent, "events/0/7"), b"sender_domain:acme.com")
        assert (back.scope, back.campaign_id, back.signal, back.time, back.message_id) == (
            "sender_domain:acme.com",
            "camp_1",
            Signal.SENT,
            100.0,
            "m1",
        )

    def test_an_event_without_message_id_is_named_by_its_input_position(self) -> None:
        """Forwarded again after a restart, it is the same event to the scope's engine."""
        sent = event("camp_1", Signal.SENT, 100.0, None, sender_domain="acme.com")  # type: ignore[arg-type]
        assert read_forwarded(forward("sender_domain:acme.com", sent, "events/3/41")).message_id == "events/3/41"

    @pytest.mark.parametrize(
        "value",
        [
            None,
            b"",
            b"\x93\x01\x02\x03",
            json.dumps({"event": "message.sent"}).encode(),
            msgspec.msgpack.encode(["campaign:x", "c", "sent", 1.0, "m"]),  # no such scope
            msgspec.msgpack.encode(["sender:x", "c", "started", 1.0, "m"]),  # not counted in a scope
            msgspec.msgpack.encode(["sender:x", "c", "sent", float("nan"), "m"]),
            msgspec.msgpack.encode(["sender:x", "c", "sent", 1e300, "m"]),
            msgspec.msgpack.encode(["sender:x", "c" * 300, "sent", 1.0, "m"]),
            msgspec.msgpack.encode(["sender:x", "c", "sent", 1.0, "m", None, "medium"]),
            msgspec.msgpack.encode(["sender:x", "c", "sent", 1.0, "m", None, None, None, None, None, None, None, 9]),
        ],
    )
    def test_a_record_that_is_no_forwarded_event_is_refused(self, value: bytes | None) -> None:
        with pytest.raises(InvalidForward):
            read_forwarded(value)


DOMAIN = "sender_domain:acme.com"


def forwarded(campaign: str, signal: Signal, at: float, message: str, scope: str = DOMAIN) -> Forwarded:
    bounce = "hard" if signal is Signal.BOUNCED else None
    return Forwarded(scope, campaign, signal, at, message, None, bounce, None, None, None, "ws_1", scope.split(":")[1])


class TestScopeEngine:
    def small_campaigns(self, engine: ScopeEngine, count: int, start: float = 1_000.0) -> list:
        """`count` campaigns of 10 sends and 1 hard bounce each (10%): each far below the rule's 100 sends."""
        decisions = []
        for n in range(count):
            campaign = f"camp_{n:02}"
            for k in range(10):
                at = start + n * 20 + k
                decisions += engine.process(forwarded(campaign, Signal.SENT, at, f"{campaign}-s{k}"))
            decisions += engine.process(forwarded(campaign, Signal.BOUNCED, at + 0.5, f"{campaign}-b"))
        return decisions

    def engine(self) -> ScopeEngine:
        return ScopeEngine(rules(), dedupe_horizon=3600.0, kinds=PYTHON)

    def test_small_campaigns_together_over_the_line_are_each_decided_once(self) -> None:
        """Ten campaigns of 10 sends: the domain reaches 100 sends at 10% with the tenth; one scope decision,
        turned into one decision per campaign of the domain, each naming it."""
        engine = self.engine()
        decisions = self.small_campaigns(engine, 10)
        assert sorted(d.campaign_id for d in decisions) == [f"camp_{n:02}" for n in range(10)]
        assert {d.scope for d in decisions} == {DOMAIN}
        assert len({d.scope_decision_id for d in decisions}) == 1
        assert len({d.id for d in decisions}) == 10
        assert all(d.rule.name == "domain-hard-bounces" and d.denominator == 100 for d in decisions)
        assert {d.workspace_id for d in decisions} == {"ws_1"}

    def test_the_same_events_give_the_same_decision_ids(self) -> None:
        """Deterministic: a replay of the scope topic finds the same decisions in the audit topic."""
        first, second = self.small_campaigns(self.engine(), 10), self.small_campaigns(self.engine(), 10)
        assert [d.id for d in first] == [d.id for d in second]

    def test_a_campaign_joining_while_the_rule_fires_is_decided_once(self) -> None:
        engine = self.engine()
        self.small_campaigns(engine, 10)
        joined = engine.process(forwarded("camp_new", Signal.SENT, 1_300.0, "new-s0"))
        assert [d.campaign_id for d in joined] == ["camp_new"]
        assert joined[0].scope_decision_id is not None
        assert engine.process(forwarded("camp_new", Signal.SENT, 1_301.0, "new-s1")) == []
        # a campaign already decided for (resumed by its owner, say) is not decided again by the same firing
        assert engine.process(forwarded("camp_03", Signal.SENT, 1_302.0, "c3-again")) == []

    @pytest.mark.parametrize("restarted", [False, True])
    def test_a_campaign_its_decision_left_running_is_decided_again_when_it_sends_on(self, restarted: bool) -> None:
        """camp_03's pause failed (Leadterra down past the retry deadline; an exemption, a dry run alike): once it
        sends more than the resume grace after its newest event, the firing decides for it again, under a new id,
        once; it used to count as done for as long as the domain fired. A campaign whose pause landed (resumed by its
        owner since) is not decided again. A checkpoint in between keeps all of it."""
        engine = ScopeEngine(rules(), dedupe_horizon=3600.0, kinds=PYTHON, resume_grace=300.0)
        first = {d.campaign_id: d for d in self.small_campaigns(engine, 10)}
        engine.left_running(dataclasses.replace(first["camp_03"], scope_decision_id="another firing"))  # not this one
        assert engine.process(forwarded("camp_03", Signal.SENT, 1_600.0, "c3-s10")) == []
        engine.left_running(first["camp_03"])
        engine.left_running(first["camp_03"])  # told twice (a restart's replay finds it settled): the same
        if restarted:
            data = ScopeSnapshot(engine, rules()).finish()
            engine = scoped_pipeline(Forwards(), Decisions()).restored_engine(data, scopes=True)  # type: ignore[assignment]
        # its newest event was at 1,600: within the grace after it, mail already on its way
        assert engine.process(forwarded("camp_03", Signal.SENT, 1_900.0, "c3-s11")) == []
        [again] = engine.process(forwarded("camp_03", Signal.SENT, 1_901.0, "c3-s12"))
        assert (again.campaign_id, again.scope_decision_id) == ("camp_03", first["camp_03"].scope_decision_id)
        assert again.id != first["camp_03"].id
        assert engine.process(forwarded("camp_03", Signal.SENT, 2_400.0, "c3-s13")) == []  # decided: once
        assert engine.process(forwarded("camp_04", Signal.SENT, 2_401.0, "c4-again")) == []  # its pause landed

    @pytest.mark.parametrize("through", ["a reload", "a restart", "a reload, then a restart"])
    @pytest.mark.parametrize("edit", ["turned into an alert", "reworded"])
    def test_a_joiner_of_a_firing_is_decided_under_the_rule_in_force(self, through: str, edit: str) -> None:
        """The domain rule fired; it is edited, and a campaign joins the firing: decided as the rule now says (an
        alert records, pauses nothing; a reworded one still pauses, naming its new version), whether the edit came
        by a reload, by a restart (the checkpoint restored under the rules it carries, then reloaded), or by a
        reload then a restart (a checkpoint of the edited rules). The firing kept the rule it fired under: turned
        into an alert, joiners were paused still; reworded, a restart after the reload forgot the firing."""
        if edit == "turned into an alert":
            text = DOMAIN_RULE.replace("        cooldown: 1h\n", "        cooldown: 1h\n        action: alert\n", 1)
        else:
            text = DOMAIN_RULE.replace("over every campaign that sends from it.", "over all of its campaigns.", 1)
        edited = rules(text)
        engine = self.engine()
        self.small_campaigns(engine, 10)
        if through != "a restart":
            engine.set_rules(edited)
        if through != "a reload":
            taken_under = edited if through == "a reload, then a restart" else rules()
            data = ScopeSnapshot(engine, taken_under).finish()
            other_rules = taken_under is not edited
            pipeline = scoped_pipeline(Forwards(), Decisions(), rules=edited)
            engine = pipeline.restored_engine(data, scopes=True, other_rules=other_rules)
        [joined] = engine.process(forwarded("camp_new", Signal.SENT, 1_300.0, "new-s0"))
        [in_force] = [rule for rule in edited.rules if rule.name == "domain-hard-bounces"]
        assert (joined.rule.version, joined.action) == (in_force.version, in_force.action)

    @pytest.mark.parametrize("through", ["a reload", "a restart"])
    @pytest.mark.parametrize("threshold", ["20%", "4%"])
    def test_a_firing_whose_rule_is_edited_in_what_it_judges_is_judged_afresh(
        self, through: str, threshold: str
    ) -> None:
        """The domain (10% hard bounces) fired at 5%, kept firing for 30 minutes after; the threshold is edited. Raised
        over the domain's rate, a campaign joining is not paused: it used to be, its audit naming the new rule's version and threshold (20%) with the old
        decision's value (10%). Lowered, the edited rule fires afresh: the joiner's evidence is the new rule's, its
        value over the new threshold, and the domain's campaigns are decided again by that new scope decision."""
        kept = DOMAIN_RULE.replace("cooldown: 1h\n", "cooldown: 1h\n        keep_firing_for: 30m\n", 1)
        edited = rules(kept.replace("threshold: 5%", f"threshold: {threshold}", 1))
        engine = ScopeEngine(rules(kept), dedupe_horizon=3600.0, kinds=PYTHON)
        first = self.small_campaigns(engine, 10)
        if through == "a reload":
            engine.set_rules(edited)
        else:
            data = ScopeSnapshot(engine, rules(kept)).finish()
            engine = scoped_pipeline(Forwards(), Decisions(), rules=edited).restored_engine(  # type: ignore[assignment]
                data, scopes=True, other_rules=True
            )
        decisions = engine.process(forwarded("camp_new", Signal.SENT, 1_300.0, "new-s0"))
        [in_force] = [rule for rule in edited.rules if rule.name == "domain-hard-bounces"]
        if threshold == "20%":
            assert decisions == []
            return
        joined = [d for d in decisions if d.campaign_id == "camp_new"]
        assert [(d.rule.version, d.value >= in_force.level) for d in joined] == [(in_force.version, True)]
        assert {d.campaign_id for d in decisions} == {*(d.campaign_id for d in first), "camp_new"}
        assert {d.scope_decision_id for d in decisions}.isdisjoint({d.scope_decision_id for d in first})

    def test_a_firing_stored_under_another_version_than_its_engine_is_judged_afresh(self) -> None:
        """An older guard reloaded a reworded domain rule and kept its firing under the version it fired under; its
        checkpoint restored here left the rule firing with no firing to decide for campaigns joining it, for the
        rest of the breach. The rule is judged afresh: still holding, it fires again, the joiner decided."""
        reworded = rules(
            DOMAIN_RULE.replace("over every campaign that sends from it.", "over all of its campaigns.", 1)
        )
        engine = self.engine()
        self.small_campaigns(engine, 10)
        fired_under = {rule_name: firing.decision.rule for rule_name, firing in engine._firings[DOMAIN].items()}
        engine.set_rules(reworded)
        for rule_name, firing in engine._firings[DOMAIN].items():  # as the older guard left it
            firing.decision = dataclasses.replace(firing.decision, rule=fired_under[rule_name])
        data = ScopeSnapshot(engine, reworded).finish()
        restored = scoped_pipeline(Forwards(), Decisions(), rules=reworded).restored_engine(data, scopes=True)
        joined = restored.process(forwarded("camp_new", Signal.SENT, 1_300.0, "new-s0"))
        assert "camp_new" in {d.campaign_id for d in joined}

    def test_another_scope_is_not_touched(self) -> None:
        engine = self.engine()
        other = "sender_domain:healthy.io"
        for k in range(200):
            assert engine.process(forwarded("camp_h", Signal.SENT, 1_000.0 + k, f"h{k}", other)) == []
        decisions = self.small_campaigns(engine, 10, start=1_200.0)
        assert "camp_h" not in {d.campaign_id for d in decisions}
        assert engine.process(forwarded("camp_h", Signal.SENT, 1_500.0, "h-late", other)) == []

    def test_an_event_forwarded_twice_counts_once(self) -> None:
        """After a restart an input partition forwards again what it had not committed."""
        engine, decisions = self.engine(), []
        for _ in range(2):  # nine campaigns' 90 sends, twice: 180 would be over the line, 90 is not
            for n in range(9):
                for k in range(10):
                    decisions += engine.process(forwarded(f"c{n}", Signal.SENT, 1_000.0 + n * 20 + k, f"c{n}-s{k}"))
                decisions += engine.process(forwarded(f"c{n}", Signal.BOUNCED, 1_000.0 + n * 20 + 10, f"c{n}-b"))
        assert decisions == []
        assert engine.engine.stats.duplicates == 9 * 11
        for k in range(10):  # a tenth campaign's 10 sends make the 100: fires now
            decisions += engine.process(forwarded("c9", Signal.SENT, 1_200.0 + k, f"c9-s{k}"))
        assert sorted(d.campaign_id for d in decisions) == [f"c{n}" for n in range(10)]

    def test_campaigns_idle_past_the_look_back_are_not_decided_for(self) -> None:
        engine = self.engine()
        engine.process(forwarded("camp_old", Signal.SENT, 0.0, "old"))
        decisions = self.small_campaigns(engine, 10, start=10_000.0)  # camp_old's send left the 1h window
        assert "camp_old" not in {d.campaign_id for d in decisions}

    def test_the_catch_up_judges_a_campaign_by_its_scope_still_firing(self) -> None:
        engine = self.engine()
        decisions = self.small_campaigns(engine, 10)
        assert engine.episode("camp_00") is not None and engine.leans_bad(DOMAIN)
        assert engine.latest_event("camp_00") == 1_009.5  # its bounce, the last of its events
        assert decisions[0].fired_at == 1_189.0  # the 100th send, camp_09's tenth
        assert engine.episode("camp_unknown") is None and not engine.leans_bad("sender_domain:unknown.io")
        for k in range(2_000):  # the domain recovers: clean sends push the rate under the line
            engine.process(forwarded("camp_00", Signal.SENT, 1_300.0 + k, f"clean-{k}"))
        assert not engine.leans_bad(DOMAIN)


class Forwards:
    """The scope topic's producer side, in memory: what was forwarded, written when `release` says."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, str]] = []
        self.writes: list[asyncio.Future] = []

    async def send(self, forwards: list[tuple[str, bytes, int]], source: str) -> list[asyncio.Future]:
        self.sent.extend((scope, value, timestamp, source) for scope, value, timestamp in forwards)
        self.writes.append(asyncio.get_running_loop().create_future())
        return [self.writes[-1]]

    def release(self) -> None:
        for write in self.writes:
            if not write.done():
                write.set_result(True)

    def as_records(self, topic: str) -> list[ConsumerRecord]:
        return [
            ConsumerRecord(topic, 0, n, ts, 0, scope.encode(), value, None, len(scope), len(value), ())
            for n, (scope, value, ts, _) in enumerate(self.sent)
        ]


def scoped_pipeline(
    forwards: object, decisions: Decisions, metrics: Metrics | None = None, **options: object
) -> Pipeline:
    """A pipeline with the domain rule that owns two input partitions and one of the scope topic."""
    pipeline = Pipeline(
        options.pop("rules", None) or rules(),  # type: ignore[arg-type]
        decisions,
        NoDeadLetters(),
        metrics or Metrics(),
        dedupe_horizon=3600,
        scope_topic="guard.scopes",
        forwards=forwards,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    for tp in (*INPUTS, SCOPES):
        recovery = PartitionRecovery(name(tp), AuditScan.finished())
        recovery.positioned(None)  # a first deploy: no committed offset
        recovery.caught_up(0)  # nothing to replay: checkpoints may be taken
        pipeline.assign(tp, committed=None, since_ms=0, recovery=recovery)
    return pipeline


class TestThePipeline:
    """Input partitions forward what they count; a partition of the scope topic decides per campaign."""

    def pipeline(self, forwards: Forwards, decisions: Decisions, metrics: Metrics) -> Pipeline:
        return scoped_pipeline(forwards, decisions, metrics)

    async def test_small_campaigns_of_one_domain_over_two_partitions_are_each_paused_once(self) -> None:
        forwards, decisions, metrics = Forwards(), Decisions(), Metrics()
        pipeline = self.pipeline(forwards, decisions, metrics)
        now = time.time()
        by_partition: dict[TopicPartition, list[bytes]] = {tp: [] for tp in INPUTS}
        for n in range(10):  # ten campaigns of 10 sends and one hard bounce, alternating partitions, on acme.com
            campaign = f"camp_{n:02}"
            values = by_partition[INPUTS[n % 2]]
            for k in range(10):
                values.append(domain_event("message.sent", campaign, now - 250 + n * 20 + k, "ann@acme.com"))
            values.append(domain_event("message.bounced", campaign, now - 250 + n * 20 + 10, "ann@acme.com"))
        for k in range(300):  # a healthy domain's one campaign: no bounce at all
            by_partition[INPUTS[0]].append(domain_event("message.sent", "camp_ok", now - 250 + k, "bo@healthy.io"))
        for tp, values in by_partition.items():
            await pipeline.handle(tp, input_records(tp, values))
        assert decisions.submitted == []  # each campaign alone is far below min_volume
        assert {scope for scope, *_ in forwards.sent} == {"sender_domain:acme.com", "sender_domain:healthy.io"}
        assert pipeline.committable() == {tp: 0 for tp in INPUTS}  # forwarded, not yet written: not committable
        forwards.release()
        await asyncio.sleep(0)
        assert pipeline.committable() == {tp: len(values) for tp, values in by_partition.items()}
        await pipeline.handle(SCOPES, forwards.as_records(SCOPES.topic))
        paused = sorted(d.campaign_id for d in decisions.submitted)
        assert paused == [f"camp_{n:02}" for n in range(10)]
        assert {d.scope for d in decisions.submitted} == {"sender_domain:acme.com"}
        assert pipeline.snapshot(SCOPES) is not None  # checkpointed like an input partition (TestCheckpoints)

    async def test_a_campaign_joining_a_firing_older_than_the_grace_is_paused_at_once(self) -> None:
        """A guard that keeps up: acme.com fired ten minutes ago; a campaign starts sending from it now. Its decision
        goes to the dispatcher at once. It was held as a backlog's (the scope decision's time is older than the
        grace) until every campaign of the domain read as up to the present, which the paused ones never do: five
        minutes late, GUARD_CATCH_UP_LIMIT."""
        forwards, decisions = Forwards(), Decisions()
        pipeline = scoped_pipeline(forwards, decisions)
        now = time.time()
        values = []
        for n in range(10):  # ten campaigns of 10 sends and one hard bounce, ten minutes ago
            for k in range(10):
                values.append(domain_event("message.sent", f"camp_{n:02}", now - 900 + n * 20 + k, "ann@acme.com"))
            values.append(domain_event("message.bounced", f"camp_{n:02}", now - 900 + n * 20 + 10, "ann@acme.com"))
        await pipeline.handle(INPUTS[0], input_records(INPUTS[0], values))
        forwards.release()
        await pipeline.handle(SCOPES, forwards.as_records(SCOPES.topic))
        assert pipeline.held() == 10, "premise: the domain's decisions, ten minutes old, are held as a backlog's"
        joiner = [domain_event("message.sent", "camp_new", now - 1, "ann@acme.com")]
        await pipeline.handle(INPUTS[0], input_records(INPUTS[0], joiner, first=len(values)))
        forwards.release()
        scope_records = forwards.as_records(SCOPES.topic)
        await pipeline.handle(SCOPES, scope_records[-1:])
        assert "camp_new" in {d.campaign_id for d in decisions.submitted}

    async def test_a_record_of_the_scope_topic_that_is_no_forwarded_event_is_counted_and_skipped(self) -> None:
        forwards, decisions, metrics = Forwards(), Decisions(), Metrics()
        pipeline = self.pipeline(forwards, decisions, metrics)
        record = ConsumerRecord(SCOPES.topic, 0, 0, int(time.time() * 1000), 0, b"k", b"junk", None, 1, 4, ())
        await pipeline.handle(SCOPES, [record])
        assert metrics.records.labels("invalid")._value.get() == 1
        assert pipeline.committable() == {SCOPES: 1}

    async def test_replayed_records_are_not_forwarded_again(self) -> None:
        """Records before the committed offset were forwarded before they were committed."""
        forwards, decisions = Forwards(), Decisions()
        pipeline = Pipeline(rules(), decisions, NoDeadLetters(), Metrics(), dedupe_horizon=3600, forwards=forwards)
        recovery = PartitionRecovery(name(INPUTS[0]), AuditScan.finished())
        recovery.positioned(5)
        pipeline.assign(INPUTS[0], committed=5, since_ms=0, recovery=recovery)
        now = time.time()
        values = [domain_event("message.sent", "camp_1", now - 60 + k, "ann@acme.com") for k in range(8)]
        await pipeline.handle(INPUTS[0], input_records(INPUTS[0], values))
        assert [read_forwarded(value).message_id for _, value, *_ in forwards.sent] == [
            f"camp_1-{now - 60 + k}" for k in (5, 6, 7)
        ]
        assert {source for *_, source in forwards.sent} == {"events/0/5.."}

    async def test_a_first_deploy_over_a_backlog_pauses_each_campaign_of_a_domain_bad_now_once(self) -> None:
        """Three hours logged: acme.com bad throughout (one breach: its rule fires once), healthy.io bad in the
        first hour only. Held until caught up, then each acme.com campaign is paused once, and no healthy.io
        campaign at all: its rule stopped firing two hours ago (promise 10)."""
        forwards, decisions = Forwards(), Decisions()
        now = time.time()
        pipeline = scoped_pipeline(forwards, decisions, clock=lambda: now)
        start = now - 3 * 3600
        by_partition: dict[TopicPartition, list[tuple[bytes, float]]] = {tp: [] for tp in INPUTS}
        for minute in range(180):
            at = start + minute * 60
            for n in range(10):
                for domain in ("acme.com", "healthy.io"):
                    campaign = f"{domain}-{n}"
                    values = by_partition[INPUTS[n % 2]]
                    values.append((domain_event("message.sent", campaign, at + n, f"a@{domain}"), at + n))
                    if minute % 10 == n % 10 and (domain == "acme.com" or minute < 60):
                        values.append(
                            (domain_event("message.bounced", campaign, at + n + 1, f"a@{domain}"), at + n + 1)
                        )
        for batch in range(0, max(len(v) for v in by_partition.values()), 200):  # the partitions read side by side
            for tp, values in by_partition.items():
                part = values[batch : batch + 200]
                await pipeline.handle(tp, input_records(tp, [v for v, _ in part], part, batch))
        forwards.release()
        records = forwards.as_records(SCOPES.topic)
        for batch in range(0, len(records), 500):
            await pipeline.handle(SCOPES, records[batch : batch + 500])
        # 2 domains x 10 campaigns, read up to the present: judged at once (acted on or superseded)
        assert pipeline.held() == 0
        assert sorted(d.campaign_id for d in decisions.submitted) == [f"acme.com-{n}" for n in range(10)]
        assert sorted(d.campaign_id for d, _ in decisions.superseded) == [f"healthy.io-{n}" for n in range(10)]

    async def test_a_domain_healthy_for_hours_is_judged_on_all_its_campaigns_not_the_first_read_up(self) -> None:
        """A first deploy over four hours: recover.example's two campaigns, on two input partitions, were bad for 25
        minutes and clean since. The scope partition reads the first campaign up to the present while the second's
        bad minutes, four hours old, are still coming in and driving the domain's statistic up: judged then, the
        first campaign would be paused though healthy for hours. A scope's held decisions wait until every campaign
        of the scope is read up to the present (or the partition has caught up); then none is current."""
        forwards, decisions = Forwards(), Decisions()
        now = time.time()
        domain_rules = load_rules(Path(__file__).parent.parent / "rules" / "domains" / "sender-domain.yaml")
        pipeline = scoped_pipeline(forwards, decisions, clock=lambda: now, rules=domain_rules)
        start = now - 4 * 3600
        bad_until, timed = start + 25 * 60, {tp: [] for tp in INPUTS}
        for tp, campaign in zip(INPUTS, ("camp_a", "camp_b"), strict=True):
            at = start
            while at < now - 30:
                timed[tp].append((domain_event("message.sent", campaign, at, "ann@recover.example"), at))
                if at < bad_until and int(at - start) % 50 == 0:  # one in five sends hard-bounces
                    bounce = domain_event("message.bounced", campaign, at + 1, "ann@recover.example")
                    timed[tp].append((bounce, at + 1))
                at += 10 if at < bad_until else 15
        second_bad = [entry for entry in timed[INPUTS[1]] if entry[1] < bad_until + 60]
        await pipeline.handle(INPUTS[0], input_records(INPUTS[0], [v for v, _ in timed[INPUTS[0]]], timed[INPUTS[0]]))
        await pipeline.handle(INPUTS[1], input_records(INPUTS[1], [v for v, _ in second_bad], second_bad))
        forwards.release()
        await pipeline.handle(SCOPES, forwards.as_records(SCOPES.topic))  # camp_a up to now, camp_b's bad minutes
        assert decisions.submitted == [] and decisions.superseded == []
        assert pipeline.held() > 0

        rest = timed[INPUTS[1]][len(second_bad) :]
        await pipeline.handle(INPUTS[1], input_records(INPUTS[1], [v for v, _ in rest], rest, len(second_bad)))
        forwards.release()
        scope_records = forwards.as_records(SCOPES.topic)
        await pipeline.handle(SCOPES, scope_records[len(scope_records) - len(rest) :])
        assert pipeline.held() == 0
        assert decisions.submitted == []
        assert sorted({d.campaign_id for d, _ in decisions.superseded}) == ["camp_a", "camp_b"]


INPUTS = (TopicPartition("events", 0), TopicPartition("events", 1))
SCOPES = TopicPartition("guard.scopes", 0)


def domain_event(name: str, campaign: str, at: float, sender: str) -> bytes:
    fields: dict[str, object] = {"messageId": f"{campaign}-{at}", "from": sender}
    if name == "message.bounced":
        fields["bounceType"] = "hard"
    return envelope(name, campaign, at, **fields)


def input_records(
    tp: TopicPartition, values: list[bytes], timed: list[tuple[bytes, float]] | None = None, first: int = 0
) -> list[ConsumerRecord]:
    """Records of `values` at offsets from `first`; stamped now, or at the times of `timed` (a backlog)."""
    now_ms = int(time.time() * 1000)
    stamps = [int(at * 1000) for _, at in timed] if timed is not None else [now_ms] * len(values)
    return [
        ConsumerRecord(tp.topic, tp.partition, first + n, stamps[n], 0, b"k", value, None, 1, len(value), ())
        for n, value in enumerate(values)
    ]


class TestTools:
    """replay, rule tests, validate --explain and decisions --explain know rules over a scope."""

    def test_replay_decides_per_campaign_of_a_burning_domain_and_names_the_scope(self) -> None:
        from guard.tools.replay import decisions_table, replay

        now = 1_700_000_000.0
        records = []
        for n in range(10):
            for k in range(10):
                records.append((domain_event("message.sent", f"camp_{n}", now + n * 20 + k, "a@acme.com"), now))
            records.append((domain_event("message.bounced", f"camp_{n}", now + n * 20 + 10, "a@acme.com"), now))
        records.append((domain_event("message.sent", "camp_fine", now + 300, "a@fine.io"), now))
        result = replay(records, rules())
        assert sorted(d.campaign_id for d in result.decisions) == [f"camp_{n}" for n in range(10)]
        table = decisions_table(result.decisions)
        assert table.splitlines()[0].endswith("SCOPE") and table.count("sender_domain:acme.com") == 10

    def test_replay_without_scope_rules_has_no_scope_column(self) -> None:
        from guard.tools.replay import decisions_table, replay

        now = 1_700_000_000.0
        values = [(domain_event("message.sent", "c", now + k, "a@acme.com"), now) for k in range(200)]
        values += [(domain_event("message.bounced", "c", now + 200 + k, "a@acme.com"), now) for k in range(20)]
        result = replay(values, RuleSet(rules=rules().for_engine(False).rules))
        assert result.decisions and "SCOPE" not in decisions_table(result.decisions)

    def test_a_rule_test_gives_campaigns_senders_and_names_an_unknown_one(self, tmp_path) -> None:  # noqa: ANN001
        from guard.tools.ruletest import RuleTestError, run_file

        (tmp_path / "rules.yaml").write_text(DOMAIN_RULE)
        test = tmp_path / "t_test.yaml"
        test.write_text(
            "rules: rules.yaml\ntests:\n  - name: t\n    input: {camp_a: 10 sent}\n"
            "    senders: {camp_b: a@acme.com}\n    expect: []\n"
        )
        with pytest.raises(RuleTestError, match="senders.camp_b: .*camp_b.* in `input`"):
            run_file(test)
        test.write_text(
            "rules: rules.yaml\ntests:\n  - name: t\n    input: {camp_a: 10 sent}\n"
            "    senders: {camp_a: not-an-address}\n    expect: []\n"
        )
        with pytest.raises(RuleTestError, match="senders.camp_a"):
            run_file(test)

    def test_validate_explain_says_whose_events_a_scope_rule_counts(self) -> None:
        from guard.tools.explain import explain_rules

        domain, campaign = explain_rules(rules())
        assert "counted over every campaign of a sending domain (of `from`) together" in domain
        assert "pauses each campaign of it with events within 1h (and each that joins while it fires)" in domain
        assert "counted over" not in campaign

    def test_validate_explain_states_a_scope_cusum_budget_per_scope(self) -> None:
        from guard.tools.explain import explain_rules

        (shipped, _) = explain_rules(load_rules(Path(__file__).parents[1] / "rules" / "domains"))
        assert "false alarms: 1% of domains of 10,000,000 sends at 2%" in shipped
        assert "reaches 17.34 (a cusum; e.g. 13 sends in a row that hard-bounced" in shipped

    def test_decisions_explain_names_the_scope_and_what_became_of_its_campaigns(self) -> None:
        from guard.actions.audit import audit_event
        from guard.tools.decisions import explain, fold

        decisions = ScopeEngine(rules(), dedupe_horizon=3600.0).count
        found = []
        for n in range(10):
            for k in range(10):
                found += decisions(
                    event(f"c{n}", Signal.SENT, 1_000.0 + n * 20 + k, f"c{n}-{k}", sender_domain="a.io"), ""
                )
            found += decisions(
                event(f"c{n}", Signal.BOUNCED, 1_190.5, f"c{n}-b", bounce_type="hard", sender_domain="a.io"), ""
            )
        assert len(found) == 10
        values = []
        for number, decision in enumerate(found):
            values.append(audit_event(decision, "fired", decided_at=2_000.0, dry_run=False).model_dump_json().encode())
            outcome = "paused" if number else "exempted"
            values.append(audit_event(decision, outcome, decided_at=2_000.0, dry_run=False).model_dump_json().encode())
        folded = fold(values)
        text = explain(next(r for r in folded.decisions if r.latest.campaign_id == "c3"), folded.decisions)
        assert "scope     sender_domain:a.io: the evidence above is the scope's" in text
        assert f"its decision {found[0].scope_decision_id} came to 10 campaign(s) read here:" in text
        assert "c0  exempted" in text and "c9  paused" in text


class TestCheckpoints:
    """A partition of the scope topic is checkpointed like a partition of the input: its engine and who is in each
    scope, so a restored reader pauses joiners of a firing and the campaigns seen before the checkpoint."""

    def restored(self, pipeline: Pipeline, tp: TopicPartition = SCOPES, scopes: bool = True) -> ScopeEngine:
        taken = pipeline.snapshot(tp)
        assert taken is not None
        pending, _ = taken
        data = pending.finish()
        engine = scoped_pipeline(Forwards(), Decisions()).restored_engine(data, scopes=scopes)
        assert isinstance(engine, ScopeEngine)
        return engine

    async def test_a_restored_engine_of_scopes_pauses_a_joiner_of_a_firing_as_the_first_would(self) -> None:
        forwards, decisions = Forwards(), Decisions()
        pipeline = scoped_pipeline(forwards, decisions)
        now = time.time()
        scope_records = [
            ConsumerRecord(
                SCOPES.topic, 0, n, int(now * 1000), 0, DOMAIN.encode(), forward(DOMAIN, e, ""), None, 1, 1, ()
            )
            for n, e in enumerate(small_domain_events(10, now - 250))
        ]
        await pipeline.handle(SCOPES, scope_records)
        fired = {d.campaign_id: d for d in decisions.submitted}
        assert len(fired) == 10
        again = self.restored(pipeline)
        first = pipeline._partitions[SCOPES][0]
        joiner = forwarded("camp_new", Signal.SENT, now - 40, "new-s0")
        on_first, on_restored = first.process(joiner), again.process(joiner)  # type: ignore[union-attr]
        assert [d.id for d in on_restored] == [d.id for d in on_first] and len(on_first) == 1
        assert on_restored[0].scope_decision_id == fired["camp_00"].scope_decision_id
        assert again.process(forwarded("camp_03", Signal.SENT, now - 39, "c3-again")) == []  # decided already

    async def test_a_snapshot_of_campaigns_is_no_snapshot_of_scopes_nor_the_other_way(self) -> None:
        from guard.engine.snapshot import SnapshotError

        pipeline = scoped_pipeline(Forwards(), Decisions())
        sent = domain_event("message.sent", "c", time.time() - 5, "a@b.io")
        await pipeline.handle(INPUTS[0], input_records(INPUTS[0], [sent]))
        pipeline._partitions[INPUTS[0]][1].forwarding.clear()  # the in-memory writes are never released here
        taken = pipeline.snapshot(INPUTS[0])
        assert taken is not None
        with pytest.raises(SnapshotError, match="not of scopes"):
            scoped_pipeline(Forwards(), Decisions()).restored_engine(taken[0].finish(), scopes=True)


def small_domain_events(campaigns: int, start: float) -> list[Event]:
    """`campaigns` campaigns of acme.com, 10 sends and a hard bounce each: together over the domain rule."""
    events = []
    for n in range(campaigns):
        campaign = f"camp_{n:02}"
        for k in range(10):
            events.append(Event(Signal.SENT, campaign, start + n * 20 + k, f"c{n}-s{k}", sender_domain="acme.com"))
        bounce = Event(
            Signal.BOUNCED, campaign, start + n * 20 + 10, f"c{n}-b", bounce_type="hard", sender_domain="acme.com"
        )
        events.append(bounce)
    return events


def test_a_forged_snapshot_of_scopes_with_a_time_that_is_none_is_refused() -> None:
    """The state topic is input (promise 9): a campaign's time NaN would never be swept; it is refused whole."""
    from guard.engine.scope_snapshot import _LENGTH, MAGIC, _Member, _Scopes, restore_scopes
    from guard.engine.snapshot import SnapshotError, snapshot

    scopes = ScopeEngine(rules(), dedupe_horizon=3600.0)
    engine = snapshot(scopes.engine, rules())
    forged = msgspec.msgpack.encode(_Scopes({DOMAIN: [_Member("camp_x", float("nan"), None)]}, {}, {}))
    with pytest.raises(SnapshotError, match="corrupt snapshot of scopes"):
        restore_scopes(MAGIC + _LENGTH.pack(len(engine)) + engine + forged, rules(), ScopeEngine(rules(), 3600.0))


class TestASilentScope:
    """The shipped domain cusum does not fall while its domain sends nothing (no episode restarts a scope): the
    domain stays suspect until its first send after a day with none, measured in the sends' own times."""

    SHIPPED = Path(__file__).parents[1] / "rules" / "domains" / "sender-domain.yaml"

    def burnt(self) -> tuple[ScopeEngine, RuleSet]:
        shipped = load_rules(self.SHIPPED)
        scopes = ScopeEngine(shipped, dedupe_horizon=3600.0)
        fired = []
        for n in range(200):  # one domain alone on its partition: nothing else moves the clock
            fired += scopes.process(forwarded(f"camp_{n % 4}", Signal.SENT, 1_000.0 + n, f"s{n}"))
            if n % 4 == 0:
                fired += scopes.process(forwarded(f"camp_{n % 4}", Signal.BOUNCED, 1_000.5 + n, f"s{n}"))
        assert {d.campaign_id for d in fired} == {"camp_0", "camp_1", "camp_2", "camp_3"}
        return scopes, shipped

    def test_a_campaign_starting_within_the_day_is_paused_and_one_a_day_after_the_last_send_is_not(self) -> None:
        scopes, _ = self.burnt()
        late_complaint = forwarded("camp_1", Signal.COMPLAINED, 1_200.0 + 20 * 3600, "c1")
        assert scopes.process(late_complaint) == []  # arrives for days: no send, no end of the silence
        joined = scopes.process(forwarded("camp_mid", Signal.SENT, 1_200.0 + 8 * 3600, "m0"))
        assert [d.campaign_id for d in joined] == ["camp_mid"]
        # a day after camp_mid's send; more than a day past the partition's clock, so the engine clamps this event
        assert scopes.process(forwarded("camp_new", Signal.SENT, 1_200.0 + 33 * 3600, "n0")) == []
        assert not scopes.engine.firing(DOMAIN, "domain-hard-bounce-rate")
        assert not scopes.leans_bad(DOMAIN)

    def test_the_silence_is_measured_across_a_checkpoint_of_the_scopes(self) -> None:
        from guard.engine.scope_snapshot import ScopeSnapshot, restore_scopes

        scopes, shipped = self.burnt()
        pending = ScopeSnapshot(scopes, shipped)
        while not pending.step(1_000):
            pass
        restored = ScopeEngine(shipped, dedupe_horizon=3600.0)
        restore_scopes(pending.finish(), shipped, restored)
        new = forwarded("camp_new", Signal.SENT, 1_200.0 + 25 * 3600, "n0")
        assert restored.process(new) == scopes.process(new) == []

    def test_a_snapshot_of_scopes_from_before_sends_were_noted_restores(self) -> None:
        from guard.engine.scope_snapshot import _LENGTH, MAGIC, restore_scopes
        from guard.engine.snapshot import snapshot

        scopes, shipped = self.burnt()
        engine = snapshot(scopes.engine, shipped)
        older = msgspec.msgpack.encode([{}, {}, {}])  # three fields, as an older guard wrote
        restored = ScopeEngine(shipped, dedupe_horizon=3600.0)
        restore_scopes(MAGIC + _LENGTH.pack(len(engine)) + engine + older, shipped, restored)
        assert restored._sent_at == {} and restored.engine.firing(DOMAIN, "domain-hard-bounce-rate")

    def test_a_send_stamped_far_ahead_of_its_record_does_not_end_a_busy_domains_firing(self) -> None:
        """A send's own time is bounded by its scope record's (the forwarder's clock at most) plus the skew an input
        event may have: a forged time a day ahead cannot restart a domain that sent a moment ago."""
        from guard.contracts.events import LATEST_EVENT_TIME

        scopes, _ = self.burnt()
        forged = forwarded("camp_x", Signal.SENT, 1_199.0 + 25 * 3600, "forged")
        scopes.process(forged, stamped=1_210.0)
        assert scopes.engine.firing(DOMAIN, "domain-hard-bounce-rate")
        scopes.process(forwarded("camp_y", Signal.SENT, LATEST_EVENT_TIME, "far"), stamped=1_220.0)
        assert scopes._sent_at[DOMAIN] <= 1_220.0 + 3600  # nor does one far ahead stop the silence being seen
        quiet = forwarded("camp_new", Signal.SENT, 1_220.0 + 3600 + 25 * 3600, "n0")
        assert scopes.process(quiet, stamped=quiet.time) == []
        assert not scopes.engine.firing(DOMAIN, "domain-hard-bounce-rate")
