"""A resumed campaign is judged on its new evidence only (README, "Paused and resumed campaigns"), though bounces and
complaints about the mail it sent before its pause keep arriving for hours. An outcome of a send the partition saw
before the episode began is skipped (counted `late`), while its send is remembered (GUARD_DEDUPE_HORIZON); outcomes
of the new episode's mail count, so a list still bad is paused again."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from strategies import T0

from guard.contracts.events import Event, Signal
from guard.engine import Engine, record_decisions
from guard.engine.dedupe import SEAL_EVERY
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.snapshot import restore, snapshot
from guard.rules import load_rules
from guard.testing.events import envelope

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
@pytest.mark.parametrize("ahead", [0.0, 0.9 * HOUR], ids=["in-step", "0.9h-ahead"])
def test_a_record_stamped_ahead_on_another_campaign_does_not_blur_what_came_before_the_resume(
    kinds: Kinds, ahead: float
) -> None:
    """Another campaign of the partition gets one complaint stamped up to two hours ahead (its producer's clock; the
    brokers and the decoder take that much), early on: it moves the partition's clock, and with it every dedupe
    generation's times, past the cleaned list's resume. Told apart by the log's order, the stale list's late bounces
    are still skipped: one pause, none in the resumed episode (by time, they paused the cleaned list again)."""
    events = stale_list_then_clean(15 * MINUTE, 30 * MINUTE)
    other = [Event(Signal.SENT, "c2", T0 + 10.0 * n, f"other{n}") for n in range(200)]
    skewed = Event(Signal.COMPLAINED, "c2", T0 + 2 * MINUTE + ahead, "other5")
    history = sorted([*events, *other], key=lambda event: event.time)
    history.insert(next(n for n, e in enumerate(history) if e.time > T0 + 2 * MINUTE), skewed)
    engine = Engine(SHIPPED, kinds=kinds)
    decisions = pauses(engine, history)
    assert decisions and all(began is None for _, _, began in decisions), decisions
    assert engine.stats.late > 0


@pytest.mark.parametrize("kinds", KINDS)
def test_a_list_still_bad_after_the_resume_is_paused_again(kinds: Kinds) -> None:
    """Its new mail bounces as much: the new episode's own outcomes count."""
    decisions = pauses(Engine(SHIPPED, kinds=kinds), stale_list_then_clean(15 * MINUTE, 30 * MINUTE, 5))
    assert [began for _, _, began in decisions].count("resumed") >= 1, decisions


def webhook(event: Event) -> bytes:
    """The webhook Leadterra would send for a send or a hard bounce of the histories above."""
    if event.signal is Signal.SENT:
        return envelope("message.sent", event.campaign_id, event.time, messageId=event.message_id)
    return envelope("message.bounced", event.campaign_id, event.time, messageId=event.message_id, bounceType="hard")


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("ahead", [20 * MINUTE, 0.9 * HOUR], ids=["20min-ahead", "0.9h-ahead"])
def test_an_outcome_stamped_ahead_of_its_record_decides_as_one_stamped_in_step(kinds: Kinds, ahead: float) -> None:
    """A complaint from a producer that wrote local time as UTC: its envelope stamped `ahead` of the record carrying
    it, whose time is in step (the door's, or any producer's own clock). Taken as stamped it moved the campaign's
    clock ahead: every decision stamped in the future, and the resume recognised only after the forged time plus the
    grace, so the list still bad after it was paused again late. An event cannot happen after its record was
    written: it counts at the record's time, and the decisions are those of the complaint stamped in step."""
    events = stale_list_then_clean(15 * MINUTE, 30 * MINUTE, 5)
    complaint_at = first_pause(events) - MINUTE

    def decided(stamped_ahead: float) -> list[tuple[str, float, str | None]]:
        records = [(webhook(event), event.time) for event in events]
        complaint = envelope("message.complained", "c1", complaint_at + stamped_ahead, messageId="old5")
        records.insert(next(n for n, (_, time) in enumerate(records) if time > complaint_at), (complaint, complaint_at))
        engine = Engine(SHIPPED, kinds=kinds)
        return [
            (decision.rule.name, round((decision.fired_at - T0) / MINUTE, 1), decision.episode_began and "resumed")
            for _, decision in record_decisions(engine, records)
            if decision.action == "pause"
        ]

    in_step = decided(0.0)
    assert [began for _, _, began in in_step].count("resumed") >= 1, f"premise: {in_step}"
    assert decided(ahead) == in_step


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize(
    ("ahead", "retried_after"),
    [(50 * MINUTE, 70.0), (50 * MINUTE, 10 * MINUTE), (10 * MINUTE, 12 * MINUTE), (10 * MINUTE, 20 * MINUTE)],
)
def test_a_start_stamped_ahead_and_delivered_again_is_no_restart(
    kinds: Kinds, ahead: float, retried_after: float
) -> None:
    """The stale list's `campaign.started`, stamped `ahead` of its record's time (so counted at that), and
    Leadterra's retry of it `retried_after` later, its record's time that much later (counted at that, or at its
    stamp once that is no longer ahead of it): the same start, not a restart that drops the evidence counted since
    (a start is known delivered again by its stamp); the same pauses as without the retry."""
    events = stale_list_then_clean(15 * MINUTE, 30 * MINUTE, 5)
    start = envelope("campaign.started", "c1", T0 - 1 + ahead)

    def decided(retry: bool) -> tuple[list[tuple[str, float, str | None]], int]:
        records = [(start, T0 - 1), *((webhook(event), event.time) for event in events)]
        if retry:
            at = T0 + retried_after
            records.insert(next(n for n, (_, time) in enumerate(records) if time > at), (start, at))
        engine = Engine(SHIPPED, kinds=kinds)
        pauses = [
            (decision.rule.name, round((decision.fired_at - T0) / MINUTE, 1), decision.episode_began and "resumed")
            for _, decision in record_decisions(engine, records)
            if decision.action == "pause"
        ]
        return pauses, engine.stats.resets

    once, resets = decided(retry=False)
    assert once and resets == 0, f"premise: {once}"
    assert decided(retry=True) == (once, 0)


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
@pytest.mark.parametrize("spacing", [0.5, 20.0])
def test_a_hundred_campaigns_paused_together_are_each_told_apart_after_their_resume(
    kinds: Kinds, spacing: float
) -> None:
    """The same stale list in 100 campaigns of one partition, each `spacing` seconds after the other, each paused,
    resumed 15 minutes later and clean since: none is paused again, the decisions sharing a few generations (one a
    minute at most) rather than each taking one, and every seal made."""
    one = stale_list_then_clean(15 * MINUTE, 30 * MINUTE)
    events = sorted(
        (
            msgspec.structs.replace(
                event, campaign_id=f"c{n}", time=event.time + n * spacing, message_id=f"c{n}-{event.message_id}"
            )
            for n in range(100)
            for event in one
        ),
        key=lambda event: event.time,
    )
    engine = Engine(SHIPPED, kinds=kinds)
    decisions = [d for e in events for d in engine.process(e) if d.action == "pause"]
    assert {d.campaign_id for d in decisions if d.episode_began is None} == {f"c{n}" for n in range(100)}
    assert [d.campaign_id for d in decisions if d.episode_began is not None] == []
    assert len(engine._seen.generations()) <= 100 * spacing / SEAL_EVERY + 10
    assert engine.unsealed == 0


@pytest.mark.parametrize("kinds", KINDS)
def test_a_pause_acted_on_at_catch_up_sets_apart_the_mail_read_until_then(kinds: Kinds) -> None:
    """A backlog's decision acted on at catch-up lands later than it was taken (Engine.note_pause): the mail read
    until it landed is the paused episode's too, and its late bounces skip the episode a resume begins."""
    stale = []
    for n in range(400):
        time = T0 + 6.0 * n
        stale.append(Event(Signal.SENT, "c1", time, f"old{n}"))
        if n % 5 == 0:
            stale.append(Event(Signal.BOUNCED, "c1", time + 30 * MINUTE, f"old{n}", bounce_type="hard"))
    stale.sort(key=lambda event: event.time)
    paused_at = first_pause(stale)
    engine = Engine(SHIPPED, kinds=kinds)
    in_flight = [e for e in stale if e.time <= paused_at + 4 * MINUTE]
    decision = [d for e in in_flight for d in engine.process(e) if d.action == "pause"][0]
    engine.note_pause("c1", decision.id, paused_at + 4 * MINUTE)  # acted on once the reading caught up
    resume = paused_at + 20 * MINUTE
    read = {e.message_id for e in in_flight if e.signal is Signal.SENT}
    rest = [e for e in stale if e not in in_flight and e.signal is Signal.BOUNCED and e.message_id in read]
    rest += [Event(Signal.SENT, "c1", resume + 6.0 * n, f"new{n}") for n in range(300)]
    decisions = [d for e in sorted(rest, key=lambda e: e.time) for d in engine.process(e) if d.action == "pause"]
    assert [d for d in decisions if d.episode_began is not None] == []
    sent_after_decision = {e.message_id for e in in_flight if e.signal is Signal.SENT and e.time > paused_at}
    late_bounces = [e for e in rest if e.message_id in sent_after_decision and e.time >= resume]
    assert late_bounces and engine.stats.late >= len(late_bounces)
