"""`guard validate` as a rule author meets it: every message teaches (what, where, an example, the
nearest valid key), near-misses of a percentage are read or refused alike, and no raw pydantic
text reaches the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.rules import load_rules

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
"""
#  line 4: the rule   line 7: rate.of   line 10: threshold   line 11: min_volume

# pydantic's own phrases: none may reach a rule author
PYDANTIC_WORDING = (
    "Input should",
    "Extra inputs",
    "Field required",
    "validation error",
    "Value error",
    "unable to parse",
    "String should",
    "instance of",
    "pydantic",
    "errors.pydantic.dev",
    "should have at least",
)


def validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    """`guard validate FILE` in a subprocess, as a user runs it."""
    path = tmp_path / "team.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "guard.cli", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout, result.stderr.replace(f"{path}", "team.yaml")


class TestThresholds:
    def test_a_threshold_written_in_words_is_answered_with_the_percent_form(self, tmp_path: Path) -> None:
        """`threshold: 5 percent` names file, line, rule and field and shows `5%`."""
        code, _, err = validate(tmp_path, TEAM.replace("threshold: 5%", "threshold: 5 percent"))
        assert code == 1
        assert (
            err
            == "team.yaml:10: rule team-bounces: threshold: '5 percent': write a percentage as '5%' (or the fraction 0.05)\n"
        )

    @pytest.mark.parametrize("written", ["5 %", "'5 %'", "5%", "0.05"])
    def test_a_space_before_the_percent_sign_reads_as_the_percentage(self, tmp_path: Path, written: str) -> None:
        """`5 %`, `5%` and 0.05 are one threshold, the same rule version."""
        path = tmp_path / "team.yaml"
        path.write_text(TEAM.replace("threshold: 5%", f"threshold: {written}"))
        [rule] = load_rules(path).rules
        [reference] = load_rules_text(tmp_path, TEAM).rules
        assert (rule.threshold, rule.version) == (0.05, reference.version)

    def test_a_whole_number_for_a_rate_says_how_it_reads_and_how_to_write_percent(self, tmp_path: Path) -> None:
        """`threshold: 5` on a rate rule is 500%: the message says so and shows '5%'."""
        _, _, err = validate(tmp_path, TEAM.replace("threshold: 5%", "threshold: 5"))
        assert "team.yaml:10: rule team-bounces: threshold: " in err
        assert "reads as 500% (for 5 percent write '5%')" in err


class TestKeys:
    def test_a_misspelt_key_gets_the_nearest_one_and_every_allowed_one(self, tmp_path: Path) -> None:
        """`bounce_typ` -> did you mean 'bounce_type', and the filters allowed there."""
        _, _, err = validate(tmp_path, TEAM.replace("bounce_type:", "bounce_typ:"))
        assert err == (
            "team.yaml:7: rule team-bounces: rate.of.where.bounce_typ: unknown key 'bounce_typ', did you mean "
            "'bounce_type'? (allowed: bounce_type, recipient_domain, smtp_status)\n"
        )

    def test_a_misspelt_rule_key_lists_the_rule_fields_by_the_names_a_file_uses(self, tmp_path: Path) -> None:
        """`min_volum` -> 'min_volume'; the list says `for`, as files write it, not `for_`."""
        _, _, err = validate(tmp_path, TEAM.replace("min_volume:", "min_volum:"))
        assert "team.yaml:11: rule team-bounces: min_volum: unknown key 'min_volum', did you mean 'min_volume'?" in err
        assert ", for, cooldown, action," in err

    def test_a_misspelt_value_gets_the_nearest_one_and_an_example(self, tmp_path: Path) -> None:
        """`action: paus` -> did you mean 'pause', allowed values, an example line."""
        _, _, err = validate(tmp_path, TEAM + "        action: paus\n")
        assert err == (
            "team.yaml:12: rule team-bounces: action: unknown value 'paus', did you mean 'pause'? "
            "(allowed: pause, alert); e.g. `action: pause`\n"
        )


class TestRequiredFields:
    def test_a_rate_rule_without_min_volume_is_told_what_it_is_for(self, tmp_path: Path) -> None:
        """The missing `min_volume` is explained with an example, at the rule's line."""
        _, _, err = validate(tmp_path, TEAM.replace("        min_volume: 50\n", ""))
        assert err == (
            "team.yaml:4: rule team-bounces: min_volume: a rate rule needs `min_volume`, e.g. `min_volume: 50`: "
            "it stays silent until `per` has that many events (1 bounce in 2 sends is no evidence)\n"
        )


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(TEAM.replace("bounce_type:", "bounce_typ:"), id="unknown-key"),
        pytest.param(TEAM.replace("threshold: 5%", "threshold: lots"), id="threshold-text"),
        pytest.param(TEAM.replace("min_volume: 50", "min_volume: many"), id="volume-text"),
        pytest.param(TEAM.replace("min_volume: 50", "min_volume: 2.5"), id="volume-fraction"),
        pytest.param(TEAM.replace("last: 200", "last: 5"), id="last-too-small"),
        pytest.param(TEAM.replace("per: sent", "per: opened"), id="bad-signal"),
        pytest.param(TEAM + "        labels: [a, b]\n", id="labels-list"),
        pytest.param(TEAM + "        labels: {team: 7}\n", id="label-number"),
        pytest.param(TEAM + "        confidence: 2\n", id="confidence-range"),
        pytest.param(TEAM + "        campaigns: {include: []}\n", id="empty-include"),
        pytest.param(TEAM + "        severity: loud\n", id="bad-severity"),
        pytest.param(TEAM.replace("name: team-bounces", "name: ''"), id="empty-name"),
        pytest.param(TEAM.replace("        description: our own bounce line\n", ""), id="no-description"),
        pytest.param("groups:\n  - name: g\n    rules:\n      - 5\n", id="rule-not-a-mapping"),
        pytest.param("- 1\n", id="top-level-list"),
        pytest.param("groups: []\n", id="no-groups"),
        pytest.param("groups: {a: 1}\n", id="groups-mapping"),
    ],
)
def test_no_message_quotes_pydantic(tmp_path: Path, broken: str) -> None:
    """Every problem line is `FILE:LINE: ...` in the guard's words, never pydantic's."""
    code, _, err = validate(tmp_path, broken)
    assert code == 1 and err
    for line in err.splitlines():
        assert line.startswith("team.yaml:"), line
        assert not any(phrase in line for phrase in PYDANTIC_WORDING), line


def load_rules_text(tmp_path: Path, text: str):  # noqa: ANN201
    path = tmp_path / "reference.yaml"
    path.write_text(text)
    return load_rules(path)
