"""A backlog ends as if the guard had kept up and been obeyed (DESIGN promise 10), on a real broker:
a first deploy over three hours of history, through the real Service, the Leadterra stand-in and a
Slack-like receiver over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from test_notify import Receiver, receiver  # noqa: F401  (fixture)
from test_pipeline import HEALTHY_SINCE, STILL_BAD, steady, three_hours
from test_service import (  # noqa: F401  (fixtures)
    Guard,
    RunGuard,
    Topics,
    audits,
    producer,
    read_topic,
    run_guard,
    topics,
    until,
)

from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn


async def produce_as_logged(client: AIOKafkaProducer, topic: str, events: list[tuple[str, bytes, float]]) -> None:
    """As a producer logs events as they happen: each record's timestamp is its event time."""
    for key, value, at in events:
        await client.send(topic, key=key.encode(), value=value, timestamp_ms=int(at * 1000))
    await client.flush()


async def settled(guard: Guard, counted: int) -> None:
    """Every record counted, no decision held or in flight."""
    await until(lambda: guard.metrics.records.labels("counted")._value.get() >= counted, timeout=60)
    await until(lambda: not guard.metrics.held._value.get() and not guard.metrics.inflight._value.get(), timeout=30)


def outcomes(events: list[dict]) -> Counter[tuple[str, str]]:
    """(campaign, outcome) of every audit event."""
    return Counter((event["campaign_id"], event["outcome"]) for event in events)


async def test_a_first_deploy_over_three_hours_pauses_the_campaign_still_bad_once_and_the_other_never(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    """Three hours logged before the guard's first start (no committed offsets): one pause call, one Slack
    message, for the campaign bad now; none for the one bad three hours ago and healthy since; every other
    decision audited `fired` then `superseded`, with a note. Then the user resumes the campaign and it sends
    the same list again: judged afresh on its new evidence, it is paused once more."""
    for campaign in (STILL_BAD, HEALTHY_SINCE):
        standin.add_campaign(campaign)
    history = three_hours(time.time())
    await produce_as_logged(producer, topics.input, history)

    guard = await run_guard(slack_webhook_url=SecretStr(receiver.url))
    await standin.wait_for_pauses(1, timeout=60, campaign_id=STILL_BAD)
    await settled(guard, len(history))
    await asyncio.sleep(0.5)  # a second call would have been made by now

    assert len(standin.pause_requests(STILL_BAD)) == 1
    assert standin.pause_requests(HEALTHY_SINCE) == []
    assert standin.status(HEALTHY_SINCE) == "running"
    events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=10**9, timeout=3))
    counts = outcomes(events)
    assert counts[STILL_BAD, "paused"] == 1
    assert counts[HEALTHY_SINCE, "superseded"] == counts[HEALTHY_SINCE, "fired"] == 3
    assert counts[STILL_BAD, "superseded"] >= 20
    fired = sum(count for (_, outcome), count in counts.items() if outcome == "fired")
    assert fired == len(events) - fired, "every decision recorded has exactly one outcome"
    assert all(event["note"] for event in events if event["outcome"] == "superseded")
    assert guard.metrics.actions.labels("superseded")._value.get() == counts[STILL_BAD, "superseded"] + 3
    assert len(receiver.received) == 1  # Slack hears of the pause only

    paused = next(e for e in events if e["outcome"] == "paused")
    decided_at = datetime.fromisoformat(paused["timings"]["event_time"]).timestamp()
    acted_at = datetime.fromisoformat(paused["timings"]["decided_at"]).timestamp()
    assert acted_at - decided_at > DEFAULT_RESUME_GRACE  # held while the guard was behind, acted on once caught up

    # the user resumes it after the pause landed; it sends the same stale list, past the grace after the call
    standin.resume(STILL_BAD)
    resumed_at = max(time.time(), acted_at + DEFAULT_RESUME_GRACE + 1)
    again = steady(STILL_BAD, resumed_at, resumed_at + 400, 8)  # 400 s: within the grace of the next pause
    counted = guard.metrics.records.labels("counted")._value.get()
    # logged as they happen (an event written before its time counts at its record's time: within the grace)
    await produce_as_logged(producer, topics.input, again)
    await standin.wait_for_pauses(2, timeout=30, campaign_id=STILL_BAD)
    await settled(guard, counted + len(again))
    await asyncio.sleep(0.5)

    assert len(standin.pause_requests(STILL_BAD)) == 2
    events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=10**9, timeout=3))
    assert outcomes(events)[STILL_BAD, "paused"] == 2
    second = [e for e in events if e["outcome"] == "paused"][-1]["evidence"]
    assert second["episode_began"] == "resumed"
    assert datetime.fromisoformat(second["episode_from"]).timestamp() == pytest.approx(resumed_at)
    assert len(receiver.received) == 2


async def test_a_campaign_paused_at_catch_up_is_paused_once_whatever_mail_is_still_in_flight(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
) -> None:
    """The still-bad campaign's three hours end in a new episode leaning bad: its latest decision is acted on at
    catch-up. The sends and bounces still arriving for it a moment later (mail in flight, lagging webhooks)
    carry that episode over a rule's line: the decision is covered by the pause just made (`already_paused`),
    not a second pause call."""
    standin.add_campaign(STILL_BAD)
    end = time.time() - 30
    history = three_hours(end, sending_to_the_end=True)
    await produce_as_logged(producer, topics.input, history)

    guard = await run_guard()
    await standin.wait_for_pauses(1, timeout=60, campaign_id=STILL_BAD)
    in_flight = steady(STILL_BAD, end + 2, time.time() + 60, 8)
    await produce_as_logged(producer, topics.input, in_flight)
    await settled(guard, len(history) + len(in_flight))
    await asyncio.sleep(0.5)  # a second call would have been made by now

    assert len(standin.pause_requests(STILL_BAD)) == 1
    counts = outcomes(audits(await read_topic(kafka_bootstrap, topics.audit, expected=10**9, timeout=3)))
    assert counts[STILL_BAD, "paused"] == 1
    assert counts[STILL_BAD, "already_paused"] >= 1, "premise: the mail in flight crosses a pause rule's line"


async def test_a_campaign_whose_records_run_minutes_behind_the_guards_clock_is_paused(
    kafka_bootstrap: str,
    standin: LeadterraStandIn,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
) -> None:
    """A stale list sends on, every record stamped 8 minutes behind the guard's clock (its producer's clock runs
    behind; a guard whose own clock runs ahead, or a steady lag of as much, reads alike). Each live pause decision
    is held as a backlog's, and the campaign's mail never reads as up to the present: the catch-up limit judges it,
    just as the engine reads the sends since the decision as a resume. The pause is made then, once. The young
    episode those sends began used to supersede the decision, and the next one's alike: never paused."""
    campaign, grace, skew = "camp_skewed", 15.0, 480.0
    standin.add_campaign(campaign)
    guard = await run_guard(resume_grace=grace, catch_up_limit=grace)
    started = time.time()

    async def send_on() -> None:  # four sends a second, one in four hard-bouncing, until Leadterra stops it
        n = 0
        while standin.status(campaign) == "running" and time.time() - started < 120:
            at = time.time() - skew
            value = bounced(campaign, at) if n % 4 == 3 else sent(campaign, at)
            await producer.send_and_wait(topics.input, key=campaign.encode(), value=value, timestamp_ms=int(at * 1000))
            n += 1
            await asyncio.sleep(0.25)

    sending = asyncio.create_task(send_on())
    try:
        await standin.wait_for_pauses(1, timeout=90, campaign_id=campaign)
    finally:
        sending.cancel()
    paused_after = time.time() - started
    assert paused_after < 3 * grace + 15, paused_after  # held for the catch-up limit, no longer
    await asyncio.sleep(1)
    assert len(standin.pause_requests(campaign)) == 1
    # and the operator is told why: records arriving stamped behind the guard's clock
    told = [w for w in guard.health.warnings() if "are stamped 8.0 min behind this guard's clock" in w]
    assert told and f"records appended to {topics.input}[" in told[0], guard.health.warnings()
