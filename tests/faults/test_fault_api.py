"""Case 3: Leadterra down for 30 real seconds (fifteen times the longest backoff), then 429 storms with
Retry-After, then one campaign's calls taking 10 s. Every due pause lands after recovery, and decisions
for other campaigns keep flowing meanwhile: the delay from producing a crossing event to its decision
(during the outage) or to its pause request (while another campaign's call hangs) stays small.

Each campaign here is 200 sends then hard bounces: the 12th bounce crosses 6% of 200 (the fault
rules' hard-bounce-rate), so "the crossing event" is known exactly and can be produced on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from guard.testing.events import bounced, sent

OUTAGE = 30.0
RETRY_AFTER = 1.0
QUICK = 2.0  # seconds: the bound on "decisions keep flowing"


def before_crossing(campaign: str, start: float) -> list[tuple[str, bytes]]:
    """200 sends and 11 hard bounces: 5.5%, one bounce short of the 6% line."""
    return [(campaign, sent(campaign, start + i)) for i in range(200)] + [
        (campaign, bounced(campaign, start + 200 + i)) for i in range(11)
    ]


def crossing(campaign: str, start: float) -> list[tuple[str, bytes]]:
    """The 12th hard bounce: 6.0% of 200 sends."""
    return [(campaign, bounced(campaign, start + 211))]


def healthy(campaign: str, start: float) -> list[tuple[str, bytes]]:
    return [(campaign, sent(campaign, start + i)) for i in range(300)] + [
        (campaign, bounced(campaign, start + 300 + i)) for i in range(3)
    ]


@pytest.mark.timeout(180)
async def test_outage_then_rate_limits_then_one_slow_campaign(kit, standin, report_row) -> None:
    names = ["outage_a", "outage_b", "storm_c", "storm_d", "slow_e", "quick_f", "good_g", "good_h"]
    campaigns = {name: f"camp_{name}" for name in names}
    for campaign in campaigns.values():
        standin.add_campaign(campaign)
    topics = await kit.topics()
    env = kit.env(
        topics,
        standin,
        LEADTERRA_RETRY_DEADLINE=OUTAGE + 60,  # above the outage: the pause must outlive it
        LEADTERRA_BACKOFF_INITIAL=0.2,
        LEADTERRA_BACKOFF_MAX=2,
        LEADTERRA_REQUEST_TIMEOUT=15,  # above the 10 s latency: the slow call succeeds
    )
    guard = kit.guard(env)
    await guard.wait_ready()
    await kit.wait_until(lambda: _equals(guard, "guard_assigned_partitions", 4), 30, what="partitions assigned")
    start = time.time() - 240  # live mail: the crossing events are minutes old at most, never held as a backlog
    observed: dict[str, str] = {}

    async def counted(n: int) -> None:
        await kit.wait_until(lambda: _at_least(guard, n), 15, 0.05, f"{n} records counted")

    fired_for = lambda campaign: lambda e: e["campaign_id"] == campaign and e["outcome"] == "fired"  # noqa: E731
    async with kit.audit_tail(topics) as tail, kit.producer() as producer:
        total = 0

        async def send(items: list[tuple[str, bytes]]) -> float:
            nonlocal total
            await producer.send_all(topics.input, items)
            total += len(items)
            return time.monotonic()

        # ---- 1. the API down for 30 s: decisions are still taken and recorded at once
        await standin.down()
        down_at = time.monotonic()
        a, b = campaigns["outage_a"], campaigns["outage_b"]
        sent_at = await send(before_crossing(a, start) + crossing(a, start) + healthy(campaigns["good_g"], start))
        fired_a = await tail.wait_for(fired_for(a), 10) - sent_at
        probes = []
        await asyncio.sleep(OUTAGE / 2 - 3)  # the second campaign crosses the line halfway through
        await send(before_crossing(b, start))
        await counted(total)
        sent_at = await send(crossing(b, start))
        fired_b = await tail.wait_for(fired_for(b), 10) - sent_at
        while time.monotonic() - down_at < OUTAGE:
            probes.append((await guard.status("/livez"), await guard.status("/readyz")))
            await asyncio.sleep(2)
        assert standin.pause_requests() == [], "nothing reached the API while it was down"
        metrics = await guard.metrics()
        inflight_during = metrics("guard_inflight_actions")
        await standin.up()
        up_at = time.time()
        await standin.wait_for_pauses(1, timeout=10, campaign_id=a)
        await standin.wait_for_pauses(1, timeout=10, campaign_id=b)
        landed = max(r.received_at for r in standin.pause_requests() if r.status == 200) - up_at
        observed["outage"] = (
            f"decisions during the outage recorded {fired_a:.2f} s / {fired_b:.2f} s after their crossing event; "
            f"{inflight_during:.0f} pauses in flight at the end of the outage; /livez,/readyz during it: "
            f"{sorted(set(probes))}; both pauses landed {landed:.1f} s after the API came back"
        )

        # ---- 2. a 429 storm with Retry-After: 1 s
        c, d = campaigns["storm_c"], campaigns["storm_d"]
        standin.rate_limit_next(6, retry_after=RETRY_AFTER)
        storm_at = time.time()
        await send(
            before_crossing(c, start)
            + crossing(c, start)
            + before_crossing(d, start)
            + crossing(d, start)
            + healthy(campaigns["good_h"], start)
        )
        await standin.wait_for_pauses(1, timeout=30, campaign_id=c)
        await standin.wait_for_pauses(1, timeout=30, campaign_id=d)
        assert standin.pending_faults == 0
        gaps = []
        for campaign in (c, d):
            times = [r.received_at for r in standin.pause_requests(campaign)]
            gaps += [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        storm_done = max(r.received_at for r in standin.pause_requests() if r.status == 200) - storm_at
        statuses = [r.status for r in standin.pause_requests() if r.campaign_id in (c, d)]
        observed["storm"] = (
            f"{statuses.count(429)} answers 429, then 200 for both; shortest gap between two attempts of one "
            f"campaign {min(gaps):.2f} s (Retry-After {RETRY_AFTER:.0f} s); both paused {storm_done:.1f} s after the storm began"
        )
        assert statuses.count(429) == 6 and statuses.count(200) == 2
        assert min(gaps) >= RETRY_AFTER - 0.05, "Retry-After honoured"

        # ---- 3. one campaign's calls take 10 s; another campaign's pause is not held up
        e, f = campaigns["slow_e"], campaigns["quick_f"]
        standin.campaign_latency[e] = 10.0
        e_sent = await send(before_crossing(e, start) + crossing(e, start) + before_crossing(f, start))
        await counted(total)
        await kit.wait_until(lambda: standin.in_flight >= 1, 10, 0.02, "the slow call is in flight")
        produced = time.time()
        await send(crossing(f, start))
        (quick,) = await standin.wait_for_pauses(1, timeout=10, campaign_id=f)
        delay = quick.received_at - produced
        assert not [r for r in standin.pause_requests(e) if r.status == 200], "e's call was still hanging"
        await standin.wait_for_pauses(1, timeout=20, campaign_id=e)
        observed["slow"] = (
            f"f's pause request {delay * 1000:.0f} ms after its crossing event was produced, while e's call was "
            f"held; e paused {time.monotonic() - e_sent:.1f} s after its events were produced"
        )
        await kit.wait_until(lambda: _equals(guard, "guard_inflight_actions", 0), 15, what="nothing in flight")
        outcomes_seen = lambda: sum(1 for _, event in tail.events if event["outcome"] != "fired") >= 6  # noqa: E731
        await kit.wait_until(outcomes_seen, 10, 0.05, "the six outcomes read back from the audit topic")
        metrics = await guard.metrics()
        audit = [event for _, event in tail.events]
    assert await guard.terminate() == 0

    report_row(
        f"3 API down {OUTAGE:.0f} s, 429 storm, one slow campaign",
        f"stand-in down {OUTAGE:.0f} s (connections refused) while 2 campaigns crossed the line; then 6 x 429 "
        f"Retry-After {RETRY_AFTER:.0f} s; then 10 s latency on one campaign's calls; LEADTERRA_RETRY_DEADLINE="
        f"{OUTAGE + 60:.0f}",
        "; ".join(observed.values())
        + f"; {metrics('guard_api_attempts_total'):.0f} API attempts in all; audit outcomes "
        + str(dict(Counter(event["outcome"] for event in audit))),
    )
    paused = {r.campaign_id for r in standin.pause_requests() if r.status == 200}
    assert paused == {campaigns[n] for n in ("outage_a", "outage_b", "storm_c", "storm_d", "slow_e", "quick_f")}
    assert all(len([r for r in standin.pause_requests(c) if r.status == 200]) == 1 for c in paused)
    outcomes = _outcomes(audit)
    assert all(outcomes[c] == ["fired", "paused"] for c in paused), outcomes
    assert fired_a < QUICK and fired_b < QUICK, "decisions keep flowing while the API is down"
    assert delay < QUICK, "a slow call for one campaign does not delay another's pause"


def _outcomes(audit: list[dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in audit:
        found.setdefault(event["campaign_id"], []).append(event["outcome"])
    return found


async def _equals(guard, name: str, value: float) -> bool:
    return (await guard.metrics())(name) == value


async def _at_least(guard, n: int) -> bool:
    return (await guard.metrics()).records("counted") >= n
