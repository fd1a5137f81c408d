"""Rule files: loading, `guard validate`, every validation message, durations, schema, versions."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import T0, count_rules, rate_rules

from guard.cli import main
from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.rules import Rule, RuleFileError, RuleSet, load_rules, parse_rules
from guard.rules.durations import format_duration, parse_duration

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

# A valid rule file; fixtures below change one line of it. Line numbers matter to the tests:
GOOD = """\
groups:
  - name: bounces
    rules:
      - name: spike
        description: too many bounces
        count: bounced
        window: 1h
        threshold: 3
"""
#  line 4: `- name: spike` (the rule starts here)   line 6: count   line 7: window   line 8: threshold

GOOD_RATE = """\
groups:
  - name: bounces
    rules:
      - name: rate
        description: too many bounces per send
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        window: 1h
        threshold: 5%
        min_volume: 100
"""
#  line 4: the rule   line 6: rate   line 7: rate.of   line 9: window   line 10: threshold   line 11: min_volume


def problems(text: str, name: str = "rules.yaml") -> list[str]:
    """The problem lines the loader reports for one file (none: the file is valid)."""
    try:
        parse_rules([(name, text)])
    except RuleFileError as error:
        assert str(error) == "\n".join(error.problems)
        return error.problems
    return []


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


SHIPPED = [
    "hard-bounce-rate",
    "hard-bounce-burst",
    "soft-bounce-rate",
    "gmail-complaint-rate",
    "complaint-rate",
    "complaint-rate-warning",
    "complaint-spike",
    "unsubscribe-rate",
]


class TestShippedRules:
    """The rules shipped in rules/ are valid and mean what their comments say."""

    def test_the_shipped_rules_load(self) -> None:
        """rules/ loads into the eight default rules, names unique, from default.yaml."""
        rules = load_rules(RULES_DIR)
        assert [rule.name for rule in rules.rules] == SHIPPED
        assert rules.sources == (str(RULES_DIR / "default.yaml"),)

    def test_the_shipped_percentages_are_fractions(self) -> None:
        """'8%' and '0.3%' in default.yaml are 0.08 and 0.003; the cusum's '2%' against '8%' too."""
        rules = {rule.name: rule for rule in load_rules(RULES_DIR).rules}
        assert rules["hard-bounce-burst"].threshold == 0.08
        assert rules["gmail-complaint-rate"].threshold == 0.003
        cusum = rules["hard-bounce-rate"].cusum
        assert cusum is not None and (cusum.healthy, cusum.bad) == (0.02, 0.08)

    def test_the_rules_look_back_three_days(self) -> None:
        """The look-back the service needs is the longest window (with the outcome delay before it), cooldown
        or `for` of the set: gmail-complaint-rate's day, and the two days its complaints may take."""
        assert load_rules(RULES_DIR).retention == 3 * 86400.0


class TestValidateCommand:
    """`guard validate` exits 0 for good files and 1 with the problems on stderr for bad ones."""

    def test_good_rules_exit_zero_and_list_the_rules(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The shipped rules pass; stdout names them, stderr is empty."""
        assert main(["validate", str(RULES_DIR)]) == 0
        out, err = capsys.readouterr()
        assert out == f"{RULES_DIR}: 8 rules OK ({', '.join(SHIPPED)})\n"
        assert err == ""

    def test_a_bad_file_exits_one_with_the_message_on_stderr(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The exact problem line goes to stderr; nothing to stdout."""
        bad = write(tmp_path, "bad.yaml", GOOD.replace("window: 1h", "window: soon"))
        assert main(["validate", str(bad)]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"{bad}:7: rule spike: window: 'soon' is not a duration; write e.g. '90s', '15m', '1h30m', '7d'\n"

    def test_one_bad_path_among_good_ones_exits_one(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Every path is checked; the good one is still reported OK."""
        good = write(tmp_path, "good/a.yaml", GOOD)
        bad = write(tmp_path, "bad/a.yaml", "groups: [")
        assert main(["validate", str(good), str(bad)]) == 1
        out, err = capsys.readouterr()
        assert out == f"{good}: 1 rules OK (spike)\n"
        assert err.startswith(f"{bad}:1: not valid YAML: ")

    def test_a_missing_path_exits_one(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A path that does not exist is a problem, not a crash."""
        assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
        assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: no such file or directory\n"

    @pytest.mark.parametrize("rules_value", ["[]", "", "oops"], ids=["empty-list", "null", "string"])
    def test_a_group_without_rules_exits_one_with_a_message(
        self, rules_value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`rules:` empty, null or not a list is reported like any other problem."""
        bad = write(tmp_path, "bad.yaml", f"groups:\n  - name: g\n    rules: {rules_value}\n")
        assert main(["validate", str(bad)]) == 1
        assert capsys.readouterr().err.startswith(f"{bad}:3: ")


class TestValidationMessages:
    """Each problem is one line `FILE:LINE: rule NAME: FIELD: message`, so a file is fixed in one pass."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                GOOD + "        colour: red\n",
                "rules.yaml:9: rule spike: colour: unknown key 'colour' (allowed: name, description, rate, count, cusum, window, last, threshold, min_volume, confidence, keep_firing_for, for, cooldown, action, severity, labels, scope, campaigns, workspaces, notify)",
                id="unknown-key",
            ),
            pytest.param(
                GOOD + "        colour[0]: red\n",
                "rules.yaml:9: rule spike: colour[0]: unknown key 'colour[0]' (allowed: name, description, rate, count, cusum, window, last, threshold, min_volume, confidence, keep_firing_for, for, cooldown, action, severity, labels, scope, campaigns, workspaces, notify)",
                id="unknown-key-with-a-bracket",
            ),
            pytest.param(
                GOOD.replace("count: bounced", "count: opened"),
                "rules.yaml:6: rule spike: count.signal: unknown value 'opened', did you mean 'complained'? (allowed: sent, bounced, complained, unsubscribed, replied); e.g. `signal: bounced`",
                id="bad-signal-bare",
            ),
            pytest.param(
                GOOD_RATE.replace("per: sent", "per: {signal: delivered}"),
                "rules.yaml:8: rule rate: rate.per.signal: unknown value 'delivered' (allowed: sent, bounced, complained, unsubscribed, replied); e.g. `signal: bounced`",
                id="bad-signal-in-mapping",
            ),
            pytest.param(
                GOOD.replace("window: 1h", "window: 15 minutes"),
                "rules.yaml:7: rule spike: window: '15 minutes' is not a duration; write e.g. '90s', '15m', '1h30m', '7d'",
                id="bad-duration",
            ),
            pytest.param(
                GOOD + "        cooldown: true\n",
                "rules.yaml:9: rule spike: cooldown: a duration is a string such as '15m' or '1h', not a boolean",
                id="boolean-duration",
            ),
            pytest.param(
                GOOD_RATE.replace("bounce_type: hard", "bounce_type: permanent"),
                "rules.yaml:7: rule rate: rate.of.where.bounce_type: unknown value 'permanent' (allowed: hard, soft); e.g. `bounce_type: hard`",
                id="bad-bounce-type-filter",
            ),
            pytest.param(
                GOOD_RATE.replace("bounce_type: hard", "smtp_status: '5.1'"),
                "rules.yaml:7: rule rate: rate.of.where.smtp_status.0: '5.1' is not an enhanced status code (class 2, 4 or 5, then two numbers or x); e.g. `smtp_status: 5.1.x`",
                id="bad-smtp-status-pattern",
            ),
            pytest.param(
                GOOD_RATE.replace("min_volume: 100", "min_volume: 0"),
                "rules.yaml:11: rule rate: min_volume: must be at least 1, got 0; e.g. `min_volume: 50`",
                id="min-volume-zero",
            ),
            pytest.param(
                GOOD.replace("threshold: 3", "threshold: lots%"),
                "rules.yaml:8: rule spike: threshold: 'lots%' is not a percentage; write e.g. '0.3%'",
                id="bad-percentage",
            ),
            pytest.param(
                GOOD.replace("threshold: 3", "threshold: lots"),
                "rules.yaml:8: rule spike: threshold: 'lots' is not a number; write a percentage such as '4%', a fraction such as 0.04, or a whole number of events for a count",
                id="threshold-not-a-number",
            ),
            pytest.param(
                GOOD + "        labels: {team: 7}\n",
                "rules.yaml:9: rule spike: labels.team: expected text, got 7 (quote it: '7'); e.g. `labels: {team: deliverability}`",
                id="label-not-a-string",
            ),
            pytest.param(
                GOOD + "        labels: {team: 0.5}\n",
                "rules.yaml:9: rule spike: labels.team: expected text, got 0.5 (quote it: '0.5'); e.g. `labels: {team: deliverability}`",
                id="label-a-fraction",
            ),
            pytest.param(
                GOOD + "        labels: {team: [a, b]}\n",
                "rules.yaml:9: rule spike: labels.team: expected text, got a list; e.g. `labels: {team: deliverability}`",
                id="label-a-list-is-not-told-to-quote",
            ),
            pytest.param(
                GOOD.replace("name: spike", "name: bad name"),
                "rules.yaml:4: rule bad name: name: 'bad name' is not a valid name (letters, digits, '-', '_' and '.', starting with a letter or digit); e.g. `name: hard-bounce-rate`",
                id="bad-rule-name",
            ),
            pytest.param(
                GOOD + "        action: delete\n",
                "rules.yaml:9: rule spike: action: unknown value 'delete' (allowed: pause, alert); e.g. `action: pause`",
                id="bad-action",
            ),
            pytest.param(
                GOOD.replace("  - name: bounces\n    rules:\n", "  - rules:\n"),
                "rules.yaml:2: groups.0.name: required but missing; e.g. `name: hard-bounce-rate`",
                id="group-without-name",
            ),
            pytest.param(
                GOOD.replace("        description: too many bounces\n", ""),
                "rules.yaml:4: rule spike: description: required but missing; e.g. `description: Hard bounces mean a stale or scraped list.`",
                id="missing-description",
            ),
            pytest.param(
                "groups:\n  - name: g\n    rules:\n      - 5\n",
                "rules.yaml:4: rule #1 of group #1: expected a mapping (key: value), got 5; e.g. `rules: [{name: hard-bounce-rate, description: ..., rate: ..., last: 150, threshold: 4%, min_volume: 50}]`",
                id="rule-not-a-mapping",
            ),
            pytest.param(
                "- 1\n- 2\n",
                "rules.yaml:1: expected a mapping (key: value), got a list; e.g. `groups: [{name: bounces, rules: [...]}]`",
                id="top-level-list",
            ),
            pytest.param(
                "groups: []\n",
                "rules.yaml:1: groups: needs at least 1 item(s), got none; e.g. `groups: [{name: bounces, rules: [...]}]`",
                id="no-groups",
            ),
        ],
    )
    def test_a_field_problem_names_file_line_rule_and_field(self, text: str, expected: str) -> None:
        """The problem is exactly one line in the documented format, pointing at the field's line."""
        assert problems(text) == [expected]

    # Rule-level checks (model validators) report at the rule's first line, with no FIELD part.
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                GOOD_RATE.replace("        min_volume: 100\n", ""),
                "rules.yaml:4: rule rate: min_volume: a rate rule needs `min_volume`, e.g. `min_volume: 50`: it stays silent until `per` has that many events (1 bounce in 2 sends is no evidence)",
                id="rate-without-min-volume",
            ),
            pytest.param(
                GOOD.replace("count: bounced", "count: bounced\n        rate: {of: bounced, per: sent}"),
                "rules.yaml:4: rule spike: give exactly one condition: `rate`, `count` or `cusum`",
                id="both-conditions",
            ),
            pytest.param(
                GOOD.replace("        count: bounced\n", ""),
                "rules.yaml:4: rule spike: give exactly one condition: `rate`, `count` or `cusum`",
                id="neither-condition",
            ),
        ],
    )
    def test_a_rule_level_problem_names_file_line_and_rule(self, text: str, expected: str) -> None:
        """Problems of the rule as a whole point at the rule's first line."""
        assert problems(text) == [expected]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param(
                GOOD + "        min_volume: 3\n", "`min_volume` applies to rate rules only", id="count-with-min-volume"
            ),
            pytest.param(
                GOOD_RATE.replace("threshold: 5%", "threshold: 150%"),
                "a rate threshold is a fraction in (0, 1], e.g. 0.03 or '3%'; this one reads as 150% "
                "(for 1.5 percent write '1.5%')",
                id="rate-threshold-above-one",
            ),
            pytest.param(
                GOOD_RATE.replace("threshold: 5%", "threshold: 0"),
                "a rate threshold is a fraction in (0, 1], e.g. 0.03 or '3%'",
                id="rate-threshold-zero",
            ),
            pytest.param(
                GOOD.replace("threshold: 3", "threshold: 2.5"),
                "a count threshold is a whole number >= 1",
                id="count-threshold-fractional",
            ),
            pytest.param(
                GOOD.replace("threshold: 3", "threshold: 0"),
                "a count threshold is a whole number >= 1",
                id="count-threshold-zero",
            ),
            pytest.param(
                GOOD.replace("window: 1h", "window: 30s"),
                "window must be between 1m and 30d, got 30s",
                id="window-too-short",
            ),
            pytest.param(
                GOOD.replace("window: 1h", "window: 31d"),
                "window must be between 1m and 30d, got 31d",
                id="window-too-long",
            ),
        ],
    )
    def test_a_problem_of_one_field_is_reported_with_its_message(self, text: str, message: str) -> None:
        """Out-of-range thresholds and windows and a misplaced min_volume are one problem line each, naming the rule."""
        [problem] = problems(text)
        assert problem.startswith("rules.yaml:")
        assert f": rule {'rate' if 'rate:' in text else 'spike'}: " in problem
        assert problem.endswith(message)

    @pytest.mark.parametrize(
        ("text", "expected_start"),
        [
            pytest.param(
                GOOD + "        min_volume: 3\n", "rules.yaml:9: rule spike: min_volume: ", id="count-with-min-volume"
            ),
            pytest.param(
                GOOD.replace("threshold: 3", "threshold: 2.5"),
                "rules.yaml:8: rule spike: threshold: ",
                id="count-threshold",
            ),
            pytest.param(
                GOOD_RATE.replace("threshold: 5%", "threshold: 150%"),
                "rules.yaml:10: rule rate: threshold: ",
                id="rate-threshold",
            ),
            pytest.param(
                GOOD.replace("window: 1h", "window: 30s"), "rules.yaml:7: rule spike: window: ", id="window-range"
            ),
        ],
    )
    def test_a_problem_of_one_field_follows_the_documented_format(self, text: str, expected_start: str) -> None:
        """`FILE:LINE: rule NAME: FIELD: message` with the field's own line."""
        [problem] = problems(text)
        assert problem.startswith(expected_start)

    def test_every_problem_of_a_file_is_reported_at_once(self) -> None:
        """Three wrong fields give three lines, in file order."""
        text = (
            GOOD.replace("count: bounced", "count: opened").replace("window: 1h", "window: x") + "        colour: red\n"
        )
        assert [problem.split(":")[1] for problem in problems(text)] == ["6", "7", "9"]

    def test_problems_of_several_files_are_reported_together(self) -> None:
        """A bad file does not hide the problems of the next one."""
        with pytest.raises(RuleFileError) as raised:
            parse_rules([("a.yaml", GOOD.replace("window: 1h", "window: x")), ("b.yaml", "groups: [")])
        assert [problem.split(":")[0] for problem in raised.value.problems] == ["a.yaml", "b.yaml"]

    def test_a_duplicate_rule_name_across_files_names_both_files(self, tmp_path: Path) -> None:
        """The second file's rule is reported, with the file that used the name first."""
        first = write(tmp_path, "a.yaml", GOOD)
        second = write(tmp_path, "b.yaml", GOOD.replace("name: bounces", "name: other"))
        with pytest.raises(RuleFileError) as raised:
            load_rules(tmp_path)
        assert raised.value.problems == [f"{second}:4: rule spike: name: already used in {first}"]

    def test_a_duplicate_rule_name_within_a_file_is_reported(self) -> None:
        """Two rules of one name in one file are a problem too."""
        twice = GOOD + GOOD.split("    rules:\n")[1]
        assert problems(twice) == ["rules.yaml:9: rule spike: name: already used in rules.yaml"]

    def test_a_duplicate_rule_name_points_at_its_line(self) -> None:
        """The duplicate's `name:` line is given, as for every other problem."""
        twice = GOOD + GOOD.split("    rules:\n")[1]
        assert problems(twice) == ["rules.yaml:9: rule spike: name: already used in rules.yaml"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                "groups:\n  - name: g\n    rules: [\n",
                "rules.yaml:4: not valid YAML: expected the node content, but found '<stream end>'",
                id="unclosed-flow",
            ),
            pytest.param(
                "groups:\n  - name: g\n  rules: x\n",
                "rules.yaml:3: not valid YAML: expected <block end>, but found '?'",
                id="bad-indent",
            ),
            pytest.param(
                "groups:\n\tname: g\n",
                "rules.yaml:2: not valid YAML: found character '\\t' that cannot start any token; this line is "
                "indented with a tab, which YAML does not allow: indent with spaces",
                id="tab",
            ),
            pytest.param(
                GOOD + "---\n" + GOOD, "rules.yaml:9: not valid YAML: but found another document", id="two-documents"
            ),
        ],
    )
    def test_invalid_yaml_gives_the_line(self, text: str, expected: str) -> None:
        """A YAML syntax error names the line where the parser stopped."""
        assert problems(text) == [expected]

    @pytest.mark.parametrize(
        "text",
        ["", "\n\n", "# only a comment\n", "---\n"],
        ids=["empty", "blank-lines", "comment-only", "document-marker"],
    )
    def test_an_empty_file_says_it_needs_groups(self, text: str) -> None:
        """An empty file is a problem with a hint."""
        assert problems(text) == ["rules.yaml: the file is empty; it needs `groups:`"]

    def test_a_key_given_twice_is_reported(self) -> None:
        """`threshold: 3` then `threshold: 300` in one rule is a mistake to report, not to resolve silently."""
        assert problems(GOOD + "        threshold: 300\n") == [
            "rules.yaml:9: 'threshold' is given twice (first on line 8)"
        ]


class TestPercentages:
    """Thresholds accept percentages: '0.3%' is 0.003."""

    @pytest.mark.parametrize(
        ("written", "value"),
        [("0.3%", 0.003), ("6%", 0.06), ("100%", 1.0), (" 2.5% ", 0.025), ("0.003", 0.003), (0.003, 0.003)],
        ids=["0.3%", "6%", "100%", "spaces", "fraction-string", "fraction"],
    )
    def test_a_percentage_is_a_fraction(self, written: object, value: float) -> None:
        """The rule's threshold is exactly the fraction written."""
        rule = Rule.model_validate(
            {
                "name": "r",
                "description": "d",
                "rate": {"of": "bounced", "per": "sent"},
                "window": "1h",
                "threshold": written,
                "min_volume": 10,
            }
        )
        assert rule.threshold == value

    @settings(max_examples=100)
    @given(tenths=st.integers(1, 1000))
    def test_any_percentage_is_its_fraction(self, tenths: int) -> None:
        """Every percentage from 0.1% to 100% in steps of 0.1 parses to within a rounding error of its fraction."""
        rule = Rule.model_validate(
            {
                "name": "r",
                "description": "d",
                "rate": {"of": "bounced", "per": "sent"},
                "window": "1h",
                "threshold": f"{tenths / 10}%",
                "min_volume": 10,
            }
        )
        assert math.isclose(rule.threshold, tenths / 1000, rel_tol=1e-12)


class TestRuleFilesOnDisk:
    """A path is one file or a directory of *.yaml/*.yml; hidden entries are skipped."""

    def test_a_directory_loads_its_yaml_files_in_name_order(self, tmp_path: Path) -> None:
        """*.yaml and *.yml both count; other files are ignored."""
        write(tmp_path, "b.yml", GOOD.replace("name: spike", "name: second"))
        write(tmp_path, "a.yaml", GOOD.replace("name: spike", "name: first"))
        write(tmp_path, "README.md", "not rules")
        write(tmp_path, "notes.txt", "groups: [")
        rules = load_rules(tmp_path)
        assert [rule.name for rule in rules.rules] == ["first", "second"]
        assert rules.sources == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))

    def test_a_directory_without_yaml_is_a_problem(self, tmp_path: Path) -> None:
        """An empty rules directory is refused rather than running with no rules."""
        write(tmp_path, "README.md", "nothing here")
        with pytest.raises(RuleFileError) as raised:
            load_rules(tmp_path)
        assert raised.value.problems == [f"{tmp_path}: no rule files (*.yaml, *.yml) in this directory"]

    def test_hidden_files_are_ignored(self, tmp_path: Path) -> None:
        """Editor and tool files such as .backup.yaml are not rules."""
        write(tmp_path, "rules.yaml", GOOD)
        write(tmp_path, ".backup.yaml", "groups: [")
        assert [rule.name for rule in load_rules(tmp_path).rules] == ["spike"]

    def test_a_kubernetes_configmap_mount_loads_each_rule_once(self, tmp_path: Path) -> None:
        """The `..data` and `..<timestamp>` entries of a mounted ConfigMap are skipped; the key symlinks load."""
        version = tmp_path / "..2024_05_01_12_00_00.000000001"
        write(version, "default.yaml", GOOD)
        write(version, "broken.yaml", "groups: [")  # only reachable through the hidden entries
        (tmp_path / "..data").symlink_to(version.name)
        (tmp_path / "default.yaml").symlink_to("..data/default.yaml")
        rules = load_rules(tmp_path)
        assert [rule.name for rule in rules.rules] == ["spike"]
        assert rules.sources == (str(tmp_path / "default.yaml"),)

    def test_a_file_that_is_not_utf8_is_a_problem(self, tmp_path: Path) -> None:
        """Unreadable bytes are reported with the file name, not raised as UnicodeDecodeError."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes("description: caf\xe9\n".encode("latin-1"))
        with pytest.raises(RuleFileError, match=r"latin1\.yaml: cannot read: "):
            load_rules(path)

    def test_an_empty_include_list_is_rejected_or_matches_no_campaign(self) -> None:
        """`campaigns: {include: []}` must not silently mean every campaign."""
        try:
            rules = parse_rules(
                [("rules.yaml", GOOD.replace("threshold: 3", "threshold: 1") + "        campaigns: {include: []}\n")]
            )
        except RuleFileError:
            return
        assert Engine(rules).process(Event(Signal.BOUNCED, "any-campaign", T0)) == []


class TestDurations:
    """Prometheus-style durations: parse to seconds, format to the shortest spelling."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90.0),
            ("15m", 900.0),
            ("1h30m", 5400.0),
            ("7d", 604800.0),
            ("2w", 1209600.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            (" 1h ", 3600.0),
            (90, 90.0),
            (1.5, 1.5),
            ("1d1h1m1s", 90061.0),
        ],
    )
    def test_a_duration_parses_to_seconds(self, text: object, seconds: float) -> None:
        """Units ms, s, m, h, d, w combine; numbers are seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "1h 30m", "h", "-5s", "1.5", "15M", "1y", True, None, [1]])
    def test_a_bad_duration_is_a_value_error(self, text: object) -> None:
        """Spaces inside, missing or unknown units, negatives and non-strings are rejected with a hint."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (90, "1m30s"),
            (3600, "1h"),
            (5400, "1h30m"),
            (86400, "1d"),
            (691200, "8d"),
            (0.25, "250ms"),
        ],
    )
    def test_a_duration_formats_to_its_shortest_spelling(self, seconds: float, text: str) -> None:
        """Whole seconds use d, h, m, s; fractions use ms."""
        assert format_duration(seconds) == text

    @given(seconds=st.integers(0, 10 * 365 * 86400))
    def test_whole_seconds_round_trip(self, seconds: int) -> None:
        """parse(format(s)) == s for every whole number of seconds."""
        assert parse_duration(format_duration(seconds)) == seconds

    @given(
        text=st.lists(st.tuples(st.integers(0, 500), st.sampled_from("smhdw")), min_size=1, max_size=4).map(
            lambda parts: "".join(f"{n}{unit}" for n, unit in parts)
        )
    )
    def test_a_spelling_round_trips_to_the_same_seconds(self, text: str) -> None:
        """format then parse keeps the seconds of any whole-unit spelling."""
        seconds = parse_duration(text)
        assert parse_duration(format_duration(seconds)) == seconds

    def test_milliseconds_round_trip(self) -> None:
        """'4007ms' formats back to '4007ms'."""
        assert format_duration(parse_duration("4007ms")) == "4007ms"

    @given(
        whole=st.integers(0, 10_000),
        fraction=st.integers(1, 999).map(str),
        unit=st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
    )
    def test_a_fractional_spelling_reads_back_as_the_same_rule(self, whole: int, fraction: str, unit: str) -> None:
        """`1.1h` is 3,960 s; read as 1.1 * 3600.0 it was 3960.0000000000005, written `3960000ms` and read back as
        3,960: another rule version, so a checkpoint carrying its rules was refused at every restart with an edit
        (snapshot.rules_taken_under). Seconds are kept to the millisecond, and the rule's JSON reads back alike."""
        text = f"{whole}.{fraction}{unit}"
        seconds = parse_duration(text)
        assert parse_duration(format_duration(seconds)) == seconds
        if 60 <= seconds <= 30 * 86400:  # a window's bounds
            rule = Rule.model_validate(
                {"name": "r", "description": "d", "count": "complained", "window": text, "threshold": 3}
            )
            assert Rule.model_validate_json(rule.model_dump_json(by_alias=True)).version == rule.version


class TestSchemaCommand:
    """`guard schema` prints the JSON Schema of a rule file."""

    def test_schema_prints_json_schema_with_groups(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The output is JSON; the top level requires `groups`; fields use the names users write."""
        assert main(["schema"]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert "groups" in schema["properties"]
        assert schema["required"] == ["groups"]
        rule = schema["$defs"]["Rule"]
        assert {"for", "window", "threshold", "min_volume", "cooldown", "campaigns"} <= set(rule["properties"])
        assert "for_" not in rule["properties"]
        assert rule["additionalProperties"] is False


def _rule_file(**changes: str) -> str:
    text = GOOD
    for old, new in changes.items():
        text = text.replace(old, new)
    return text


def _version(text: str) -> str:
    [rule] = parse_rules([("rules.yaml", text)]).rules
    return rule.version


class TestRuleVersion:
    """A rule's version is a hash of its content: it changes with the rule and only then."""

    def test_the_version_is_stable_for_the_same_text(self) -> None:
        """Parsing the same text twice gives the same version."""
        assert _version(GOOD) == _version(GOOD)
        assert len(_version(GOOD)) == 12

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(GOOD.replace("window: 1h", "window: 1h   # one hour"), id="comment"),
            pytest.param(GOOD.replace("window: 1h", "window: 60m"), id="other-spelling-of-the-duration"),
            pytest.param(GOOD.replace("window: 1h", "window: 3600"), id="duration-as-seconds"),
            pytest.param(GOOD.replace("count: bounced", "count: {signal: bounced}"), id="bare-vs-mapping-selector"),
            pytest.param(
                GOOD.replace(
                    "        count: bounced\n        window: 1h\n", "        window: 1h\n        count: bounced\n"
                ),
                id="key-order",
            ),
            pytest.param(GOOD.replace("  - name: bounces", "  - name: renamed-group"), id="group-name"),
            pytest.param(GOOD + "        cooldown: 1h\n", id="default-written-out"),
        ],
    )
    def test_the_version_ignores_how_the_same_rule_is_written(self, text: str) -> None:
        """Comments, spellings, key order, the group and spelled-out defaults do not change the rule."""
        assert _version(text) == _version(GOOD)

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(GOOD.replace("threshold: 3", "threshold: 4"), id="threshold"),
            pytest.param(GOOD.replace("window: 1h", "window: 2h"), id="window"),
            pytest.param(GOOD.replace("too many bounces", "too many bounces!"), id="description"),
            pytest.param(GOOD.replace("count: bounced", "count: complained"), id="signal"),
            pytest.param(GOOD.replace("name: spike", "name: spike2"), id="name"),
            pytest.param(GOOD + "        action: alert\n", id="action"),
            pytest.param(GOOD + "        labels: {team: ops}\n", id="labels"),
        ],
    )
    def test_the_version_changes_with_the_rule(self, text: str) -> None:
        """Any change to what the rule says gives another version."""
        assert _version(text) != _version(GOOD)

    def test_the_version_ignores_the_order_of_labels(self) -> None:
        """Labels are a map: writing them in another order is the same rule."""
        assert _version(GOOD + "        labels: {a: x, b: y}\n") == _version(GOOD + "        labels: {b: y, a: x}\n")


class TestNonFiniteAndNegativeDurations:
    """Durations in a rule are finite and not negative (the JSON Schema says minimum 0)."""

    @pytest.mark.parametrize(
        "line",
        ["cooldown: -60", "cooldown: .inf", "for: .nan", "for: -1"],
        ids=["negative-cooldown", "infinite-cooldown", "nan-for", "negative-for"],
    )
    def test_a_negative_or_non_finite_duration_is_rejected(self, line: str) -> None:
        """The loader reports the field instead of accepting it."""
        assert problems(GOOD + f"        {line}\n") != []


class TestModelsAreFrozen:
    """Rules are values: they cannot change after loading."""

    def test_a_rule_cannot_be_changed(self) -> None:
        """Assigning to a rule's field raises."""
        [rule] = parse_rules([("rules.yaml", GOOD)]).rules
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            rule.threshold = 1  # type: ignore[misc]

    def test_a_nested_selector_cannot_be_changed(self) -> None:
        """Frozen goes all the way down."""
        [rule] = parse_rules([("rules.yaml", GOOD_RATE)]).rules
        assert rule.rate is not None
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            rule.rate.of.signal = "sent"  # type: ignore[misc]

    def test_a_rule_set_cannot_be_changed(self) -> None:
        """The set of rules is frozen too, and its rules are a tuple."""
        rules = parse_rules([("rules.yaml", GOOD)])
        assert isinstance(rules.rules, tuple)
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            rules.rules = ()  # type: ignore[misc]

    def test_rules_are_hashable_and_equal_by_value(self) -> None:
        """Two loads of the same text are equal rules."""
        assert parse_rules([("a.yaml", GOOD)]).rules == parse_rules([("b.yaml", GOOD)]).rules

    @settings(max_examples=50)
    @given(rule=count_rules() | rate_rules())
    def test_a_rule_survives_a_round_trip_through_its_own_dump(self, rule: Rule) -> None:
        """Dumping a rule (durations formatted) and validating the dump gives the same rule and version."""
        again = Rule.model_validate(rule.model_dump(by_alias=True))
        assert again == rule
        assert again.version == rule.version

    def test_unknown_keys_are_refused_by_the_models(self) -> None:
        """extra='forbid' holds for the rule set too."""
        with pytest.raises(pydantic.ValidationError):
            RuleSet.model_validate({"rules": [], "more": 1})


GOOD_CUSUM = """\
groups:
  - name: bounces
    rules:
      - name: stale-list
        description: a sequential test of each send
        cusum:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
          healthy: 2%
          bad: 8%
          false_alarms: 0.1%
          campaign_size: 50000
"""
#  line 4: the rule   line 6: cusum   line 9: healthy   line 10: bad   line 11: false_alarms   line 12: campaign_size


class TestCusumRules:
    """A cusum rule names two rates and a false-alarm budget; its alarm level follows from the budget."""

    def test_the_alarm_level_follows_from_the_budget(self, tmp_path: Path) -> None:
        """h keeps the budget by Siegmund's ARL0 = (e^h - h - 1) / I0; the steps are the log-likelihood ratios."""
        path = tmp_path / "rules.yaml"
        path.write_text(GOOD_CUSUM)
        (rule,) = load_rules(path).rules
        assert rule.cusum is not None
        healthy_information = 0.02 * math.log(0.02 / 0.08) + 0.98 * math.log(0.98 / 0.92)
        arl = 50_000 / -math.log(1 - 0.001)
        assert (math.exp(rule.level) - rule.level - 1) / healthy_information == pytest.approx(arl)
        assert rule.level == pytest.approx(14.35, abs=0.01)
        assert rule.cusum.fall == pytest.approx(math.log(0.92 / 0.98))
        assert rule.cusum.rise + rule.cusum.fall == pytest.approx(math.log(0.08 / 0.02))
        assert rule.threshold is None and rule.span == 86400.0

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                GOOD_CUSUM.replace("bad: 8%", "bad: 2%"),
                "rules.yaml:6: rule stale-list: cusum: bad (0.02) must be above healthy (0.02): the statistic climbs "
                "only at rates nearer `bad` than `healthy`",
                id="bad-not-above-healthy",
            ),
            pytest.param(
                GOOD_CUSUM.replace("healthy: 2%", "healthy: 0"),
                "rules.yaml:9: rule stale-list: cusum.healthy: must be more than 0, got 0; e.g. `healthy: 2% (the rate of a good campaign)`",
                id="healthy-zero",
            ),
            pytest.param(
                GOOD_CUSUM.replace("bad: 8%", "bad: 100%"),
                "rules.yaml:10: rule stale-list: cusum.bad: must be less than 1, got '100%'; e.g. `bad: 8% (the rate worth pausing on, above healthy)`",
                id="bad-one",
            ),
            pytest.param(
                GOOD_CUSUM.replace("false_alarms: 0.1%", "false_alarms: yes"),
                "rules.yaml:11: rule stale-list: cusum.false_alarms: a rate is a number or a percentage such as '2%', "
                "not a boolean",
                id="budget-boolean",
            ),
            pytest.param(
                GOOD_CUSUM.replace("          campaign_size: 50000\n", ""),
                "rules.yaml:6: rule stale-list: cusum.campaign_size: required but missing; e.g. `campaign_size: 50000 (sends of a large campaign)`",
                id="no-campaign-size",
            ),
            pytest.param(
                GOOD_CUSUM + "        threshold: 12\n",
                "rules.yaml:4: rule stale-list: a cusum rule takes no `threshold`: it weighs every `per` event since "
                "the campaign's episode began, and its alarm level follows from `false_alarms` and `campaign_size`",
                id="threshold-given",
            ),
            pytest.param(
                GOOD_CUSUM + "        last: 150\n",
                "rules.yaml:4: rule stale-list: a cusum rule takes no `last`: it weighs every `per` event since "
                "the campaign's episode began, and its alarm level follows from `false_alarms` and `campaign_size`",
                id="window-given",
            ),
            pytest.param(
                GOOD_CUSUM + "        min_volume: 100\n",
                "rules.yaml:13: rule stale-list: min_volume: `min_volume` applies to rate rules only",
                id="min-volume-given",
            ),
            pytest.param(
                GOOD_CUSUM + "        count: bounced\n",
                "rules.yaml:4: rule stale-list: give exactly one condition: `cusum` or `count`, not both",
                id="two-conditions",
            ),
            pytest.param(
                GOOD_RATE.replace("        threshold: 5%\n", ""),
                "rules.yaml:4: rule rate: a rate rule needs `threshold`",
                id="rate-without-threshold",
            ),
        ],
    )
    def test_a_cusum_problem_is_one_clear_line(self, text: str, expected: str) -> None:
        assert problems(text) == [expected]
