"""The Dockerfile's invariants, read from the file (no Docker engine is needed or used)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCKS = {"runtime": ROOT / "docker" / "requirements.lock", "build": ROOT / "docker" / "build-requirements.lock"}

PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
LOCKED = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}( \\)?$")
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
    """Instructions split into build stages, each starting with its FROM (global ARGs before it left out)."""
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        if not result and instruction.keyword == "ARG":
            continue
        assert result, f"line {instruction.line}: {instruction.keyword} before the first FROM"
        result[-1].append(instruction)
    return result


def from_image(instruction: Instruction) -> tuple[str, str | None]:
    """FROM [--platform=...] IMAGE [AS NAME] -> (IMAGE, NAME)."""
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
    return words[0], name


def global_args(parsed: list[Instruction]) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what FROM lines may use."""
    defaults = {}
    for instruction in parsed:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            defaults[name] = default
    return defaults


def resolved(image: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)


def run_commands(stage: list[Instruction]) -> list[str]:
    """Each shell command of a stage's RUN instructions (split at `&&`)."""
    return [command.strip() for i in stage if i.keyword == "RUN" for command in i.arguments.split("&&")]


def pip_installs(parsed: list[Instruction]) -> list[list[str]]:
    return [shlex.split(c) for c in run_commands(parsed) if re.search(r"\bpip\b.*\binstall\b", c)]


def lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """A hashed lock -> {normalised name: (version, hashes)}; asserts every pin carries hashes."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if match := LOCKED.match(stripped):
            current = normalised(match.group(1))
            pins[current] = (match.group(2), 0)
        else:
            assert current is not None and HASH.match(stripped), f"{path.name}: unexpected line {line!r}"
            pins[current] = (pins[current][0], pins[current][1] + 1)
    return pins


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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

    def test_every_base_image_is_python_311_slim_bookworm_pinned_by_tag_and_digest(
        self, parsed: list[Instruction]
    ) -> None:
        """A tag moves under us; `python:3.11.N-slim-bookworm@sha256:...` does not (ARG defaults resolved)."""
        stage_names = {from_image(i)[1] for i in parsed if i.keyword == "FROM"} - {None}
        defaults = global_args(parsed)
        for instruction in parsed:
            if instruction.keyword == "FROM":
                image = resolved(from_image(instruction)[0], defaults)
                if image not in stage_names:
                    assert PINNED_BASE.match(image), f"line {instruction.line}: base image {image} has no digest"

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


class TestRuntimeContents:
    def test_only_the_venv_comes_from_the_build_stage(self, final_stage: list[Instruction]) -> None:
        """Build tools, sources and wheels stay behind."""
        from_build = [copy_sources(i)[0] for i in final_stage if i.keyword == "COPY" and not copy_sources(i)[1]]
        assert from_build == [["/opt/guard"]]

    def test_the_venv_is_made_without_pip(self, parsed: list[Instruction]) -> None:
        [build] = [stage for stage in stages(parsed) if from_image(stage[0])[1] == "build"]
        venvs = [c for c in run_commands(build) if re.search(r"-m venv .*/opt/guard$", c)]
        assert venvs and all("--without-pip" in c for c in venvs)

    def test_the_base_images_pip_is_removed_from_the_runtime(self, final_stage: list[Instruction]) -> None:
        commands = run_commands(final_stage)
        assert any(re.search(r"pip uninstall --yes .*\bpip\b", c) for c in commands)
        assert any("ensurepip" in c and c.startswith("rm -rf") for c in commands)
        assert "! python -c 'import pip' 2>/dev/null" in commands  # the build fails if pip is still there

    def test_guard_testing_stays_out_of_the_image(self, parsed: list[Instruction], ignore_patterns: list[str]) -> None:
        """Out of the build context (so of the wheel), and the build checks the venv."""
        assert dockerignored("guard/testing/leadterra/standin.py", ignore_patterns)
        assert any(c.startswith("test ! -e /opt/guard/") and c.endswith("/guard/testing") for c in run_commands(parsed))


def image_package(tmp_path: Path, ignore_patterns: list[str]) -> Path:
    """guard/ as the build context has it (.dockerignore applied): the package the image installs."""
    for path in (ROOT / "guard").rglob("*.py"):
        relative = str(path.relative_to(ROOT))
        if not dockerignored(relative, ignore_patterns):
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / relative)
    return tmp_path


def run_image_guard(package: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`guard ARGS` with only the image's package and the installed dependencies (-S: no editable .pth)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), sysconfig.get_paths()["purelib"]])}
    return subprocess.run(
        [sys.executable, "-S", "-m", "guard.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=package,
        timeout=60,
        check=False,
    )


class TestImagePackage:
    """What the guard in the image does without guard/testing (no Docker engine: the same files, run here)."""

    def test_the_service_and_the_rule_tools_need_no_guard_testing(
        self, tmp_path: Path, ignore_patterns: list[str]
    ) -> None:
        package = image_package(tmp_path, ignore_patterns)
        assert not (package / "guard" / "testing").exists()
        result = run_image_guard(package, "validate", str(ROOT / "rules"))
        assert result.returncode == 0, result.stderr
        script = "import guard.runtime.service, guard.ingest.app, guard.tools.replay, guard.cli"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), sysconfig.get_paths()["purelib"]])}
        imported = subprocess.run(
            [sys.executable, "-S", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert imported.returncode == 0, imported.stderr

    @pytest.mark.parametrize("command", ["demo", "standin"])
    def test_demo_and_standin_say_in_one_line_what_they_need(
        self, command: str, tmp_path: Path, ignore_patterns: list[str]
    ) -> None:
        result = run_image_guard(image_package(tmp_path, ignore_patterns), command)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert f"`guard {command}` needs guard/testing and the test extra" in line
        assert "source checkout" in line and "pip install -e '.[test]'" in line

    def test_demo_and_standin_are_not_offered_without_guard_testing(
        self, tmp_path: Path, ignore_patterns: list[str]
    ) -> None:
        """Not in the image's `guard --help`: a command offered there would only fail."""
        result = run_image_guard(image_package(tmp_path, ignore_patterns), "--help")
        assert result.returncode == 0, result.stderr
        assert "replay" in result.stdout and "demo" not in result.stdout and "standin" not in result.stdout


def final_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, _, value = word.partition("=")
                env[key] = value
    return env


class TestInstall:
    def test_every_download_is_checked_against_a_committed_hashed_lock(self, parsed: list[Instruction]) -> None:
        """pip installs from an index only with --require-hashes -r a lock (wheels only, no sdist to build);
        what it installs without hashes is the guard's own wheel, with --no-index."""
        installs = pip_installs(parsed)
        assert installs
        for words in installs:
            if "--no-index" in words:
                continue
            assert "--require-hashes" in words and "--no-deps" in words, words
            assert words[words.index("--only-binary") + 1] == ":all:", words
            lock = ROOT / words[words.index("-r") + 1]
            assert lock in LOCKS.values(), words
        locks_used = {ROOT / w[w.index("-r") + 1] for w in installs if "-r" in w}
        assert locks_used == set(LOCKS.values())

    def test_installs_no_test_extras(self, parsed: list[Instruction]) -> None:
        assert not any("[test]" in word for words in pip_installs(parsed) for word in words)

    @pytest.mark.parametrize("lock", sorted(LOCKS))
    def test_every_pin_of_a_lock_carries_hashes(self, lock: str) -> None:
        pins = lock_pins(LOCKS[lock])
        assert pins and all(hashes >= 1 for _, hashes in pins.values())

    def test_the_runtime_lock_is_pyprojects_dependencies_at_constraints_versions(self) -> None:
        """A stale lock (a dependency changed without `make lock`) fails here rather than in the image."""
        import tomllib

        pins = lock_pins(LOCKS["runtime"])
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        for requirement in project["dependencies"]:
            name, version = requirement.split("==")
            assert pins.get(normalised(name), (None,))[0] == version, f"{requirement} is not in the lock"
        constraints = dict(
            line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
        )
        constrained = {normalised(name): version for name, version in constraints.items()}
        assert {name: version for name, (version, _) in pins.items()} == {name: constrained[name] for name in pins}, (
            "the lock and constraints.txt disagree"
        )

    @pytest.mark.parametrize("project", ["pyproject.toml", "core/pyproject.toml"])
    def test_the_build_lock_has_the_build_backend_of_pyproject(self, project: str) -> None:
        """setuptools for the guard's wheel, maturin for the compiled core's: the versions their projects name."""
        import tomllib

        backend = tomllib.loads((ROOT / project).read_text(encoding="utf-8"))["build-system"]["requires"]
        pins = lock_pins(LOCKS["build"])
        for requirement in backend:
            name, version = requirement.split("==")
            assert pins[normalised(name)][0] == version

    def test_the_locks_are_made_by_pinned_pip_tools_with_hashes(self) -> None:
        script = (ROOT / "scripts" / "lock-image.sh").read_text(encoding="utf-8")
        assert re.search(r"pip-tools==\d+\.\d+\.\d+", script) and "--generate-hashes" in script
        for lock in LOCKS.values():
            assert "pip-compile" in lock.read_text(encoding="utf-8").splitlines()[4]

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


def build_stage(parsed: list[Instruction]) -> list[Instruction]:
    [build] = [stage for stage in stages(parsed) if from_image(stage[0])[1] == "build"]
    return build


TOOLCHAIN = re.compile(r"\b(apt-get|apt|dpkg|cargo|rustc|rustup|maturin|gcc|cc)\b")


class TestCompiledCore:
    """The compiled core (core/) is built in the build stage from pinned inputs; the runtime holds no toolchain."""

    def test_the_build_stage_installs_debians_rust_at_exact_versions(self, parsed: list[Instruction]) -> None:
        """bookworm's rustc (1.63) is too old for PyO3: rustc-web and cargo-web, each `name=version`."""
        installs = [shlex.split(c) for c in run_commands(build_stage(parsed)) if re.search(r"apt-get .*\binstall\b", c)]
        assert len(installs) == 1
        packages = [word for word in installs[0][installs[0].index("install") + 1 :] if not word.startswith("-")]
        assert {package.partition("=")[0] for package in packages} == {"rustc-web", "cargo-web", "libstd-rust-web-dev"}
        assert all(re.fullmatch(r"[a-z0-9.+-]+=\d[\w.+~:-]+", package) for package in packages), packages
        assert len({package.partition("=")[2] for package in packages}) == 1  # one release of Rust
        assert "--no-install-recommends" in installs[0]

    def test_the_crates_are_fetched_as_the_lock_pins_them_and_the_build_is_offline(
        self, parsed: list[Instruction]
    ) -> None:
        commands = run_commands(build_stage(parsed))
        fetches = [c for c in commands if c.startswith("cargo fetch")]
        builds = [c for c in commands if re.match(r"/opt/build/bin/maturin build\b", c)]
        assert fetches == ["cargo fetch --locked --manifest-path core/Cargo.toml"]
        assert len(builds) == 1 and "--frozen" in builds[0].split() and "--release" in builds[0].split()
        assert commands.index(fetches[0]) < commands.index(builds[0])
        assert (ROOT / "core" / "Cargo.lock").is_file()

    def test_the_core_is_installed_into_the_guards_venv_and_must_import(self, parsed: list[Instruction]) -> None:
        commands = run_commands(build_stage(parsed))
        assert any(
            "--python /opt/guard/bin/python install --no-deps --no-index /wheels/core/" in command
            for command in commands
        )
        assert "/opt/guard/bin/python -c 'import guard_core'" in commands

    def test_the_core_is_built_before_the_guards_sources_are_copied(self, parsed: list[Instruction]) -> None:
        """A change to guard/ reuses the cached core; a change to core/ rebuilds the core and what follows."""
        copies = [copy_sources(i)[0] for i in build_stage(parsed) if i.keyword == "COPY"]
        assert copies.index(["core/"]) < copies.index(["guard/"])

    def test_the_runtime_stage_holds_no_toolchain(self, final_stage: list[Instruction]) -> None:
        """No package installed, no compiler named: the runtime is the base, the venv and the rules."""
        assert not [c for c in run_commands(final_stage) if TOOLCHAIN.search(c)]


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
            "guard/testing/leadterra/standin.py",
            "constraints.txt",
            "core/target/release/libguard_core.so",
        ],
    )
    def test_excludes(self, path: str, ignore_patterns: list[str]) -> None:
        assert dockerignored(path, ignore_patterns)

    @pytest.mark.parametrize(
        "path",
        [
            "pyproject.toml",
            "README.md",
            "docker/requirements.lock",
            "docker/build-requirements.lock",
            "guard/cli/__init__.py",
            "guard/runtime/service.py",
            "guard/rules/loader.py",
            "rules/default.yaml",
            "core/Cargo.toml",
            "core/Cargo.lock",
            "core/pyproject.toml",
            "core/src/lib.rs",
        ],
    )
    def test_keeps_what_the_build_needs(self, path: str, ignore_patterns: list[str]) -> None:
        assert not dockerignored(path, ignore_patterns)
