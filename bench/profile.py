"""Profile of the guard's throughput path: where its CPU goes while it consumes the workload.

Workload: the throughput topic (bench/workload.py), read by the `guard` contender of
bench/contenders.py (the real Service, dry run, a fresh group) under `py-spy record` (100 Hz,
idle samples included). Only samples taken while the asyncio event loop runs, outside imports
and the service's construction, are kept: interpreter start and imports are not the throughput
path. Reported: the share of those samples per function, self (the frame on top) and inclusive
(anywhere on the stack), with waiting for the network (`select`) counted as idle, and the
hottest source lines of guard/ (self samples).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.child import CACHE, ROOT, run_child

RATE_HZ = 100
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>.+?)(?::(?P<line>\d+))?\)$")
_IDLE = ("select", "poll", "epoll")


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def record(bootstrap: str, topic: str, group: str, expect: int, timeout: float) -> dict[str, Any]:
    """Run the guard contender under py-spy; returns its result and the parsed profile."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy==0.4.3)")
    raw = CACHE / "profile.txt"
    raw.unlink(missing_ok=True)
    args = ["--bootstrap", bootstrap, "--topic", topic, "--group", group, "--expect", str(expect)]
    spy_args = ["record", "--idle", "--rate", str(RATE_HZ), "--format", "raw", "--output", str(raw)]
    argv = [spy, *spy_args, "--", sys.executable, "-m", "bench.contenders", "guard", *args]
    result = run_child("bench.contenders", [], timeout, "profile-guard", argv=argv)
    return {"run": result, "profile": parse(raw.read_text()), "raw": str(raw)}


def _short(path: str) -> str:
    for marker in ("/site-packages/", f"{ROOT}/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _label(frame: str) -> tuple[str, str]:
    """(function label, file:line label) of one py-spy frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, frame
    path = _short(match["file"])
    return f"{match['function']} ({path})", f"{path}:{match['line']}"


def parse(text: str) -> dict[str, Any]:
    """Collapsed stacks ('a;b;c COUNT') -> shares of the event loop's samples per function."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = idle = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        labelled = [_label(frame) for frame in stack.split(";")]
        frames = [function for function, _ in labelled]
        names = [frame.split(" ", 1)[0] for frame in frames]
        if not any(name.endswith("_run_once") for name in names):
            continue  # not inside the running event loop: interpreter start
        if any(name in ("_find_and_load", "guard_service") for name in names):
            continue  # imports and building the service
        count = int(count_text)
        for _function, where in reversed(labelled):
            if where.startswith("guard/"):
                lines[where] += count  # the innermost line of guard/ on the stack
                break
        total += count
        top = frames[-1]
        if top.split(" ", 1)[0].rsplit(".", 1)[-1] in _IDLE:
            idle += count
        self_counts[top] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "idle_share": idle / total if total else 0.0,
        "self": [(name, count / total) for name, count in self_counts.most_common(25)] if total else [],
        "inclusive": [(name, count / total) for name, count in inclusive.most_common(60)] if total else [],
        "guard_lines": [(where, count / total, _source_line(where)) for where, count in lines.most_common(20)]
        if total
        else [],
    }


def _source_line(where: str) -> str:
    path, _, line = where.rpartition(":")
    try:
        return (ROOT / path).read_text().splitlines()[int(line) - 1].strip()[:100]
    except (OSError, ValueError, IndexError):
        return ""
