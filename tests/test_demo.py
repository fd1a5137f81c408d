"""`guard demo` end to end: a real broker, the stand-in over real HTTP, the real service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.integration


def tansu_pids() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "tansu":
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_the_demo_pauses_the_bad_campaigns_only_and_leaves_nothing_behind() -> None:
    """A short demo run: the traffic posted as signed webhooks through `guard ingest`, the forged ones
    refused; every bad campaign paused through the API, no healthy one, no broker left."""
    before = tansu_pids()
    run = subprocess.run(
        [sys.executable, "-m", "guard.cli", "demo", "--duration", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stderr
    assert "6 of 6 forged rejected (401)" in run.stdout
    assert "bad campaigns paused through the API: 3 of 3" in run.stdout
    assert "healthy campaigns paused: 0" in run.stdout
    assert "missed" not in run.stdout
    assert tansu_pids() <= before
    header = next(line for line in run.stdout.splitlines() if "closest rule" in line)
    assert "why not paused" in header
    for row in (line.split("│") for line in run.stdout.splitlines() if line.startswith("│ camp_")):
        ratio, status, why = (cell.strip() for cell in row[4:7])
        if int(ratio.rstrip("%")) >= 100 and status == "running":  # over a threshold, not paused: says why
            assert why, row
