"""The README's "Try it on your machine", run as a newcomer runs it: each terminal's lines in a shell of
its own, in order, until a bad campaign is paused on a real Apache Kafka through the stand-in.

The lines are the README's own; only its fixed ports (9092, 8099) are swapped for free ones, so the
test can run beside others on one machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def try_it_block() -> str:
    """The code block after the `<!-- try-it` marker."""
    after = README.split("<!-- try-it", 1)[1]
    return after.split("```\n", 1)[1].split("```", 1)[0]


def terminals(block: str) -> list[str]:
    """The block's lines per `# terminal N` comment, in order."""
    parts = re.split(r"^# terminal \d+.*\n", block, flags=re.MULTILINE)
    assert parts[0].strip() == "", "the block starts with `# terminal 1`"
    return parts[1:]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_free_ports(block: str, kafka: int, standin: int) -> str:
    swaps = {
        "guard dev kafka\n": f"guard dev kafka --port {kafka}\n",
        "127.0.0.1:9092": f"127.0.0.1:{kafka}",
        "guard standin": f"guard standin --port {standin}",
        "127.0.0.1:8099": f"127.0.0.1:{standin}",
    }
    for old, new in swaps.items():
        assert old in block, f"the try-it block no longer says {old!r}: update this test with it"
        block = block.replace(old, new)
    return block


class Terminal:
    """One shell running a terminal's lines, its output in a file."""

    def __init__(self, lines: str, cwd: Path, env: dict[str, str], name: str) -> None:
        self.log = cwd / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-e", "-c", lines], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output()}"
            time.sleep(0.2)

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def shell_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment (none of the caller's KAFKA_/LEADTERRA_/GUARD_ settings) with `guard` on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "guard"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m guard.cli "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LEADTERRA_", "GUARD_"))}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if cache := os.environ.get("GUARD_KAFKA_CACHE"):  # where the broker's jars already are
        env["GUARD_KAFKA_CACHE"] = cache
    # run beside the checkout's rules from a scratch folder, and keep the health port off others' way
    env.update(GUARD_RULES=str(ROOT / "rules"), GUARD_HTTP_PORT=str(free_port()), GUARD_HTTP_HOST="127.0.0.1")
    return env


@pytest.mark.integration
@pytest.mark.apache_kafka
def test_the_readme_try_it_lines_pause_a_bad_campaign(tmp_path: Path) -> None:
    """Kafka, the stand-in, a history and the guard, started from the README's lines: camp_300008 is paused."""
    kafka_port, standin_port = free_port(), free_port()
    kafka, standin, guard, look = terminals(with_free_ports(try_it_block(), kafka_port, standin_port))
    env = shell_env(tmp_path)
    started: list[Terminal] = []
    try:
        started.append(Terminal(kafka, tmp_path, env, "kafka"))
        started[-1].wait_for(f"on 127.0.0.1:{kafka_port}", 180)
        started.append(Terminal(standin, tmp_path, env, "standin"))
        started[-1].wait_for("the key in LEADTERRA_API_KEY", 30)  # its start line says where its key came from
        started.append(Terminal(guard, tmp_path, env, "guard"))
        started[-1].wait_for("records written to leadterra.events", 60)
        started[1].wait_for("POST /v1/campaigns/camp_300008/pause -> 200", 90)
        deadline = time.monotonic() + 30
        while True:
            decisions = subprocess.run(
                ["bash", "-e", "-c", look], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            paused = [
                line for line in decisions.stdout.splitlines() if line.startswith("camp_300008") and " paused " in line
            ]
            if paused or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert paused and "hard-bounce-rate" in paused[0], decisions.stdout + decisions.stderr
    finally:
        codes = [terminal.interrupt() for terminal in reversed(started)]
    assert codes[-1] == 0, f"guard dev kafka stops on Ctrl-C with 0:\n{started[0].output()}"


def test_dev_kafka_without_java_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """No Java or Maven on the PATH: `guard dev kafka` says so in one line and exits 2 at once."""
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "guard.cli", "dev", "kafka"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "guard: cannot start Apache Kafka: no `java` on the PATH (Apache Kafka needs Java 17+); "
        "install Java 17+ and Maven, or try `make demo` (embedded broker)"
    ]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b'{"event": "message.sent", "data": {"campaignId": "camp_1"}}', b"camp_1"),
        (b'{"event": "message.sent", "data": {}}', None),
        (b"not json", None),
        (b"\xff\xfe", None),
    ],
)
def test_produce_keys_each_record_by_its_campaign_id(line: bytes, key: bytes | None) -> None:
    """`guard produce` keys a record by `data.campaignId`, as the guard expects; a line without one goes unkeyed."""
    from guard.tools.produce import campaign_key

    assert campaign_key(line) == key
