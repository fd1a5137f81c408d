"""`guard demo` end to end: a real broker, the stand-in over real HTTP, the real service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The summary's line of each sending domain: its campaigns, pooled hard bounces, how many paused and by what
DOMAIN_LINE = re.compile(
    r"^  sender_domain:(?P<domain>\S+): (?P<campaigns>\d+) campaigns, pooled (?P<rate>[\d.]+)% hard bounces over "
    r"(?P<sends>[\d,]+) sends, paused (?P<paused>\d+)/(?P=campaigns)(?: by (?P<by>.+))?$",
    re.MULTILINE,
)


def tansu_pids(marked: str | None = None) -> set[int]:
    """Running Tansu brokers; with `marked`, those started with it in their environment (started by the demo
    run: the test workers' own brokers come and go meanwhile)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "tansu":
                    continue
                if marked is None or marked.encode() in (entry / "environ").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.integration
def test_the_demo_pauses_the_bad_campaigns_only_and_leaves_nothing_behind() -> None:
    """A short demo run: the traffic posted as signed webhooks through `guard ingest`, the forged ones
    refused; every bad campaign paused through the API, no healthy one, no broker left. The small campaigns
    of the burning domain are every one paused by the domain rule, those of the healthy domain none."""
    mark = f"GUARD_DEMO_TEST_RUN={uuid.uuid4().hex}"
    run = subprocess.run(
        [sys.executable, "-m", "guard.cli", "demo", "--duration", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", mark.split("=")[0]: mark.split("=")[1]},
    )
    assert run.returncode == 0, run.stderr
    assert "6 of 6 forged rejected (401)" in run.stdout
    # 3 of the 12 campaigns that name no sender, and the 24 of the burning domain
    assert "bad campaigns paused through the API: 27 of 27" in run.stdout
    assert "24 of sender_domain:burning.example" in run.stdout
    assert "healthy campaigns paused: 0" in run.stdout
    assert "missed" not in run.stdout
    view, summary = run.stdout.split("\nsummary\n")
    assert "sender_domain:burning.example: 24 campaigns" in view  # the live view's line of the domain
    domains = {match["domain"]: match for match in DOMAIN_LINE.finditer(summary)}
    assert set(domains) == {"burning.example", "healthy.example"}, summary
    burning, healthy = domains["burning.example"], domains["healthy.example"]
    assert (burning["paused"], burning["by"]) == ("24", "domain-hard-bounce-rate"), summary  # no campaign rule's
    assert float(burning["rate"]) > 5 and int(burning["sends"].replace(",", "")) >= 200, summary
    assert (healthy["campaigns"], healthy["paused"], healthy["by"]) == ("4", "0", None), summary
    assert float(healthy["rate"]) < 5, summary
    assert tansu_pids(marked=mark) == set()  # the demo's broker stopped with it
    header = next(line for line in run.stdout.splitlines() if "% of its threshold" in line)
    assert "why not paused" in header
    rows = [
        [cell.strip() for cell in line.split("│")] for line in run.stdout.splitlines() if line.startswith("│ camp_")
    ]
    for row in rows:
        campaign, _, rule, ratio, status, why = row[1:7]
        assert len(campaign) == len("camp_000000"), row  # names whole, never cut
        if int(ratio.rstrip("%")) >= 100 and status == "running":  # over a threshold, not paused: says why
            assert why, row
        if status == "paused":  # the rule that paused it, not whichever is closest now
            assert rule.startswith("paused by "), row


@pytest.mark.parametrize("engine", ["python", pytest.param("compiled", marks=pytest.mark.compiled_core)])
def test_only_a_rule_over_the_sending_domain_sees_the_burning_domain(engine: str, tmp_path: Path) -> None:
    """The demo's traffic through the demo's rules in one process (the guard's engine and its scopes): each
    small campaign of the burning domain is paused by the domain rule and by no campaign rule, no campaign of
    the healthy domain by anything; the campaigns that name no sender send what `generate` draws for them."""
    from guard.engine import Engine, decide, decode_records, scopes_beside
    from guard.engine.kinds import choose
    from guard.rules import load_rules
    from guard.tools.demo import DOMAIN_RULES, DemoResult, demo_rules, demo_traffic
    from guard.tools.generate import generate

    start = 1_767_225_600.0
    traffic = demo_traffic(7, 12, 3, start)
    own = generate(7, 12, 3, start=start, duration=7200.0, sends=(1500, 4000), bad_kinds=("bounces",))
    assert traffic.campaigns[:12] == own.campaigns
    assert [r for r in traffic.records if r.key.startswith("camp_7")] == list(own.records)
    assert all(spec.sender is None for spec in own.campaigns)
    rules = load_rules(demo_rules(ROOT / "rules", ROOT / DOMAIN_RULES, tmp_path / "rules"))
    kinds = choose(engine)  # type: ignore[arg-type]
    guard = Engine(rules, kinds=kinds)
    paused: dict[str, set[str]] = {}
    events = decode_records(((record.value, record.time) for record in traffic.records), decode=kinds.decode)
    for _, decisions in decide(guard, events, scopes_beside(rules, guard)):
        for decision in decisions:
            if decision.rule.action == "pause":
                paused.setdefault(decision.campaign_id, set()).add(decision.rule.name)
    domains = DemoResult(traffic).domains
    assert (len(domains["burning.example"]), len(domains["healthy.example"])) == (24, 4)
    assert {campaign: paused.get(campaign) for campaign in domains["burning.example"]} == dict.fromkeys(
        domains["burning.example"], {"domain-hard-bounce-rate"}
    )
    assert not set(domains["healthy.example"]) & set(paused)
    assert set(paused) - set(domains["burning.example"]) == set(own.bad)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            ("cusum 2% vs 8%", 10.7, 10.4145, 12, 106),
            "statistic 10.70 reached its level 10.41 (cusum 2% vs 8%; 12 of 106 since it rose)",
        ),
        (("last 50", 0.0809, 0.08, 10, 50), "8.09% of 50 reached 8.00% (10 events, last 50)"),
        (("1d", 3, 2, 3, None), "3 events reached 2 (1d)"),
    ],
)
def test_the_live_view_says_what_each_rule_compared(args: tuple, text: str) -> None:
    """A cusum is its statistic against its level (no division that rounds below it), a rate in percent."""
    from guard.tools.demo import compared_text

    assert compared_text(*args) == text
