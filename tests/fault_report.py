"""The fault-injection suite's report (a plugin of tests/conftest.py): `tests/faults/REPORT.md`.

A fault test adds its row with the `report_row` fixture: case, what was injected, what was observed. The
row travels on the test's reports (a user property), so it reaches the process that writes the report when
the tests run in workers (pytest -n) as when they run in one process. At the end of a session that ran
fault tests, that process writes the markdown table (case, injected, observed, result, seconds) and prints
it in the terminal summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAULTS = Path(__file__).parent / "faults"
REPORT_PATH = FAULTS / "REPORT.md"
ROW = "fault_report_row"  # the user property that carries a row


@dataclass
class Row:
    case: str
    injected: str
    observed: str
    nodeid: str


class FaultReport:
    """Rows of the summary table; results and durations come from pytest's reports."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.outcomes: dict[str, str] = {}
        self.durations: dict[str, float] = {}
        self.ran = False

    def record(self, report: pytest.TestReport) -> None:
        self.ran = True
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if report.failed:
            self.outcomes[report.nodeid] = "xpass (strict: fail)" if hasattr(report, "wasxfail") else "FAIL"
        elif report.skipped:
            self.outcomes.setdefault(report.nodeid, "xfail (known bug)" if hasattr(report, "wasxfail") else "skipped")
        elif report.when == "call":
            self.outcomes.setdefault(report.nodeid, "pass")
        if report.when == "teardown":  # the last report carries every row the test added
            self.rows += [Row(*value, report.nodeid) for name, value in report.user_properties if name == ROW]

    def lines(self) -> Iterator[str]:
        yield "| case | injected | observed | result | seconds |"
        yield "|---|---|---|---|---|"
        reported = set()
        for row in self.rows:
            reported.add(row.nodeid)
            yield (
                f"| {_cell(row.case)} | {_cell(row.injected)} | {_cell(row.observed)} | "
                f"{self.outcomes.get(row.nodeid, '?')} | {self.durations.get(row.nodeid, 0.0):.1f} |"
            )
        for nodeid, outcome in self.outcomes.items():
            if nodeid not in reported:
                name = nodeid.split("::")[-1]
                yield f"| {_cell(name)} | (no row recorded) | | {outcome} | {self.durations.get(nodeid, 0.0):.1f} |"

    def markdown(self) -> str:
        total = sum(self.durations.values())
        head = (
            "# Fault-injection suite: what was injected, what was observed\n\n"
            "Written by `tests/fault_report.py` at the end of each pytest session that ran fault tests; "
            "do not edit by hand.\n\n"
            f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {len(self.outcomes)} tests, "
            f"{total:.0f} s in all.\n\n"
        )
        return head + "\n".join(self.lines()) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


_REPORT = FaultReport()


def _in_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")  # a pytest-xdist worker: its controller writes the report


@pytest.fixture
def report_row(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    """`report_row(case, injected, observed)`: one row of REPORT.md for this test."""
    return lambda case, injected, observed: request.node.user_properties.append((ROW, (case, injected, observed)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "faults" in report.keywords:  # the mark tests/faults/conftest.py gives its tests
        _REPORT.record(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _REPORT.ran and not _in_worker(session.config):
        REPORT_PATH.write_text(_REPORT.markdown(), encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT.ran:
        terminalreporter.section("fault injection: injected vs observed")
        for line in _REPORT.lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(written to {REPORT_PATH})")
