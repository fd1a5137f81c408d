"""A restart with the chart's defaults resumes from checkpoints (promises 4 and 11): the guard makes
its own state topic, so a rolling update does not replay the rules' look-back."""

from __future__ import annotations

import time

import pytest

MINUTE, HOUR = 60.0, 3600.0
CAMPAIGNS = 2000  # x 300 sends over two hours, plus their bounces: ~600k records
EVERY = 24.0  # seconds between a campaign's sends


@pytest.mark.timeout(180)
async def test_a_restart_with_default_settings_is_ready_in_a_third_of_the_first_catch_up(deploy) -> None:
    """A first deploy catches up on two hours of mail of two thousand campaigns; stopped (SIGTERM) and
    started again with the same settings, it is ready in under 35% of that time, and pauses nothing
    again. Both are timed from the README's `partitions assigned` line: how long the group takes to
    hand the partitions over is the broker's (Tansu holds a returning group's join for ~18 s with the
    default 10 s session timeout, docs/brokers.md), and it is the same with or without checkpoints."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    bad_now = "camp_bad_now"
    deploy.campaigns(bad_now)
    now = time.time()
    start = now - 2 * HOUR
    await deploy.produce(
        deploy.history(
            deploy.mail(bad_now, S(start, now - 6 * MINUTE, healthy, EVERY), S(now - 6 * MINUTE, now, bad), until=now),
            *(
                deploy.mail(f"camp_{i:04d}", S(start + i % EVERY, now, healthy, EVERY), until=now)
                for i in range(CAMPAIGNS)
            ),
        )
    )

    first = deploy.start("first")
    await deploy.wait_until(deploy.caught_up, 150, 0.25, "the first catch-up")
    catch_up = time.time() - (deploy.assigned_at(first) or first.started_at)
    await deploy.settle(first)
    paused_before = (await deploy.tally()).calls[bad_now]
    assert await first.terminate() == 0
    made = {deploy.names.state, deploy.names.control} & await deploy.topics()

    second = deploy.start("second")
    ready = await deploy.ready_owning_all(second, 120) - (deploy.assigned_at(second) or second.started_at)
    replayed = (await second.metrics()).records("replayed")
    await deploy.settle(second)
    tally = await deploy.tally()

    seen = (
        f"first catch-up {catch_up:.1f} s, ready again in {ready:.1f} s ({replayed:.0f} records replayed); "
        f"internal topics the guard made: {sorted(made)}"
    )
    assert ready < 0.35 * catch_up, seen
    assert deploy.names.state in made, seen
    assert paused_before == 1, tally
    assert tally.calls[bad_now] == 1 and len(tally.calls) == 1, tally
    assert tally.outcomes(bad_now)["paused"] == 1, tally


async def test_a_rollout_that_cannot_use_the_checkpoints_replays_and_pauses_nothing_again(deploy) -> None:
    """The guard ran, paused the campaign bad now, and was stopped (SIGTERM: checkpoints written); the next version
    comes up with checkpoints it cannot use (another GUARD_RESUME_GRACE here, as a new snapshot format would): it
    counts them `mismatch`, replays the look-back, and calls pause for no campaign again."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    bad_now, clean = "camp_bad_now", ["camp_clean_1", "camp_clean_2"]
    deploy.campaigns(bad_now, *clean)
    now = time.time()
    start = now - HOUR
    await deploy.produce(
        deploy.history(
            deploy.mail(bad_now, S(start, now - 10 * MINUTE, healthy), S(now - 10 * MINUTE, now, bad), until=now),
            *(deploy.mail(campaign, S(start, now, healthy), until=now) for campaign in clean),
        )
    )
    first = deploy.start("first")
    await first.wait_ready(60)
    await deploy.settle(first)
    assert await first.terminate() == 0

    second = deploy.start("second", GUARD_RESUME_GRACE="240")
    await second.wait_ready(60)
    await deploy.settle(second)
    metrics = await second.metrics()
    tally = await deploy.tally()

    assert metrics("guard_checkpoints_total", result="mismatch") >= 1 and metrics.records("replayed") > 0, tally
    assert tally.calls[bad_now] == 1 and len(tally.calls) == 1, tally
    assert tally.outcomes(bad_now)["paused"] == 1, tally
