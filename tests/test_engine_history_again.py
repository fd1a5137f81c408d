"""History delivered again: a `cusum` or `last:` rule reads events in arrival order, so a stretch of mail delivered
long after it happened (a webhook retried after an outage of the ingest door, a bridge's retried batch) must not read
as the campaign's newest evidence. Sends far behind the newest counted one are skipped, with their outcomes; outcomes
that are late by nature (a feedback-loop complaint joined to a send counted on time) still count."""

from __future__ import annotations

from pathlib import Path

import pytest
from strategies import T0
from test_scopes import DOMAIN, forwarded

from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.scope_snapshot import ScopeSnapshot, restore_scopes
from guard.engine.scopes import ScopeEngine
from guard.engine.snapshot import restore, snapshot
from guard.engine.windows import LATE_PER_SECONDS, SKIPPED_IDS
from guard.rules import RuleSet, load_rules
from guard.rules.loader import parse_rules

MINUTE = 60.0
SHIPPED = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.yaml")
CORE = compiled()
KINDS = [pytest.param(PYTHON, id="python"), pytest.param(CORE, id="compiled", marks=pytest.mark.compiled_core)]


def sent(time: float, message_id: str) -> Event:
    return Event(Signal.SENT, "c1", time, message_id)


def bounced(time: float, message_id: str) -> Event:
    return Event(Signal.BOUNCED, "c1", time, message_id, bounce_type="hard")


def complained(time: float, message_id: str) -> Event:
    return Event(Signal.COMPLAINED, "c1", time, message_id)


def mail(start: float, minutes: float, bounce_every: int, prefix: str, bounce_after: float = 20.0) -> list[Event]:
    """A send every 6 s for `minutes`; every `bounce_every`-th send hard-bounces `bounce_after` seconds later. In
    event-time order."""
    events = []
    for n in range(int(minutes * 10)):
        time = start + 6.0 * n
        events.append(sent(time, f"{prefix}{n}"))
        if n % bounce_every == 0:
            events.append(bounced(time + bounce_after, f"{prefix}{n}"))
    return sorted(events, key=lambda event: event.time)


def bad_then_healthy(delay: float, healthy_now: bool = True, bounce_after: float = 20.0) -> list[Event]:
    """Ten minutes of a bad list (a quarter hard-bounces), then healthy mail (1 in 200) for the delay plus half an
    hour, or more of the bad list; the bad ten minutes delivered `delay` after they happened, among the later mail
    read as it happens. In arrival order."""
    bad = mail(T0, 10, 4, "bad", bounce_after)
    later = mail(T0 + 10 * MINUTE, delay / MINUTE + 30, 200 if healthy_now else 4, "now")
    arrivals = [(event.time + delay, 0, event) for event in bad] + [(event.time, 1, event) for event in later]
    return [event for _, _, event in sorted(arrivals, key=lambda arrival: arrival[:2])]


def pauses(engine: Engine, events: list[Event]) -> list[tuple[str, float]]:
    """(rule, minutes into the history) of each pause decision the events cause."""
    return [
        (decision.rule.name, round((decision.fired_at - T0) / MINUTE, 1))
        for event in events
        for decision in engine.process(event)
        if decision.action == "pause"
    ]


class TestABadStretchDeliveredLate:
    @pytest.mark.parametrize("kinds", KINDS)
    def test_read_as_it_happened_it_pauses_the_campaign_at_once(self, kinds: Kinds) -> None:
        """The control: in event-time order the shipped rules pause within minutes."""
        decisions = pauses(Engine(SHIPPED, kinds=kinds), bad_then_healthy(0.0))
        assert decisions and decisions[0][1] < 5

    @pytest.mark.parametrize("kinds", KINDS)
    @pytest.mark.parametrize("bounce_after", [20.0, 10 * MINUTE], ids=["bounces-after-20s", "after-10min"])
    @pytest.mark.parametrize("delay", [35 * MINUTE, 120 * MINUTE], ids=["35min", "2h"])
    def test_delivered_after_healthy_mail_it_pauses_nothing(
        self, kinds: Kinds, delay: float, bounce_after: float
    ) -> None:
        """Leadterra retries a webhook after 30 minutes and 2 hours: the bad ten minutes arrive after healthy mail
        that followed them. Had the guard read them on time it would have paused the campaign then, and the mail
        since is a new, healthy episode: nothing is paused now. (Read as the newest evidence, the cusum paused the
        campaign after 29.6 and 114.6 minutes of healthy mail.)"""
        engine = Engine(SHIPPED, kinds=kinds)
        assert pauses(engine, bad_then_healthy(delay, bounce_after=bounce_after)) == []
        assert engine.stats.late == 100 + 25  # every bad send and bounce, skipped by the cusum and the `last:` rule

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_campaign_still_bad_now_is_paused_on_its_mail_now(self, kinds: Kinds) -> None:
        decisions = pauses(Engine(SHIPPED, kinds=kinds), bad_then_healthy(35 * MINUTE, healthy_now=False))
        assert decisions and 10 < decisions[0][1] < 15  # on the mail after the bad ten minutes, read as it happened

    @pytest.mark.parametrize("kinds", KINDS)
    def test_mail_retried_within_minutes_still_counts(self, kinds: Kinds) -> None:
        """A send retried after one minute and five more (after a first attempt that waited out the door's 5 s
        produce timeout), with its bounce: counted."""
        engine = Engine(SHIPPED, kinds=kinds)
        pauses(engine, mail(T0, 10, 200, "live"))
        newest = T0 + 10 * MINUTE - 6.0
        before = engine.measure("c1")["hard-bounce-burst"]
        retried = newest - 6 * MINUTE - 5.0
        pauses(engine, [sent(retried, "retried"), bounced(retried + 20.0, "retried")])
        after = engine.measure("c1")["hard-bounce-burst"]
        assert (after.numerator, engine.stats.late) == (before.numerator + 1, 0)

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_path_of_the_campaigns_mail_that_lags_minutes_still_counts(self, kinds: Kinds) -> None:
        """Two mailboxes take turns; the bad one's webhooks go out 10 minutes late (1 in 6 of its sends hard-bounce,
        1 in 100 of the other's): the campaign, bad throughout, is paused on the lagging mail."""
        events = []
        for n in range(1200):  # two hours, a send every 6 s
            time, bad = T0 + 6.0 * n, n % 2 == 1
            lag = 10 * MINUTE if bad else 0.0
            events.append((time + lag, sent(time, f"m{n}")))
            if (bad and n % 12 == 1) or (not bad and n % 200 == 0):
                events.append((time + 20.0 + lag, bounced(time + 20.0, f"m{n}")))
        arrivals = [event for _, event in sorted(events, key=lambda arrival: arrival[0])]
        engine = Engine(SHIPPED, kinds=kinds)
        assert pauses(engine, arrivals)


class TestTheNewestSend:
    """What a send is late against: the newest counted send, vouched for by the one before it."""

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_send_exactly_the_limit_behind_counts_and_one_a_moment_more_is_skipped(self, kinds: Kinds) -> None:
        engine = Engine(TestOutcomes.rules(), kinds=kinds)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(10)])  # the newest: T0 + 9 min
        newest = T0 + 9 * MINUTE
        pauses(engine, [sent(newest - LATE_PER_SECONDS, "at"), sent(newest - LATE_PER_SECONDS - 0.5, "past")])
        assert engine.measure("c1")["complaints-of-the-last-100"].denominator == 11
        assert engine.stats.late == 1

    @pytest.mark.parametrize("kinds", KINDS)
    @pytest.mark.parametrize("ahead", [50 * MINUTE, 6 * 3600.0], ids=["50min", "6h"])
    def test_one_send_stamped_ahead_does_not_make_the_others_late(self, kinds: Kinds, ahead: float) -> None:
        """A dead list (a quarter hard-bounces) with one send stamped ahead of its time (a broken clock, a forged
        record; up to an hour passes the ingest door): the campaign is still paused within minutes."""
        events = mail(T0, 30, 4, "dead")
        events.insert(10, sent(T0 + ahead, "ahead"))
        engine = Engine(SHIPPED, kinds=kinds)
        paused_at = next(event.time for event in events if any(d.action == "pause" for d in engine.process(event)))
        assert paused_at < T0 + 5 * MINUTE  # the event that proved it (the decision is stamped at the campaign's clock)

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_send_after_a_quiet_spell_is_the_newest_once_a_second_agrees(self, kinds: Kinds) -> None:
        engine = Engine(TestOutcomes.rules(), kinds=kinds)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(10)])
        back = T0 + 3 * 3600.0  # three hours later
        pauses(engine, [sent(back, "r0"), sent(T0 + 9 * MINUTE, "behind the first")])  # not yet late
        assert engine.stats.late == 0
        pauses(engine, [sent(back + MINUTE, "r1"), sent(back + 2 * MINUTE, "r2"), sent(T0 + 9 * MINUTE, "behind")])
        assert engine.stats.late == 1


class TestOutcomes:
    """Which outcomes count: those of the sends counted, however late they come."""

    @staticmethod
    def rules() -> RuleSet:
        return RuleSet.model_validate(
            {
                "rules": [
                    {
                        "name": "complaints-of-the-last-100",
                        "description": "complaints among the last 100 sends",
                        "rate": {"of": "complained", "per": "sent"},
                        "last": 100,
                        "threshold": "50%",
                        "min_volume": 50,
                    },
                    {
                        "name": "complaint-cusum",
                        "description": "a sequential test of complaints",
                        "cusum": {
                            "of": "complained",
                            "per": "sent",
                            "healthy": "0.1%",
                            "bad": "1%",
                            "false_alarms": "5%",
                            "campaign_size": 50000,
                        },
                    },
                ]
            }
        )

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_feedback_loop_complaint_hours_late_counts_for_its_send(self, kinds: Kinds) -> None:
        """A complaint reported three hours after its send, while the campaign sends on: joined to its send."""
        engine = Engine(TestOutcomes.rules(), kinds=kinds)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(60)])
        pauses(engine, [complained(T0 + 30 * MINUTE, "s10")])  # stamped when the recipient complained
        pauses(engine, [sent(T0 + (60 + n) * MINUTE, f"t{n}") for n in range(120)])
        statistic = engine.measure("c1")["complaint-cusum"].value
        pauses(engine, [complained(T0 + 2 * 60 * MINUTE, "s70"), complained(T0 + 170 * MINUTE, "t100")])
        assert engine.measure("c1")["complaints-of-the-last-100"].numerator == 2
        assert engine.measure("c1")["complaint-cusum"].value > statistic
        assert engine.stats.late == 0

    @pytest.mark.parametrize("kinds", KINDS)
    def test_the_outcome_of_a_skipped_send_is_skipped_and_one_without_a_message_id_counts(self, kinds: Kinds) -> None:
        engine = Engine(TestOutcomes.rules(), kinds=kinds)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(60)])
        pauses(engine, [sent(T0, "old")])  # an hour behind the newest send: skipped
        pauses(engine, [complained(T0 + 10.0, "old")])
        measures = engine.measure("c1")
        assert (measures["complaints-of-the-last-100"].numerator, measures["complaint-cusum"].value) == (0, 0)
        assert engine.stats.late == 2
        pauses(engine, [Event(Signal.COMPLAINED, "c1", T0 + 10.0)])  # cannot be joined to any send: counted
        assert engine.measure("c1")["complaints-of-the-last-100"].numerator == 1

    @pytest.mark.parametrize("kinds", KINDS)
    def test_the_latest_skipped_sends_are_remembered(self, kinds: Kinds) -> None:
        """SKIPPED_IDS of them: the outcome of one skipped earlier counts, as one whose send is not known."""
        engine = Engine(TestOutcomes.rules(), kinds=kinds)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(60)])
        pauses(engine, [sent(T0 + n, f"old{n}") for n in range(SKIPPED_IDS + 1)])
        pauses(engine, [complained(T0 + 10.0, "old1")])  # remembered: skipped
        assert engine.measure("c1")["complaints-of-the-last-100"].numerator == 0
        pauses(engine, [complained(T0 + 10.0, "old0")])  # forgotten: counted
        assert engine.measure("c1")["complaints-of-the-last-100"].numerator == 1

    @pytest.mark.parametrize("kinds", KINDS)
    @pytest.mark.parametrize("with_ids", [True, False], ids=["with-message-ids", "without"])
    def test_an_event_both_counted_and_counting_is_skipped_whole(self, kinds: Kinds, with_ids: bool) -> None:
        """Hard bounces per bounce: a hard bounce delivered again long after it happened is neither a trial nor an
        outcome of the `last:` window, so its outcomes never outnumber its trials."""
        rules = RuleSet.model_validate(
            {
                "rules": [
                    {
                        "name": "hard-share",
                        "description": "hard bounces among the last 20 bounces",
                        "rate": {"of": {"signal": "bounced", "where": {"bounce_type": "hard"}}, "per": "bounced"},
                        "last": 20,
                        "threshold": "50%",
                        "min_volume": 20,
                    }
                ]
            }
        )
        engine = Engine(rules, kinds=kinds)
        soft = [
            Event(Signal.BOUNCED, "c1", T0 + 20 * MINUTE + 6.0 * n, f"soft{n}", bounce_type="soft") for n in range(30)
        ]
        pauses(engine, soft)
        hard = [
            Event(Signal.BOUNCED, "c1", T0 + 6.0 * n, f"hard{n}" if with_ids else None, bounce_type="hard")
            for n in range(30)
        ]
        assert pauses(engine, hard) == []
        measure = engine.measure("c1")["hard-share"]
        assert (measure.numerator, measure.denominator, engine.stats.late) == (0, 20, 30)

    @pytest.mark.parametrize("writer", KINDS)
    @pytest.mark.parametrize("reader", KINDS)
    def test_a_checkpoint_remembers_the_skipped_sends(self, writer: Kinds, reader: Kinds) -> None:
        """A restart between a skipped send and its outcome: the outcome is still skipped, whichever engine wrote
        the snapshot and whichever reads it."""
        rules = TestOutcomes.rules()
        engine = Engine(rules, kinds=writer)
        pauses(engine, [sent(T0 + n * MINUTE, f"s{n}") for n in range(60)] + [sent(T0, "old")])
        restored = Engine(rules, kinds=reader)
        restore(snapshot(engine, rules), rules, restored)
        pauses(restored, [complained(T0 + 10.0, "old")])
        assert restored.measure("c1")["complaints-of-the-last-100"].numerator == 0
        assert restored.measure("c1")["complaint-cusum"].value == 0


SCOPE_RULES = """
groups:
  - name: domains
    rules:
      - name: domain-last-100
        description: hard bounces among the sending domain's last 100 sends
        scope: sender_domain
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        last: 100
        threshold: 50%
        min_volume: 50
"""


class TestScopes:
    @pytest.mark.parametrize("kinds", KINDS)
    def test_an_engine_of_scopes_counts_every_send_however_late(self, kinds: Kinds) -> None:
        """A scope's events are forwarded from every input partition, each read at its own lag (a catch-up, a
        partition that moved): a domain's sends ten minutes behind its others are evidence, not history again."""
        rules = parse_rules([("rules.yaml", SCOPE_RULES)])
        scopes = ScopeEngine(rules, dedupe_horizon=3600.0, kinds=kinds)
        for n in range(50):
            scopes.process(forwarded("camp_ahead", Signal.SENT, T0 + 10 * MINUTE + n, f"a{n}"))
            scopes.process(forwarded("camp_behind", Signal.SENT, T0 + n, f"b{n}"))
        scopes.process(forwarded("camp_behind", Signal.BOUNCED, T0 + 60.0, "b7"))
        measure = scopes.engine.measure(DOMAIN)["domain-last-100"]
        assert (measure.numerator, measure.denominator, scopes.stats.late) == (1, 100, 0)

    @pytest.mark.parametrize("writer", KINDS)
    @pytest.mark.parametrize("reader", KINDS)
    def test_a_checkpoint_of_scopes_keeps_counting_every_send(self, writer: Kinds, reader: Kinds) -> None:
        """Restored by either engine, a scope's series still counts every send (a campaign's series that would not
        skip them is refused: tests/test_core_differential.py `_FORGED`)."""
        rules = parse_rules([("rules.yaml", SCOPE_RULES)])
        scopes = ScopeEngine(rules, dedupe_horizon=3600.0, kinds=writer)
        scopes.process(forwarded("camp_ahead", Signal.SENT, T0 + 10 * MINUTE, "a0"))
        pending = ScopeSnapshot(scopes, rules)
        while not pending.step(1_000):
            pass
        restored = ScopeEngine(rules, dedupe_horizon=3600.0, kinds=reader)
        restore_scopes(pending.finish(), rules, restored)
        restored.process(forwarded("camp_behind", Signal.SENT, T0, "b0"))
        assert restored.engine.measure(DOMAIN)["domain-last-100"].denominator == 2
