"""`guard run` as a real child process, for black-box tests (the fault suite, the deployed suite).

`Guards` starts `python -m guard.cli run` (or `ingest`) with an environment of the test's choosing and makes sure
no process outlives the test; `GuardProcess` answers what a user can see of it from outside: its
health endpoints, its metrics, its JSON log lines, its exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from guard.testing.broker import process_dies_with_parent

__all__ = ["GUARD_RUN", "GuardProcess", "Guards", "Metrics", "clean_environ", "wait_until"]

GUARD_RUN = [sys.executable, "-m", "guard.cli", "run"]
_OWN_PREFIXES = ("KAFKA_", "GUARD_", "LEADTERRA_")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, interval: float = 0.1, what: str = "condition"
) -> float:
    """Poll `condition` (sync or async) until true; returns the seconds it took, raises TimeoutError."""
    started = time.monotonic()
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)


def clean_environ() -> dict[str, str]:
    """This process's environment without any KAFKA_/GUARD_/LEADTERRA_ variable (tests set their own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}


class Metrics:
    """One scrape of /metrics: `m("guard_records_total", outcome="counted")` -> 0.0 when absent."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def records(self, *outcomes: str) -> float:
        return sum(self("guard_records_total", outcome=o) for o in outcomes)


class GuardProcess:
    """`python -m guard.cli run` (or another command: `ingest`) with the given environment; stderr (JSON logs) goes
    to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "guard", command: str = "run") -> None:
        self.env, self.log_path, self.name = env, log_path, name
        self.command = [*GUARD_RUN[:-1], command]
        self.port = int(env["GUARD_HTTP_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = self.ended_at = 0.0  # wall clock (time.time()), to attribute API requests
        self.killed = False
        self._http: httpx.AsyncClient | None = None

    def start(self) -> GuardProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=process_dies_with_parent(),
            )
        self.started_at = time.time()
        self._http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def alive_at(self, moment: float) -> bool:
        """Whether this process existed at wall-clock `moment` (for attributing recorded requests)."""
        return self.started_at <= moment and (self.ended_at == 0.0 or moment <= self.ended_at)

    async def get(self, path: str) -> httpx.Response | None:
        """GET on the guard's HTTP port; None when it does not answer (not up yet, or gone)."""
        client = self._http
        if client is None:  # exited: its client is closed
            return None
        try:
            return await client.get(path)
        except httpx.HTTPError:
            return None
        except RuntimeError:  # the client was closed while the request was under way (the process exited)
            if client.is_closed:
                return None
            raise

    async def status(self, path: str) -> int | None:
        response = await self.get(path)
        return response.status_code if response is not None else None

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until /readyz answers 200; raises if the process exits first."""

        last: list[str] = ["no answer"]  # the last /readyz answer, for the message on a timeout

        async def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.returncode} before ready:\n{self.log_tail()}")
            assert self._http is not None
            try:
                response = await self._http.get("/readyz")
            except httpx.HTTPError as error:
                last[0] = repr(error)
                return False
            last[0] = f"{response.status_code} {response.text}"
            return response.status_code == 200

        try:
            return await wait_until(ready, timeout, 0.05, f"{self.name} /readyz")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last answer: {last[0]}") from None

    async def metrics(self) -> Metrics:
        response = await self.get("/metrics")
        if response is None or response.status_code != 200:
            raise RuntimeError(f"{self.name}: /metrics did not answer")
        return Metrics(response.text)

    def rss_kib(self) -> int:
        """VmRSS of the process from /proc/PID/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    async def kill(self) -> None:
        """SIGKILL and wait for the exit (a crash at an arbitrary moment)."""
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.send_signal(signal.SIGKILL)
        await self._wait(10)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        await self._wait(timeout)
        return self.returncode  # type: ignore[return-value]

    async def _wait(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                break
            await asyncio.sleep(0.02)
        if not self.ended_at:
            self.ended_at = time.time()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines this process (and earlier ones writing to the same file) wrote."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


class Guards:
    """Starts guard processes for a test and makes sure none outlives it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[GuardProcess] = []

    def start(self, env: dict[str, str], name: str | None = None, command: str = "run") -> GuardProcess:
        name = name or f"guard-{len(self.started)}"
        guard = GuardProcess(env, self.log_dir / f"{name}.log", name, command).start()
        self.started.append(guard)
        return guard

    async def close(self) -> None:
        for guard in self.started:
            if guard.running:
                await guard.kill()
            else:
                await guard._wait(1)
