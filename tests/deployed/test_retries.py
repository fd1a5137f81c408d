"""Webhooks Leadterra retried after `guard ingest` was unreachable (promise 10, met through the door): mail that
happened while the door was down comes again half an hour later, after the mail since. The guard ends as if it had
read that mail on time: each campaign bad now is paused once, one whose bad stretch was all in the retried mail and
healthy since is not paused."""

from __future__ import annotations

import time
from collections import Counter

MINUTE = 60.0
RETRIED_AFTER = 30 * MINUTE  # Leadterra's third attempt (after 1 and 5 minutes)


async def test_a_bad_stretch_retried_after_healthy_mail_pauses_only_what_is_bad_now(deploy) -> None:
    S, bad, healthy = deploy.Stretch, deploy.BAD, deploy.HEALTHY
    bad_while_down, still_bad, clean = "camp_bad_while_door_down", "camp_bad_all_along", "camp_clean"
    deploy.campaigns(bad_while_down, still_bad, clean)
    now = time.time()
    start, down, up = now - 40 * MINUTE, now - 35 * MINUTE, now - 30 * MINUTE
    mail = deploy.history(
        deploy.mail(bad_while_down, S(start, down, healthy), S(down, up, bad), S(up, now, healthy), until=now),
        deploy.mail(still_bad, S(start, now, bad), until=now),
        deploy.mail(clean, S(start, now, healthy), until=now),
    )
    # every webhook of the five minutes the door was down came again 30 minutes later: the retries end now
    arrivals = sorted(
        ((record.at + RETRIED_AFTER if down <= record.at < up else record.at), number, record)
        for number, record in enumerate(mail)
    )
    await deploy.create_input_topic()
    door, guard = deploy.start_ingest(), deploy.start()
    await door.wait_ready(60)
    await guard.wait_ready(60)

    await deploy.post(door, [record for _, _, record in arrivals])
    await deploy.settle(guard)
    tally = await deploy.tally()

    for campaign in (bad_while_down, clean):
        assert tally.calls[campaign] == 0 and not tally.outcomes(campaign) and not tally.notified(campaign), tally
    assert tally.calls[still_bad] == 1 and tally.outcomes(still_bad)["paused"] == 1, tally
    assert tally.notified(still_bad) == Counter(paused=1), tally
    # every retried send, skipped by the rules that read in arrival order, and the bounces that quote them
    retried = [record for at, _, record in arrivals if at != record.at]
    retried_sends = sum(1 for record in retried if b'"message.sent"' in record.value)
    assert retried_sends <= (await guard.metrics()).records("late") <= len(retried)
