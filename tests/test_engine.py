"""The pure engine: events in, decisions out, with event time as the only clock."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import pytest
from pydantic import ValidationError
from strategies import T0

from guard.contracts.events import Event, Signal
from guard.engine import Decision, Engine
from guard.engine.decisions import decision_id
from guard.engine.engine import MAX_AHEAD_SECONDS
from guard.engine.episodes import EpisodeStart, after_pause_decision, resumes
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.snapshot import restore, snapshot
from guard.engine.state import NO_RULE_STATES
from guard.rules import Rule, RuleSet

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
KINDS = [pytest.param(PYTHON, id="python"), pytest.param(compiled(), id="compiled", marks=pytest.mark.compiled_core)]


def rule(name: str = "r", **fields: object) -> Rule:
    """A rule from the given fields; a count of bounces over an hour unless told otherwise."""
    spec: dict = {"name": name, "description": "test rule", "window": "1h", **fields}
    if "rate" not in spec and "count" not in spec:
        spec["count"] = "bounced"
    spec.setdefault("threshold", 3)
    return Rule.model_validate(spec)


def rate_rule(name: str = "rate", **fields: object) -> Rule:
    """Hard bounces per send, 10% over an hour with at least 20 sends, unless told otherwise."""
    fields = {
        "rate": {"of": {"signal": "bounced", "where": {"bounce_type": "hard"}}, "per": "sent"},
        "threshold": "10%",
        "min_volume": 20,
        **fields,
    }
    return rule(name, **fields)


def rules(*items: Rule) -> RuleSet:
    return RuleSet(rules=items)


def sent(time: float, message_id: str | None = None, campaign: str = "c1", domain: str | None = None) -> Event:
    return Event(Signal.SENT, campaign, time, message_id, domain)


def bounce(
    time: float,
    message_id: str | None = None,
    campaign: str = "c1",
    bounce_type: str | None = "hard",
    status: str | None = None,
    domain: str | None = None,
) -> Event:
    return Event(Signal.BOUNCED, campaign, time, message_id, domain, bounce_type, status)


def complaint(time: float, message_id: str | None = None, campaign: str = "c1", domain: str | None = None) -> Event:
    return Event(Signal.COMPLAINED, campaign, time, message_id, domain)


def started(time: float, campaign: str = "c1") -> Event:
    return Event(Signal.STARTED, campaign, time)


def run(engine: Engine, events: Iterable[Event]) -> list[list[Decision]]:
    """The decisions of each event, in order."""
    return [engine.process(event) for event in events]


def fired(engine: Engine, events: Iterable[Event]) -> list[Decision]:
    """Every decision the events cause."""
    return [decision for decisions in run(engine, events) for decision in decisions]


def sends(count: int, start: float = T0, campaign: str = "c1", step: float = 1.0, prefix: str = "s") -> list[Event]:
    return [sent(start + n * step, f"{prefix}{n}", campaign) for n in range(count)]


class TestRateRules:
    """A rate rule fires when `of` per `per` reaches the threshold with enough volume."""

    def test_a_rate_rule_fires_at_exactly_the_crossing_event(self) -> None:
        """20 sends and 1 hard bounce (5%) stay quiet; the 2nd bounce (10%) fires, on that event."""
        engine = Engine(rules(rate_rule()))
        results = run(engine, [*sends(20), bounce(T0 + 30, "s3"), bounce(T0 + 31, "s7")])
        assert all(decisions == [] for decisions in results[:-1])
        [decision] = results[-1]
        assert decision.fired_at == T0 + 31

    def test_a_decision_reports_its_evidence(self) -> None:
        """Numerator, denominator, value, evidence start, message ids, campaign and rule are on the decision."""
        the_rule = rate_rule()
        [decision] = fired(Engine(rules(the_rule)), [*sends(20), bounce(T0 + 30, "s3"), bounce(T0 + 31, "s7")])
        assert decision == Decision(
            id=decision_id("c1", the_rule, T0 + 31),
            campaign_id="c1",
            rule=the_rule,
            fired_at=T0 + 31,
            numerator=2,
            denominator=20,
            value=0.1,
            evidence_from=T0,
            message_ids=("s3", "s7"),
        )

    def test_min_volume_keeps_a_rate_rule_silent(self) -> None:
        """5 bounces in 5 sends (100%) is no evidence below min_volume 20."""
        events = [*sends(5)] + [bounce(T0 + 10 + n, f"s{n}") for n in range(5)]
        assert fired(Engine(rules(rate_rule())), events) == []

    def test_a_rate_rule_fires_when_the_volume_is_reached(self) -> None:
        """With the rate already high, the send that reaches min_volume fires the rule."""
        events = [*sends(5)] + [bounce(T0 + 10 + n, f"s{n}") for n in range(5)] + sends(15, T0 + 20, prefix="t")
        results = run(Engine(rules(rate_rule())), events)
        assert [n for n, decisions in enumerate(results) if decisions] == [len(events) - 1]
        assert (results[-1][0].numerator, results[-1][0].denominator, results[-1][0].value) == (5, 20, 0.25)

    def test_three_per_thousand_reaches_a_threshold_of_zero_point_three_percent(self) -> None:
        """Floating point does not keep 3 of 1,000 from reaching '0.3%'."""
        the_rule = rule(rate={"of": "complained", "per": "sent"}, threshold="0.3%", min_volume=1000)
        events = sends(1000, step=0.5) + [complaint(T0 + 600 + n, f"s{n}") for n in range(3)]
        results = run(Engine(rules(the_rule)), events)
        assert [n for n, decisions in enumerate(results) if decisions] == [1002]

    def test_a_rate_without_any_denominator_is_silent(self) -> None:
        """Bounces without sends in the window never divide by zero and never fire."""
        events = [bounce(T0 + n, f"b{n}") for n in range(50)]
        assert fired(Engine(rules(rate_rule(min_volume=1))), events) == []


class TestCountRules:
    """A count rule fires when the number of matching events in the window reaches the threshold."""

    def test_a_count_rule_fires_at_the_threshold(self) -> None:
        """Two bounces are quiet; the third fires, with value 3 and no denominator."""
        results = run(Engine(rules(rule(threshold=3))), [bounce(T0, "a"), bounce(T0 + 1, "b"), bounce(T0 + 2, "c")])
        assert [len(decisions) for decisions in results] == [0, 0, 1]
        decision = results[-1][0]
        assert (decision.numerator, decision.denominator, decision.value) == (3, None, 3.0)
        assert decision.message_ids == ("a", "b", "c")

    def test_only_the_last_three_message_ids_are_kept(self) -> None:
        """Evidence names a few message ids, the latest ones."""
        [decision] = fired(Engine(rules(rule(threshold=5))), [bounce(T0 + n, f"m{n}") for n in range(5)])
        assert decision.message_ids == ("m2", "m3", "m4")

    def test_other_signals_do_not_count(self) -> None:
        """Sends and complaints do not add to a count of bounces."""
        events = [sent(T0, "a"), complaint(T0 + 1, "a"), bounce(T0 + 2, "b"), bounce(T0 + 3, "c")]
        assert fired(Engine(rules(rule(threshold=3))), events) == []


class TestWindows:
    """The window slides over event time: evidence older than the window stops counting."""

    def test_evidence_older_than_the_window_no_longer_counts(self) -> None:
        """Two bounces, then one three hours later: the old two have expired, so three bounces never meet."""
        events = [bounce(T0, "a"), bounce(T0 + 10 * MINUTE, "b"), bounce(T0 + 3 * HOUR, "c")]
        assert fired(Engine(rules(rule(threshold=3))), events) == []

    def test_fresh_evidence_after_expiry_fires_on_its_own(self) -> None:
        """After old evidence expired, three new bounces fire with a numerator of 3, not 5."""
        old = [bounce(T0, "a"), bounce(T0 + 1, "b")]
        new = [bounce(T0 + 3 * HOUR + n, f"n{n}") for n in range(3)]
        [decision] = fired(Engine(rules(rule(threshold=3))), old + new)
        assert (decision.numerator, decision.fired_at) == (3, T0 + 3 * HOUR + 2)
        assert decision.evidence_from == T0 + 3 * HOUR

    def test_an_event_one_full_window_old_has_expired(self) -> None:
        """The window of one hour does not reach back a full hour plus its bucket."""
        events = [bounce(T0, "a"), bounce(T0 + 1, "b"), bounce(T0 + HOUR, "c")]
        assert fired(Engine(rules(rule(threshold=3))), events) == []

    def test_an_event_within_the_window_still_counts(self) -> None:
        """59 minutes later, the first bounces still count."""
        events = [bounce(T0, "a"), bounce(T0 + 1, "b"), bounce(T0 + 59 * MINUTE, "c")]
        assert len(fired(Engine(rules(rule(threshold=3))), events)) == 1

    def test_sends_that_expired_no_longer_carry_the_volume(self) -> None:
        """100 sends two hours ago do not make today's bounces a rate with volume."""
        events = sends(100) + [bounce(T0 + 2 * HOUR + n, f"s{n}") for n in range(20)]
        assert fired(Engine(rules(rate_rule())), events) == []


class TestFilters:
    """`where` narrows a signal by bounce type, recipient domain globs and enhanced status."""

    def test_only_hard_bounces_count_for_a_hard_bounce_rule(self) -> None:
        """Soft and untyped bounces are not hard bounces."""
        events = [bounce(T0, "a", bounce_type="soft"), bounce(T0 + 1, "b", bounce_type=None), bounce(T0 + 2, "c")]
        the_rule = rule(count={"signal": "bounced", "where": {"bounce_type": "hard"}}, threshold=2)
        assert fired(Engine(rules(the_rule)), events) == []
        assert len(fired(Engine(rules(the_rule)), [*events, bounce(T0 + 3, "d")])) == 1

    @pytest.mark.parametrize(
        ("domain", "counts"),
        [
            ("gmail.com", True),
            ("outlook.de", True),
            ("outlook.com", True),
            ("yahoo.com", False),
            ("notgmail.com", False),
            ("gmail.com.evil.org", False),
            (None, False),
        ],
    )
    def test_recipient_domain_globs_match_whole_domains(self, domain: str | None, counts: bool) -> None:
        """'gmail.com' and 'outlook.*' match only domains they spell, never substrings."""
        the_rule = rule(
            count={"signal": "complained", "where": {"recipient_domain": ["GMAIL.com", "outlook.*"]}}, threshold=1
        )
        assert bool(fired(Engine(rules(the_rule)), [complaint(T0, "a", domain=domain)])) is counts

    @pytest.mark.parametrize(
        ("status", "counts"),
        [
            ("5.1.1", True),
            ("5.1.10", True),
            ("5.1.999", True),
            ("5.7.1", False),
            ("4.1.1", False),
            ("15.1.1", False),
            (None, False),
        ],
    )
    def test_smtp_status_patterns_use_x_as_a_wildcard(self, status: str | None, counts: bool) -> None:
        """'5.1.x' matches any detail code of 5.1 and nothing else."""
        the_rule = rule(count={"signal": "bounced", "where": {"smtp_status": "5.1.x"}}, threshold=1)
        assert bool(fired(Engine(rules(the_rule)), [bounce(T0, "a", status=status)])) is counts

    def test_all_filters_must_match(self) -> None:
        """A hard 5.1.1 bounce at yahoo.com fails a gmail filter even though the other two match."""
        the_rule = rule(
            count={
                "signal": "bounced",
                "where": {"bounce_type": "hard", "smtp_status": "5.1.x", "recipient_domain": "gmail.com"},
            },
            threshold=1,
        )
        assert fired(Engine(rules(the_rule)), [bounce(T0, "a", status="5.1.1", domain="yahoo.com")]) == []
        assert len(fired(Engine(rules(the_rule)), [bounce(T0, "a", status="5.1.1", domain="gmail.com")])) == 1

    def test_a_filtered_rate_counts_filtered_numerator_and_denominator(self) -> None:
        """Gmail complaints per Gmail send: other domains count in neither."""
        the_rule = rule(
            rate={
                "of": {"signal": "complained", "where": {"recipient_domain": "gmail.com"}},
                "per": {"signal": "sent", "where": {"recipient_domain": "gmail.com"}},
            },
            threshold="50%",
            min_volume=2,
        )
        events = [sent(T0, "g1", domain="gmail.com"), sent(T0 + 1, "g2", domain="gmail.com")]
        events += [sent(T0 + 2 + n, f"o{n}", domain="outlook.com") for n in range(10)]
        events += [complaint(T0 + 20, "o1", domain="outlook.com"), complaint(T0 + 21, "g1", domain="gmail.com")]
        [decision] = fired(Engine(rules(the_rule)), events)
        assert (decision.numerator, decision.denominator, decision.fired_at) == (1, 2, T0 + 21)


class TestCampaignFilters:
    """`campaigns.include` and `exclude` are globs over campaign ids; exclude wins."""

    @pytest.mark.parametrize(
        ("campaign", "applies"),
        [("vip-1", True), ("vip-europe", True), ("vip-test-1", False), ("regular", False), ("avip-1", False)],
    )
    def test_a_rule_applies_to_included_campaigns_not_excluded_ones(self, campaign: str, applies: bool) -> None:
        """include 'vip-*' with exclude 'vip-test*' covers vip-1 but not vip-test-1."""
        the_rule = rule(threshold=1, campaigns={"include": "vip-*", "exclude": ["vip-test*"]})
        assert bool(fired(Engine(rules(the_rule)), [bounce(T0, "a", campaign=campaign)])) is applies

    def test_evidence_is_kept_per_campaign(self) -> None:
        """Two bounces in each of two campaigns never make three in one."""
        events = [bounce(T0 + n, f"m{n}", campaign=("c1", "c2")[n % 2]) for n in range(4)]
        assert fired(Engine(rules(rule(threshold=3))), events) == []


class TestCooldown:
    """A rule fires once per breach and not again within its cooldown (alert rules here: after a
    pause decision, sends past the resume grace begin a new episode, see TestResume)."""

    RULE = rule(threshold=2, window="10m", cooldown="1h", action="alert")

    def test_a_breach_fires_once(self) -> None:
        """More bounces during the same breach add no decisions."""
        events = [bounce(T0 + n, f"m{n}") for n in range(10)]
        assert [decision.fired_at for decision in fired(Engine(rules(self.RULE)), events)] == [T0 + 1]

    def test_a_new_breach_within_the_cooldown_stays_quiet(self) -> None:
        """The condition clears (bounces expire), breaches again 20 minutes later: no second decision."""
        events = [
            bounce(T0, "a"),
            bounce(T0 + MINUTE, "b"),
            sent(T0 + 15 * MINUTE, "s"),
            bounce(T0 + 20 * MINUTE, "c"),
            bounce(T0 + 21 * MINUTE, "d"),
        ]
        assert [decision.fired_at for decision in fired(Engine(rules(self.RULE)), events)] == [T0 + MINUTE]

    def test_a_new_breach_after_the_cooldown_fires_again(self) -> None:
        """A breach 70 minutes after the first firing (cooldown 1h) is a new decision with a new id."""
        events = [
            bounce(T0, "a"),
            bounce(T0 + MINUTE, "b"),
            sent(T0 + 15 * MINUTE, "s"),
            bounce(T0 + 20 * MINUTE, "c"),
            bounce(T0 + 21 * MINUTE, "d"),
            sent(T0 + 35 * MINUTE, "t"),
            bounce(T0 + 70 * MINUTE, "e"),
            bounce(T0 + 71 * MINUTE, "f"),
        ]
        decisions = fired(Engine(rules(self.RULE)), events)
        assert [decision.fired_at for decision in decisions] == [T0 + MINUTE, T0 + 71 * MINUTE]
        assert decisions[0].id != decisions[1].id

    def test_a_breach_that_outlasts_the_cooldown_fires_at_the_first_event_after_it(self) -> None:
        """Quiet during the cooldown, then the breach still holding fires at the next event."""
        events = [
            bounce(T0, "a"),
            bounce(T0 + MINUTE, "b"),
            sent(T0 + 15 * MINUTE, "s"),
            bounce(T0 + 55 * MINUTE, "c"),
            bounce(T0 + 56 * MINUTE, "d"),
            bounce(T0 + 62 * MINUTE, "e"),
        ]
        assert [d.fired_at for d in fired(Engine(rules(self.RULE)), events)] == [T0 + MINUTE, T0 + 62 * MINUTE]

    def test_a_zero_cooldown_fires_on_every_new_breach(self) -> None:
        """With no cooldown, each breach after a clear fires once."""
        events = [
            bounce(T0, "a"),
            bounce(T0 + 1, "b"),
            sent(T0 + 15 * MINUTE, "s"),
            bounce(T0 + 20 * MINUTE, "c"),
            bounce(T0 + 20 * MINUTE + 1, "d"),
        ]
        decisions = fired(Engine(rules(rule(threshold=2, window="10m", cooldown=0))), events)
        assert [decision.fired_at for decision in decisions] == [T0 + 1, T0 + 20 * MINUTE + 1]


class TestRuleStateMemory:
    """A campaign no rule has a state for keeps the one shared empty dict (64 bytes each saved, over most of them);
    its first rule state gives it a dict of its own, its last one gone hands it back, and the shared one stays empty
    whatever the campaigns around it do."""

    def test_only_a_campaign_with_a_rule_state_has_a_dict_of_its_own(self) -> None:
        engine = Engine(rules(TestCooldown.RULE))
        run(engine, [bounce(T0, "a"), bounce(T0 + MINUTE, "b"), sent(T0 + MINUTE, "s", campaign="quiet")])
        assert engine._campaigns["quiet"].rule_states is NO_RULE_STATES
        assert set(engine._campaigns["c1"].rule_states) == {"r"}  # fired: cooling down
        run(engine, [sent(T0 + 62 * MINUTE, "t")])  # the bounces slid out and the cooldown is over: nothing to keep
        assert engine._campaigns["c1"].rule_states is NO_RULE_STATES
        run(engine, [bounce(T0 + 70 * MINUTE, "c"), bounce(T0 + 71 * MINUTE, "d")])  # a new breach, a new dict
        assert engine._campaigns["c1"].rule_states is not NO_RULE_STATES
        assert NO_RULE_STATES == {}

    def test_campaigns_copied_together_never_share_a_rule_state(self) -> None:
        """A deep copy gives its campaigns one empty dict that is not the shared one: still never written to."""
        engine = Engine(rules(TestCooldown.RULE))
        run(engine, [sent(T0, "s", campaign="quiet"), sent(T0, "t")])
        copied = copy.deepcopy(engine)
        assert copied._campaigns["c1"].rule_states is copied._campaigns["quiet"].rule_states  # the premise
        run(copied, [bounce(T0 + 1, "a"), bounce(T0 + 2, "b")])
        assert set(copied._campaigns["c1"].rule_states) == {"r"} and not copied._campaigns["quiet"].rule_states

    def test_a_restored_campaign_without_rule_states_shares_the_empty_dict(self) -> None:
        engine = Engine(rules(TestCooldown.RULE))
        run(engine, [bounce(T0, "a"), bounce(T0 + MINUTE, "b"), sent(T0 + MINUTE, "s", campaign="quiet")])
        restored = Engine(rules(TestCooldown.RULE))
        restore(snapshot(engine, rules(TestCooldown.RULE)), rules(TestCooldown.RULE), restored)
        assert restored._campaigns["quiet"].rule_states is NO_RULE_STATES
        assert set(restored._campaigns["c1"].rule_states) == {"r"}


class TestFor:
    """`for` makes a rule wait until its condition has held that long in event time."""

    RULE = rate_rule(threshold="50%", min_volume=2, **{"for": "10m"})

    def test_a_rule_with_for_waits_until_the_condition_held_long_enough(self) -> None:
        """Breached at +1m; nothing at +5m; fires at the first event 10 minutes after the breach began."""
        events = [
            *sends(2),
            bounce(T0 + MINUTE, "s0"),  # 1/2 holds from +1m
            complaint(T0 + 5 * MINUTE, "x"),
            bounce(T0 + 5 * MINUTE + 1, "s1"),  # still holding
            bounce(T0 + 11 * MINUTE, "x"),
        ]  # held for 10 minutes
        results = run(Engine(rules(self.RULE)), events)
        assert [n for n, decisions in enumerate(results) if decisions] == [5]
        assert results[5][0].fired_at == T0 + 11 * MINUTE

    def test_the_for_clock_restarts_when_the_condition_clears(self) -> None:
        """Breach at +1m, clear at +5m, breach at +6m: it fires 10 minutes after +6m, not after +1m."""
        events = [
            *sends(2),
            bounce(T0 + MINUTE, "s0"),  # 1/2 holds
            sent(T0 + 5 * MINUTE, "x"),
            sent(T0 + 5 * MINUTE + 1, "y"),  # 1/4 clears
            bounce(T0 + 6 * MINUTE, "s1"),  # 2/4 holds again
            bounce(T0 + 12 * MINUTE, "x"),  # would fire here without the clear
            bounce(T0 + 16 * MINUTE, "y"),
        ]
        decisions = fired(Engine(rules(self.RULE)), events)
        assert [decision.fired_at for decision in decisions] == [T0 + 16 * MINUTE]

    def test_without_for_the_same_events_fire_at_once(self) -> None:
        """The control: with for 0 the first breach fires at +1m."""
        events = [*sends(2), bounce(T0 + MINUTE, "s0")]
        [decision] = fired(Engine(rules(rate_rule(threshold="50%", min_volume=2))), events)
        assert decision.fired_at == T0 + MINUTE


class TestCampaignStarted:
    """`campaign.started` resets a campaign's evidence: a resumed campaign is not re-paused by old evidence."""

    def test_a_restarted_campaign_is_not_re_paused_by_old_evidence(self) -> None:
        """After firing on three bounces and a restart, two more bounces do not make five."""
        engine = Engine(rules(rule(threshold=3, cooldown=0)))
        events = [bounce(T0 + n, f"m{n}") for n in range(3)]
        assert len(fired(engine, events)) == 1
        after = [started(T0 + 10 * MINUTE), bounce(T0 + 11 * MINUTE, "n1"), bounce(T0 + 12 * MINUTE, "n2")]
        assert fired(engine, after) == []
        assert engine.stats.resets == 1

    def test_fresh_evidence_after_a_restart_fires_again(self) -> None:
        """The reset also clears the cooldown: three new bounces pause the resumed campaign again."""
        engine = Engine(rules(rule(threshold=3, cooldown="6h")))
        fired(engine, [bounce(T0 + n, f"m{n}") for n in range(3)])
        again = fired(engine, [started(T0 + 10 * MINUTE), *[bounce(T0 + 11 * MINUTE + n, f"n{n}") for n in range(3)]])
        assert [(decision.numerator, decision.fired_at) for decision in again] == [(3, T0 + 11 * MINUTE + 2)]

    def test_a_start_resets_only_its_own_campaign(self) -> None:
        """Another campaign's evidence survives."""
        engine = Engine(rules(rule(threshold=3)))
        fired(engine, [bounce(T0, "a", campaign="c2"), bounce(T0 + 1, "b", campaign="c2"), started(T0 + 2, "c1")])
        assert len(fired(engine, [bounce(T0 + 3, "c", campaign="c2")])) == 1

    def test_starting_an_unknown_campaign_is_no_reset(self) -> None:
        """A start for a campaign without state is no reset; the start time is remembered."""
        engine = Engine(rules(rule()))
        assert run(engine, [started(T0)]) == [[]]
        assert (engine.stats.resets, engine.campaigns) == (0, 1)

    def test_evidence_timed_before_a_restart_does_not_count_after_it(self) -> None:
        """Bounces from before the resume, delivered late (webhook retries), do not re-pause the campaign."""
        engine = Engine(rules(rule(threshold=2)))
        fired(engine, [bounce(T0 + 100, "a"), bounce(T0 + 200, "b")])
        late = [started(T0 + 300), bounce(T0 + 250, "c"), bounce(T0 + 260, "d")]
        assert fired(engine, late) == []

    @staticmethod
    def stale_list(first: int, last: int) -> list[Event]:
        """Sends one a minute with every fifth one hard-bouncing a minute later: 20% hard bounces."""
        events: list[Event] = []
        for n in range(first, last):
            events.append(sent(T0 + n * MINUTE, f"s{n}"))
            if n % 5 == 4:
                events.append(bounce(T0 + n * MINUTE + 30, f"s{n}"))
        return events

    @pytest.mark.parametrize("kinds", KINDS)
    @pytest.mark.parametrize("retry_after", [10, 40], ids=["before-the-pause", "after-the-pause"])
    def test_a_start_delivered_again_keeps_the_evidence_counted_since(self, kinds: Kinds, retry_after: int) -> None:
        """Leadterra retries a webhook for hours and `campaign.started` has no messageId: its second delivery, stamped
        with the episode's own start, arrives behind the sends. It pauses the stale list at the same send as without."""
        stale = rules(rate_rule(threshold="10%", min_volume=20))
        events = [started(T0 - 1), *self.stale_list(0, 60)]
        expected = fired(Engine(stale, kinds=kinds, resume_grace=DAY), events)
        assert len(expected) == 1  # the control: the stale list is paused
        at = events.index(sent(T0 + retry_after * MINUTE, f"s{retry_after}"))
        engine = Engine(stale, kinds=kinds, resume_grace=DAY)
        assert fired(engine, [*events[:at], started(T0 - 1), *events[at:]]) == expected
        assert (engine.stats.resets, engine.stats.duplicates) == (0, 1)

    @pytest.mark.parametrize("seen", [False, True], ids=["start-never-seen", "start-seen"])
    def test_a_start_stamped_before_the_pause_in_force_leaves_it_in_force(self, seen: bool) -> None:
        """The stale list paused, its owner resumes it within the grace, and then the retry of a start stamped before
        the pause arrives: the pause stays in force, so the old list's late bounces are covered by it, not counted
        against the resumed campaign (they paused it a second time)."""
        stale = rules(rate_rule(threshold="10%", min_volume=20))
        events = [*([started(T0 - 1)] if seen else []), *self.stale_list(0, 30)]
        engine = Engine(stale, resume_grace=DAY)
        [pause] = fired(engine, events)
        assert engine.episode("c1").pause == pause.id
        late_bounces = [bounce(T0 + 31 * MINUTE + n, f"s{n}") for n in range(0, 30, 5) if n % 5 != 4]
        assert fired(engine, [started(T0 - 1), *late_bounces]) == []
        assert engine.episode("c1").pause == pause.id and engine.stats.resets == 0

    def test_an_older_start_delivered_after_a_restart_is_history(self) -> None:
        """A retried start of the episode before the current one begins nothing: the current one's evidence stays."""
        engine = Engine(rules(rule(threshold=3, cooldown=0)))
        fired(engine, [started(T0), bounce(T0 + 1, "a"), started(T0 + HOUR), bounce(T0 + HOUR + 1, "b")])
        assert fired(engine, [started(T0), bounce(T0 + HOUR + 2, "c")]) == []
        assert len(fired(engine, [bounce(T0 + HOUR + 3, "d")])) == 1
        assert engine.stats.resets == 1

    def test_a_start_first_seen_behind_the_sends_marks_the_episode_and_keeps_them(self) -> None:
        """Its first delivery lost, a start retried a quarter of an hour later is behind the sends counted since: they stay (the
        stale list is paused as without it), and outcomes of mail from before it no longer count."""
        stale = rules(rate_rule(threshold="10%", min_volume=20))
        events = self.stale_list(0, 60)
        expected = fired(Engine(stale, resume_grace=DAY), events)
        assert len(expected) == 1
        at = events.index(sent(T0 + 15 * MINUTE, "s15"))
        engine = Engine(stale, resume_grace=DAY)
        [decision] = fired(engine, [*events[:at], started(T0), *events[at:]])
        assert (decision.fired_at, decision.numerator, decision.denominator, decision.episode_began) == (
            expected[0].fired_at,
            expected[0].numerator,
            expected[0].denominator,
            EpisodeStart.STARTED,
        )
        assert engine.stats.resets == 0
        assert engine.episode("c1").began is EpisodeStart.STARTED
        marked = Engine(rules(rule(threshold=1)))
        fired(marked, [sent(T0 + 5 * MINUTE, "m"), sent(T0 + 7 * MINUTE, "n"), started(T0 + 4 * MINUTE)])
        assert fired(marked, [bounce(T0 + 3 * MINUTE, "early")]) == []  # stamped before the start: history
        assert len(fired(marked, [bounce(T0 + 8 * MINUTE, "n")])) == 1

    @pytest.mark.parametrize("start_late", [False, True], ids=["start-in-order", "start-after-the-first-new-send"])
    def test_a_restart_whose_start_comes_late_drops_the_run_before_it(self, start_late: bool) -> None:
        """A campaign running since before the guard's look-back (its start never seen) is stopped, cleaned and
        started again; its `campaign.started` arrives after the cleaned list's first send. The run before it stops
        counting, as when the start comes in order: the cleaned list's first bounce does not pause it."""
        engine = Engine(rules(rule(threshold=3, cooldown=0)))
        fired(engine, [sent(T0, "a"), bounce(T0 + 1, "a"), sent(T0 + 2, "b"), bounce(T0 + 3, "b")])
        restart = [started(T0 + 10 * MINUTE), sent(T0 + 10 * MINUTE + 1, "c")]
        assert fired(engine, restart[::-1] if start_late else restart) == []
        assert fired(engine, [bounce(T0 + 11 * MINUTE, "c")]) == []
        assert engine.stats.resets == 1


class TestDuplicates:
    """The same (signal, messageId) delivered twice counts once."""

    def test_a_duplicate_counts_once(self) -> None:
        """Three deliveries of one bounce are one bounce."""
        engine = Engine(rules(rule(threshold=2)))
        assert fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "a"), bounce(T0 + 2, "a")]) == []
        assert engine.stats.duplicates == 2

    def test_the_same_message_id_under_another_signal_counts(self) -> None:
        """A message is sent, then bounces: both events count."""
        engine = Engine(rules(rate_rule(threshold="50%", min_volume=2)))
        assert len(fired(engine, [sent(T0, "a"), sent(T0 + 1, "b"), bounce(T0 + 2, "a")])) == 1
        assert engine.stats.duplicates == 0

    def test_the_same_message_id_in_another_campaign_counts(self) -> None:
        """Duplicates are per campaign."""
        engine = Engine(rules(rule(threshold=1)))
        assert len(fired(engine, [bounce(T0, "a", campaign="c1"), bounce(T0 + 1, "a", campaign="c2")])) == 2

    def test_events_without_a_message_id_are_never_duplicates(self) -> None:
        """Without an id nothing can be deduplicated."""
        engine = Engine(rules(rule(threshold=3)))
        assert len(fired(engine, [bounce(T0), bounce(T0), bounce(T0)])) == 1
        assert engine.stats.duplicates == 0

    def test_a_duplicate_after_the_dedupe_horizon_counts_again(self) -> None:
        """Ids are remembered for the horizon only (bounded memory; forgetting happens as new ids arrive)."""
        engine = Engine(rules(rule(threshold=2)), dedupe_horizon=10 * MINUTE)
        events = [
            bounce(T0, "a"),
            sent(T0 + 20 * MINUTE, "s"),
            sent(T0 + 20 * MINUTE, "t"),
            bounce(T0 + 21 * MINUTE, "a"),
        ]
        assert len(fired(engine, events)) == 1


class TestLateEvents:
    """Late events (behind the campaign's latest time) count within the window and are dropped beyond it."""

    def test_a_late_event_within_the_window_counts(self) -> None:
        """Bounces at +30m and +40m, then one from +10m: three in the hour, fired at the latest time."""
        engine = Engine(rules(rule(threshold=3)))
        [decision] = fired(
            engine, [bounce(T0 + 30 * MINUTE, "a"), bounce(T0 + 40 * MINUTE, "b"), bounce(T0 + 10 * MINUTE, "c")]
        )
        assert (decision.numerator, decision.fired_at, decision.evidence_from) == (
            3,
            T0 + 40 * MINUTE,
            T0 + 10 * MINUTE,
        )
        assert engine.stats.late == 0

    def test_a_late_event_older_than_the_window_is_dropped_and_counted(self) -> None:
        """A bounce two hours behind the others does not count and shows in stats.late."""
        engine = Engine(rules(rule(threshold=3)))
        events = [bounce(T0 + 2 * HOUR, "a"), bounce(T0 + 2 * HOUR + 1, "b"), bounce(T0, "c")]
        assert fired(engine, events) == []
        assert engine.stats.late == 1

    def test_a_late_event_does_not_move_the_clock_back(self) -> None:
        """After a late event, evidence still expires relative to the latest time seen."""
        engine = Engine(rules(rule(threshold=2)))
        events = [
            bounce(T0, "a"),
            sent(T0 + 2 * HOUR, "s"),
            bounce(T0 + 30 * MINUTE, "late"),
            bounce(T0 + 2 * HOUR + 1, "b"),
        ]
        assert fired(engine, events) == []

    def test_one_late_event_counts_once_in_the_stats(self) -> None:
        """A send ten hours late, counted by two rules with different windows, is one late event."""
        engine = Engine(
            rules(rule("a", count="sent", threshold=1000), rule("b", count="sent", window="2h", threshold=1000))
        )
        run(engine, [sent(T0 + 10 * HOUR, "new"), sent(T0, "old")])
        assert engine.stats.late == 1

    def test_a_late_event_is_counted_even_when_it_is_the_first_of_its_series(self) -> None:
        """A bounce ten hours behind the campaign's sends is late although no bounce came before it."""
        engine = Engine(rules(rule(threshold=1)))
        assert fired(engine, [sent(T0 + 10 * HOUR, "s"), bounce(T0, "old")]) == []
        assert engine.stats.late == 1

    def test_a_decision_names_only_message_ids_within_its_window(self) -> None:
        """A bounce two hours old is not evidence of a decision over one hour."""
        engine = Engine(rules(rule(threshold=1, cooldown="1m")))
        # the campaign stays active (events every 40 minutes) while "old" slides out of the window
        events = [
            bounce(T0, "old"),
            sent(T0 + 40 * MINUTE, "s1"),
            sent(T0 + 80 * MINUTE, "s2"),
            bounce(T0 + 2 * HOUR, "new"),
        ]
        decisions = fired(engine, events)
        assert [(decision.numerator, decision.fired_at) for decision in decisions] == [(1, T0), (1, T0 + 2 * HOUR)]
        assert decisions[-1].message_ids == ("new",)


class TestDecisionIds:
    """Decision ids are deterministic: a replay after a crash gives the same decisions and ids."""

    EVENTS = [
        *sends(20),
        bounce(T0 + 30, "s3"),
        bounce(T0 + 31, "s7"),
        bounce(T0 + 40, "a", campaign="c2"),
        bounce(T0 + 41, "b", campaign="c2"),
        bounce(T0 + 42, "c", campaign="c2"),
    ]
    RULES = rules(rate_rule(), rule("spike", threshold=3))

    def test_the_same_events_through_fresh_engines_give_equal_decisions(self) -> None:
        """Two engines, the same log: equal decisions with equal ids."""
        first, second = fired(Engine(self.RULES), self.EVENTS), fired(Engine(self.RULES), self.EVENTS)
        assert len(first) == 2
        assert first == second
        assert [decision.id for decision in first] == [decision.id for decision in second]

    def test_ids_differ_between_campaigns_rules_and_times(self) -> None:
        """Different firings never share an id."""
        a_rule, other = rule("a"), rule("b")
        ids = {
            decision_id("c1", a_rule, T0),
            decision_id("c2", a_rule, T0),
            decision_id("c1", other, T0),
            decision_id("c1", a_rule, T0 + 1),
            decision_id("c1", rule("a", threshold=4), T0),
        }
        assert len(ids) == 5

    def test_an_id_is_a_uuid_that_rounds_to_the_millisecond(self) -> None:
        """The id is a UUID; times equal to the millisecond give one id."""
        the_rule = rule()
        assert decision_id("c1", the_rule, T0 + 0.0001) == decision_id("c1", the_rule, T0)
        assert len(decision_id("c1", the_rule, T0)) == 36


class TestSetRules:
    """Swapping the rule set keeps the evidence of every series the new set still uses."""

    def test_a_changed_threshold_keeps_the_evidence_and_fires(self) -> None:
        """Two bounces under a threshold of 3; lowered to 2, the next event fires on the same evidence."""
        engine = Engine(rules(rule(threshold=3)))
        assert fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")]) == []
        engine.set_rules(rules(rule(threshold=2)))
        [decision] = fired(engine, [sent(T0 + 2, "s")])
        assert (decision.numerator, decision.rule.threshold, decision.message_ids) == (2, 2.0, ("a", "b"))

    def test_a_changed_window_starts_its_evidence_afresh(self) -> None:
        """A series over another window is another series: nothing carries over."""
        engine = Engine(rules(rule(threshold=3)))
        fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])
        engine.set_rules(rules(rule(threshold=3, window="2h")))
        assert fired(engine, [bounce(T0 + 2, "c")]) == []

    def test_a_firing_rule_stays_quiet_after_an_unrelated_change(self) -> None:
        """Changing the description does not make a rule fire again during the same breach."""
        engine = Engine(rules(rule(threshold=2)))
        assert len(fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])) == 1
        engine.set_rules(rules(rule(threshold=2, description="reworded")))
        assert fired(engine, [bounce(T0 + 2, "c")]) == []

    def test_an_alert_made_a_pause_pauses_a_campaign_already_over_its_line(self) -> None:
        """An alert fired and its breach goes on; the rule reloaded as a pause pauses at the next event, its alert's
        cooldown notwithstanding: the breach raised an alert and paused nothing."""
        engine = Engine(rules(rule(threshold=2, action="alert", cooldown="6h")))
        [alert] = fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])
        assert alert.rule.action == "alert"
        engine.set_rules(rules(rule(threshold=2, action="pause", cooldown="6h")))
        [pause] = fired(engine, [sent(T0 + 2, "s")])
        assert (pause.rule.action, pause.numerator, pause.superseded_by) == ("pause", 2, None)
        assert fired(engine, [bounce(T0 + 3, "c")]) == []  # then quiet for the rest of that breach

    def test_an_alert_made_a_pause_is_covered_by_a_pause_in_force(self) -> None:
        """The campaign is paused already (another rule): the promoted rule's decision is covered, no second call."""
        engine = Engine(
            rules(rule("alerting", threshold=2, action="alert"), rule("pausing", count="complained", threshold=1))
        )
        decisions = fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b"), complaint(T0 + 2, "a")])
        assert [d.rule.name for d in decisions] == ["alerting", "pausing"]
        engine.set_rules(
            rules(rule("alerting", threshold=2, action="pause"), rule("pausing", count="complained", threshold=1))
        )
        [promoted] = fired(engine, [sent(T0 + 3, "s")])
        assert (promoted.rule.name, promoted.superseded_by) == ("alerting", decisions[1].id)

    def test_a_pause_made_an_alert_stays_quiet_in_the_same_breach(self) -> None:
        """The breach was paused; the same rule as an alert has nothing new to say until it ends."""
        engine = Engine(rules(rule(threshold=2)))
        assert len(fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])) == 1
        engine.set_rules(rules(rule(threshold=2, action="alert")))
        assert fired(engine, [bounce(T0 + 2, "c")]) == []

    def test_a_removed_rule_no_longer_fires(self) -> None:
        """Evidence of a rule that is gone cannot fire it."""
        engine = Engine(rules(rule("a", threshold=3), rule("b", count="complained", threshold=1)))
        fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])
        engine.set_rules(rules(rule("b", count="complained", threshold=1)))
        assert fired(engine, [bounce(T0 + 2, "c")]) == []

    def test_a_new_campaign_filter_applies_to_existing_campaigns(self) -> None:
        """Excluding a campaign stops its rule from firing there."""
        engine = Engine(rules(rule(threshold=3)))
        fired(engine, [bounce(T0, "a"), bounce(T0 + 1, "b")])
        engine.set_rules(rules(rule(threshold=3, campaigns={"exclude": "c1"})))
        assert fired(engine, [bounce(T0 + 2, "c")]) == []

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_longer_count_window_on_the_same_sends_judges_its_whole_length(self, kinds: Kinds) -> None:
        """`last: 200` added beside a `last: 50` of the same sends: the campaign's ring grows, keeping its last 50
        sends, and bad mail after the reload pauses by the new rule as a fresh engine does."""
        longer = last_rule(200, threshold="10%", min_volume=200).model_copy(update={"name": "longer"})
        self.judged_as_fresh(kinds, rules(BURST), rules(BURST, longer), "longer")

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_count_window_made_longer_judges_its_whole_length(self, kinds: Kinds) -> None:
        """The same rule reloaded from `last: 50` to `last: 200`: judged over 200 sends, as a fresh engine does."""
        self.judged_as_fresh(kinds, rules(last_rule(50)), rules(last_rule(200, min_volume=200)), "last")

    @staticmethod
    def judged_as_fresh(kinds: Kinds, before: RuleSet, after: RuleSet, rule_name: str) -> None:
        """Healthy mail (no hard bounce among its last 50 sends), the reload, then 200 sends at 10%: the reloaded
        engine and a fresh one fed the mail after the reload alone pause alike, at the 200th send's bounce."""
        engine, fresh = Engine(before, kinds=kinds), Engine(after, kinds=kinds)
        assert fired(engine, stretch(T0, 300, 120, "old")) == []
        kept = {name: measure for name, measure in engine.measure("c1").items() if name != rule_name}
        engine.set_rules(after)
        measures = engine.measure("c1")
        assert (measures[rule_name].numerator, measures[rule_name].denominator) == (0, 50)  # the 50 sends it holds
        assert {name: measures[name] for name in kept} == kept
        bad = stretch(T0 + 400, 200, 10, "new")
        decisions = fired(engine, bad)
        assert decisions == fired(fresh, bad)
        assert [(d.rule.name, d.numerator, d.denominator, d.fired_at) for d in decisions] == [
            (rule_name, 20, 200, T0 + 400 + 199.5)
        ]


class TestRetention:
    """Campaigns idle for longer than any rule can look back are dropped (bounded memory)."""

    def test_idle_campaigns_are_dropped_after_the_retention(self) -> None:
        """c1 quiet for five hours (window and cooldown 1h) is dropped when c2's time moves on."""
        engine = Engine(rules(rule()))
        run(engine, [bounce(T0, "a", campaign="c1"), bounce(T0 + 1, "b", campaign="c2")])
        assert engine.campaigns == 2
        run(engine, [bounce(T0 + 5 * HOUR, "c", campaign="c2")])
        assert engine.campaigns == 1
        assert engine.stats.dropped_campaigns == 1

    def test_campaigns_within_the_retention_are_kept(self) -> None:
        """Half an hour of quiet is within a one-hour retention."""
        engine = Engine(rules(rule()))
        run(engine, [bounce(T0, "a", campaign="c1"), bounce(T0 + 30 * MINUTE, "b", campaign="c2")])
        assert engine.campaigns == 2

    def test_the_longest_cooldown_sets_the_retention(self) -> None:
        """With a 6h cooldown, a campaign quiet for two hours is kept (it may still be cooling down)."""
        engine = Engine(rules(rule(cooldown="6h")))
        run(engine, [bounce(T0, "a", campaign="c1"), bounce(T0 + 2 * HOUR, "b", campaign="c2")])
        assert engine.campaigns == 2

    def test_a_campaign_lagging_behind_the_partition_keeps_its_evidence(self) -> None:
        """Three bounces within two minutes of c1's own time fire, however far ahead c2's clock runs."""
        engine = Engine(rules(rule(threshold=3)))
        events = []
        for n in range(3):
            events += [sent(T0 + 3 * HOUR + n * 10 * MINUTE, f"s{n}", campaign="c2"), bounce(T0 + n * MINUTE, f"b{n}")]
        assert len(fired(engine, events)) == 1

    def test_a_dropped_campaign_starts_afresh(self) -> None:
        """Its old evidence had expired anyway: a returning campaign counts from zero."""
        engine = Engine(rules(rule(threshold=3)))
        run(engine, [bounce(T0, "a"), bounce(T0 + 1, "b"), bounce(T0 + 3 * HOUR, "x", campaign="c2")])
        assert fired(engine, [bounce(T0 + 3 * HOUR + 1, "c")]) == []


class TestActions:
    """The rule's action, pause or alert, is carried on the decision."""

    @pytest.mark.parametrize("action", ["pause", "alert"])
    def test_the_decision_carries_the_rule_action(self, action: str) -> None:
        """decision.action is the rule's action."""
        [decision] = fired(Engine(rules(rule(threshold=1, action=action))), [bounce(T0, "a")])
        assert decision.action == action

    def test_the_default_action_is_pause(self) -> None:
        """A rule without `action` pauses."""
        [decision] = fired(Engine(rules(rule(threshold=1))), [bounce(T0, "a")])
        assert decision.action == "pause"

    def test_rules_fire_independently(self) -> None:
        """An alert rule and a pause rule over the same evidence both decide, in rule order."""
        both = rules(rule("alert-early", threshold=1, action="alert"), rule("pause-later", threshold=2))
        decisions = fired(Engine(both), [bounce(T0, "a"), bounce(T0 + 1, "b")])
        assert [(d.rule.name, d.action, d.fired_at) for d in decisions] == [
            ("alert-early", "alert", T0),
            ("pause-later", "pause", T0 + 1),
        ]


class TestStats:
    """The engine counts what it saw, for metrics."""

    def test_every_event_is_counted(self) -> None:
        """events counts every processed event, starts, duplicates and late ones included."""
        engine = Engine(rules(rule()))
        run(engine, [bounce(T0 + 2 * HOUR, "a"), bounce(T0 + 2 * HOUR, "a"), bounce(T0, "old"), started(T0 + 3 * HOUR)])
        assert (engine.stats.events, engine.stats.duplicates, engine.stats.late, engine.stats.resets) == (4, 1, 1, 1)


class TestNonFiniteRules:
    """A rule the loader accepts never crashes the engine."""

    def test_an_infinite_cooldown_is_refused_before_it_reaches_the_engine(self) -> None:
        """Durations are finite: 'fire once per campaign' is written as a long cooldown (up to 30d)."""
        with pytest.raises(ValidationError, match="finite number of seconds"):
            rule(threshold=1, cooldown=float("inf"))


def last_rule(size: int = 50, **fields: object) -> Rule:
    """Hard bounces among the last `size` sends, 10% with at least 20 sends, unless told otherwise."""
    return rate_rule("last", window=None, last=size, **fields)


class TestCountWindows:
    """`last: N` judges the campaign's last N sends, however long they took."""

    def test_fires_on_the_bounce_that_crosses_among_the_last_sends(self) -> None:
        """5 bounces after 50 sends (10% of the last 50) fire at the fifth, with 5/50 as evidence."""
        engine = Engine(rules(last_rule()))
        decisions = fired(engine, sends(50, step=600.0) + [bounce(T0 + 40_000 + n, f"b{n}") for n in range(5)])
        assert [(d.numerator, d.denominator, d.fired_at) for d in decisions] == [(5, 50, T0 + 40_004)]
        assert decisions[0].message_ids == ("b2", "b3", "b4")

    def test_bounces_leave_the_window_as_new_sends_arrive(self) -> None:
        """4 bounces, then 50 more sends push them out: the next bounce is 1 of 50."""
        engine = Engine(rules(last_rule(threshold="5%")))
        bounces = [bounce(T0 + 100 + n, f"b{n}") for n in range(2)]
        later = sends(50, start=T0 + 200, prefix="late")
        assert fired(engine, sends(50) + bounces + later + [bounce(T0 + 300, "b9")]) == []
        assert engine.measure("c1")["last"].numerator == 1

    def test_a_bounce_counts_with_its_own_send(self) -> None:
        """Bounces quoting sends 10-14 of 60 count while those sends are among the last 50, and leave with them;
        bounces of no send still in memory (an unknown id, or none) count as the latest send's."""
        engine = Engine(rules(last_rule(threshold="50%")))
        run(engine, sends(60) + [bounce(T0 + 100 + n, f"s{10 + n}") for n in range(5)])
        assert engine.measure("c1")["last"].numerator == 5
        run(engine, sends(3, start=T0 + 200, prefix="t"))
        assert engine.measure("c1")["last"].numerator == 2  # s10-s12 left the last 50
        run(engine, [bounce(T0 + 300, "s0"), bounce(T0 + 301)] + sends(47, start=T0 + 400, prefix="u"))
        assert engine.measure("c1")["last"].numerator == 2  # the latest two sends' bounces, as they arrived

    def test_needs_min_volume_sends_before_judging(self) -> None:
        """3 bounces after 10 sends is 30%, but 10 sends are below min_volume 20."""
        engine = Engine(rules(last_rule()))
        assert fired(engine, sends(10) + [bounce(T0 + 20 + n, f"b{n}") for n in range(3)]) == []

    def test_evidence_starts_at_the_oldest_send_the_window_counted(self) -> None:
        """60 sends ten minutes apart, then 5 bounces: the last 50 sends began with the 11th send, not at the firing."""
        engine = Engine(rules(last_rule()))
        decisions = fired(engine, sends(60, step=600.0) + [bounce(T0 + 40_000 + n, f"b{n}") for n in range(5)])
        assert [(d.denominator, d.evidence_from, d.fired_at) for d in decisions] == [(50, T0 + 6000, T0 + 40_004)]

    def test_evidence_of_a_campaign_with_fewer_sends_starts_at_its_first(self) -> None:
        """25 sends (min_volume 20), 3 bounces: the evidence is every send, from the first one."""
        engine = Engine(rules(last_rule()))
        [decision] = fired(
            engine, sends(25, start=T0 + 0.75, step=60.0) + [bounce(T0 + 2000 + n, f"b{n}") for n in range(3)]
        )
        assert (decision.denominator, decision.evidence_from) == (25, T0)  # whole seconds, rounded down

    def test_evidence_start_follows_the_window_around_its_ring(self) -> None:
        """Past its size, the window's oldest send moves on with every send: 120 sends, the last 50 began at the 71st."""
        engine = Engine(rules(last_rule(threshold="5%", min_volume=50)))
        events = sends(120, step=10.0) + [bounce(T0 + 1200 + n, f"b{n}") for n in range(3)]
        [decision] = fired(engine, events)
        assert (decision.denominator, decision.evidence_from) == (50, T0 + 700)

    def test_the_audit_window_names_the_count(self) -> None:
        """Audit evidence says 'last 50' instead of a duration."""
        from guard.actions.audit import audit_event

        [decision] = fired(Engine(rules(last_rule())), sends(50) + [bounce(T0 + 60 + n, f"b{n}") for n in range(5)])
        assert audit_event(decision, "fired", decided_at=T0, dry_run=True).evidence.window == "last 50"


class TestConfidence:
    """`confidence` fires on the Wilson lower bound of the rate, not the raw rate."""

    def test_a_tiny_sample_over_the_threshold_does_not_fire(self) -> None:
        """2 bounces in 20 sends is 10%, but its 95% lower bound is far below 10%."""
        engine = Engine(rules(rate_rule(threshold="5%", confidence=0.95)))
        assert fired(engine, sends(20) + [bounce(T0 + 30, "b0"), bounce(T0 + 31, "b1")]) == []
        measure = engine.measure("c1")["rate"]
        assert measure.value == pytest.approx(0.1) and measure.lower_bound < 0.05

    def test_a_large_disaster_fires_as_soon_as_the_bound_crosses(self) -> None:
        """At 50% bounces on 20 sends the lower bound passes 5% on the bounce that crosses it."""
        engine = Engine(rules(rate_rule(threshold="5%", confidence=0.95)))
        decisions = fired(engine, sends(20) + [bounce(T0 + 30 + n, f"b{n}") for n in range(10)])
        assert len(decisions) == 1
        assert decisions[0].lower_bound is not None and decisions[0].lower_bound >= 0.05
        assert decisions[0].numerator == 3  # the bound of 3/20 is ~5.2%; of 2/20 ~2.8%

    def test_more_bounces_than_sends_never_breaks_the_bound(self) -> None:
        """Bounces of earlier mail can outnumber the sends in a window: the rate is over 100%, the bound at most 1."""
        engine = Engine(rules(last_rule(min_volume=1, confidence=0.6)))
        decisions = fired(engine, [bounce(T0, "b0"), sent(T0 + 1, "s0"), bounce(T0 + 2, "b1")])
        assert [(d.numerator, d.denominator) for d in decisions] == [(1, 1)]
        measure = engine.measure("c1")["last"]
        assert (measure.numerator, measure.denominator) == (2, 1)
        assert measure.lower_bound is not None and 0.0 < measure.lower_bound <= 1.0

    def test_the_bound_is_the_wilson_score_interval(self) -> None:
        """Checked against a published value: 81 of 263 at z=1.96 gives 0.2553."""
        from guard.engine.measure import wilson_lower_bound

        assert wilson_lower_bound(81, 263, 1.959964) == pytest.approx(0.2553, abs=1e-4)
        assert wilson_lower_bound(0, 0, 1.96) == 0.0


class TestKeepFiringFor:
    """`keep_firing_for` stops a flapping condition from firing once per flap."""

    def test_a_dip_shorter_than_keep_firing_for_is_the_same_breach(self) -> None:
        """Count 3 reached, dips to 0 as the window slides past, back to 3 within 3 min: one decision."""
        flapping = (
            [bounce(T0 + n, f"a{n}") for n in range(3)]
            + [sent(T0 + 30 * MINUTE, "s0"), sent(T0 + 61 * MINUTE, "s1")]
            + [bounce(T0 + (62 + n) * MINUTE, f"b{n}") for n in range(3)]
        )
        without = fired(Engine(rules(rule(cooldown="1m", action="alert"))), flapping)
        with_keep = fired(Engine(rules(rule(cooldown="1m", keep_firing_for="30m", action="alert"))), flapping)
        assert (len(without), len(with_keep)) == (2, 1)


class TestLastAndConfidenceValidation:
    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"window": "1h", "last": 200}, "exactly one of `window`"),
            ({"window": None}, "exactly one of `window`"),
            ({"window": None, "last": 100, "min_volume": 200}, "can never be reached"),
            ({"confidence": 1.5}, "less than 1"),
        ],
        ids=["both-windows", "no-window", "min-volume-above-last", "confidence-range"],
    )
    def test_rate_rules_reject_inconsistent_windows(self, fields: dict, message: str) -> None:
        """A rate rule has one window kind, a reachable min_volume and a confidence below 1."""
        with pytest.raises(ValidationError, match=message):
            rate_rule(**fields)

    def test_count_rules_take_neither_last_nor_confidence(self) -> None:
        """`last` and `confidence` only make sense for rates."""
        with pytest.raises(ValidationError, match="rate rules only"):
            rule(confidence=0.9)


def stretch(start: float, count: int, bounce_every: int, prefix: str, step: float = 1.0) -> list[Event]:
    """`count` sends `step` apart, each `bounce_every`-th followed by its hard bounce."""
    events = []
    for n in range(count):
        events.append(sent(start + n * step, f"{prefix}{n}"))
        if (n + 1) % bounce_every == 0:
            events.append(bounce(start + n * step + step / 2, f"{prefix}{n}"))
    return events


# the shipped hard-bounce-rate, in short: 4% of the last 150 sends, beyond doubt, with at least 50 sends
HARD_BOUNCES = last_rule(150, threshold="4%", confidence=0.999, min_volume=50, cooldown="1h")
# and hard-bounce-burst: 8% of the last 50, beyond doubt, with at least 20 sends
BURST = last_rule(50, threshold="8%", confidence=0.999, min_volume=20, cooldown="1h").model_copy(
    update={"name": "burst"}
)
GRACE = 5 * MINUTE


class TestResume:
    """A paused campaign that sends again after the grace is running again: judged on its new evidence only."""

    def paused(self, engine: Engine) -> Decision:
        """A stale list (20% hard bounces) sends until it is paused; the pause decision."""
        for event in stretch(T0, 200, 5, "old"):
            if decisions := engine.process(event):
                [decision] = decisions
                assert decision.action == "pause"
                return decision
        raise AssertionError("the stale list was never paused")

    def stale_list(self, engine: Engine) -> Decision:
        """400 sends at 20% hard bounces in 200 s, the pause landing among them (the rest is mail in
        flight), through both hard-bounce rules; the first pause decision."""
        decisions = fired(engine, stretch(T0, 400, 5, "old", step=0.5))
        assert decisions and decisions[0].action == "pause"
        return decisions[0]

    @pytest.mark.parametrize("stop", [10 * MINUTE, 2 * HOUR, 3 * DAY], ids=["short-within-cooldown", "long", "days"])
    @pytest.mark.parametrize("with_start", [False, True], ids=["no-start-event", "campaign-started"])
    def test_a_cleaned_list_is_left_alone_after_the_resume(self, stop: float, with_start: bool) -> None:
        """Resumed at 1% hard bounces after a short or long stop, with or without campaign.started: no decision."""
        engine = Engine(rules(HARD_BOUNCES, BURST), resume_grace=GRACE)
        self.stale_list(engine)
        resumed_at = T0 + 200 + stop  # after the last of the stale list
        after = ([started(resumed_at)] if with_start else []) + stretch(resumed_at, 400, 100, "new")
        assert fired(engine, after) == []

    @pytest.mark.parametrize("stop", [10 * MINUTE, 2 * HOUR, 3 * DAY], ids=["short-within-cooldown", "long", "days"])
    @pytest.mark.parametrize("with_start", [False, True], ids=["no-start-event", "campaign-started"])
    def test_a_still_bad_list_is_paused_again_on_new_evidence_only(self, stop: float, with_start: bool) -> None:
        """Resumed at 20%: paused again, within or after the cooldown, on evidence from after the resume only."""
        engine = Engine(rules(HARD_BOUNCES, BURST), resume_grace=GRACE)
        self.stale_list(engine)
        resumed_at = T0 + 200 + stop  # after the last of the stale list
        after = ([started(resumed_at)] if with_start else []) + stretch(resumed_at, 200, 5, "new")  # within a grace
        again = fired(engine, after)
        assert again, "a still-bad list must be paused again"
        first = again[0]
        assert first.superseded_by is None  # a new pause that calls Leadterra, not `already_paused`
        assert first.evidence_from >= resumed_at
        assert first.denominator >= first.rule.min_volume  # counted after the resume only
        assert all(message_id.startswith("new") for message_id in first.message_ids)
        if stop > rules(HARD_BOUNCES).retention and not with_start:
            # idle past every look-back: the campaign was forgotten, so all it has is new evidence
            assert (first.episode_from, engine.stats.resumes) == (None, 0)
        elif stop > MAX_AHEAD_SECONDS:
            # the partition was quiet for longer than the forged-timestamp limit: its first event (the
            # campaign.started) counts at the partition's old clock, and the sends after it lie past
            # every look-back, so the campaign starts afresh with no episode known; still new evidence only
            assert (first.episode_from, engine.stats.ahead) == (None, 1)
        else:
            assert first.episode_from == resumed_at
            assert first.episode_began == ("started" if with_start else "resumed")
            assert engine.stats.resumes == (0 if with_start else 1)

    def test_the_resumed_campaign_decides_as_a_new_campaign_would(self) -> None:
        """After the resume, the decisions are exactly those of a fresh engine fed only the new events."""
        engine, fresh = Engine(rules(HARD_BOUNCES), resume_grace=GRACE), Engine(rules(HARD_BOUNCES))
        pause = self.paused(engine)
        after = stretch(pause.fired_at + HOUR, 300, 8, "new")
        resumed, alone = fired(engine, after), fired(fresh, after)
        assert [(d.id, d.numerator, d.denominator, d.evidence_from) for d in resumed] == [
            (d.id, d.numerator, d.denominator, d.evidence_from) for d in alone
        ]
        assert resumed and alone[0].episode_from is None and resumed[0].episode_from == pause.fired_at + HOUR

    def test_sends_within_the_grace_are_mail_in_flight_not_a_resume(self) -> None:
        """Sends up to the decision plus the grace keep the paused episode's evidence and its breach."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        pause = self.paused(engine)
        before = engine.measure("c1")["last"]
        in_flight = [
            sent(pause.fired_at + n * MINUTE, f"f{n}") for n in range(1, 6)
        ]  # the last one at exactly the grace
        assert fired(engine, in_flight) == []
        assert engine.stats.resumes == 0
        assert engine.measure("c1")["last"].numerator == before.numerator  # the old bounces still count

    def test_the_first_send_after_the_grace_begins_a_new_episode(self) -> None:
        """One second past the grace: the old evidence is gone, the resuming send is the first new one."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        pause = self.paused(engine)
        fired(engine, [sent(pause.fired_at + GRACE + 1, "r0")])
        assert engine.stats.resumes == 1
        measure = engine.measure("c1")["last"]
        assert (measure.numerator, measure.denominator) == (0, 1)

    def test_bounces_after_the_grace_are_no_resume(self) -> None:
        """A paused campaign still receives bounces of mail sent before the pause: they are not sends."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        pause = self.paused(engine)
        fired(engine, [bounce(pause.fired_at + HOUR, "late-bounce")])
        assert engine.stats.resumes == 0

    def test_evidence_from_before_the_resume_never_counts_again(self) -> None:
        """Bounces timed before the resume arriving after it are late for the new episode, not evidence."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        pause = self.paused(engine)
        resumed_at = pause.fired_at + HOUR
        events = stretch(resumed_at, 100, 100, "new") + [bounce(pause.fired_at + n, f"old{n}") for n in range(20)]
        assert fired(engine, events) == []
        assert engine.stats.late == 20

    def test_a_time_window_does_not_reach_back_across_the_resume(self) -> None:
        """A 1h rate resumed 10 minutes after its pause judges only the sends after the resume."""
        hourly = rate_rule(cooldown="1h")  # 10% over an hour, 20 sends at least
        engine = Engine(rules(hourly), resume_grace=GRACE)
        first = fired(engine, stretch(T0, 40, 5, "old"))
        assert len(first) == 1
        resumed_at = first[0].fired_at + 10 * MINUTE
        again = fired(engine, stretch(resumed_at, 40, 5, "new"))
        assert [(d.numerator, d.denominator) for d in again] == [(3, 20)]  # at min_volume: 3 new bounces of 20
        assert again[0].evidence_from >= resumed_at

    def test_continued_sending_after_a_pause_that_did_not_land_is_judged_anew(self) -> None:
        """Pause call failed, still retrying or dry run (the engine cannot tell): a campaign that keeps sending
        a bad list is paused again once its evidence after the grace proves it, and not before."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        decisions = fired(engine, stretch(T0, 1200, 5, "s"))  # one send a second for 20 minutes, never stopped
        first, second, *_ = decisions
        assert second.episode_began == "resumed" and second.episode_from > first.fired_at + GRACE
        assert second.evidence_from >= second.episode_from and second.denominator >= 50
        assert second.superseded_by is None

    def test_a_resume_ends_the_superseding_of_other_rules(self) -> None:
        """Before the resume another rule's decision is `already_paused`; after it, a new pause calls Leadterra."""
        burst = last_rule(50, threshold="8%", confidence=0.999, min_volume=20, cooldown="1h")
        engine = Engine(rules(HARD_BOUNCES, rule("burst", **burst.model_dump(by_alias=True, exclude={"name"}))))
        before = fired(engine, stretch(T0, 200, 5, "old"))
        after = fired(engine, stretch(before[0].fired_at + 20 * MINUTE, 200, 5, "new"))
        assert [d.superseded_by is None for d in before] == [True, False]
        assert [d.superseded_by is None for d in after] == [True, False]

    def test_an_alert_decision_is_no_pause_and_no_resume_follows_it(self) -> None:
        """Sends after an alert rule fired keep the evidence: only pause decisions begin the paused state."""
        alert = last_rule(150, threshold="4%", min_volume=50, action="alert")
        engine = Engine(rules(alert), resume_grace=GRACE)
        assert len(fired(engine, stretch(T0, 100, 5, "old"))) == 1
        fired(engine, [sent(T0 + HOUR, "later")])
        assert engine.stats.resumes == 0
        assert engine.measure("c1")["last"].denominator == 101

    def test_the_grace_is_measured_from_the_pause_in_force(self) -> None:
        """A later pause decision that calls (outside its cooldown) moves the grace; a superseded one does not."""
        no_cooldown = rule("complaints", count="complained", threshold=1, cooldown=0)
        engine = Engine(rules(HARD_BOUNCES, no_cooldown), resume_grace=GRACE)
        pause = self.paused(engine)
        [second] = fired(engine, [complaint(pause.fired_at + 4 * MINUTE, "c")])
        assert second.superseded_by is None  # cooldown 0: it calls, and is the pause in force
        fired(engine, [sent(pause.fired_at + GRACE + 1, "in-flight")])
        assert engine.stats.resumes == 0  # within the grace of the second pause
        fired(engine, [sent(second.fired_at + GRACE + 1, "resumed")])
        assert engine.stats.resumes == 1

    @pytest.mark.parametrize("grace", [0.0, 30 * MINUTE])
    def test_the_grace_is_the_engines_setting(self, grace: float) -> None:
        """With no grace the first later send resumes; with 30 minutes, a send 20 minutes on does not."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=grace)
        pause = self.paused(engine)
        fired(engine, [sent(pause.fired_at + 20 * MINUTE, "later")])
        assert engine.stats.resumes == (1 if grace == 0 else 0)


class TestEpisodeTransitions:
    """The episode state machine of guard/engine/episodes.py, one transition per test."""

    def test_running_to_paused_on_a_pause_decision(self) -> None:
        """RUNNING --pause decision at t--> PAUSED(t), calling Leadterra."""
        assert after_pause_decision(None, "d1", T0, 3600) == (("d1", T0), None)

    def test_paused_stays_on_a_pause_decision_within_its_cooldown(self) -> None:
        """PAUSED(p) --pause decision within its cooldown of p--> PAUSED(p), superseded."""
        assert after_pause_decision(("d1", T0), "d2", T0 + 60, 3600) == (("d1", T0), "d1")

    def test_paused_moves_on_a_pause_decision_after_its_cooldown(self) -> None:
        """PAUSED(p) --pause decision after its cooldown of p--> PAUSED(t), calling Leadterra."""
        assert after_pause_decision(("d1", T0), "d2", T0 + 60, 60) == (("d2", T0 + 60), None)

    @pytest.mark.parametrize("after", [0.0, 1.0, GRACE])
    def test_paused_stays_on_a_send_within_the_grace(self, after: float) -> None:
        """PAUSED(p) --send at s <= p + grace--> PAUSED(p): mail in flight."""
        assert not resumes(Signal.SENT, T0 + after, ("d1", T0), GRACE)

    def test_paused_to_running_on_a_send_after_the_grace(self) -> None:
        """PAUSED(p) --send at s > p + grace--> RUNNING from s."""
        assert resumes(Signal.SENT, T0 + GRACE + 0.001, ("d1", T0), GRACE)

    @pytest.mark.parametrize("signal", [s for s in Signal if s is not Signal.SENT])
    def test_only_a_send_resumes(self, signal: Signal) -> None:
        """Bounces, complaints and replies after the grace are the paused campaign's, not a resume."""
        assert not resumes(signal, T0 + DAY, ("d1", T0), GRACE)

    def test_a_running_campaign_does_not_resume(self) -> None:
        """RUNNING --send--> RUNNING: without a pause in force there is nothing to resume."""
        assert not resumes(Signal.SENT, T0 + DAY, None, GRACE)

    def test_any_state_to_running_on_campaign_started(self) -> None:
        """any --campaign.started at s--> RUNNING from s, in the engine: the pause is forgotten, no resume counted."""
        engine = Engine(rules(HARD_BOUNCES), resume_grace=GRACE)
        fired(engine, stretch(T0, 200, 5, "old"))
        fired(engine, [started(T0 + HOUR), sent(T0 + HOUR + 1, "new")])
        assert (engine.stats.resets, engine.stats.resumes) == (1, 0)
        assert engine.measure("c1")["last"].denominator == 1


def delayed_complaint_rule(**fields: object) -> Rule:
    """Complaints per send over 24 h, arriving a median 2 h and at most 2 days after their send."""
    return Rule.model_validate(
        {
            "name": "complaints",
            "description": "test rule",
            "rate": {"of": "complained", "per": "sent", "delay": {"median": "2h", "max": "2d"}},
            "window": "24h",
            "threshold": "0.3%",
            "min_volume": 100,
            **fields,
        }
    )


class TestOutcomeDelay:
    """`rate.delay` counts each send by the share of its complaints due within the window."""

    @staticmethod
    def expected_denominator(rule: Rule, send_times: list[float], now: float) -> float:
        """The README's rule, by hand: a send aged a counts arrived(a) - arrived(a - window), its age taken at
        the middle of its bucket (1/60 of window + max); only sends within those 60 buckets count."""
        assert rule.rate is not None and rule.rate.delay is not None and rule.window is not None
        width = (rule.window + rule.rate.delay.max) / 60
        total = 0.0
        for time in send_times:
            buckets = int(now // width - time // width)
            if buckets < 60:
                age = (buckets + 0.5) * width
                total += rule.rate.delay.arrived(age) - rule.rate.delay.arrived(age - rule.window)
        return total

    def test_the_denominator_weighs_each_send_by_the_complaints_it_has_had_time_for(self) -> None:
        """Sends every 10 minutes for three days: fresh ones count in part, yesterday's in part, older ones not;
        in steady sending the parts add up to a day's sends, as many as complaints could have come from."""
        rule = delayed_complaint_rule()
        engine = Engine(rules(rule))
        times = [T0 + 600.0 * n for n in range(3 * 144)]
        run(engine, [sent(time, f"s{n}") for n, time in enumerate(times)])
        measure = engine.measure("c1")["complaints"]
        expected = self.expected_denominator(rule, times, times[-1])
        assert measure.denominator == round(expected)
        assert expected == pytest.approx(144, abs=2)

    def test_late_complaints_of_a_busy_day_do_not_pause_a_quiet_next_day(self) -> None:
        """2,000 sends over 8 hours of day one and 4 complaints about them (0.2%): two that day, two late, at
        7 hours into day two, after its 100 sends. A plain 24 h window reads the first late one against the
        300 sends still inside it (0.33%, over the line); the delayed one against the sends they came from."""
        day_one = [sent(T0 + 14.4 * n, f"s{n}") for n in range(2000)]
        early = [complaint(T0 + 3 * HOUR, "s100"), complaint(T0 + 6 * HOUR, "s900")]
        day_two = [sent(T0 + DAY + 36 * n, f"t{n}") for n in range(100)]
        late = [complaint(T0 + DAY + 7 * HOUR + 60 * n, f"s{1500 + n}") for n in range(2)]
        history = sorted(day_one + early + day_two + late, key=lambda event: event.time)
        plain = Engine(rules(delayed_complaint_rule(rate={"of": "complained", "per": "sent"})))
        delayed = Engine(rules(delayed_complaint_rule()))
        assert [(d.numerator, d.denominator) for d in fired(plain, history)] == [(1, 300)]
        assert fired(delayed, history) == []
        measure = delayed.measure("c1")["complaints"]
        assert measure.numerator == 2 and measure.value < 0.003 and measure.denominator > 700

    def test_a_delay_needs_a_time_window(self) -> None:
        """A count window joins outcomes to their sends instead."""
        with pytest.raises(ValidationError, match="`rate.delay` applies to time windows"):
            delayed_complaint_rule(window=None, last=500)
        with pytest.raises(ValidationError, match="must be at least 1s and below max"):
            delayed_complaint_rule(rate={"of": "complained", "per": "sent", "delay": {"median": "3d", "max": "2d"}})
