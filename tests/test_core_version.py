"""The compiled core the guard runs is the build of its own core/ sources: guard/engine/kinds.py takes only the
guard-core version it names (CORE_VERSION), and every change to core/'s sources moves that version, so a core
installed from older sources (the guard upgraded, `pip install ./core` forgotten) is refused rather than run."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from guard.engine.kinds import CORE_VERSION

CORE = Path(__file__).resolve().parent.parent / "core"
RECORDED = CORE / "sources.sha256"
SOURCES = (
    "Cargo.toml",
    "Cargo.lock",
    "pyproject.toml",
)  # `VERSION DIGEST` of each release of core/'s sources, the newest last


def sources_digest() -> str:
    """SHA-256 over what a core is built from: its Rust sources, manifests and lock file."""
    digest = hashlib.sha256()
    built_from = [*CORE.glob("src/**/*.rs"), *CORE.glob("build.rs"), *(CORE / name for name in SOURCES)]
    for path in sorted(built_from):
        text = path.read_bytes().replace(b"\r\n", b"\n")  # a checkout's line endings are not a change
        digest.update(path.relative_to(CORE).as_posix().encode() + b"\0" + text + b"\0")
    return digest.hexdigest()


def recorded() -> list[tuple[str, str]]:
    lines = [line.split() for line in RECORDED.read_text().splitlines() if line and not line.startswith("#")]
    return [(version, digest) for version, digest in lines]


def test_the_core_is_built_as_the_version_the_guard_takes() -> None:
    cargo = tomllib.loads((CORE / "Cargo.toml").read_text())["package"]["version"]
    project = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]["version"]
    assert cargo == project == CORE_VERSION


def test_a_change_to_the_cores_sources_moves_its_version() -> None:
    """Each recorded version names one set of sources; today's are the newest, under the version the guard takes."""
    releases = recorded()
    versions = [version for version, _ in releases]
    assert len(set(versions)) == len(versions), f"a version recorded twice in {RECORDED.name}: {versions}"
    assert releases[-1] == (CORE_VERSION, sources_digest()), (
        f"core/'s sources are not those of guard-core {CORE_VERSION} as recorded: move the version (core/Cargo.toml, "
        f"core/pyproject.toml, CORE_VERSION in guard/engine/kinds.py; then `cargo metadata` updates Cargo.lock) and "
        f"append `VERSION {sources_digest()}` (this digest, once the version has moved) to core/sources.sha256"
    )
