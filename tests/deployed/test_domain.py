"""A sending domain burning across many small campaigns is paused campaign by campaign (issue 29), by two replicas
of which one is killed: the scope topic the guard makes, its partitions handed over, no campaign paused twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from guard.testing.events import envelope

SHIPPED = Path(__file__).resolve().parents[2] / "rules" / "domains" / "sender-domain.yaml"  # as an operator copies it
BURNING, FINE = "burning.example", "fine.example"


class Record(NamedTuple):  # what deploy.produce writes: keyed by campaign, stamped with the event time
    campaign: str
    value: bytes
    at: float


def mail(campaign: str, domain: str, sends: int, bounce_every: int, start: float, every: float) -> Iterator[Record]:
    """`sends` sends from `domain` from `start`, each `bounce_every`-th hard-bouncing 5 s later (0: none)."""
    for n in range(sends):
        at = start + n * every
        message = f"{campaign}-{n}"
        sender = {"from": f"Team <team@{domain}>"}
        yield Record(campaign, envelope("message.sent", campaign, at, messageId=message, **sender), at)
        if bounce_every and n % bounce_every == bounce_every - 1:
            bounce = envelope("message.bounced", campaign, at + 5, messageId=message, bounceType="hard", **sender)
            yield Record(campaign, bounce, at + 5)


@pytest.mark.timeout(240)
async def test_many_small_campaigns_of_a_burning_domain_are_each_paused_once_by_two_replicas_one_killed(
    deploy, tmp_path: Path
) -> None:
    """Thirty campaigns of twelve sends from one domain, each far below any campaign's evidence, 10% hard
    bounces together; twenty campaigns of a healthy domain beside them. Two replicas: every campaign of the
    burning domain is paused once, none of the healthy one. The replica that reads the domain's partition of the
    scope topic is SIGKILLed; the other takes its partitions (input and scope topic alike), and five campaigns
    that start sending from the burning domain afterwards are paused too, once each, while no campaign is paused
    again."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "sender-domain.yaml").write_text(SHIPPED.read_text())
    burning = [f"camp_burn_{n:02d}" for n in range(30)]
    joiners = [f"camp_join_{n}" for n in range(5)]
    healthy = [f"camp_fine_{n:02d}" for n in range(20)]
    deploy.campaigns(*burning, *joiners, *healthy)
    now = time.time()
    start = now - 200
    await deploy.produce(
        deploy.history(
            *(mail(c, BURNING, 12, 10, start + n, 15.0) for n, c in enumerate(burning)),
            *(mail(c, FINE, 20, 0, start + n, 9.0) for n, c in enumerate(healthy)),
        )
    )
    a = deploy.start("a", GUARD_RULES=str(rules))
    b = deploy.start("b", GUARD_RULES=str(rules))

    async def paused(campaigns: list[str]) -> bool:
        return set(campaigns) <= set((await deploy.tally()).calls)

    await deploy.wait_until(lambda: paused(burning), 120, 0.5, "every campaign of the burning domain paused")
    assert deploy.names.scopes in await deploy.topics()  # the guard made it
    # the replica that reads the domain's partition of the scope topic (it decided last) is the one killed
    decided = {
        guard: max((e["timestamp"] for e in guard.logs() if e.get("event") == "rule fired"), default="")
        for guard in (a, b)
    }
    killed, survivor = sorted((a, b), key=decided.__getitem__, reverse=True)
    await killed.kill()
    later = time.time()
    await deploy.produce(deploy.history(*(mail(c, BURNING, 2, 0, later + n, 1.0) for n, c in enumerate(joiners))))
    await deploy.wait_until(lambda: paused(joiners), 120, 0.5, "the campaigns that joined paused by the survivor")
    await deploy.settle(survivor, 60)
    tally = await deploy.tally()

    assert {campaign: tally.calls[campaign] for campaign in [*burning, *joiners]} == dict.fromkeys(
        [*burning, *joiners], 1
    ), tally
    assert not set(healthy) & set(tally.calls), tally
    for campaign in [*burning, *joiners]:
        assert tally.outcomes(campaign)["paused"] == 1, tally
    scope_decisions = {
        event["scope"]["decision_id"]
        for event in await deploy.audit_events()
        if event["outcome"] == "paused" and event.get("scope")
    }
    assert len(scope_decisions) == 1  # one decision of the domain, every campaign's pause one of it
    assert survivor.running

    # `guard replay` over the input topic, as a user would run it: the same campaigns paused by the same rule and scope
    replayed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "guard.cli", "replay", f"kafka:{deploy.names.input}", "--rules", str(rules)]
        + ["--format", "json", "--since", "1h"],
        env=deploy.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    in_replay = {
        (e["campaign_id"], e["rule"]["name"], e["scope"]["key"]) for e in map(json.loads, replayed.stdout.splitlines())
    }
    live = {
        (e["campaign_id"], e["rule"]["name"], e["scope"]["key"])
        for e in await deploy.audit_events()
        if e["outcome"] == "paused"
    }
    expected = {(c, "domain-hard-bounce-rate", f"sender_domain:{BURNING}") for c in [*burning, *joiners]}
    assert in_replay == live == expected


@pytest.mark.timeout(240)
async def test_a_campaign_of_a_burning_domain_whose_pause_failed_is_paused_when_it_sends_on(
    deploy, tmp_path: Path
) -> None:
    """Leadterra is down while a domain burns: each campaign's pause ends `failed` at the retry deadline. Leadterra
    comes back, and five of the campaigns send on, past the resume grace: the domain's firing pauses each of them
    then, once, under a new decision; the others, which sent nothing more, are left alone. The firing used to count
    a failed pause as done, and the campaigns went on sending into the burning domain for as long as it fired."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "sender-domain.yaml").write_text(SHIPPED.read_text())
    burning = [f"camp_burn_{n:02d}" for n in range(30)]
    sending_on, stopped = burning[:5], burning[5:]
    deploy.campaigns(*burning)
    await deploy.standin.down()
    start = time.time() - 200
    await deploy.produce(deploy.history(*(mail(c, BURNING, 12, 10, start + n, 15.0) for n, c in enumerate(burning))))
    grace = 20.0
    deploy.start(GUARD_RULES=str(rules), LEADTERRA_RETRY_DEADLINE="3", GUARD_RESUME_GRACE=f"{grace:g}")

    async def failed() -> bool:
        tally = await deploy.tally()
        return all(tally.outcomes(campaign)["failed"] == 1 for campaign in burning)

    await deploy.wait_until(failed, 120, 0.5, "every pause failed while Leadterra was down")
    await deploy.standin.up()
    newest = start + 29 + 11 * 15.0 + 5  # the last campaign's last bounce
    await asyncio.sleep(max(0.0, newest + grace + 1 - time.time()))
    later = time.time()
    await deploy.produce(deploy.history(*(mail(c, BURNING, 3, 0, later + n, 1.0) for n, c in enumerate(sending_on))))

    async def paused() -> bool:
        tally = await deploy.tally()
        return all(tally.outcomes(campaign)["paused"] for campaign in sending_on)

    await deploy.wait_until(paused, 90, 0.5, "the campaigns that sent on paused")
    await asyncio.sleep(3)  # a second pause would come within the same moment
    tally = await deploy.tally()
    for campaign in sending_on:
        assert tally.outcomes(campaign) == {"fired": 2, "failed": 1, "paused": 1}, tally
    for campaign in stopped:
        assert tally.outcomes(campaign) == {"fired": 1, "failed": 1}, tally
    events = await deploy.audit_events()
    for campaign in sending_on:
        ids = {e["decision_id"] for e in events if e["campaign_id"] == campaign and e["outcome"] != "fired"}
        assert len(ids) == 2, ids  # the failed decision and the one made again
