"""The pure core (engine, events, rules) imports no I/O library.

Checked in a fresh interpreter: in this test process other tests may already have imported
aiokafka or httpx, which would hide an import made by the core.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IO_LIBRARIES = ("aiokafka", "httpx", "structlog", "prometheus_client", "aiohttp")
PURE_MODULES = ("guard.engine", "guard.events", "guard.rules")


def modules_after_importing(*names: str) -> set[str]:
    """The top-level package names in sys.modules after a fresh interpreter imports `names`."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({module.split('.')[0] for module in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


class TestPureCore:
    """The engine, the event decoder and the rule loader stay free of I/O libraries."""

    def test_the_pure_modules_import_no_io_library(self) -> None:
        """Importing guard.engine, guard.events and guard.rules loads none of the I/O libraries."""
        loaded = modules_after_importing(*PURE_MODULES)
        assert {"guard", "msgspec", "pydantic", "yaml"} <= loaded  # the core's own dependencies did load
        assert loaded.isdisjoint(IO_LIBRARIES), sorted(loaded & set(IO_LIBRARIES))

    @pytest.mark.parametrize("module", PURE_MODULES)
    def test_each_pure_module_alone_imports_no_io_library(self, module: str) -> None:
        """Each one on its own too, so one cannot rely on another to hide an import."""
        assert modules_after_importing(module).isdisjoint(IO_LIBRARIES)

    @pytest.mark.parametrize(
        ("module", "library"),
        [
            ("guard.kafka", "aiokafka"),
            ("guard.actions.pause", "httpx"),
            ("guard.logs", "structlog"),
            ("guard.metrics", "prometheus_client"),
        ],
    )
    def test_the_check_sees_an_io_import_when_there_is_one(self, module: str, library: str) -> None:
        """The control: the same check does see the I/O modules' libraries, so a pass above means something."""
        assert library in modules_after_importing(module)
