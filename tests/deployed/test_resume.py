"""The operator's next step after a pause that landed: the user resumes the campaign in Leadterra.
A resumed campaign is judged afresh (README "Paused and resumed campaigns"): healthy mail after
the grace is left alone, a list as bad as before is paused again, once."""

from __future__ import annotations

import time
from collections import Counter

import httpx

MINUTE = 60.0


async def test_a_campaign_resumed_after_its_pause_landed_is_paused_again_only_when_bad_again(deploy) -> None:
    """Paused once; resumed through the API; healthy mail after the 5-minute grace: no second pause;
    a bad list again: paused again, once. Event times lie in the past, so nothing waits for the grace."""
    S, campaign = deploy.Stretch, "camp_resumed"
    deploy.campaigns(campaign)
    assert await deploy.create_input_topic()
    guard = deploy.start()
    await guard.wait_ready(60)
    began = time.time() - 30 * MINUTE

    await deploy.produce(deploy.mail(campaign, S(began, began + 6 * MINUTE, deploy.BAD), until=began + 6 * MINUTE))
    await deploy.standin.wait_for_pauses(1, 30, campaign_id=campaign)
    await deploy.settle(guard)
    assert deploy.standin.status(campaign) == "paused"
    async with httpx.AsyncClient(base_url=deploy.standin.url) as api:  # the user resumes it
        answer = await api.post(
            f"/v1/campaigns/{campaign}/start", headers={"Authorization": f"Bearer {deploy.standin.api_key}"}
        )
    assert answer.json()["status"] == "running"

    cleaned = began + 12 * MINUTE  # well after the pause decision plus GUARD_RESUME_GRACE (300 s)
    await deploy.produce(deploy.mail(campaign, S(cleaned, cleaned + 8 * MINUTE, deploy.HEALTHY), until=time.time()))
    await deploy.settle(guard)
    after_healthy = await deploy.tally()

    bad_again = cleaned + 8 * MINUTE
    await deploy.produce(deploy.mail(campaign, S(bad_again, bad_again + 6 * MINUTE, deploy.BAD), until=time.time()))
    try:
        await deploy.standin.wait_for_pauses(2, 30, campaign_id=campaign)
    except TimeoutError:
        pass  # the tally says what happened
    await deploy.settle(guard)
    tally = await deploy.tally()

    assert after_healthy.calls[campaign] == 1, after_healthy
    assert after_healthy.outcomes(campaign)["paused"] == 1, after_healthy
    assert tally.calls[campaign] == 2, tally
    assert tally.outcomes(campaign)["paused"] == 2 and not tally.outcomes(campaign)["failed"], tally
    assert tally.notified(campaign) == Counter(paused=2), tally
    assert deploy.standin.status(campaign) == "paused"
