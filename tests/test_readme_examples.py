"""Docs that cannot drift: every fenced block of the README and of the chart's README carries a marker on
the line before it that says how the suite checks it, and a block without one fails here.

- `<!-- run -->`: a transcript. Each `$ guard ...` line runs (in this process, in a scratch folder) and what
  it prints, stdout and stderr together as a terminal shows them, must equal the lines under it; a line `...`
  stands for any lines. `<!-- run after editing FILE: "old" -> "new", ... -->` runs it on a copy of the
  folder in which FILE has those edits (a typo, say).
- `<!-- file: PATH -->`: the text of PATH in the scratch folder, which the transcripts then use.
- `<!-- rules -->`: a rule file, or rules of one (the lines under a group's `rules:`); it must load.
- `<!-- try-it -->`: run line by line on a real Apache Kafka by tests/test_try_it.py.
- `<!-- not run: REASON -->`: what the unit suite cannot run (a broker, a cluster, a receiver); its `guard`
  commands must still be ones the command line accepts.

The chart's NOTES.txt (a Helm template) marks each indented block with a template comment on the line after
the sentence that leads into it, `{{- /* KIND: ... */}}`: `run` (each `guard` line exits 0 in the scratch
folder), `metrics` (each metric named is one the guard exports, with its labels) or `not run: REASON`.

The scratch folder holds the `file:` blocks and `events.jsonl.gz`, made by `guard generate ... --seed 3`
as the README says."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from metric_names import exported_metrics, named_metrics

from guard.cli import main, parser
from guard.rules import parse_rules

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
CHART_README = ROOT / "helm" / "deliverability-guard" / "README.md"
NOTES = ROOT / "helm" / "deliverability-guard" / "templates" / "NOTES.txt"
KINDS = ("run", "file", "rules", "try-it", "not run")


@dataclass(frozen=True)
class Block:
    """A fenced block: where it is, the marker comment before it (or None) and its dedented text."""

    where: str
    marker: str | None
    body: str

    @property
    def kind(self) -> str | None:
        if self.marker is None:
            return None
        return next((kind for kind in KINDS if re.match(rf"{kind}\b", self.marker)), None)


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the `<!-- ... -->` line right before it."""
    lines = path.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = re.match(r"([ \t]*)```", lines[index])
        if opening is None:
            index += 1
            continue
        indent, start = opening.group(1), index
        index += 1
        while not re.match(r"[ \t]*```\s*$", lines[index]):
            index += 1
        body = "".join(line.removeprefix(indent) + "\n" for line in lines[start + 1 : index])
        comment = re.fullmatch(r"\s*<!--\s*(.*?)\s*-->\s*", lines[start - 1]) if start else None
        found.append(Block(f"{path.relative_to(ROOT)}:{start + 1}", comment and comment.group(1), body))
        index += 1
    return found


BLOCKS = blocks(README) + blocks(CHART_README)


def of_kind(kind: str) -> list[Block]:
    return [block for block in BLOCKS if block.kind == kind]


def ids(items: list[Block]) -> list[str]:
    return [block.where for block in items]


@contextlib.contextmanager
def clean_environment() -> Iterator[None]:
    """None of the caller's GUARD_/KAFKA_/LEADTERRA_ settings: the README's reader has none set."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(("GUARD_", "KAFKA_", "LEADTERRA_"))}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def guard(cwd: Path, command: str) -> tuple[int, str]:
    """`guard COMMAND` run in `cwd`: its exit code, and stdout and stderr interleaved as a terminal shows them."""
    shown = io.StringIO()
    with (
        contextlib.chdir(cwd),
        clean_environment(),
        contextlib.redirect_stdout(shown),
        contextlib.redirect_stderr(shown),
    ):
        try:
            code = main(shlex.split(command))
        except SystemExit as exit:  # argparse refusing the arguments
            code = exit.code if isinstance(exit.code, int) else 2
    return code, shown.getvalue()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    for block in of_kind("file"):
        path = folder / re.match(r"file: ([^\s,]+)", block.marker).group(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.body)
    code, shown = guard(folder, "generate events.jsonl.gz --campaigns 12 --bad 3 --seed 3")
    assert code == 0, shown
    return folder


def commands(block: str) -> list[tuple[str, list[str]]]:
    """Each `$ command` with the output lines shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any `$` line: {line!r}"
            steps[-1][1].append(line.rstrip())
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; `...` stands for any lines (none included)."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[start:]) for start in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def edits(marker: str) -> tuple[str, list[tuple[str, str]]] | None:
    """`run after editing FILE: "old" -> "new", ...` as (FILE, [(old, new), ...]); None for a plain `run`."""
    found = re.match(r"run after editing (\S+): (.*)", marker)
    if found is None:
        return None
    return found.group(1), re.findall(r'"([^"]*)" -> "([^"]*)"', found.group(2))


def guard_commands(text: str) -> list[str]:
    """The `guard ...` commands of a block not run: `$ ` and leading VAR=value dropped, `[...]` options
    taken as given, comments and Helm template actions left out."""
    found = []
    for line in text.splitlines():
        line = re.sub(r"\{\{.*?\}\}", "X", line.strip().removeprefix("$ "))
        if not re.match(r"([A-Z_]+=\S+\s+)*guard\s", line):
            continue
        words = shlex.split(line.replace("[", "").replace("]", ""), comments=True)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words.pop(0)
        if words[:1] == ["guard"]:
            found.append(shlex.join(words[1:]))
    return found


def accepted(command: str) -> bool:
    """Whether the command line parses `guard COMMAND` (its options and arguments), without running it."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parser().parse_args(shlex.split(command))
        except SystemExit:
            return False
    return True


def test_every_block_says_how_it_is_checked() -> None:
    """A new example without a marker fails here: run it, or say why it cannot run."""
    unmarked = [f"{block.where}: {block.marker or 'no marker'}" for block in BLOCKS if block.kind is None]
    assert not unmarked, "fenced blocks without `<!-- run -->`, `<!-- not run: REASON -->` ...:\n" + "\n".join(unmarked)


def test_a_block_not_run_says_why() -> None:
    assert all(re.fullmatch(r"not run: \S.*", block.marker or "") for block in of_kind("not run"))


def test_each_kind_of_marker_is_in_use() -> None:
    """A marker renamed in the README would otherwise check nothing silently."""
    assert len(of_kind("run")) >= 4 and of_kind("file") and of_kind("rules") and of_kind("not run")
    assert len(of_kind("try-it")) == 1


@pytest.mark.parametrize("block", of_kind("run"), ids=ids(of_kind("run")))
def test_a_transcript_is_what_the_commands_print(scratch: Path, block: Block, tmp_path: Path) -> None:
    """Each `$ guard ...` of the block prints exactly the lines under it."""
    folder = scratch
    if (edited := edits(block.marker)) is not None:
        folder = tmp_path / "edited"
        shutil.copytree(scratch, folder)
        name, changes = edited
        text = (folder / name).read_text()
        for old, new in changes:
            assert old in text, f"{block.where}: {name} has no {old!r} to edit"
            text = text.replace(old, new)
        (folder / name).write_text(text)
    for command, expected in commands(block.body):
        assert command.startswith("guard "), f"{block.where}: only guard commands run here: {command}"
        _, shown = guard(folder, command.removeprefix("guard "))
        actual = [line.rstrip() for line in shown.splitlines()]
        assert matches(expected, actual), f"{block.where}: `{command}` printed:\n{shown}"


@pytest.mark.parametrize("block", of_kind("rules"), ids=ids(of_kind("rules")))
def test_a_rules_block_loads(block: Block) -> None:
    """A whole rule file as it is; rules of one inside a group of their own."""
    text = block.body
    if not text.lstrip().startswith(("groups:", "notify:")):
        text = "groups:\n  - name: example\n    rules:\n" + text
    parse_rules([(block.where, text)])


@pytest.mark.parametrize(
    "command",
    [command for block in of_kind("not run") for command in guard_commands(block.body)],
)
def test_a_command_not_run_is_still_one_the_command_line_takes(command: str) -> None:
    """`guard exempt ... --for 24h`, `guard decisions --since 24h`: a renamed option fails here."""
    assert accepted(command), f"`guard {command}` is refused by the command line"


# NOTES.txt: indented blocks of a Helm template, marked in template comments


@dataclass(frozen=True)
class NotesBlock:
    where: str
    marker: str | None
    lines: list[str]


def notes_blocks() -> list[NotesBlock]:
    """Runs of lines indented 5 spaces or more (template actions among them), each with the template
    comment on the nearest non-blank line before it."""
    lines = NOTES.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        if not lines[index].startswith("     "):
            index += 1
            continue
        start = index
        while index < len(lines) and (
            lines[index].startswith("     ") or re.fullmatch(r"\s*\{\{-? [^/].*\}\}", lines[index])
        ):
            index += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        comment = re.fullmatch(r"\{\{- /\* (.*?) \*/\}\}", before.strip())
        body = [line for line in lines[start:index] if line.startswith("     ")]
        found.append(NotesBlock(f"NOTES.txt:{start + 1}", comment and comment.group(1), body))
    return found


NOTES_BLOCKS = notes_blocks()


def test_every_notes_block_says_how_it_is_checked() -> None:
    assert len(NOTES_BLOCKS) >= 4
    for block in NOTES_BLOCKS:
        assert block.marker and re.match(r"(run|metrics|not run: \S)", block.marker), f"{block.where}: no marker"


@pytest.mark.parametrize(
    "command",
    [c for b in NOTES_BLOCKS if (b.marker or "").startswith("run") for c in guard_commands("\n".join(b.lines))],
)
def test_a_notes_command_runs_in_the_readme_folder(scratch: Path, command: str) -> None:
    """The rule commands NOTES.txt suggests, on the README's own rules/team.yaml and its test."""
    code, shown = guard(scratch, command)
    assert code == 0, f"`guard {command}`:\n{shown}"


@pytest.mark.parametrize(
    "command",
    [c for b in NOTES_BLOCKS if (b.marker or "").startswith("not run") for c in guard_commands("\n".join(b.lines))],
)
def test_a_notes_command_not_run_is_one_the_command_line_takes(command: str) -> None:
    assert accepted(command), f"`guard {command}` is refused by the command line"


def test_the_metrics_notes_names_are_exported() -> None:
    """`guard_actions_total{outcome="paused"}` and the rest: each metric and label exists."""
    named = [name for b in NOTES_BLOCKS if b.marker == "metrics" for name in named_metrics("\n".join(b.lines))]
    assert len(named) >= 4
    exported = exported_metrics()
    for metric, labels in named:
        assert metric in exported, f"NOTES.txt names {metric}, which the guard does not export"
        assert labels <= exported[metric], f"NOTES.txt: {metric} has no label {labels - exported[metric]}"


def test_the_readme_metrics_list_names_every_metric_the_guard_exports() -> None:
    """Operating it: `Metrics (guard_ prefix ...)` lists each metric `guard run` exports, and only those."""
    text = README.read_text()
    listed = text.split("- Metrics (`guard_` prefix", 1)[1].split("\n- ", 1)[0]
    names = {name for name, _ in named_metrics(listed)}
    service = {name for name in exported_metrics(ingest=False) if not name.endswith(("_bucket", "_sum", "_count"))}
    service |= {name.removesuffix("_bucket") for name in exported_metrics(ingest=False) if name.endswith("_bucket")}
    assert names == service, f"missing: {sorted(service - names)}; not exported: {sorted(names - service)}"
