"""Running one measurement in a child process: a fresh interpreter per contender, a hard timeout,
and one `BENCH_RESULT {json}` line on stdout as the answer. The child's stderr (logs) goes to a
file under bench/.cache/logs so a failure can be read afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
LOGS = CACHE / "logs"
MARK = "BENCH_RESULT "


class ChildFailed(RuntimeError):
    """The child timed out, crashed, or printed no result; the message says which, with its log tail."""


def emit(result: dict[str, Any]) -> None:
    """Called by the child: its answer to the parent."""
    print(MARK + json.dumps(result), flush=True)


def run_child(
    module: str,
    args: list[str],
    timeout: float,
    name: str,
    python: str | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """`python -m module args...` (or `argv`) with the repository on the path; kills its process
    group on timeout."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    command = argv or [python or sys.executable, "-m", module, *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=env, process_group=0, text=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise ChildFailed(f"{name}: no result within {timeout:.0f} s (killed)\n{tail(log_path)}") from None
        except BaseException:
            kill_group(proc)
            raise
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise ChildFailed(f"{name}: exited with code {proc.returncode} and no result\n{tail(log_path)}")


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def until_terminated() -> Any:
    """An asyncio.Event set by SIGTERM: a child's loop ends on it and still emits its result.
    Call from inside the running loop."""
    import asyncio

    event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, event.set)
    return event


class Background:
    """A child process that runs alongside an asyncio benchmark (the paced load, `guard run`):
    started with `start()`, its result (if it prints one) read with `result()`, always ended with
    `stop()` (SIGTERM to its process group, then SIGKILL)."""

    def __init__(self, command: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.command, self.name = command, name
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = LOGS / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> Background:
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                process_group=0,
                text=True,
            )
        return self

    def cpu_seconds(self) -> float:
        """user + system CPU time of the child so far (from /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait (blocking) for the child to exit and return its BENCH_RESULT."""
        assert self.proc is not None
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ChildFailed(
                f"{self.name}: no result within {timeout:.0f} s (killed)\n{tail(self.log_path)}"
            ) from None
        for line in reversed((stdout or "").splitlines()):
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise ChildFailed(f"{self.name}: exited with code {self.proc.returncode} and no result\n{tail(self.log_path)}")

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the child to wrap up (SIGTERM, which it handles by emitting its result) and read it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.result(timeout)

    def stop(self, grace: float = 10.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL after `grace`; returns the exit code."""
        if self.proc is not None:
            kill_group(self.proc, grace)
            return self.proc.returncode
        return None
