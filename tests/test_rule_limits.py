"""Rule files that would hang or crash a reader: refused with one clear line, old rules kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.rules import RuleFileError, load_rules
from guard.rules.loader import parse_rules
from guard.rules.watch import RulesWatcher

MAX_RULE_FILE_BYTES = 1024 * 1024  # guard.rules.loader.MAX_RULE_FILE_BYTES

VALID = """groups:
  - name: g
    rules:
      - name: complaints
        description: too many complaints
        count: complained
        window: 1h
        threshold: 5
"""

# Each level repeats the one before ten times: 10^7 nodes once expanded, in 300 bytes.
LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{before}'] * 10)}]\n" for before, name in zip("abcdef", "bcdefg", strict=True)
    )
    + "groups: [*g]\n"
)
DEEP = "groups: " + "[" * 5000 + "]" * 5000 + "\n"
NO_SUCH_DATE = VALID.replace("threshold: 5", "threshold: 2024-02-30")

HOSTILE = {
    "aliases": (LAUGHS, "aliases expand to more than"),
    "nesting": (DEEP, "nested deeper than 64 levels"),
    "date": (NO_SUCH_DATE, "not valid YAML: day is out of range for month"),
}


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guard.cli", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestHostileRuleFiles:
    @pytest.mark.parametrize("kind", HOSTILE)
    def test_is_refused_with_one_clear_line(self, kind: str) -> None:
        """The loader raises its own error, naming the file and the problem."""
        text, message = HOSTILE[kind]
        with pytest.raises(RuleFileError) as caught:
            parse_rules([("hostile.yaml", text)])
        assert len(caught.value.problems) == 1
        assert caught.value.problems[0].startswith("hostile.yaml")
        assert message in caught.value.problems[0]

    def test_a_file_over_the_size_limit_is_refused_unread(self, tmp_path: Path) -> None:
        """A rule file larger than the limit is refused by its size."""
        path = tmp_path / "huge.yaml"
        path.write_text(VALID + "#" * MAX_RULE_FILE_BYTES)
        with pytest.raises(RuleFileError, match="a rule file may have at most"):
            load_rules(path)

    def test_anchors_and_aliases_of_ordinary_size_still_work(self) -> None:
        """Aliases are not banned, only bounded: a shared campaign filter is fine."""
        text = VALID.replace("threshold: 5", "threshold: 5\n        campaigns: &all {include: ['*']}")
        text += "      - name: bounces\n        description: b\n        count: bounced\n        window: 1h\n"
        text += "        threshold: 5\n        campaigns: *all\n"
        assert [rule.name for rule in parse_rules([("ok.yaml", text)]).rules] == ["complaints", "bounces"]


class TestValidateCommand:
    @pytest.mark.parametrize("kind", HOSTILE)
    def test_prints_one_line_and_exits_1_without_a_traceback(self, kind: str, tmp_path: Path) -> None:
        """`guard validate` on a hostile file: one line naming the file, exit 1, no traceback."""
        path = tmp_path / "hostile.yaml"
        path.write_text(HOSTILE[kind][0])
        result = validate(path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert result.stderr.startswith(str(path)) and HOSTILE[kind][1] in result.stderr


class TestHotReload:
    @pytest.mark.parametrize("kind", HOSTILE)
    def test_a_hostile_file_is_rejected_and_the_rules_in_force_stay(self, kind: str, tmp_path: Path) -> None:
        """The watcher reports the problem instead of raising; `current` stays the old set."""
        path = tmp_path / "rules.yaml"
        path.write_text(VALID)
        watcher = RulesWatcher(path, load_rules(path))
        old = watcher.current
        path.write_text(HOSTILE[kind][0])
        change = watcher.poll()
        assert change is not None and change.rules is None
        assert HOSTILE[kind][1] in change.problems[0]
        assert watcher.current is old
