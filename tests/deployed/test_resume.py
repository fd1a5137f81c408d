"""The operator's next step after a pause that landed: the user resumes the campaign in Leadterra.
A resumed campaign is judged afresh (README "Paused and resumed campaigns"): healthy mail after
the grace is left alone, a list as bad as before is paused again, once; and a restart after that
pauses nothing again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

MINUTE, HOUR = 60.0, 3600.0
GRACE = 20.0  # GUARD_RESUME_GRACE, a documented setting: a resume within seconds instead of five minutes
ACTED = {"paused", "already_paused", "failed", "not_running", "dry_run"}  # outcomes that say "paused it"


async def resume(deploy, campaign: str) -> None:
    """The user starts the campaign again through Leadterra's API."""
    async with httpx.AsyncClient(base_url=deploy.standin.url) as api:
        answer = await api.post(
            f"/v1/campaigns/{campaign}/start", headers={"Authorization": f"Bearer {deploy.standin.api_key}"}
        )
    assert answer.json()["status"] == "running"


async def until_past(moment: float) -> None:
    """Wait until `moment` (epoch seconds) lies in the past: mail is logged after it was sent."""
    await asyncio.sleep(max(0.0, moment - time.time()))


@pytest.mark.timeout(240)
async def test_a_campaign_resumed_after_a_catch_up_pause_is_not_paused_again_after_a_restart(deploy) -> None:
    """A first deploy over an hour of history pauses two campaigns bad all along, once each, at catch-up. The
    user resumes both: one list was cleaned (healthy mail since), the other was not (bad mail: the guard
    pauses it again on its new evidence, once, as README "Paused and resumed campaigns" says). The guard is
    then restarted (SIGTERM, same settings, checkpoints off so that it replays the log): nothing happened since,
    so it pauses nothing again. The catch-up pause is not in the log: the replay derives other decisions, never
    recorded, and acts on none of them."""
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    cleaned, unfixed, clean = "camp_cleaned", "camp_unfixed", "camp_clean"
    deploy.campaigns(cleaned, unfixed, clean)
    now = time.time()
    start = now - HOUR
    await deploy.produce(
        deploy.history(
            deploy.mail(cleaned, S(start, now, bad), until=now),
            deploy.mail(unfixed, S(start + 3, now, bad), until=now),
            deploy.mail(clean, S(start, now, healthy), until=now),
        )
    )
    settings = {"GUARD_RESUME_GRACE": f"{GRACE:g}", "GUARD_CHECKPOINT_INTERVAL": "0"}
    first = deploy.start("first", **settings)
    await first.wait_ready(60)
    await deploy.settle(first)
    at_catch_up = await deploy.tally()
    assert at_catch_up.calls == Counter({cleaned: 1, unfixed: 1}), f"premise: {at_catch_up}"
    paused_at = max(r.received_at for r in deploy.standin.pause_requests())

    for campaign in (cleaned, unfixed):
        await resume(deploy, campaign)
    after = paused_at + GRACE + 2  # the first sends after the resume: later than the pause plus the grace
    await asyncio.sleep(max(0.0, after + 45 - time.time()))
    until = time.time()
    await deploy.produce(
        deploy.history(
            deploy.mail(cleaned, S(after, after + 30, healthy, 1.0), until=until),
            deploy.mail(unfixed, S(after, after + 30, 0.5, 1.0), until=until),
            deploy.mail(clean, S(after, after + 30, healthy, 1.0), until=until),
        )
    )
    try:
        await deploy.standin.wait_for_pauses(3, 30)
    except TimeoutError:
        pass
    await deploy.settle(first)
    before_restart = await deploy.tally()
    assert before_restart.calls == Counter({cleaned: 1, unfixed: 2}), f"premise: {before_restart}"
    assert await first.terminate() == 0

    second = deploy.start("second", **settings)
    await second.wait_ready(90)
    await asyncio.sleep(5)  # the audit check acts on what it finds unsettled
    await deploy.settle(second)
    tally = await deploy.tally()
    assert tally.calls == before_restart.calls, f"before the restart: {before_restart}; after: {tally}"
    assert tally.outcomes(unfixed)["paused"] == 2 and not tally.outcomes(unfixed)["failed"], tally
    assert tally.notified(cleaned) == Counter(paused=1) and tally.notified(unfixed) == Counter(paused=2), tally
    assert deploy.standin.status(cleaned) == "running" and deploy.standin.status(unfixed) == "paused"
    assert not tally.calls[clean] and not ACTED & set(tally.outcomes(clean)), tally
