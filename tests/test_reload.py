"""Hot reload of rule files, including Kubernetes' ConfigMap symlink swap."""

from __future__ import annotations

import os
from pathlib import Path

from guard.rules import load_rules
from guard.rules.watch import RulesWatcher

RULE = """groups:
  - name: g
    rules:
      - name: complaints
        description: too many complaints
        count: complained
        window: 1h
        threshold: {threshold}
"""


class ConfigMapVolume:
    """A directory laid out the way the kubelet mounts a ConfigMap: files are symlinks through
    `..data`, which points at a timestamped directory and is swapped atomically on update."""

    def __init__(self, root: Path) -> None:
        self.root, self.version = root, 0

    def publish(self, files: dict[str, str]) -> None:
        self.version += 1
        target = self.root / f"..2026_11_26_00_00_0{self.version}"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text)
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        swap = self.root / "..data_tmp"
        swap.symlink_to(target.name)
        os.replace(swap, self.root / "..data")  # the atomic swap the kubelet does


def watcher_for(volume: ConfigMapVolume) -> RulesWatcher:
    return RulesWatcher(volume.root, load_rules(volume.root))


class TestRulesWatcher:
    def test_reports_nothing_while_the_files_are_unchanged(self, tmp_path: Path) -> None:
        """Polling an unchanged directory is free of effects."""
        volume = ConfigMapVolume(tmp_path)
        volume.publish({"rules.yaml": RULE.format(threshold=5)})
        assert watcher_for(volume).poll() is None

    def test_picks_up_a_configmap_swap(self, tmp_path: Path) -> None:
        """A new `..data` target with another threshold is loaded as the new rule set."""
        volume = ConfigMapVolume(tmp_path)
        volume.publish({"rules.yaml": RULE.format(threshold=5)})
        watcher = watcher_for(volume)
        volume.publish({"rules.yaml": RULE.format(threshold=9)})
        change = watcher.poll()
        assert change is not None and change.rules is not None and change.problems == []
        assert change.rules.rules[0].threshold == 9
        assert watcher.poll() is None

    def test_rejects_an_invalid_swap_and_keeps_the_rules_in_force(self, tmp_path: Path) -> None:
        """An invalid new version is reported with its problems; `current` stays the old set."""
        volume = ConfigMapVolume(tmp_path)
        volume.publish({"rules.yaml": RULE.format(threshold=5)})
        watcher = watcher_for(volume)
        old = watcher.current
        volume.publish({"rules.yaml": RULE.format(threshold="lots")})
        change = watcher.poll()
        assert change is not None and change.rules is None
        assert any("threshold" in problem for problem in change.problems)
        assert watcher.current is old

    def test_a_fix_after_a_rejected_version_is_applied(self, tmp_path: Path) -> None:
        """Rejected, then corrected: the corrected version is loaded."""
        volume = ConfigMapVolume(tmp_path)
        volume.publish({"rules.yaml": RULE.format(threshold=5)})
        watcher = watcher_for(volume)
        volume.publish({"rules.yaml": RULE.format(threshold=-1)})
        assert watcher.poll().rules is None  # type: ignore[union-attr]
        volume.publish({"rules.yaml": RULE.format(threshold=7)})
        assert watcher.poll().rules.rules[0].threshold == 7  # type: ignore[union-attr]

    def test_rejects_a_deleted_rule_file(self, tmp_path: Path) -> None:
        """A rules path that vanished keeps the old rules in force and says why."""
        path = tmp_path / "rules.yaml"
        path.write_text(RULE.format(threshold=5))
        watcher = RulesWatcher(path, load_rules(path))
        path.unlink()
        change = watcher.poll()
        assert change is not None and change.rules is None
        assert "no such file" in change.problems[0]

    def test_rejects_a_directory_emptied_of_rule_files(self, tmp_path: Path) -> None:
        """Removing every rule file is refused rather than running without rules."""
        (tmp_path / "rules.yaml").write_text(RULE.format(threshold=5))
        watcher = RulesWatcher(tmp_path, load_rules(tmp_path))
        (tmp_path / "rules.yaml").unlink()
        change = watcher.poll()
        assert change is not None and change.rules is None
        assert "no rule files" in change.problems[0]
