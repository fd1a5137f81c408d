"""A backlog ends as if the guard had kept up and been obeyed (promise 10), met as a user meets it:
a first deploy over hours of history, a restart after an outage, and a bridge forwarding an hour of
buffered mail."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

MINUTE, HOUR = 60.0, 3600.0
CLEAN_CAMPAIGNS = 300  # x 450 sends over three hours: ~135k records
ACTED = {"paused", "already_paused", "failed", "not_running", "dry_run"}  # outcomes that say "paused it"


def assert_paused_once_each(tally, bad_now: tuple[str, ...], healthy_since: str, clean: tuple[str, ...]) -> None:
    """Each campaign bad now paused once (one call, one `paused`, one notification); the one bad earlier and
    healthy since, and the clean ones, never touched."""
    for campaign in bad_now:
        assert tally.calls[campaign] == 1, tally
        assert tally.outcomes(campaign)["paused"] == 1 and not tally.outcomes(campaign)["failed"], tally
        assert tally.notified(campaign) == Counter(paused=1), tally
    assert tally.calls[healthy_since] == 0, tally
    assert not ACTED & set(tally.outcomes(healthy_since)), tally
    assert not tally.notified(healthy_since), tally
    assert not any(tally.calls[c] or tally.outcomes(c) or tally.notified(c) for c in clean), tally


async def test_a_first_deploy_over_three_hours_of_history_pauses_once_what_is_bad_now(deploy) -> None:
    """The topic holds three hours of mail when the guard is first deployed: the campaign bad all along
    is paused once, the one bad for 20 minutes three hours ago and healthy since is not paused, and
    healthy campaigns are left alone."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    still_bad, healthy_since, clean = "camp_bad_all_along", "camp_bad_3h_ago", ["camp_clean_1", "camp_clean_2"]
    deploy.campaigns(still_bad, healthy_since, *clean)
    now = time.time()
    start = now - 3 * HOUR
    await deploy.produce(  # the webhook bridge has been writing for three hours (the broker made the topic)
        deploy.history(
            deploy.mail(still_bad, S(start, now, bad), until=now),
            deploy.mail(
                healthy_since, S(start, start + 20 * MINUTE, bad), S(start + 20 * MINUTE, now, healthy), until=now
            ),
            *(deploy.mail(campaign, S(start, now, healthy), until=now) for campaign in clean),
        )
    )

    guard = deploy.start()
    await guard.wait_ready(60)
    await deploy.settle(guard)
    tally = await deploy.tally()

    assert_paused_once_each(tally, bad_now=(still_bad,), healthy_since=healthy_since, clean=tuple(clean))


async def test_a_restart_after_a_forty_minute_outage_pauses_once_each_campaign_bad_now(deploy) -> None:
    """The guard ran, caught up, and was stopped (SIGTERM) for 40 minutes while mail went on: started
    again, it pauses each campaign bad now once, and not the one bad early in the outage and healthy
    since."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    throughout, late, early, clean = "camp_bad_throughout", "camp_bad_lately", "camp_bad_early", "camp_clean"
    campaigns = [throughout, late, early, clean]
    deploy.campaigns(*campaigns)
    now = time.time()
    outage = now - 40 * MINUTE
    await deploy.produce(  # the hour before the outage: every campaign healthy
        deploy.history(*(deploy.mail(c, S(outage - HOUR, outage, healthy), until=outage) for c in campaigns))
    )
    guard = deploy.start("before")
    await guard.wait_ready(60)
    await deploy.settle(guard)
    assert not (await deploy.tally()).calls, "nothing was bad before the outage"
    assert await guard.terminate() == 0

    await deploy.produce(  # the 40 minutes of the outage
        deploy.history(
            deploy.mail(throughout, S(outage, now, bad), until=now),
            deploy.mail(late, S(outage, now - 10 * MINUTE, healthy), S(now - 10 * MINUTE, now, bad), until=now),
            deploy.mail(early, S(outage, outage + 8 * MINUTE, bad), S(outage + 8 * MINUTE, now, healthy), until=now),
            deploy.mail(clean, S(outage, now, healthy), until=now),
        )
    )
    guard = deploy.start("after")
    await guard.wait_ready(60)
    await deploy.settle(guard)
    tally = await deploy.tally()

    assert_paused_once_each(tally, bad_now=(throughout, late), healthy_since=early, clean=(clean,))


@pytest.mark.timeout(180)
async def test_a_guard_killed_while_it_catches_up_pauses_once_after_its_restart(deploy) -> None:
    """A first deploy over three hours of mail of a few hundred campaigns, SIGKILLed while it holds the
    backlog's decisions (nothing acted on, nothing recorded, no offset committed past them): started again,
    it derives them again and pauses the campaign bad all along once, in all, and never the one healthy
    for hours since."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    still_bad, healthy_since = "camp_bad_all_along", "camp_bad_3h_ago"
    deploy.campaigns(still_bad, healthy_since)
    now = time.time()
    start = now - 3 * HOUR
    await deploy.produce(
        deploy.history(
            deploy.mail(still_bad, S(start, now, bad), until=now),
            deploy.mail(
                healthy_since, S(start, start + 20 * MINUTE, bad), S(start + 20 * MINUTE, now, healthy), until=now
            ),
            *(  # enough mail that catching up takes seconds: the kill lands while decisions are held
                deploy.mail(f"camp_{i:03d}", S(start + i % 24, now, healthy, 24.0), until=now)
                for i in range(CLEAN_CAMPAIGNS)
            ),
        )
    )

    first = deploy.start("first")

    async def holding() -> bool:
        assert first.running, first.log_tail()
        response = await first.get("/metrics")  # None until the process listens
        return response is not None and deploy.Metrics(response.text)("guard_held_decisions") > 0

    await deploy.wait_until(holding, 60, 0.02, "the first guard holds the backlog's decisions")
    await first.kill()
    killed_with = await deploy.tally()
    second = deploy.start("second")
    await second.wait_ready(60)
    await deploy.settle(second, timeout=90)
    tally = await deploy.tally()

    assert not killed_with.calls, f"premise: killed before it acted on the backlog: {killed_with}"
    assert tally.calls[still_bad] == 1, tally
    assert tally.outcomes(still_bad)["paused"] == 1 and not tally.outcomes(still_bad)["failed"], tally
    assert tally.notified(still_bad) == Counter(paused=1), tally
    assert tally.calls[healthy_since] == 0, tally
    assert not ACTED & set(tally.outcomes(healthy_since)), tally
    assert set(tally.calls) == {still_bad}, tally


@pytest.mark.timeout(240)
async def test_a_lag_spike_forwarded_in_chunks_pauses_once_each_campaign_bad_now(deploy) -> None:
    """The guard runs and has caught up; the webhook bridge was down for an hour and drains its buffer in
    chunks of 100 records, the guard reaching the log end after each. Each campaign bad now is paused once;
    the one bad in the hour's first 15 minutes and healthy since is not paused."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    throughout, late, early, clean = "camp_bad_throughout", "camp_bad_lately", "camp_bad_early", "camp_clean"
    campaigns = [throughout, late, early, clean]
    deploy.campaigns(*campaigns)
    assert await deploy.create_input_topic()
    now = time.time()
    down = now - HOUR
    await deploy.produce(  # the hour before the bridge went down: every campaign healthy
        deploy.history(*(deploy.mail(c, S(down - HOUR, down, healthy), until=down) for c in campaigns))
    )
    guard = deploy.start()
    await guard.wait_ready(60)
    await deploy.settle(guard)
    assert not (await deploy.tally()).calls, "nothing was bad before the bridge went down"

    buffered = list(
        deploy.history(
            deploy.mail(throughout, S(down, now, bad), until=now),
            deploy.mail(late, S(down, now - 10 * MINUTE, healthy), S(now - 10 * MINUTE, now, bad), until=now),
            deploy.mail(early, S(down, down + 15 * MINUTE, bad), S(down + 15 * MINUTE, now, healthy), until=now),
            deploy.mail(clean, S(down, now, healthy), until=now),
        )
    )
    for i in range(0, len(buffered), 100):
        await deploy.produce(buffered[i : i + 100])
        await asyncio.sleep(0.25)
    await deploy.settle(guard, timeout=90)
    tally = await deploy.tally()

    assert_paused_once_each(tally, bad_now=(throughout, late), healthy_since=early, clean=(clean,))
