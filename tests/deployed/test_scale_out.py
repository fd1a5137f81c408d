"""A second replica joins (a scale-out, or the chart's rolling update: the new pod joins the group first) while the
first is retrying pauses Leadterra keeps refusing. The partitions that move take their decisions in flight with them:
each decision gets one caller, one outcome and one notice (promise 2)."""

from __future__ import annotations

import time
from collections import Counter

MINUTE = 60.0


async def test_pauses_being_retried_move_with_their_partitions_to_a_new_replica(deploy) -> None:
    S = deploy.Stretch
    bad = [f"camp_bad_{n}" for n in range(8)]
    healthy = [f"camp_ok_{n}" for n in range(4)]
    deploy.campaigns(*bad, *healthy)
    now = time.time()
    await deploy.produce(
        deploy.history(
            *(
                deploy.mail(
                    c,
                    S(now - 20 * MINUTE + n, now - 4 * MINUTE, deploy.HEALTHY),
                    S(now - 4 * MINUTE, now, deploy.BAD),
                    until=now,
                )
                for n, c in enumerate(bad)
            ),
            *(deploy.mail(c, S(now - 20 * MINUTE + n, now, deploy.HEALTHY), until=now) for n, c in enumerate(healthy)),
        )
    )
    deploy.standin.fail_next(100_000, 503)  # Leadterra down
    first = deploy.start("first", LEADTERRA_BACKOFF_MAX="2")
    await first.wait_ready(60)

    async def fired(outcome: str, count: int) -> bool:
        events = await deploy.audit_events()
        return (
            len({e["decision_id"] for e in events if e["outcome"] == outcome and e["rule"]["action"] == "pause"})
            >= count
        )

    await deploy.wait_until(lambda: fired("fired", len(bad)), 60, 0.5, "every bad campaign's pause recorded")
    second = deploy.start("second", LEADTERRA_BACKOFF_MAX="2")
    await second.wait_ready(90)

    async def moved() -> bool:  # the second replica took some partitions and resumed their decisions
        return ((await second.metrics())("guard_inflight_actions") or 0) > 0

    await deploy.wait_until(moved, 60, 0.5, "the new replica acting on the decisions of its partitions")
    deploy.standin.clear_faults()  # Leadterra is back
    await deploy.wait_until(lambda: fired("paused", len(bad)), 90, 0.5, "every pause landed")

    async def settled() -> bool:  # a second caller, if any, lands its call and records its outcome before this
        return not any([(await guard.metrics())("guard_inflight_actions") for guard in (first, second)])

    await deploy.wait_until(settled, 60, 0.5, "no decision in flight on either replica")

    outcomes: dict[str, Counter[str]] = {}
    for event in await deploy.audit_events():
        outcomes.setdefault(event["decision_id"], Counter())[event["outcome"]] += 1
    assert all(counts == Counter(fired=1, paused=1) for counts in outcomes.values()), outcomes
    landed = Counter(r.campaign_id for r in deploy.standin.pause_requests() if r.status == 200)
    assert landed == Counter(bad), landed
    assert Counter(deploy.slack.messages) == Counter((c, "paused") for c in bad)
