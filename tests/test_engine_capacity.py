"""Bounded memory in the engine: a cap on tracked campaigns, and a clock one forged timestamp cannot move."""

from __future__ import annotations

from strategies import T0
from test_engine import HOUR, bounce, fired, rule, rules, sent

from guard.contracts.events import Event, Signal
from guard.engine import Engine

DAY = 86_400.0  # guard.engine.engine.MAX_AHEAD_SECONDS


def tracked(engine: Engine, campaign: str) -> bool:
    return bool(engine.measure(campaign))


class TestCapacity:
    def test_a_flood_of_distinct_campaigns_never_exceeds_the_cap(self) -> None:
        """20,000 one-event campaigns through an engine capped at 500: never more than 500 tracked."""
        engine, most = Engine(rules(rule()), max_campaigns=500), 0
        for n in range(20_000):
            engine.process(sent(T0 + n * 0.01, f"m{n}", campaign=f"flood-{n}"))
            most = max(most, engine.campaigns)
        assert most == 500
        assert engine.stats.evicted_campaigns == 20_000 - engine.campaigns

    def test_evicts_the_least_recently_active_by_event_time(self) -> None:
        """Not the first tracked nor the last to arrive: the one whose latest event is oldest."""
        engine = Engine(rules(rule()), max_campaigns=3)
        for campaign, at in (("a", T0 + 10), ("b", T0), ("c", T0 + 5)):
            engine.process(sent(at, campaign=campaign))
        engine.process(sent(T0 + 11, campaign="d"))
        assert [c for c in "abcd" if tracked(engine, c)] == ["a", "c", "d"]
        assert engine.stats.evicted_campaigns == 1

    def test_ties_go_in_the_order_campaigns_were_first_tracked(self) -> None:
        """Equal event times: the campaign tracked first is evicted first."""
        engine = Engine(rules(rule()), max_campaigns=2)
        for campaign in ("a", "b", "c"):
            engine.process(sent(T0, campaign=campaign))
        assert [c for c in "abc" if tracked(engine, c)] == ["b", "c"]

    def test_a_campaign_with_a_rule_firing_is_evicted_last(self) -> None:
        """A campaign in its cooldown outlives idler ones with more recent events."""
        engine = Engine(rules(rule(cooldown="1h")), max_campaigns=3)
        assert fired(
            engine, [bounce(T0, campaign="hot"), bounce(T0 + 1, campaign="hot"), bounce(T0 + 2, campaign="hot")]
        )
        engine.process(sent(T0 + 100, campaign="x"))
        engine.process(sent(T0 + 200, campaign="y"))
        engine.process(sent(T0 + 300, campaign="z"))
        assert tracked(engine, "hot") and not tracked(engine, "x")
        # still in its cooldown: a fourth bounce does not fire again
        assert fired(engine, [bounce(T0 + 400, campaign="hot")]) == []

    def test_a_campaign_with_a_rule_pending_is_evicted_last(self) -> None:
        """A breach waiting out its `for`: kept while a thousand one-event campaigns come and go."""
        engine = Engine(rules(rule(**{"for": "10m"})), max_campaigns=10)
        assert not fired(engine, [bounce(T0 + n, campaign="bad") for n in range(3)])
        for n in range(1_000):
            engine.process(sent(T0 + 3 + n * 0.1, campaign=f"flood-{n}"))
        assert [d.campaign_id for d in fired(engine, [bounce(T0 + 700, campaign="bad")])] == ["bad"]

    def test_an_evicted_campaign_comes_back_without_its_evidence(self) -> None:
        """Its old bounces no longer count once it was evicted."""
        engine = Engine(rules(rule()), max_campaigns=1)
        engine.process(bounce(T0, campaign="a"))
        engine.process(sent(T0 + 1, campaign="b"))
        assert engine.measure("a") == {}
        engine.process(bounce(T0 + 2, campaign="a"))
        assert engine.measure("a")["r"].numerator == 1

    def test_same_log_and_cap_give_the_same_decisions(self) -> None:
        """Eviction depends on the events only: two runs over one log decide alike."""
        log = [
            bounce(T0 + n, campaign=f"c{n % 7}") if n % 3 else sent(T0 + n, campaign=f"c{n % 11}") for n in range(3_000)
        ]
        first, second = Engine(rules(rule()), max_campaigns=4), Engine(rules(rule()), max_campaigns=4)
        assert [d.id for d in fired(first, log)] == [d.id for d in fired(second, log)]
        assert first.stats.evicted_campaigns == second.stats.evicted_campaigns > 0


class TestForgedTimestamps:
    def test_a_far_future_event_does_not_hide_its_campaign(self) -> None:
        """One record stamped 30 days ahead; the campaign's next bounces still fire the rule."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="other"))
        engine.process(sent(T0 + 30 * DAY, "forged", campaign="c1"))
        decisions = fired(engine, [bounce(T0 + n, campaign="c1") for n in range(1, 4)])
        assert [(d.campaign_id, d.fired_at) for d in decisions] == [("c1", T0 + 3)]
        assert engine.stats.ahead == 1 and engine.stats.late == 0

    def test_a_far_future_event_does_not_stop_the_idle_sweep(self) -> None:
        """After a forged record, campaigns idle past the retention are still dropped."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="busy"))
        engine.process(sent(T0 + 30 * DAY, campaign="forged"))
        engine.process(sent(T0 + 1, campaign="idle"))
        for minute in range(1, 600):
            engine.process(sent(T0 + minute * 60, campaign="busy"))
        assert not tracked(engine, "idle")
        assert engine.stats.dropped_campaigns >= 1

    def test_the_forged_event_counts_at_the_partitions_clock(self) -> None:
        """It is not lost: a forged bounce counts as the partition's latest moment."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="other"))
        engine.process(bounce(T0 + 365 * DAY, campaign="c1"))
        assert engine.measure("c1")["r"].numerator == 1
        assert fired(engine, [bounce(T0 + 1, campaign="c1"), bounce(T0 + 2, campaign="c1")])

    def test_two_agreeing_events_move_the_clock_after_a_quiet_spell(self) -> None:
        """Three days of silence, then traffic: only the first event counts at the old clock."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="c1"))
        monday = T0 + 3 * DAY
        decisions = fired(engine, [bounce(monday + n, campaign="c1") for n in range(4)])
        assert [d.fired_at for d in decisions] == [monday + 3]
        assert engine.stats.ahead == 1

    def test_a_forged_event_does_not_vouch_for_a_later_real_jump(self) -> None:
        """The forged time is far from the real resumption, so they do not agree with each other."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="c1"))
        engine.process(sent(T0 + 30 * DAY, campaign="forged"))
        monday = T0 + 3 * DAY
        fired(engine, [sent(monday, campaign="c1"), sent(monday + 1, campaign="c1")])
        assert engine.stats.ahead == 2

    def test_forged_events_among_events_in_step_do_not_vouch_for_each_other(self) -> None:
        """Two forged records, with ordinary traffic between them: both count at the clock."""
        engine = Engine(rules(rule()))
        engine.process(sent(T0, campaign="c1"))
        engine.process(sent(T0 + 30 * DAY, campaign="forged-1"))
        engine.process(sent(T0 + 1, campaign="c1"))
        engine.process(sent(T0 + 30 * DAY, campaign="forged-2"))
        assert fired(engine, [bounce(T0 + n, campaign="forged-2") for n in range(2, 5)])
        assert engine.stats.ahead == 2

    def test_events_within_the_limit_are_taken_as_they_are(self) -> None:
        """Jitter and ordinary gaps (up to a day past the clock) never count at another time."""
        engine = Engine(rules(rule()))
        times = [T0, T0 + HOUR, T0 + 3 * HOUR, T0 + 3 * HOUR + DAY]
        for at in times:
            engine.process(Event(Signal.SENT, "c1", at))
        assert engine.stats.ahead == 0
