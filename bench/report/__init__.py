"""The results as a table on stdout and as bench/RESULTS.md: machine, workload, every figure
(min/median/max over repeats), the targets met or missed, and the profile. One module per section;
bench/report/markdown.py puts them together."""

from __future__ import annotations

from bench.report.history import remember
from bench.report.machine import fingerprint, machine
from bench.report.markdown import RESULTS, write

__all__ = ["RESULTS", "fingerprint", "machine", "remember", "write"]
