"""README examples that cannot drift: a code block after a `<!-- run` comment is a transcript; each `$ `
line is run with the real `guard` command and its stdout must equal the lines under it.

The commands run in a scratch folder holding what the README's surrounding text makes: `rules/team.yaml`
(the README's own block) and `events.jsonl.gz` (`guard generate ... --seed 3`, as it says). A line `...`
in a transcript stands for any lines."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
RUN_MARKER = "<!-- run"


def transcripts(text: str) -> list[tuple[int, str]]:
    """(line number, dedented block) of every code block right after a run marker."""
    found = []
    for match in re.finditer(r"^[ \t]*<!-- run[^\n]*\n([ \t]*)```[^\n]*\n(.*?)^[ \t]*```", text, re.M | re.S):
        indent = match.group(1)
        body = "".join(line.removeprefix(indent) for line in match.group(2).splitlines(keepends=True))
        found.append((text.count("\n", 0, match.start()) + 1, body))
    return found


def commands(block: str) -> list[tuple[str, list[str]]]:
    """Each `$ command` with the output lines shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any `$` line: {line!r}"
            steps[-1][1].append(line)
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; `...` stands for any lines."""
    pattern = "\n".join("*" if line == "..." else line.replace("[", "[[]") for line in expected)
    return fnmatch.fnmatchcase("\n".join(actual), pattern)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    team = README.split("A team wants its own, stricter line", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (folder / "rules").mkdir()
    (folder / "rules" / "team.yaml").write_text(team)
    guard(folder, "generate events.jsonl.gz --campaigns 12 --bad 3 --seed 3")
    return folder


def guard(cwd: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARD_", "KAFKA_", "LEADTERRA_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = shlex.split(command)
    return subprocess.run(
        [sys.executable, "-m", "guard.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


BLOCKS = transcripts(README)


def test_the_readme_has_run_blocks() -> None:
    """The marker is in use (a rename of it would silently run nothing)."""
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize(("line", "block"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_a_readme_transcript_is_what_the_commands_print(scratch: Path, line: int, block: str) -> None:
    """Each `$ guard ...` of the block prints exactly the lines under it."""
    for command, expected in commands(block):
        assert command.startswith("guard "), f"README.md:{line}: only guard commands run here: {command}"
        result = guard(scratch, command.removeprefix("guard "))
        actual = [text.rstrip() for text in result.stdout.splitlines()]
        assert matches([text.rstrip() for text in expected], actual), (
            f"README.md:{line}: `{command}` printed:\n{result.stdout}{result.stderr}"
        )
