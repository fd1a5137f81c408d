"""Text -> RuleSet. The only place that reads rule files.

Every problem is reported, one line each, as `FILE:LINE: rule NAME: FIELD: message`, so an
operator can fix a file in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from guard.errors import GuardError
from guard.rules.messages import problem
from guard.rules.models import RuleFile, RuleSet

RULE_FILE_SUFFIXES = (".yaml", ".yml")
# Bounds on what a rule file may cost to read, far above any real one (the shipped rules: 12 KB,
# 8 levels, ~1,000 nodes), so a hostile or broken file is refused quickly instead of hanging or
# crashing the reload in the poll loop.
MAX_RULE_FILE_BYTES = 1024 * 1024
MAX_NESTING = 64  # collections within collections (the YAML composer recurses per level)
MAX_NODES = 100_000  # nodes once aliases are expanded ("billion laughs": each level multiplies)
RULE_SCOPE = ("groups", None, "rules", None, "rule")  # problems name the rule they are in


class RuleFileError(GuardError, ValueError):
    """One or more rule files are invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def rule_files(path: Path) -> list[Path]:
    """The rule files at `path`: the file itself, or a directory's *.yaml/*.yml in name order.

    Hidden entries are skipped, which also skips the `..data` and `..<timestamp>` entries that
    Kubernetes keeps in a mounted ConfigMap.
    """
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in RULE_FILE_SUFFIXES and not p.name.startswith("."))
    if path.exists():
        return [path]
    raise RuleFileError([f"{path}: no such file or directory"])


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate every rule file at `path`; raises RuleFileError listing every problem."""
    path = Path(path)
    files = rule_files(path)
    if not files:
        raise RuleFileError([f"{path}: no rule files (*.yaml, *.yml) in this directory"])
    return parse_rules([(str(file), read_rule_file(file)) for file in files])


def read_rule_file(file: Path) -> str:
    """A rule file's text; RuleFileError when it cannot be read or is larger than the limit."""
    try:
        size = file.stat().st_size
        if size > MAX_RULE_FILE_BYTES:
            raise RuleFileError([f"{file}: {size:,} bytes; a rule file may have at most {MAX_RULE_FILE_BYTES:,}"])
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RuleFileError([f"{file}: cannot read: {error}"]) from None


def parse_rules(sources: Iterable[tuple[str, str]]) -> RuleSet:
    """Validate rule files given as (name, text) pairs into one RuleSet."""
    problems: list[str] = []
    rules, names, where = [], [], {}
    for name, text in sources:
        parsed = _parse_file(name, text, problems)
        if parsed is None:
            continue
        rule_file, lines = parsed
        names.append(name)
        for g, group in enumerate(rule_file.groups):
            for r, rule in enumerate(group.rules):
                if rule.name in where:
                    line = lines.get(("groups", g, "rules", r, "name"))
                    problems.append(f"{name}:{line}: rule {rule.name}: name: already used in {where[rule.name]}")
                    continue
                where[rule.name] = name
                if rule.notify is None and rule_file.notify is not None:
                    rule = rule.model_copy(update={"notify": rule_file.notify})
                rules.append(rule)
    if problems:
        raise RuleFileError(problems)
    return RuleSet(rules=tuple(rules), sources=tuple(names))


def _parse_file(name: str, text: str, problems: list[str]) -> tuple[RuleFile, dict[tuple, int]] | None:
    document = read_document(name, text, problems, needs="groups:")
    if document is None:
        return None
    data, lines = document
    try:
        return RuleFile.model_validate(data), lines
    except ValidationError as error:
        problems.extend(validation_problems(name, data, lines, error, RuleFile, RULE_SCOPE))
        return None


def read_document(name: str, text: str, problems: list[str], *, needs: str) -> tuple[object, dict[tuple, int]] | None:
    """A bounded YAML document's data and the line of each key path, or None with the problems
    appended (not YAML, too large, empty, a key given twice). `needs` says what an empty file lacks."""
    if len(text) > MAX_RULE_FILE_BYTES:
        problems.append(f"{name}: {len(text):,} characters; a file may have at most {MAX_RULE_FILE_BYTES:,}")
        return None
    try:
        node, data = _read_yaml(text)
    except _TooLarge as error:
        problems.append(f"{name}:{error.line}: {error}")
        return None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        hint = _tab_hint(text, mark.line) if mark is not None else ""
        problems.append(f"{name}{line}: not valid YAML: {getattr(error, 'problem', None) or error}{hint}")
        return None
    except (ValueError, OverflowError) as error:  # PyYAML's constructors: `2024-02-30` is no date
        problems.append(f"{name}: not valid YAML: {error}")
        return None
    except Exception:  # and any other error, for values such as `!!timestamp x`
        problems.append(f"{name}: not valid YAML: a value does not fit its tag or form (e.g. `!!timestamp x`)")
        return None
    if data is None:
        problems.append(f"{name}: the file is empty; it needs `{needs}`")
        return None
    duplicates: list[str] = []
    lines = _line_index(node, duplicates=duplicates)
    if duplicates:  # YAML would silently keep the last value
        problems.extend(f"{name}:{duplicate}" for duplicate in duplicates)
        return None
    return data, lines


def _tab_hint(text: str, line: int) -> str:
    """What to do about a tab in the indentation of the line YAML stopped at (or the one before it,
    where a tab-indented key often makes the next line the one that fails)."""
    lines = text.splitlines()
    for number in (line, line - 1):
        if 0 <= number < len(lines) and "\t" in lines[number][: len(lines[number]) - len(lines[number].lstrip())]:
            where = "this line" if number == line else f"line {number + 1}"
            return f"; {where} is indented with a tab, which YAML does not allow: indent with spaces"
    return ""


def validation_problems(
    name: str, data: object, lines: dict[tuple, int], error: ValidationError, root: type[BaseModel], scope: tuple
) -> list[str]:
    """One line per problem of a document that `root` rejected (see messages.problem)."""
    details = error.errors()
    return [problem(name, data, lines, d, root, scope) for d in details if not _echo_of_item_errors(d, details)]


class _TooLarge(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _read_yaml(text: str) -> tuple[yaml.Node | None, object]:
    """The composed node tree and the constructed data, once the text is known to be bounded:
    nesting is checked on the event stream (which does not recurse), the size with aliases
    expanded on the tree (each shared node counted once per use, but computed once)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise _TooLarge(f"nested deeper than {MAX_NESTING} levels", event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        sizes: dict[int, int] = {}
        if _expanded_size(node, sizes) > MAX_NODES:
            raise _TooLarge(f"aliases expand to more than {MAX_NODES:,} nodes", node.start_mark.line + 1)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes the tree has with every alias expanded (depth is bounded before this runs)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = size
    return size


def _echo_of_item_errors(detail: dict, details: list[dict]) -> bool:
    """pydantic adds 'too short' for a list whose items all failed; the item errors say it better."""
    loc = detail["loc"]
    return detail["type"] == "too_short" and any(d["loc"][: len(loc)] == loc and d["loc"] != loc for d in details)


def _line_index(node: yaml.Node | None, path: tuple = (), *, duplicates: list[str]) -> dict[tuple, int]:
    """Maps each key path (as pydantic reports locations) to its 1-based line in the file, and
    lists keys written twice in one mapping."""
    index: dict[tuple, int] = {}
    if node is None:
        return index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            if child in index:
                duplicates.append(
                    f"{key.start_mark.line + 1}: {key.value!r} is given twice (first on line {index[child]})"
                )
            index.update(_line_index(value, child, duplicates=duplicates))
            index[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            index.update(_line_index(item, (*path, position), duplicates=duplicates))
    return index
