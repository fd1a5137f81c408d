"""The Makefile's venv: the compiled core built into it when cargo is on PATH, the Python engine without.

Run on a copy of the Makefile with `pip` and `cargo` replaced by scripts that write down their
arguments: what is checked is which commands `make` runs, not the build itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_SOURCES = ("core/pyproject.toml", "core/Cargo.toml", "core/Cargo.lock", "core/src/lib.rs")
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/../calls"\n'


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile beside its inputs, with a venv whose dependencies are installed (its stamp is newer)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "constraints.txt", *CORE_SOURCES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    for tool in ("pip", "cargo"):
        (tmp_path / ".venv" / "bin" / tool).write_text(RECORDER)
        (tmp_path / ".venv" / "bin" / tool).chmod(0o755)
    stamp = tmp_path / ".venv" / ".dependencies"
    stamp.touch()
    later = time.time() + 1
    os.utime(stamp, (later, later))
    return tmp_path


def make(checkout: Path, *, cargo: bool, ci: bool = False) -> subprocess.CompletedProcess[str]:
    """`make .venv/.installed` with cargo on PATH or not (the recorder in .venv/bin stands in for it)."""
    path = f"{checkout / '.venv' / 'bin'}:/usr/bin:/bin" if cargo else "/usr/bin:/bin"
    if cargo is False:
        (checkout / ".venv" / "bin" / "cargo").unlink(missing_ok=True)
    env = {"PATH": path, "HOME": str(checkout), **({"CI": "true"} if ci else {})}
    return subprocess.run(
        ["make", "--no-print-directory", ".venv/.installed"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def calls(checkout: Path) -> list[str]:
    path = checkout / ".venv" / "calls"
    return path.read_text().splitlines() if path.exists() else []


class TestCompiledCore:
    def test_with_cargo_the_core_is_installed_into_the_venv(self, checkout: Path) -> None:
        result = make(checkout, cargo=True)
        assert result.returncode == 0, result.stderr
        assert calls(checkout) == ["pip install --quiet --disable-pip-version-check ./core"]

    @pytest.mark.parametrize("source", CORE_SOURCES)
    def test_a_change_to_the_core_rebuilds_the_core_alone(self, checkout: Path, source: str) -> None:
        make(checkout, cargo=True)
        later = time.time() + 2
        os.utime(checkout / source, (later, later))
        result = make(checkout, cargo=True)
        assert result.returncode == 0, result.stderr
        assert calls(checkout) == ["pip install --quiet --disable-pip-version-check ./core"] * 2

    def test_without_cargo_one_line_says_the_python_engine_runs_and_make_succeeds(self, checkout: Path) -> None:
        result = make(checkout, cargo=False)
        assert result.returncode == 0, result.stderr
        assert calls(checkout) == []
        [said] = [line for line in result.stdout.splitlines() if "cargo" in line]
        assert said == "no cargo on PATH: the compiled core is not built, the guard runs its Python engine"

    def test_under_ci_no_cargo_fails(self, checkout: Path) -> None:
        """CI builds and tests both engines: a runner without Rust fails instead of testing one."""
        result = make(checkout, cargo=False, ci=True)
        assert result.returncode != 0
        assert "CI=true and no cargo on PATH: CI builds and tests both engines" in result.stderr
        assert not (checkout / ".venv" / ".installed").exists()

    def test_cargo_where_rustup_puts_it_is_found_off_path(self, checkout: Path) -> None:
        """rustup installs into ~/.cargo/bin, which a non-login shell (a CI runner's) may not have on PATH."""
        rustup_bin = checkout / ".cargo" / "bin"
        rustup_bin.mkdir(parents=True)
        (rustup_bin / "cargo").write_text(RECORDER)
        (rustup_bin / "cargo").chmod(0o755)
        result = make(checkout, cargo=False, ci=True)
        assert result.returncode == 0, result.stderr
        assert calls(checkout) == ["pip install --quiet --disable-pip-version-check ./core"]
