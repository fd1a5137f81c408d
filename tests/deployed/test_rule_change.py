"""A rule changed and shipped with a restart (`helm upgrade` with the rules edited, the chart's `restartOnChange`, a rolling
update): the checkpoints are of the old rules, which they carry, so the new guard restores them under those and takes
the new rules as a hot reload of the same file takes them: the campaign bad now is paused at its next event, and a breach
acted on is not acted on again. (The look-back replayed under the new rules instead lost every `cusum` and `last:`
series older than it, and paused the campaign bad now 75 s late: a pause derived from records read live under the old
rules was dropped while the engine held it, so the campaign's next sends read as its resume.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from guard.testing.guard_process import GuardProcess

MINUTE = 60.0
RULE = """groups:
  - name: team
    rules:
      - name: team-bounces
        description: {description}
        rate:
          of: {{signal: bounced, where: {{bounce_type: hard}}}}
          per: sent
        window: 1h
        threshold: {threshold}
        min_volume: 100
        cooldown: 1h
        action: {action}
"""


def write_rules(folder: Path, action: str, threshold: str, description: str = "Our own line.") -> None:
    folder.mkdir(exist_ok=True)
    (folder / "team.yaml").write_text(RULE.format(action=action, threshold=threshold, description=description))


async def bad_for_half_an_hour_then_guard(deploy, campaign: str, rules: Path, name: str) -> GuardProcess:
    """An hour of the campaign's mail, healthy then bad for its last half, in the topic; a guard on `rules`, ready."""
    S, now = deploy.Stretch, time.time()
    deploy.campaigns(campaign)
    bad = deploy.mail(
        campaign,
        S(now - 60 * MINUTE, now - 30 * MINUTE, deploy.HEALTHY),
        S(now - 30 * MINUTE, now, deploy.BAD),
        until=now,
    )
    await deploy.produce(deploy.history(bad))
    guard = deploy.start(name, GUARD_RULES=str(rules))
    await guard.wait_ready(60)
    return guard


@pytest.mark.parametrize(
    "before", [("alert", "5%"), ("pause", "30%")], ids=["alert-turned-into-a-pause", "threshold-lowered"]
)
async def test_a_rule_changed_with_a_restart_pauses_the_campaign_bad_now_at_catch_up(
    deploy, tmp_path: Path, before: tuple[str, str]
) -> None:
    campaign, rules = "camp_bad_since_half_an_hour", tmp_path / "rules"
    write_rules(rules, *before)
    first = await bad_for_half_an_hour_then_guard(deploy, campaign, rules, "old-rules")
    await deploy.settle(first)
    assert not deploy.standin.pause_requests()  # the premise: the old rules pause nothing
    assert await first.terminate() == 0  # checkpoints written, of the old rules

    write_rules(rules, "pause", "5%")
    second = deploy.start("new-rules", GUARD_RULES=str(rules))
    await second.wait_ready(60)
    sending = time.time()  # the campaign goes on sending its bad list
    await deploy.produce(
        deploy.history(deploy.mail(campaign, deploy.Stretch(sending, sending + 5, 0.5, 1.0), until=sending + 5))
    )
    await deploy.wait_until(lambda: bool(deploy.standin.pause_requests()), 45, 0.5, "the campaign bad now paused")
    paused = deploy.standin.pause_requests()[0].received_at
    await deploy.settle(second)
    assert [r.campaign_id for r in deploy.standin.pause_requests()] == [campaign]
    assert paused - sending < 10  # at its next events, as a hot reload: its evidence from before the restart kept
    metrics = await second.metrics()
    assert metrics("guard_checkpoints_total", result="restored") >= 1 and metrics.records("replayed") == 0


async def test_a_rule_reworded_with_a_restart_does_not_pause_again_what_it_paused(deploy, tmp_path: Path) -> None:
    """The rule paused the campaign; its description is edited and shipped with a restart. The replay under the new
    version derives the same breach's decision under a new id: the audit holds that breach paused already, so it is
    not acted on again (a campaign its user resumed since would be paused again; here, one call more)."""
    campaign, rules = "camp_paused_before_the_edit", tmp_path / "rules"
    write_rules(rules, "pause", "5%")
    first = await bad_for_half_an_hour_then_guard(deploy, campaign, rules, "before-the-edit")
    await deploy.wait_until(lambda: bool(deploy.standin.pause_requests()), 45, 0.5, "the campaign paused")
    await deploy.settle(first)
    assert await first.terminate() == 0

    write_rules(rules, "pause", "5%", description="Our own line, reworded.")
    second = deploy.start("after-the-edit", GUARD_RULES=str(rules))
    await second.wait_ready(60)
    await deploy.settle(second)
    assert [r.campaign_id for r in deploy.standin.pause_requests()] == [campaign]
    outcomes = [e["outcome"] for e in await deploy.audit_events() if e["rule"]["action"] == "pause"]
    assert outcomes.count("paused") == 1 and "already_paused" not in outcomes, outcomes
