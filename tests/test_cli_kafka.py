"""Every `guard` command that reads or writes Kafka is bounded in time: a broker that refuses or never
answers is one line naming the server and the settings to check, within seconds (no broker needed)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def black_hole() -> Iterator[str]:
    """host:port of a listener that never answers (connections wait in its backlog), as a
    firewalled or hung broker."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


class TestUnreachableBroker:
    async def test_every_command_that_reads_kafka_ends_within_the_probe_with_one_line(self, black_hole: str) -> None:
        """A broker that never answers: each command ends within seconds (the probe's 5 s, not the
        Kafka client's 30-40 s of retries), exit 1, with one line naming the server and the settings
        to check."""
        commands = [
            ["decisions"],
            ["exempt", "--list"],
            ["exempt", "camp_1", "--for", "1h", "--reason", "x"],
            ["exempt", "--revoke", "ex_0123456789ab"],
            ["replay", "kafka:events"],
        ]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "GUARD_"))},
            "KAFKA_BOOTSTRAP_SERVERS": black_hole,
        }

        async def run(args: list[str]) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "guard.cli", *args, env=env, stderr=asyncio.subprocess.PIPE
            )
            _, err = await process.communicate()
            return process.returncode or 0, err.decode()

        answers = await asyncio.wait_for(asyncio.gather(*map(run, commands)), timeout=25)
        for args, (code, err) in zip(commands, answers, strict=True):
            assert code == 1, (args, err)
            assert len(err.splitlines()) == 1, (args, err)
            assert black_hole in err and "KAFKA_BOOTSTRAP_SERVERS" in err, (args, err)
