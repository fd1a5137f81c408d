"""Hot reload: notices when the rule files change and validates the new set before it is used.

Polling the files' content (not inotify) is what survives Kubernetes' ConfigMap updates, which
swap a `..data` symlink rather than write the files in place, and it behaves the same everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from guard.rules.loader import RuleFileError, parse_rules, read_rule_file, rule_files
from guard.rules.models import RuleSet


@dataclass(frozen=True)
class Reload:
    """A change seen: the new rules, or why they were refused (the old ones stay in force)."""

    rules: RuleSet | None
    problems: list[str]


class RulesWatcher:
    def __init__(self, path: Path, current: RuleSet) -> None:
        self._path = path
        self._fingerprint = self._read()[0]
        self.current = current

    def _read(self) -> tuple[str, list[tuple[str, str]] | RuleFileError]:
        """A fingerprint of the files' names and contents, with the contents (or why unreadable)."""
        try:
            sources = [(str(file), read_rule_file(file)) for file in rule_files(self._path)]
        except RuleFileError as error:
            return f"error:{error}", error
        except (OSError, UnicodeDecodeError) as error:
            return f"error:{error}", RuleFileError([f"{self._path}: cannot read: {error}"])
        digest = hashlib.sha256()
        for name, text in sources:
            digest.update(f"{Path(name).name}\0{text}\0".encode())
        return digest.hexdigest(), sources

    def poll(self) -> Reload | None:
        """None when nothing changed since the last poll; else the outcome of loading the change."""
        fingerprint, sources = self._read()
        if fingerprint == self._fingerprint:
            return None
        self._fingerprint = fingerprint
        if isinstance(sources, RuleFileError):
            return Reload(None, sources.problems)
        if not sources:
            return Reload(None, [f"{self._path}: no rule files (*.yaml, *.yml) left"])
        try:
            self.current = parse_rules(sources)
        except RuleFileError as error:
            return Reload(None, error.problems)
        return Reload(self.current, [])
