"""`guard demo` end to end: a real broker, the stand-in over real HTTP, the real service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


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


@pytest.mark.integration
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
    header = next(line for line in run.stdout.splitlines() if "% of its threshold" in line)
    assert "why not paused" in header
    rows = [
        [cell.strip() for cell in line.split("│")] for line in run.stdout.splitlines() if line.startswith("│ camp_")
    ]
    for row in rows:
        campaign, _, rule, ratio, status, why = row[1:7]
        assert len(campaign) == len("camp_000000"), row  # names whole, never cut
        if int(ratio.rstrip("%")) >= 100 and status == "running":  # over a threshold, not paused: says why
            assert why, row
        if status == "paused":  # the rule that paused it, not whichever is closest now
            assert rule.startswith("paused by "), row


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            ("cusum 2% vs 8%", 10.7, 10.4145, 12, 106),
            "statistic 10.70 reached its level 10.41 (cusum 2% vs 8%; 12 of 106 since it rose)",
        ),
        (("last 50", 0.0809, 0.08, 10, 50), "8.09% of 50 reached 8.00% (10 events, last 50)"),
        (("1d", 3, 2, 3, None), "3 events reached 2 (1d)"),
    ],
)
def test_the_live_view_says_what_each_rule_compared(args: tuple, text: str) -> None:
    """A cusum is its statistic against its level (no division that rounds below it), a rate in percent."""
    from guard.tools.demo import compared_text

    assert compared_text(*args) == text
