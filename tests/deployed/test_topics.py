"""Never blind while saying ready, and never creating an input topic (promise 11): a guard deployed
before its topic exists, and one whose GUARD_INPUT_TOPICS has a typo."""

from __future__ import annotations

import time
from collections import Counter

MINUTE = 60.0


def answers_seen(answers: list[tuple[int | None, str]]) -> str:
    """/readyz answers in order, repeats folded: `503 {...} x12, 200 ok x3`."""
    runs: list[list] = []
    for status, text in answers:
        if runs and runs[-1][0] == (status, text):
            runs[-1][1] += 1
        else:
            runs.append([(status, text), 1])
    return ", ".join(f"{status} {text[:120]} x{count}" for (status, text), count in runs)


async def test_an_input_topic_created_after_start_is_protected_within_thirty_seconds(deploy) -> None:
    """Started before its input topic exists: /readyz does not say 200 and names the topic, the guard
    does not create it, and once the user has made it a bad campaign on it is paused within 30 s."""
    S, bad = deploy.Stretch, "camp_bad_on_new_topic"
    deploy.campaigns(bad)
    guard = deploy.start()
    answers = await deploy.watch_readyz(guard, 10)
    made_by_guard = deploy.names.input in await deploy.topics()
    created = await deploy.create_input_topic()  # 10 s after the guard started, as its user does

    now = time.time()
    await deploy.produce(deploy.mail(bad, S(now - 5 * MINUTE, now, deploy.BAD), until=now))
    produced = time.monotonic()
    try:
        await deploy.standin.wait_for_pauses(1, 30, campaign_id=bad)
        paused_in: float | None = time.monotonic() - produced
        await deploy.settle(guard)
    except TimeoutError:
        paused_in = None
    ready_after = await deploy.readyz(guard)
    tally = await deploy.tally()

    said = [(status, text) for status, text in answers if status is not None]
    seen = (
        f"/readyz before the topic existed: {answers_seen(said)}; after: {ready_after[0]}; the topic was made by "
        f"{'the guard' if made_by_guard else 'nobody'} before the user; paused "
        f"{'never' if paused_in is None else f'{paused_in:.1f} s after the first record'}; {tally!r}"
    )
    assert said, f"/readyz never answered: {guard.log_tail()}"
    assert all(status != 200 for status, _ in said), seen
    assert deploy.names.input in said[-1][1], seen
    assert not made_by_guard and created, seen
    assert paused_in is not None, seen
    assert tally.calls[bad] == 1 and tally.outcomes(bad)["paused"] == 1, seen
    assert tally.notified(bad) == Counter(paused=1), seen
    assert ready_after[0] == 200, seen


async def test_a_typo_in_the_input_topics_keeps_the_guard_unready_and_creates_no_topic(deploy) -> None:
    """GUARD_INPUT_TOPICS names a topic that does not exist (a typo of the real one): /readyz says
    503 naming it, the guard never creates it, and it says it protects nothing rather than pausing."""
    S, bad = deploy.Stretch, "camp_bad_unwatched"
    deploy.campaigns(bad)
    assert await deploy.create_input_topic()  # the real topic, where the events are
    typo = deploy.names.input.replace("events", "evnets")
    guard = deploy.start(GUARD_INPUT_TOPICS=typo)
    answers = await deploy.watch_readyz(guard, 10)
    now = time.time()
    await deploy.produce(deploy.mail(bad, S(now - 5 * MINUTE, now, deploy.BAD), until=now))
    answers += await deploy.watch_readyz(guard, 2)
    missing = (await guard.metrics())("guard_input_topics_missing")
    made_by_guard = typo in await deploy.topics()
    tally = await deploy.tally()

    said = [(status, text) for status, text in answers if status is not None]
    seen = (
        f"/readyz: {answers_seen(said)}; guard_input_topics_missing {missing:.0f}; the typo'd topic "
        f"{'was created' if made_by_guard else 'does not exist'}; {tally!r}"
    )
    assert said, f"/readyz never answered: {guard.log_tail()}"
    assert all(status != 200 for status, _ in said), seen
    assert said[-1][0] == 503 and typo in said[-1][1], seen
    assert not made_by_guard, seen
    assert missing == 1, seen
    assert not (tally.calls or tally.audit or tally.slack), seen
