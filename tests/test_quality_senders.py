"""bench/quality/senders.py: many small campaigns on one sending domain, scored on hand-built domains whose
right answers can be counted by hand, and run at a tiny size."""

from __future__ import annotations

import bisect
import math

import pytest

from bench.quality.bounds import average_run_to_false_alarm, optimal_delay
from bench.quality.campaigns import HOUR, Profile
from bench.quality.senders import (
    DOMAIN_RULES,
    SENDER_RULE_SETS,
    Campaign,
    DomainOutcome,
    Plan,
    SenderScore,
    budgeted_cusum,
    domains,
    load,
    plan,
    pooled_bound,
    score_senders,
    senders_section,
    senders_table,
    simulate,
    splice,
)

START = 8 * HOUR  # the first business hour
CLEAN = Profile(0.0, 0.0, 0.0, 0.0)  # no outcome ever: only the turn brings bounces
STALE = Profile(0.5, 0.0, 0.0, 0.0)


def _domain(name: str, turn_at: int | None, joiner_at: float | None = None) -> Plan:
    """Six campaigns of 100 sends taking turns over one hour (600 pooled sends, one every 6 s), burning from
    pooled send `turn_at` on. A seventh campaign may start `joiner_at` seconds after the first send."""
    campaigns = [
        Campaign(
            f"{name}-c{number}",
            f"{name}/box{number % 2}",
            1000 + number,
            tuple(START + (send * 6 + number) * 6.0 for send in range(100)),
            CLEAN,
            STALE if turn_at is not None else None,
        )
        for number in range(6)
    ]
    if joiner_at is not None:
        times = tuple(START + joiner_at + 5.0 * send for send in range(50))
        campaigns.append(Campaign(f"{name}-late", f"{name}/box0", 7, times, CLEAN, STALE))
    turn = None if turn_at is None else START + turn_at * 6.0
    return Plan(name, tuple(campaigns), turn)


def test_a_burning_domain_is_caught_by_its_scope_and_the_delay_is_counted_from_its_turn():
    rules = load((DOMAIN_RULES,))  # the domain rules alone: no campaign is paused on its own evidence
    domain = _domain("burn.example", turn_at=300)
    outcome = simulate(domain, rules)

    assert all(len(c.times) < 200 for c in domain.campaigns)
    assert outcome.burning and outcome.caught and not outcome.early
    assert outcome.scope_rule == "domain-hard-bounce-rate"
    assert outcome.scope_paused_at is not None and domain.turn is not None
    # the pooled sends from the turn (itself included) up to the pause, counted from the plan
    by_hand = sum(1 for c in domain.campaigns for at in c.times if domain.turn <= at <= outcome.scope_paused_at)
    assert outcome.delay == by_hand
    # 300 clean sends in the hour before: the rate's lower bound needs dozens of bad sends, and the turn is
    # counted from, not the start (600 sends)
    assert 20 < outcome.delay < 200
    assert outcome.minutes == pytest.approx((outcome.scope_paused_at - domain.turn) / 60)
    assert outcome.minutes == pytest.approx(6 * (outcome.delay - 1) / 60, abs=0.1)  # one send every 6 s
    # every campaign was sending within the rule's look-back: all paused at once, none sends after it
    assert outcome.paused_by_scope == outcome.paused == 6
    assert outcome.still_sending == outcome.still_sending_paused == 6
    assert outcome.made_after_scope_pause == 0
    assert outcome.made_after_turn == outcome.delay
    assert outcome.bad_campaigns == 6 and outcome.bad_paused_alone == 0
    assert outcome.planned_after_turn == 300 and outcome.hour_before == 300
    assert outcome.healthy_rate == 0.0 and outcome.bad_rate == pytest.approx(0.5)


def test_a_healthy_domain_is_not_paused():
    outcome = simulate(_domain("calm.example", turn_at=None), load((DOMAIN_RULES,)))
    assert not outcome.burning and not outcome.caught and outcome.scope_paused_at is None
    assert outcome.paused == outcome.paused_by_scope == 0
    assert outcome.delay is None and outcome.made_after_turn == 0


def test_a_campaign_joining_while_the_rule_fires_is_paused_at_its_first_send():
    domain = _domain("join.example", turn_at=300, joiner_at=2700.0)  # 15 minutes before the hour is out
    outcome = simulate(domain, load((DOMAIN_RULES,)))
    assert outcome.caught and outcome.scope_paused_at is not None
    assert outcome.scope_paused_at < START + 2700.0
    assert outcome.still_sending == outcome.still_sending_paused == 7
    assert outcome.paused_by_scope == 7
    assert outcome.made_after_scope_pause == 1  # the joiner's first send, which its pause follows
    assert outcome.scope_firings == 1


def test_campaign_rules_alone_never_pause_a_domain():
    rules = load(SENDER_RULE_SETS["default.yaml alone"])
    domain = _domain("burn.example", turn_at=300)
    outcome = simulate(domain, rules)
    assert outcome.scope_paused_at is None and not outcome.caught and outcome.paused_by_scope == 0
    # each campaign's own sends at 50%: the burst rule pauses it alone, after the turn; the rest of the domain
    # sends on until then
    assert outcome.bad_paused_alone == outcome.paused == 6
    made = outcome.made_after_turn
    assert 0 < made < outcome.planned_after_turn


def _outcome(name: str, burning: bool, paused_at: float | None = None, **fields) -> DomainOutcome:
    defaults = dict(
        campaigns=10,
        sends=1000,
        healthy_rate=0.01,
        bad_rate=0.1 if burning else None,
        planned_after_turn=500 if burning else 0,
        turn=100.0 if burning else None,
    )
    return DomainOutcome(name, burning, **(defaults | {"scope_paused_at": paused_at} | fields))


def test_the_score_counts_caught_early_missed_and_healthy_domains():
    outcomes = [
        _outcome("a", True, 160.0, scope_rule="r", delay=40, still_sending=3, still_sending_paused=3),
        _outcome("b", True, 220.0, scope_rule="r", delay=80, still_sending=4, still_sending_paused=2),
        _outcome("c", True, 50.0, scope_rule="r", delay=0),  # before the turn: early, not caught
        _outcome("d", True),  # never
        _outcome("e", False, 10.0, paused_by_scope=2, paused=2),
        _outcome("f", False, paused=1),  # paused by a campaign rule only
        _outcome("g", False),
        _outcome("h", False),
    ]
    score = SenderScore("s", outcomes)
    assert [o.name for o in score.caught] == ["a", "b"]
    assert score.early == 1 and score.missed == 1
    assert score.delays == [40, 80]
    assert score.minutes == pytest.approx([1.0, 2.0])
    assert score.healthy_scope_paused == 1 and score.healthy_paused == 2
    assert score.healthy_share == pytest.approx(0.25)
    assert score.complete == 1
    row = senders_table([score]).splitlines()[2]
    assert row.startswith("| s | 2/4 | 1 | 1 | 60 | 80 | 1.5 | 1/4 (25.00%) | 2/4 | 1/2 |")


def test_the_bound_is_the_optimal_delay_at_the_pooled_rates():
    outcomes = [_outcome("a", True, healthy_rate=0.01, bad_rate=0.12), _outcome("h", False, sends=4000)]
    arl = average_run_to_false_alarm([4000], 0.01)
    assert pooled_bound(outcomes, 0.01, None) == pytest.approx(optimal_delay(0.01, 0.12, arl))
    assert pooled_bound(outcomes, 0.01, 0.02) == pytest.approx(optimal_delay(0.02, 0.12, arl))
    # a domain that does not send that long after its turn has no delay to bound
    assert pooled_bound([_outcome("a", True, planned_after_turn=10), outcomes[1]], 0.01, None) is None


def test_the_bound_at_the_shipped_domain_cusum_budget_is_stated_beside_the_measured_one():
    rule = budgeted_cusum((DOMAIN_RULES,))
    assert rule is not None and rule.name == "domain-hard-bounce-rate" and rule.scope == "sender_domain"
    outcomes = [_outcome("a", True, healthy_rate=0.01, bad_rate=0.12), _outcome("h", False, sends=4000)]
    arl = 10_000_000 / -math.log1p(-0.01)  # the rule's budget: 1% of domains of 10M sends
    assert pooled_bound(outcomes, 0.5, None, arl) == pytest.approx(optimal_delay(0.01, 0.12, arl))
    score = SenderScore("s", outcomes, 1.0)
    section = senders_section([score, score], "python -m bench.quality --only senders", 5, False, rule)
    own, fixed = round(optimal_delay(0.01, 0.12, arl)), round(optimal_delay(0.02, 0.12, arl))
    assert (
        f"- at domain-hard-bounce-rate's own budget, 1% of domains of 10,000,000 sends at 2% (an average run to a "
        f"false alarm of 9.95e+08 sends), the bound is {own} sends knowing each domain's pooled healthy rate, "
        f"{fixed} knowing only that it is at most 2%\n"
    ) in section
    assert "own budget" not in senders_section([score, score], "python -m bench.quality", 5, False)


def test_the_workload_at_a_tiny_size():
    drawn = domains(3, 2, seed=5)
    assert sum(d.burning for d in drawn) == 2
    for domain in drawn:
        planned = plan(domain)
        assert planned == plan(domain)  # seeded
        assert all(30 <= len(c.times) < 200 for c in planned.campaigns)
        assert 40 <= len(planned.campaigns) <= 100
        if domain.burning:
            pooled = sorted(at for c in planned.campaigns for at in c.times)
            assert planned.turn is not None
            share = bisect.bisect_left(pooled, planned.turn) / len(pooled)
            assert 0.2 <= share <= 0.8
        else:
            assert planned.turn is None and all(c.bad is None for c in planned.campaigns)
    scores = [score_senders(name, paths, drawn, workers=1) for name, paths in SENDER_RULE_SETS.items()]
    scoped, alone = scores
    assert alone.caught == [] and alone.healthy_scope_paused == 0
    assert len(scoped.burning) == 2 and len(scoped.healthy) == 3
    section = senders_section(scores, "python -m bench.quality --only senders", 5, spliced=True)
    assert section.startswith("## Many small campaigns on one sending domain\n")
    assert "| sender-domain.yaml beside default.yaml |" in section and "| default.yaml alone |" in section


def test_splicing_replaces_only_its_own_section():
    report = "# Decision quality\n\nabove\n\n## What the numbers say\n\n- gap\n"
    old, new = (f"## Many small campaigns on one sending domain\n\n{text}\n" for text in ("old", "new"))
    first = splice(report, old)
    assert first == report + "\n" + old
    assert splice(first, new) == report + "\n" + new
    later = "\n## Later\n\nkept\n"
    assert splice(first + later, new) == report + "\n" + new + later
