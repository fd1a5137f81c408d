"""What a new operator meets first, run as they would run it: the real `guard` command in a
subprocess against real brokers, asserting on what they see (exit code, the one line, no traceback,
the probes)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_cli_run import GUARD, RULES, free_port, run_cli

from guard.testing.apache_kafka import ApacheKafka
from guard.testing.broker import EmbeddedBroker


def guard_env(bootstrap: str, port: int, suffix: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        "GUARD_DRY_RUN": "true",
        "GUARD_RULES": str(RULES),
        "GUARD_INPUT_TOPICS": f"events-{suffix}",
        "GUARD_AUDIT_TOPIC": f"audit-{suffix}",
        "GUARD_DLQ_TOPIC": f"dlq-{suffix}",
        "GUARD_GROUP_ID": f"guard-{suffix}",
        "GUARD_HTTP_HOST": "127.0.0.1",
        "GUARD_HTTP_PORT": str(port),
        **extra,
    }


class Guard:
    """`guard run` as a subprocess, its stderr in a file (a pipe nobody reads fills up and stalls it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.port = env, log, int(env["GUARD_HTTP_PORT"])
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Guard:
        self._err = self.log.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *GUARD, "run", env={**os.environ, **self.env}, stdout=asyncio.subprocess.DEVNULL, stderr=self._err
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._err.close()

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines() if line.startswith("{")]

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as http:
            return await http.get(path)

    async def until(self, path: str, status: int, timeout: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = await self.get(path)
                if answer.status_code == status:
                    return answer
            except httpx.TransportError:
                answer = None
            assert self.process is not None and self.process.returncode is None, "\n".join(self.lines())
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {answer and answer.text} after {timeout} s\n" + "\n".join(self.lines()))
            await asyncio.sleep(0.1)

    async def until_logged(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [entry for entry in self.logs() if entry["event"] == event]
            if found:
                return found[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {event!r} line in\n" + "\n".join(self.lines()))


async def make_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """The input topic, made as its producers' side would: the guard never makes one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def our_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("guard: ")]


@pytest.mark.integration  # a broker of its own
class TestKafkaNotThereYet:
    @pytest.mark.parametrize(
        "servers", [pytest.param(None, id="closed-port"), pytest.param("kafka.invalid:9092", id="unknown-name")]
    )
    async def test_keeps_trying_alive_not_ready_then_exits_2_with_one_line(
        self, servers: str | None, tmp_path: Path
    ) -> None:
        """A broker that does not answer (a closed port, a name without DNS yet): one line per attempt
        naming the servers and the error, /livez 200 and /readyz 503 meanwhile, and at
        GUARD_KAFKA_CONNECT_TIMEOUT exit 2 with one `guard:` line and no traceback."""
        bootstrap = servers or f"127.0.0.1:{free_port()}"
        env = guard_env(bootstrap, free_port(), uuid.uuid4().hex[:8], GUARD_KAFKA_CONNECT_TIMEOUT="4")
        async with Guard(env, tmp_path / "guard.log") as guard:
            assert (await guard.until("/livez", 200)).json()["status"] == "ok"
            ready = await guard.get("/readyz")
            assert ready.status_code == 503 and "connecting to Kafka" in ready.json()["reason"]
            assert guard.process is not None
            code = await asyncio.wait_for(guard.process.wait(), 30)
        err = guard.log.read_text()
        assert code == 2, err
        assert "Traceback" not in err
        ours = our_lines(err)
        assert len(ours) == 1, err
        assert bootstrap in ours[0] and "GUARD_KAFKA_CONNECT_TIMEOUT" in ours[0]
        attempts = [entry for entry in guard.logs() if entry["event"] == "Kafka not reachable; retrying"]
        assert len(attempts) >= 2, err
        assert all(entry["servers"] == bootstrap and bootstrap in entry["error"] for entry in attempts)

    async def test_starts_once_the_broker_comes_up(self, tmp_path: Path) -> None:
        """The broker starts a few seconds after the guard: the guard gets ready without a restart,
        having logged its configuration once (brokers, topics, group, rules and versions, dry run, port)."""
        broker = EmbeddedBroker()
        suffix = uuid.uuid4().hex[:8]
        env = guard_env(broker.bootstrap_servers, free_port(), suffix, KAFKA_ENABLE_IDEMPOTENCE="false")
        async with Guard(env, tmp_path / "guard.log") as guard:
            try:
                await guard.until_logged("Kafka not reachable; retrying")
                assert (await guard.get("/readyz")).status_code == 503
                broker.start()
                await make_topic(broker.bootstrap_servers, f"events-{suffix}")
                await guard.until("/readyz", 200, timeout=60)
            finally:
                broker.stop()
        (config,) = [entry for entry in guard.logs() if entry["event"] == "guard starting"]
        assert config["brokers"] == broker.bootstrap_servers
        assert config["topics"] == [f"events-{suffix}"] and config["group"] == f"guard-{suffix}"
        assert config["rules"]["hard-bounce-rate"] and len(config["rules"]) >= 5
        assert config["dry_run"] is True and config["http"] == f"127.0.0.1:{guard.port}"


@pytest.fixture(scope="module")
def strict_kafka() -> Iterator[ApacheKafka]:
    """An Apache Kafka node that does not create topics on demand, as most managed Kafka."""
    kafka = ApacheKafka(auto_create_topics=False)
    try:
        yield kafka.start(90)
    finally:
        kafka.stop()


@pytest.mark.integration  # a broker of its own
@pytest.mark.apache_kafka
class TestMissingInputTopics:
    """Apache Kafka with topic auto-creation off (most managed Kafka): a typo in GUARD_INPUT_TOPICS
    subscribes to nothing. Its own node: the broker setting is what is under test."""

    async def test_no_existing_input_topic_is_not_ready_with_an_error_line_and_a_metric(
        self, strict_kafka: ApacheKafka, tmp_path: Path
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        typo = f"leadterra.evnets-{suffix}"
        env = guard_env(strict_kafka.bootstrap_servers, free_port(), suffix, GUARD_INPUT_TOPICS=typo)
        async with Guard(env, tmp_path / "guard.log") as guard:
            error = await guard.until_logged("input topics do not exist; nothing on them is protected")
            assert error["missing"] == [typo] and error["level"] == "error"
            await asyncio.sleep(3)  # joined the group meanwhile: still not ready
            ready = await guard.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert typo in ready.json()["reason"] and "GUARD_INPUT_TOPICS" in ready.json()["reason"]
            assert (await guard.get("/livez")).status_code == 200
            assert "guard_input_topics_missing 1.0" in (await guard.get("/metrics")).text

    async def test_one_missing_topic_beside_an_existing_one_is_not_ready_naming_it(
        self, strict_kafka: ApacheKafka, tmp_path: Path
    ) -> None:
        """The existing topic is read, but nothing on the missing one would be protected: not ready, by name."""
        suffix = uuid.uuid4().hex[:8]
        present, typo = f"events-{suffix}", f"evnets-{suffix}"
        await make_topic(strict_kafka.bootstrap_servers, present)
        env = guard_env(strict_kafka.bootstrap_servers, free_port(), suffix, GUARD_INPUT_TOPICS=f"{present},{typo}")
        async with Guard(env, tmp_path / "guard.log") as guard:
            await guard.until_logged("partitions positioned")
            ready = await guard.until("/readyz", 503)
            assert typo in ready.json()["reason"] and present not in ready.json()["reason"], ready.text
            assert "guard_input_topics_missing 1.0" in (await guard.get("/metrics")).text
        (error,) = [entry for entry in guard.logs() if entry["event"].startswith("input topics do not exist")]
        assert error["missing"] == [typo] and error["present"] == [present]


@pytest.mark.integration  # a broker of its own
@pytest.mark.apache_kafka
class TestABrokerThatCreatesNoTopic:
    """Most managed Kafka creates no topic on demand: the guard makes the topics it writes (audit, dead letters)
    as it makes its internal ones, or every decision would wait for an audit write that never lands."""

    async def test_the_guard_makes_its_audit_and_dead_letter_topics_and_records_its_decisions(
        self, strict_kafka: ApacheKafka, tmp_path: Path
    ) -> None:
        from test_input_topics import produce_a_bad_campaign

        from guard.testing.broker import BrokerInfo
        from guard.testing.kafka_reads import read_all

        suffix = uuid.uuid4().hex[:8]
        await make_topic(strict_kafka.bootstrap_servers, f"events-{suffix}", partitions=3)
        await produce_a_bad_campaign(BrokerInfo(strict_kafka.bootstrap_servers, "kafka"), f"events-{suffix}")
        env = guard_env(strict_kafka.bootstrap_servers, free_port(), suffix)
        async with Guard(env, tmp_path / "guard.log") as guard:
            await guard.until("/readyz", 200, timeout=60)
            deadline = time.monotonic() + 30
            outcomes: list[str] = []
            while "dry_run" not in outcomes and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                outcomes = [
                    json.loads(r.value)["outcome"]
                    for r in await read_all(strict_kafka.bootstrap_servers, f"audit-{suffix}")
                ]
        assert "fired" in outcomes and "dry_run" in outcomes, outcomes
        admin = AIOKafkaAdminClient(bootstrap_servers=strict_kafka.bootstrap_servers)
        await admin.start()
        try:
            described = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics([f"audit-{suffix}", f"dlq-{suffix}"])
            }
        finally:
            await admin.close()
        assert described == {f"audit-{suffix}": 3, f"dlq-{suffix}": 3}  # as many partitions as the input


class TestAnIdleReplicaStaysReady:
    async def test_a_member_owning_no_partition_of_an_existing_topic_is_ready(
        self, kafka_broker: Any, tmp_path: Path
    ) -> None:
        """Scale-out, not a mistake: two guards on a one-partition topic, both ready, no topic error."""
        suffix = uuid.uuid4().hex[:8]
        await make_topic(kafka_broker.bootstrap_servers, f"events-{suffix}")
        extra = {} if kafka_broker.idempotence else {"KAFKA_ENABLE_IDEMPOTENCE": "false"}
        first = guard_env(kafka_broker.bootstrap_servers, free_port(), suffix, **extra)
        second = {**first, "GUARD_HTTP_PORT": str(free_port())}
        async with Guard(first, tmp_path / "one.log") as one, Guard(second, tmp_path / "two.log") as two:
            await one.until("/readyz", 200, timeout=60)
            await two.until("/readyz", 200, timeout=60)
            await asyncio.sleep(2)
            owned = [await guard.get("/metrics") for guard in (one, two)]
            assert sorted("guard_assigned_partitions 1.0" in m.text for m in owned) == [False, True]
            assert all("guard_input_topics_missing 0.0" in m.text for m in owned)
            assert [(await guard.get("/readyz")).status_code for guard in (one, two)] == [200, 200]


@pytest.mark.integration  # a broker of its own
class TestBrokerOutageLogs:
    async def test_a_dead_broker_gives_a_few_lines_not_hundreds(self, tmp_path: Path) -> None:
        """The broker is killed under a running guard: over 8 s the Kafka client's repeated lines are
        held back (the first of each kind passes), while the guard's own change of state is logged."""
        with EmbeddedBroker() as broker:
            suffix = uuid.uuid4().hex[:8]
            env = guard_env(broker.bootstrap_servers, free_port(), suffix, KAFKA_ENABLE_IDEMPOTENCE="false")
            await make_topic(broker.bootstrap_servers, f"events-{suffix}")
            async with Guard(env, tmp_path / "guard.log") as guard:
                await guard.until("/readyz", 200, timeout=60)
                before = len(guard.lines())
                broker.kill()
                await asyncio.sleep(8)
                during = guard.lines()[before:]
        client = [line for line in during if '"logger": "aiokafka' in line]
        assert any('"Kafka unreachable"' in line for line in during), "\n".join(during)
        assert len(client) <= 30, f"{len(client)} aiokafka lines in 8 s:\n" + "\n".join(client[:40])


class TestWrongArguments:
    @pytest.mark.parametrize(
        ("args", "says"),
        [
            pytest.param(
                ("replay", "/no/such/file.jsonl", "--rules", str(RULES)),
                "cannot read /no/such/file.jsonl",
                id="replay-missing-file",
            ),
            pytest.param(("replay", "/", "--rules", str(RULES)), "cannot read /", id="replay-a-directory"),
            pytest.param(("generate", "/no/such/dir/out.jsonl"), "cannot write /no/such/dir/out.jsonl", id="generate"),
            pytest.param(("generate", "out.jsonl", "--bad", "30"), "--bad must be between", id="generate-bad"),
            pytest.param(("demo", "--rules", "/no/such/rules"), "/no/such/rules", id="demo-rules"),
            pytest.param(("demo", "--campaigns", "0"), "--campaigns must be at least 1", id="demo-campaigns"),
        ],
    )
    async def test_one_line_exit_2_no_traceback(self, args: tuple[str, ...], says: str, tmp_path: Path) -> None:
        process = await asyncio.create_subprocess_exec(
            *GUARD, *args, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = err.decode()
        assert process.returncode == 2, text
        assert "Traceback" not in text
        assert text.startswith("guard: ") and says in text

    async def test_standin_takes_its_options_and_says_when_the_port_is_taken(self) -> None:
        """`guard standin --port N` as the README writes it; a taken port is one line, exit 2."""
        port = free_port()
        first = await asyncio.create_subprocess_exec(
            *GUARD, "standin", "--port", str(port), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            assert first.stderr is not None
            assert f"127.0.0.1:{port}" in (await asyncio.wait_for(first.stderr.readline(), 30)).decode()
            code, _, err = await run_cli("standin", "--port", str(port), env={})
            assert code == 2, err
            assert our_lines(err) and f"127.0.0.1:{port}" in our_lines(err)[0] and "Traceback" not in err
        finally:
            first.terminate()
            await first.wait()

    async def test_guard_run_on_a_taken_http_port(self) -> None:
        port = free_port()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        try:
            code, _, err = await run_cli("run", env=guard_env("127.0.0.1:1", port, "x"))
        finally:
            server.close()
        assert code == 2, err
        assert len(our_lines(err)) == 1 and "GUARD_HTTP_PORT" in our_lines(err)[0] and "Traceback" not in err
