"""`guard test`: rule tests pass, fail with a readable diff, and guard the shipped rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.cli import main
from guard.events import Signal
from guard.ruletest import START, RuleTestError, script_events

SHIPPED_TESTS = sorted((Path(__file__).parent.parent / "rules" / "tests").glob("*.yaml"))
RULE = """
groups:
  - name: g
    rules:
      - name: bounces
        description: too many hard bounces
        rate: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent}
        window: 1h
        threshold: 10%
        min_volume: 10
"""


def write_test(tmp_path: Path, expect: str) -> Path:
    (tmp_path / "rules.yaml").write_text(RULE)
    test = tmp_path / "rules_test.yaml"
    test.write_text(
        "rules: rules.yaml\ntests:\n  - name: ten sends, one bounce\n"
        f"    input:\n      camp_a: 10 sent over 10m, then 1 hard_bounce\n    expect: {expect}\n"
    )
    return test


class TestScripts:
    def test_spreads_a_step_so_its_last_event_lands_at_the_end(self) -> None:
        """`4 sent over 4m` -> sends at 1, 2, 3, 4 minutes."""
        events = script_events("c", "4 sent over 4m")
        assert [e.time - START for e in events] == [60, 120, 180, 240]

    def test_reads_kinds_domains_statuses_waits_and_restarts(self) -> None:
        """Every part of the notation becomes the matching event fields."""
        events = script_events(
            "c", "1 hard_bounce to gmail.com status 5.1.1, then wait 1h, then started, then 1 complaint"
        )
        assert [(e.signal, e.bounce_type, e.recipient_domain, e.smtp_status) for e in events] == [
            (Signal.BOUNCED, "hard", "gmail.com", "5.1.1"),
            (Signal.STARTED, None, None, None),
            (Signal.COMPLAINED, None, None, None),
        ]
        assert events[1].time - START == 3600

    def test_rejects_an_unreadable_step_with_an_example(self) -> None:
        """A typo gets a message that shows the notation."""
        with pytest.raises(RuleTestError, match="cannot read step '3 bounced'.*e.g. '200 sent over 20m'"):
            script_events("c", "3 bounced")


class TestCommand:
    def test_passes_when_the_expected_decision_fires(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Expected rule, campaign and time: PASS and exit 0."""
        assert main(["test", str(write_test(tmp_path, "[{campaign: camp_a, rule: bounces, at: 10m}]"))]) == 0
        assert capsys.readouterr().out.startswith("PASS")

    def test_fails_with_a_diff_when_the_time_differs(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A wrong time shows the missing expectation and what fired instead; exit 1."""
        assert main(["test", str(write_test(tmp_path, "[{campaign: camp_a, rule: bounces, at: 9m}]"))]) == 1
        out = capsys.readouterr().out
        assert "FAIL" in out
        assert "- expected, did not fire: camp_a bounces at 9m" in out
        assert "+ fired, not expected:    camp_a bounces at 10m" in out

    def test_fails_when_something_fires_that_should_not(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`expect: []` means nothing fires."""
        assert main(["test", str(write_test(tmp_path, "[]"))]) == 1
        assert "+ fired, not expected:    camp_a bounces at 10m" in capsys.readouterr().out

    def test_reports_an_invalid_test_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file without tests is an error naming the file."""
        bad = tmp_path / "bad_test.yaml"
        bad.write_text("rules: rules.yaml\n")
        assert main(["test", str(bad)]) == 1
        assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize("path", SHIPPED_TESTS, ids=[p.name for p in SHIPPED_TESTS])
def test_the_shipped_rules_pass_their_tests(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rules/tests/*.yaml hold for rules/ (a changed threshold shows up here)."""
    code = main(["test", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and out.count("PASS") >= 10
