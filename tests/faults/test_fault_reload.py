"""Case 6: rule reload on the real process.

The rules live in a directory laid out like a mounted ConfigMap (`..data` symlink swap). Three
changes: a valid swap (applied: a lower threshold pauses on the next complaint), an invalid swap
(rejected with a clear message; the rules in force keep working, proved by a decision after it), and
the rule file deleted (rejected; still working). guard_rule_reloads_total is read from /metrics.
"""

from __future__ import annotations

import time

import pytest
from test_reload import RULE, ConfigMapVolume

from guard.testing.events import complained


@pytest.mark.timeout(90)
async def test_valid_invalid_and_deleted_rule_files_on_the_real_process(kit, standin, report_row, tmp_path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    volume = ConfigMapVolume(rules_dir)
    volume.publish({"rules.yaml": RULE.format(threshold=5)})
    for campaign in ("camp_a", "camp_b", "camp_c"):
        standin.add_campaign(campaign)
    topics = await kit.topics()
    guard = kit.guard(kit.env(topics, standin, GUARD_RULES=rules_dir, GUARD_RULES_RELOAD_INTERVAL=0.2))
    await guard.wait_ready()
    start = time.time() - 600

    async def reloads(result: str) -> float:
        return (await guard.metrics())("guard_rule_reloads_total", result=result)

    async def counted() -> float:
        return (await guard.metrics()).records("counted")

    async with kit.producer() as producer:

        async def complaints(campaign: str, first: int, n: int) -> None:
            await producer.send_all(
                topics.input, [(campaign, complained(campaign, start + first + i)) for i in range(n)]
            )

        # 3 complaints under a threshold of 5: nothing happens
        await complaints("camp_a", 0, 3)
        await kit.wait_until(lambda: _eq(counted(), 3), 30, what="3 records counted")
        assert standin.pause_requests() == []

        # 1. valid swap to 3: applied; the next complaint (4 >= 3) pauses camp_a
        volume.publish({"rules.yaml": RULE.format(threshold=3)})
        await kit.wait_until(lambda: _eq(reloads("applied"), 1), 10, what="reload applied")
        await complaints("camp_a", 10, 1)
        await standin.wait_for_pauses(1, timeout=15, campaign_id="camp_a")

        # 2. invalid swap: rejected, the threshold of 3 stays in force (camp_b is paused at its 3rd complaint)
        volume.publish({"rules.yaml": RULE.format(threshold="many")})
        await kit.wait_until(lambda: _eq(reloads("rejected"), 1), 10, what="invalid rules rejected")
        await complaints("camp_b", 20, 2)
        await kit.wait_until(lambda: _eq(counted(), 6), 15, what="camp_b's first 2 complaints counted")
        assert standin.pause_requests("camp_b") == []
        await complaints("camp_b", 22, 1)
        await standin.wait_for_pauses(1, timeout=15, campaign_id="camp_b")

        # 3. the rule file deleted (the ConfigMap key removed): rejected, still working
        (rules_dir / "rules.yaml").unlink()
        await kit.wait_until(lambda: _eq(reloads("rejected"), 2), 10, what="deleted rules rejected")
        await complaints("camp_c", 30, 3)
        await standin.wait_for_pauses(1, timeout=15, campaign_id="camp_c")

    metrics = await guard.metrics()
    assert guard.running
    assert await guard.terminate() == 0
    rejections = [
        entry for entry in guard.logs() if entry["event"] == "new rules rejected; the previous rules stay in force"
    ]
    problems = [" / ".join(entry.get("problems", [])) for entry in rejections]
    report_row(
        "6 rule reload (ConfigMap `..data` swap)",
        "valid swap (threshold 5 -> 3), invalid swap (threshold: many), rules.yaml deleted",
        f"guard_rule_reloads_total applied={metrics('guard_rule_reloads_total', result='applied'):.0f} "
        f"rejected={metrics('guard_rule_reloads_total', result='rejected'):.0f}; guard_rules_loaded="
        f"{metrics('guard_rules_loaded'):.0f}; pauses after each change: camp_a (new threshold), camp_b (after the "
        f"invalid swap, old rules), camp_c (after the deletion); rejection messages: {problems}",
    )
    assert [r.campaign_id for r in standin.pause_requests()] == ["camp_a", "camp_b", "camp_c"]
    assert metrics("guard_rule_reloads_total", result="applied") == 1
    assert metrics("guard_rule_reloads_total", result="rejected") == 2
    assert metrics("guard_rules_loaded") == 1
    assert len(problems) == 2
    assert "threshold" in problems[0]
    assert "no rule files" in problems[1] or "no such file" in problems[1]


async def _eq(value, expected: float) -> bool:
    return await value == expected
