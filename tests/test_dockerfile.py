"""The Dockerfile's invariants, read from the file (no Docker engine is needed or used)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
SECRET_LIKE = re.compile(r"(^|/)(\.env(\..*)?|.*\.(pem|key|p12|pfx)|id_[a-z0-9]+|secrets?(/.*)?|\.git(/.*)?)$", re.I)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def instructions(text: str) -> list[Instruction]:
    """Dockerfile text -> instructions, with comments dropped and `\\` continuations joined."""
    result, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """Instructions split into build stages, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"line {instruction.line}: {instruction.keyword} before the first FROM"
        result[-1].append(instruction)
    return result


def from_image(instruction: Instruction) -> tuple[str, str | None]:
    """FROM [--platform=...] IMAGE [AS NAME] -> (IMAGE, NAME)."""
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
    return words[0], name


def copy_sources(instruction: Instruction) -> tuple[list[str], bool]:
    """COPY/ADD sources and whether they come from the build context (not --from=another stage)."""
    arguments = instruction.arguments
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = shlex.split(arguments)
    options = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    from_context = not any(option.startswith("--from=") for option in options)
    return paths[:-1], from_context


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)  # the shell form is not JSON and fails here
    assert isinstance(value, list) and all(isinstance(word, str) for word in value)
    return value


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`), anchored at the context root."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matching the path or one of its parent directories excludes it; the
    last matching pattern wins; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def parsed() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    return stages(parsed)[-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class TestBaseImages:
    def test_the_build_has_more_than_one_stage(self, parsed: list[Instruction]) -> None:
        """A build stage installs; the final stage only receives the venv."""
        assert len(stages(parsed)) >= 2

    def test_every_base_image_is_python_311_slim_bookworm_pinned_to_a_patch_release(
        self, parsed: list[Instruction]
    ) -> None:
        """`python:3.11-slim` would move under us; `3.11.N-slim-bookworm` (optionally @sha256) does not."""
        stage_names = {from_image(i)[1] for i in parsed if i.keyword == "FROM"} - {None}
        for instruction in parsed:
            if instruction.keyword == "FROM":
                image, _ = from_image(instruction)
                if image not in stage_names:
                    assert PINNED_BASE.match(image), f"line {instruction.line}: unpinned base image {image}"

    def test_build_and_final_stages_share_one_base_so_the_venv_python_matches(self, parsed: list[Instruction]) -> None:
        """The venv's interpreter symlink points into the base image's Python."""
        images = {from_image(i)[0] for i in parsed if i.keyword == "FROM"}
        assert len(images) == 1


class TestFinalStage:
    def test_runs_as_a_numeric_non_root_user(self, final_stage: list[Instruction]) -> None:
        """Kubernetes' runAsNonRoot can only verify a numeric UID."""
        users = [i for i in final_stage if i.keyword == "USER"]
        assert users, "the final stage sets no USER"
        uid, _, gid = users[-1].arguments.partition(":")
        assert uid.isdigit() and int(uid) != 0
        assert not gid or (gid.isdigit() and int(gid) != 0)
        assert int(uid) == 10001  # the chart's runAsUser

    def test_nothing_runs_as_root_after_the_user_switch(self, final_stage: list[Instruction]) -> None:
        last_user = max(n for n, i in enumerate(final_stage) if i.keyword == "USER")
        assert not [i for i in final_stage[last_user:] if i.keyword == "RUN"]

    def test_entrypoint_is_guard_and_cmd_is_run_in_exec_form(self, final_stage: list[Instruction]) -> None:
        """Exec form: guard is PID 1 and SIGTERM reaches it (a shell form would swallow it)."""
        [entrypoint] = [i for i in final_stage if i.keyword == "ENTRYPOINT"]
        [cmd] = [i for i in final_stage if i.keyword == "CMD"]
        assert exec_form(entrypoint) == ["guard"]
        assert exec_form(cmd) == ["run"]

    def test_has_no_healthcheck(self, parsed: list[Instruction]) -> None:
        """Kubernetes' probes on /livez and /readyz do this job."""
        assert not [i for i in parsed if i.keyword == "HEALTHCHECK"]

    def test_exposes_the_http_port(self, final_stage: list[Instruction]) -> None:
        exposed = [word for i in final_stage if i.keyword == "EXPOSE" for word in i.arguments.split()]
        assert "8080" in exposed or "8080/tcp" in exposed

    def test_environment_suits_a_read_only_root_filesystem(self, final_stage: list[Instruction]) -> None:
        env = final_env(final_stage)
        assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
        assert env.get("GUARD_HTTP_PORT", "8080") == "8080"

    def test_default_rules_are_copied_where_guard_rules_points(self, final_stage: list[Instruction]) -> None:
        env = final_env(final_stage)
        copies = [copy_sources(i) + (i.arguments.split()[-1],) for i in final_stage if i.keyword == "COPY"]
        assert any(
            from_context and sources == ["rules/"] and target.rstrip("/") == env["GUARD_RULES"]
            for sources, from_context, target in copies
        )

    def test_secrets_cannot_be_set_as_image_environment(self, parsed: list[Instruction]) -> None:
        """An API key or password baked into ENV/ARG would be readable by anyone who pulls the image."""
        for instruction in parsed:
            if instruction.keyword in {"ENV", "ARG"}:
                assert not re.search(r"(API_KEY|PASSWORD|SECRET|TOKEN)\b", instruction.arguments, re.I), instruction


def final_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, _, value = word.partition("=")
                env[key] = value
    return env


class TestInstall:
    def test_installs_the_package_with_the_constraints_and_no_test_extras(self, parsed: list[Instruction]) -> None:
        runs = " ".join(i.arguments for i in parsed if i.keyword == "RUN")
        assert re.search(r"pip install -c constraints\.txt \.(\s|$)", runs)
        assert "[test]" not in runs

    def test_never_adds_from_a_url(self, parsed: list[Instruction]) -> None:
        """ADD of a URL fetches unpinned bytes at build time; COPY is all this build needs."""
        for instruction in parsed:
            if instruction.keyword == "ADD":
                sources, _ = copy_sources(instruction)
                assert not any(re.match(r"^[a-z]+://|^git@", source) for source in sources), instruction

    def test_copies_no_secret_key_or_env_file(self, parsed: list[Instruction]) -> None:
        for instruction in parsed:
            if instruction.keyword in {"COPY", "ADD"}:
                sources, _ = copy_sources(instruction)
                for source in sources:
                    assert not SECRET_LIKE.search(source.rstrip("/")), f"line {instruction.line}: copies {source}"
                    assert source.rstrip("/") not in {".", "*"}, "copying the whole context copies whatever lies there"

    def test_every_file_copied_from_the_context_exists_and_is_not_dockerignored(
        self, parsed: list[Instruction], ignore_patterns: list[str]
    ) -> None:
        """Otherwise the build fails with "not found" only on a machine that has Docker."""
        for instruction in parsed:
            if instruction.keyword in {"COPY", "ADD"}:
                sources, from_context = copy_sources(instruction)
                for source in sources if from_context else []:
                    path = ROOT / source
                    assert path.exists(), f"line {instruction.line}: {source} does not exist"
                    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
                    kept = [f for f in files if not dockerignored(str(f.relative_to(ROOT)), ignore_patterns)]
                    assert kept, f"line {instruction.line}: {source} is excluded by .dockerignore"


class TestDockerignore:
    @pytest.mark.parametrize(
        "path",
        [
            ".venv/bin/python",
            ".git/HEAD",
            ".tools/helm",
            ".hypothesis/examples/x",
            ".pytest_cache/v/x",
            "guard/__pycache__/cli.cpython-311.pyc",
            "tests/test_rules.py",
            ".env",
            "guard/.env",
            "deploy/tls.key",
            "helm/deliverability-guard/Chart.yaml",
            "deliverability_guard.egg-info/PKG-INFO",
            "rules/tests/default_test.yaml",
        ],
    )
    def test_excludes(self, path: str, ignore_patterns: list[str]) -> None:
        assert dockerignored(path, ignore_patterns)

    @pytest.mark.parametrize(
        "path", ["pyproject.toml", "constraints.txt", "guard/cli.py", "guard/rules/loader.py", "rules/default.yaml"]
    )
    def test_keeps_what_the_build_needs(self, path: str, ignore_patterns: list[str]) -> None:
        assert not dockerignored(path, ignore_patterns)
