"""The layout's layering holds: `lint-imports` with the contracts in pyproject.toml.

The contracts are the architecture written down: the command line and the tools on top, the services
(runtime, ingest) in the middle, actions below them, the pure engine, the rules and the contracts at
the bottom; the pure core imports no I/O library and reads no clock; actions never reach the Kafka
client; no service needs the test stand-ins. Each planted violation below must break its contract, so a
pass of the real tree means something.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    """guard/ and pyproject.toml in a scratch directory, first on the path when lint-imports runs there."""
    shutil.copytree(ROOT / "guard", tmp_path / "guard", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("guard/engine/cusum.py", "import asyncio", "the pure core"),
        ("guard/engine/windows.py", "import time", "the pure core"),
        ("guard/rules/durations.py", "import httpx", "the pure core"),
        ("guard/engine/plan.py", "from guard.runtime import settings", "layers"),
        ("guard/contracts/events.py", "from guard.engine import Engine", "layers"),
        ("guard/actions/pause.py", "import aiokafka", "actions depend on interfaces"),
        ("guard/runtime/recovery.py", "from aiokafka import TopicPartition", "the Kafka client stays at the edge"),
        ("guard/runtime/server.py", "from guard.testing import broker", "need the test stand-ins"),
        ("guard/tools/decisions.py", "from guard.testing import leadterra", "need the test stand-ins"),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    copy_of_the_tree: Path, module: str, planted: str, contract: str
) -> None:
    path = copy_of_the_tree / module
    path.write_text(path.read_text() + f"\n{planted}  # planted\n")
    result = lint_imports(copy_of_the_tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = " ".join(result.stdout.split("Broken contracts", 1)[-1].split())  # lint-imports wraps long names
    imported = planted.split()[1]  # `import x` / `from x import y`: x
    assert contract in broken and f"{module[:-3].replace('/', '.')} -> {imported}" in broken
