"""`guard test`: rule tests pass, fail with a readable diff, and guard the shipped rules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guard.cli import main
from guard.contracts.events import Signal
from guard.tools.ruletest import START, StepError, script_events

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
        with pytest.raises(StepError, match="in step '3 bounced': unknown kind 'bounced'.*allowed: sent, hard_bounce"):
            script_events("c", "3 bounced")
        with pytest.raises(
            StepError, match="cannot read step 'sent 3'.*e.g. '500 sent to gmail.com with 2% hard_bounce"
        ):
            script_events("c", "sent 3")

    @pytest.mark.parametrize(
        "step",
        [
            "200 sent to outlook.com with 20% soft_bounce over 20m",
            "200 sent with 20% soft_bounce over 20m to outlook.com",
            "200 sent over 20m to outlook.com with 20% soft_bounce",
            "200 sent over 20m with 20 % soft_bounce to outlook.com",
        ],
    )
    def test_reads_the_clauses_of_a_step_in_any_order(self, step: str) -> None:
        """`to`, `with`, `status` and `over` may come in any order, and `20 %` reads as `20%`."""
        assert script_events("c", step) == script_events("c", "200 sent with 20% soft_bounce to outlook.com over 20m")

    def test_refuses_a_clause_given_twice(self) -> None:
        with pytest.raises(StepError, match="`over` is given twice"):
            script_events("c", "5 sent over 1m over 2m")


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
    """rules/tests/*.yaml hold for rules/ (a changed threshold shows up here), each test of them."""
    code = main(["test", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and out.count("PASS") == path.read_text().count("\n  - name: ") >= 4


TWO_PAUSES = """
groups:
  - name: g
    rules:
      - name: burst
        description: many hard bounces among the last sends
        rate: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent}
        last: 20
        threshold: 10%
        min_volume: 20
      - name: bounces
        description: too many hard bounces
        rate: {of: {signal: bounced, where: {bounce_type: hard}}, per: sent}
        window: 1h
        threshold: 20%
        min_volume: 10
      - name: soft
        description: soft bounces are worth a look
        rate: {of: {signal: bounced, where: {bounce_type: soft}}, per: sent}
        window: 1h
        threshold: 10%
        min_volume: 10
        action: alert
"""


def run_cli(tmp_path: Path, tests: str, *flags: str) -> tuple[int, str, str]:
    """`guard test [flags] FILE` through the CLI entry point, as a user runs it."""
    (tmp_path / "rules.yaml").write_text(TWO_PAUSES)
    path = tmp_path / "team_test.yaml"
    path.write_text("rules: rules.yaml\ntests:\n" + textwrap.dedent(tests))
    result = subprocess.run(
        [sys.executable, "-m", "guard.cli", "test", *flags, str(path)], capture_output=True, text=True, timeout=60
    )
    return (
        result.returncode,
        result.stdout.replace(str(path), "team_test.yaml"),
        result.stderr.replace(str(path), "team_test.yaml"),
    )


DEAD_LIST = """\
  - name: a dead list
    input:
      camp_a: 20 sent over 20m, then 4 hard_bounce
    expect:
"""


class TestExpectations:
    def test_action_and_outcome_can_be_asserted(self, tmp_path: Path) -> None:
        """The burst pauses (a call); the rate rule right after is covered by it (no call)."""
        code, out, _ = run_cli(
            tmp_path,
            DEAD_LIST
            + "      - {campaign: camp_a, rule: burst, at: 20m, action: pause, outcome: paused}\n"
            + "      - {campaign: camp_a, rule: bounces, at: 20m, action: pause, outcome: already_paused}\n",
        )
        assert (code, out) == (0, "PASS  team_test.yaml: a dead list\n")

    def test_a_wrong_outcome_fails_with_a_diff_saying_what_happened(self, tmp_path: Path) -> None:
        """Expecting the second pause to call Leadterra fails: it was covered by the first."""
        code, out, _ = run_cli(
            tmp_path,
            DEAD_LIST
            + "      - {campaign: camp_a, rule: burst}\n"
            + "      - {campaign: camp_a, rule: bounces, outcome: paused}\n",
        )
        assert code == 1
        assert out.splitlines() == [
            "FAIL  team_test.yaml: a dead list",
            "   - expected, did not fire: camp_a bounces (paused)",
            "   + fired, not expected:    camp_a bounces at 20m (pause, already_paused)",
        ]

    def test_a_wrong_action_fails(self, tmp_path: Path) -> None:
        """A rule expected to alert that pauses is a failure, not a pass."""
        code, out, _ = run_cli(
            tmp_path,
            DEAD_LIST
            + "      - {campaign: camp_a, rule: burst, action: alert}\n      - {campaign: camp_a, rule: bounces}\n",
        )
        assert code == 1 and "   - expected, did not fire: camp_a burst (alert)" in out

    def test_a_misspelt_rule_name_is_an_error_with_the_nearest_name(self, tmp_path: Path) -> None:
        """`rule: burts` names file, line, test and field, the nearest rule and all of them."""
        code, out, err = run_cli(tmp_path, DEAD_LIST + "      - {campaign: camp_a, rule: burts}\n")
        assert (code, out) == (1, "")
        assert err == (
            "team_test.yaml:7: test a dead list: expect.0.rule: unknown rule 'burts', did you mean 'burst'? "
            "(allowed: burst, bounces, soft) in the tested rules\n"
        )

    def test_an_expectation_for_a_campaign_without_input_is_an_error(self, tmp_path: Path) -> None:
        _, _, err = run_cli(tmp_path, DEAD_LIST + "      - {campaign: camp_b, rule: burst}\n")
        assert (
            "team_test.yaml:7: test a dead list: expect.0.campaign: unknown campaign 'camp_b', did you mean 'camp_a'?"
            in err
        )


class TestFileProblems:
    def test_an_unreadable_step_names_file_line_test_and_campaign(self, tmp_path: Path) -> None:
        code, _, err = run_cli(tmp_path, DEAD_LIST.replace("4 hard_bounce", "4 hard_bounces") + "      []\n")
        assert code == 1
        assert err.startswith(
            "team_test.yaml:5: test a dead list: input.camp_a: in step '4 hard_bounces': unknown kind 'hard_bounces', "
            "did you mean 'hard_bounce'?"
        )

    def test_schema_errors_have_line_numbers_and_the_nearest_key(self, tmp_path: Path) -> None:
        """`acton:` in an expectation: its line, the test, did-you-mean, the allowed keys; no pydantic text."""
        code, _, err = run_cli(tmp_path, DEAD_LIST + "      - {campaign: camp_a, rule: burst, acton: pause}\n")
        assert code == 1
        assert err == (
            "team_test.yaml:7: test a dead list: expect.0.acton: unknown key 'acton', did you mean 'action'? "
            "(allowed: campaign, rule, at, action, outcome)\n"
        )

    def test_a_bad_outcome_lists_the_outcomes(self, tmp_path: Path) -> None:
        _, _, err = run_cli(tmp_path, DEAD_LIST + "      - {campaign: camp_a, rule: burst, outcome: pause}\n")
        assert (
            "expect.0.outcome: unknown value 'pause', did you mean 'paused'? (allowed: paused, already_paused, recorded)"
            in err
        )
        assert "Input should" not in err


class TestVerbose:
    def test_prints_when_and_on_what_counts_each_rule_fired(self, tmp_path: Path) -> None:
        """-v: every decision of a passing test, with its counts and outcome."""
        code, out, _ = run_cli(
            tmp_path,
            DEAD_LIST + "      - {campaign: camp_a, rule: burst}\n      - {campaign: camp_a, rule: bounces}\n",
            "-v",
        )
        assert code == 0
        assert out.splitlines() == [
            "PASS  team_test.yaml: a dead list",
            "     fired: camp_a burst at 20m (pause, paused) on 2 of 20 (10.00%), threshold 10.00%",
            "     fired: camp_a bounces at 20m (pause, already_paused) on 4 of 20 (20.00%), threshold 20.00%",
        ]
