"""A resumed campaign is judged on its new evidence only (README, "Paused and resumed campaigns"), though bounces and
complaints about the mail it sent before its pause keep arriving for hours. An outcome of a send the partition saw
before the episode began is skipped (counted `late`), while its send is remembered (GUARD_DEDUPE_HORIZON); outcomes
of the new episode's mail count, so a list still bad is paused again."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from strategies import T0

from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.engine.dedupe import SEALED_GENERATIONS
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.snapshot import restore, snapshot
from guard.rules import load_rules

MINUTE, HOUR = 60.0, 3600.0
SHIPPED = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.yaml")
CORE = compiled()
KINDS = [pytest.param(PYTHON, id="python"), pytest.param(CORE, id="compiled", marks=pytest.mark.compiled_core)]


def first_pause(events: list[Event]) -> float:
    """When the shipped rules first decide to pause, the events read as they happen."""
    engine = Engine(SHIPPED)
    return next(d.fired_at for e in events for d in engine.process(e) if d.action == "pause")


def until_paused(events: list[Event]) -> tuple[list[Event], float]:
    """The events up to a minute after their first pause decision (the pause lands, the mail in flight arrives,
    the sending stops; outcomes keep arriving), and that decision's time."""
    paused_at = first_pause(events)
    sends = {event.message_id for event in events if event.signal is Signal.SENT and event.time <= paused_at + MINUTE}
    return [event for event in events if event.message_id in sends], paused_at


def stale_list_then_clean(resume_after: float, bounce_delay: float, clean_bounce_every: int = 0) -> list[Event]:
    """A stale list (a fifth hard-bounces, each `bounce_delay` after its send), a send every 6 s, until a minute
    after its first pause decision; the user cleans the list and resumes `resume_after` later: an hour of mail,
    every `clean_bounce_every`-th bouncing 20 s later (0: none). In event-time order."""
    stale = []
    for n in range(1200):
        time = T0 + 6.0 * n
        stale.append(Event(Signal.SENT, "c1", time, f"old{n}"))
        if n % 5 == 0:
            stale.append(Event(Signal.BOUNCED, "c1", time + bounce_delay, f"old{n}", bounce_type="hard"))
    events, paused_at = until_paused(sorted(stale, key=lambda event: event.time))
    start = paused_at + MINUTE + resume_after
    for n in range(600):
        time = start + 6.0 * n
        events.append(Event(Signal.SENT, "c1", time, f"new{n}"))
        if clean_bounce_every and n % clean_bounce_every == 0:
            events.append(Event(Signal.BOUNCED, "c1", time + 20, f"new{n}", bounce_type="hard"))
    return sorted(events, key=lambda event: event.time)


def complaints_after_a_resume(seed: int, resume_after: float) -> list[Event]:
    """Gmail mail at 3% complaints (each complaint a log-normal delay after its send: median 2 h, 99% within 2 days),
    a send every 10 s until a minute after the first pause decision; then, `resume_after` later, 6 h of mail with no
    complaints."""
    rng, mail = random.Random(seed), []
    for n in range(8 * 360):
        time = T0 + 10.0 * n
        mail.append(Event(Signal.SENT, "c1", time, f"old{n}", recipient_domain="gmail.com"))
        if rng.random() < 0.03:
            delay = rng.lognormvariate(8.88, 1.4)  # ln(7200) = 8.88
            mail.append(Event(Signal.COMPLAINED, "c1", time + delay, f"old{n}", recipient_domain="gmail.com"))
    events, paused_at = until_paused(sorted(mail, key=lambda event: event.time))
    start = paused_at + MINUTE + resume_after
    events += [Event(Signal.SENT, "c1", start + 10.0 * n, f"new{n}", recipient_domain="gmail.com") for n in range(2160)]
    return sorted(events, key=lambda event: event.time)


def pauses(engine: Engine, events: list[Event]) -> list[tuple[str, float, str | None]]:
    """(rule, minutes into the history, how its episode began) of each pause decision the events cause."""
    return [
        (decision.rule.name, round((decision.fired_at - T0) / MINUTE, 1), decision.episode_began and "resumed")
        for event in events
        for decision in engine.process(event)
        if decision.action == "pause"
    ]


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize(
    ("resume_after", "bounce_delay"),
    [(15 * MINUTE, 30 * MINUTE), (15 * MINUTE, 50 * MINUTE), (40 * MINUTE, 55 * MINUTE)],
)
def test_bounces_of_the_mail_before_a_resume_do_not_pause_the_cleaned_list(
    kinds: Kinds, resume_after: float, bounce_delay: float
) -> None:
    """Resumed 15 or 40 minutes after the sending stopped, within a dedupe generation (only the pause decision sets
    the mail apart), its bounces arriving into the new episode: one pause, none in the resumed episode. Without the
    skip, the late bounces of the stale list pause the clean one."""
    engine = Engine(SHIPPED, kinds=kinds)
    decisions = pauses(engine, stale_list_then_clean(resume_after, bounce_delay))
    assert decisions and all(began is None for _, _, began in decisions), decisions
    assert engine.stats.late > 0


@pytest.mark.parametrize("kinds", KINDS)
def test_a_list_still_bad_after_the_resume_is_paused_again(kinds: Kinds) -> None:
    """Its new mail bounces as much: the new episode's own outcomes count."""
    decisions = pauses(Engine(SHIPPED, kinds=kinds), stale_list_then_clean(15 * MINUTE, 30 * MINUTE, 5))
    assert [began for _, _, began in decisions].count("resumed") >= 1, decisions


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("seed", [3, 7])
def test_complaints_about_mail_before_a_resume_do_not_pause_it_again(kinds: Kinds, seed: int) -> None:
    """The complaints of the 4 hours before the pause arrive over the next two days, into the resumed episode's
    complaint-rate window. Resumed an hour after the pause: not paused again while the sends are remembered."""
    events = complaints_after_a_resume(seed, HOUR)
    decisions = pauses(Engine(SHIPPED, kinds=kinds), events)
    assert decisions and decisions[0][2] is None
    resumed = [decision for decision in decisions if decision[2] == "resumed"]
    assert resumed == [], decisions


@pytest.mark.parametrize("writer", KINDS)
@pytest.mark.parametrize("reader", KINDS)
def test_a_checkpoint_taken_while_paused_still_tells_the_mail_apart(writer: Kinds, reader: Kinds) -> None:
    """The generations a pause decision closes travel in the snapshot: restored by either engine, the resumed
    episode still skips the late bounces."""
    events = stale_list_then_clean(15 * MINUTE, 30 * MINUTE)
    stop = first_pause(events) + 2 * MINUTE  # paused, its sending stopped; the late bounces still to come
    before = [event for event in events if event.time < stop]
    after = [event for event in events if event.time >= stop]
    first = Engine(SHIPPED, kinds=writer)
    assert pauses(first, before)
    second = Engine(SHIPPED, kinds=reader)
    restore(snapshot(first, SHIPPED), SHIPPED, second)
    assert pauses(second, after) == []
    assert second.stats.late > 0


@pytest.mark.parametrize("kinds", KINDS)
def test_a_pause_decision_for_every_campaign_at_once_opens_a_bounded_number_of_generations(kinds: Kinds) -> None:
    """A stale list in each of 200 campaigns of one partition: each pause decision seals the keys seen so far, until
    SEALED_GENERATIONS are alive; then the generations rotate by time as before."""
    engine = Engine(SHIPPED, kinds=kinds)
    for n in range(60):
        for campaign in range(200):
            time = T0 + 6.0 * n + campaign * 0.01
            engine.process(Event(Signal.SENT, f"c{campaign}", time, f"m{campaign}-{n}"))
            if n % 4 == 0:
                engine.process(Event(Signal.BOUNCED, f"c{campaign}", time + 1, f"m{campaign}-{n}", bounce_type="hard"))
    assert sum(engine.firing(f"c{campaign}", "hard-bounce-rate") for campaign in range(200)) == 200
    assert len(engine._seen.generations()) == SEALED_GENERATIONS
