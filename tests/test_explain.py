"""`guard validate --explain`: each rule in counts a person can check, and the counts are the
engine's: one event fewer does not fire, that many does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.rules import RuleSet, load_rules, parse_rules
from guard.rules.models import Rule, Selector

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
TEAM = """\
groups:
  - name: team
    rules:
      - name: team-bounces
        description: our own bounce line
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        last: 200
        threshold: 5%
        min_volume: 50
      - name: eu-complaints
        description: complaints of EU campaigns to Outlook
        rate:
          of: {signal: complained, where: {recipient_domain: outlook.com}}
          per: {signal: sent, where: {recipient_domain: outlook.com}}
        window: 6h
        threshold: 0.5%
        confidence: 0.95
        min_volume: 200
        for: 5m
        campaigns: {include: ["camp_eu_*"], exclude: ["camp_eu_test*"]}
      - name: bounce-wave
        description: many soft bounces
        count: {signal: bounced, where: {bounce_type: soft}}
        window: 30m
        threshold: 40
        action: alert
"""


def explain(path: Path) -> list[str]:
    """`guard validate --explain PATH` in a subprocess: the explanation lines."""
    result = subprocess.run(
        [sys.executable, "-m", "guard.cli", "validate", "--explain", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, *lines = result.stdout.splitlines()
    assert first.startswith(f"{path}: ") and " rules OK " in first
    return [line.strip() for line in lines]


@pytest.fixture
def team(tmp_path: Path) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(TEAM)
    return path


class TestLines:
    def test_says_a_count_window_rule_in_bounces_of_sends_and_its_smallest_volume(self, team: Path) -> None:
        """5% of the last 200, min volume 50: 10 of 200, and already 3 of 50."""
        assert explain(team)[0] == (
            "team-bounces: pauses when >= 10 of the last 200 sends hard-bounced (5%); "
            "not before 50 sends (then >= 3 of 50)"
        )

    def test_says_a_confident_time_window_rule_at_several_volumes(self, team: Path) -> None:
        """Confidence, domain filters, `for` and the campaign filter all appear in the line."""
        assert explain(team)[1] == (
            "eu-complaints: pauses when, within 6h, sends to outlook.com that complained "
            "(95% sure the rate is over 0.5%): >= 3 of 200, >= 16 of 2,000, >= 117 of 20,000 sends to outlook.com; "
            "not before 200 sends to outlook.com; only once that holds for 5m; campaigns camp_eu_* only; "
            "not campaigns camp_eu_test*"
        )

    def test_says_a_count_rule_and_an_alert(self, team: Path) -> None:
        assert explain(team)[2] == "bounce-wave: alerts when >= 40 soft bounces arrive within 30m"

    def test_the_shipped_burst_rule_reads_in_counts(self) -> None:
        """The brief's example, with the engine's true numbers."""
        assert (
            "hard-bounce-burst: pauses when >= 10 of the last 50 sends hard-bounced "
            "(99.9% sure the rate is over 8%); not before 20 sends (then >= 6 of 20)"
        ) in explain(RULES_DIR)

    def test_a_rule_that_can_never_fire_says_so(self, tmp_path: Path) -> None:
        """99.9% sure of a 90% rate within 10 sends cannot happen: the line says `never`."""
        path = tmp_path / "never.yaml"
        path.write_text(
            TEAM.split("      - name: eu-complaints")[0]
            .replace("threshold: 5%", "threshold: 90%\n        confidence: 0.999")
            .replace("last: 200", "last: 10")
            .replace("min_volume: 50", "min_volume: 10")
        )
        assert explain(path) == [
            "team-bounces: pauses when never: no count of hard-bounced among the last 10 sends "
            "reaches it (99.9% sure the rate is over 90%)"
        ]


def _event(selector: Selector, time: float, number: int) -> Event:
    where = selector.where
    return Event(
        Signal(selector.signal),
        "camp_eu_1",
        time,
        message_id=f"m{number}",
        recipient_domain=where.recipient_domain[0] if where.recipient_domain else None,
        bounce_type=where.bounce_type,
        smtp_status=where.smtp_status[0].replace("x", "0") if where.smtp_status else None,
    )


def _fires_at(rule: Rule, volume: int) -> int | None:
    """Feed `volume` per-events, then of-events one by one: how many until the rule fires."""
    assert rule.rate is not None
    engine, time = Engine(RuleSet(rules=(rule.model_copy(update={"for_": 0.0}),))), 1_767_225_600.0
    for number in range(volume):
        engine.process(_event(rule.rate.per, time, number))
    for count in range(1, volume + 1):
        if engine.process(_event(rule.rate.of, time + count * 1e-3, volume + count)):
            return count
    return None


def _rate_rules() -> list:
    team = parse_rules([("team.yaml", TEAM)])
    return [
        pytest.param(source, rule, id=rule.name)
        for source, rules in (("shipped", load_rules(RULES_DIR)), ("team", team))
        for rule in rules.rules
        if rule.rate is not None and rule.rate.delay is None  # delayed rates count sends by weight: see below
    ]


def test_a_delayed_rate_says_its_counts_are_of_sends_whose_outcomes_are_due() -> None:
    """A rate with `delay` weighs a fresh send less: its line says so rather than promising whole counts."""
    [line] = [line for line in explain(RULES_DIR) if line.startswith("gmail-complaint-rate: ")]
    assert "(each counted by the share of its complaints already due: half arrive within 2h, all within 2d;" in line


@pytest.mark.parametrize(("source", "rule"), _rate_rules())
def test_the_counts_said_are_the_counts_the_engine_fires_at(source: str, rule: Rule, team: Path) -> None:
    """Every `>= K of N` in a rule's line: the engine fires at the K-th event, not before; and
    below the volume it names, no count fires."""
    lines = explain(RULES_DIR if source == "shipped" else team)
    line = next(line for line in lines if line.startswith(f"{rule.name}: "))
    claims = [
        (int(k.replace(",", "")), int(n.replace(",", "")))
        for k, n in re.findall(r">= ([\d,]+) of (?:the last )?([\d,]+)", line)
    ]
    assert claims
    for count, volume in claims:
        if volume <= 10_000:  # larger volumes follow the same arithmetic and only cost time
            assert _fires_at(rule, volume) == count, (rule.name, count, volume)
    first = int(re.search(r"not before ([\d,]+)", line)[1].replace(",", ""))  # type: ignore[index]
    assert _fires_at(rule, first - 1) is None
