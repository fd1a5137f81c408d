"""The session brokers are real Kafka-protocol brokers, and the launchers (EmbeddedBroker for Tansu,
ApacheKafka for Apache Kafka) behave as documented. The Apache Kafka launcher tests run when Apache
Kafka is in the session's matrix (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from guard.testing.apache_kafka import ApacheKafka, KafkaUnavailable, kafka_classpath, missing_tools
from guard.testing.broker import FAST_GROUP, BrokerInfo, EmbeddedBroker, port_accepts, tansu_binary

REPO = Path(__file__).resolve().parents[1]


async def round_trip(bootstrap: str, topic: str, group: str, **client: object) -> None:
    """Produce 3 keyed records, read them back in a consumer group, commit, check committed()."""
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(3)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **client)
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP,
        **client,
    )
    await consumer.start()
    try:
        received = []
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    received.extend(records)
        assert {r.key: r.value for r in received} == sent
        assert len(received) == len(sent)

        await consumer.commit()
        ends: dict[TopicPartition, int] = {}
        for r in received:
            tp = TopicPartition(r.topic, r.partition)
            ends[tp] = max(ends.get(tp, 0), r.offset + 1)
        assert {tp: await consumer.committed(tp) for tp in ends} == ends
    finally:
        await consumer.stop()


async def test_session_broker_round_trip_with_manual_commit(
    kafka_broker: BrokerInfo, topic_name: str, group_id: str
) -> None:
    await round_trip(kafka_broker.bootstrap_servers, topic_name, group_id)


def test_kafka_bootstrap_derives_from_kafka_broker(kafka_broker: BrokerInfo, kafka_bootstrap: str) -> None:
    assert kafka_bootstrap == kafka_broker.bootstrap_servers
    assert kafka_broker.kind in ("env", "testcontainers", "tansu", "kafka")
    host, _, port = kafka_bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2):
        pass


def _accepts(broker: EmbeddedBroker) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_embedded_broker_kill_restart_stop(topic_name: str, group_id: str) -> None:
    assert tansu_binary().is_file()
    broker = EmbeddedBroker()
    started = time.perf_counter()
    with broker:
        ready_s = time.perf_counter() - started
        assert ready_s < 2, ready_s
        log = broker.log_path
        assert log is not None and "listening on" in broker.log_tail()
        await round_trip(broker.bootstrap_servers, topic_name, group_id)

        broker.kill()
        assert not broker.running and not _accepts(broker)
        broker.restart()  # same port, empty (memory storage)
        assert broker.running and _accepts(broker)
        await round_trip(broker.bootstrap_servers, topic_name + "-2", group_id + "-2")
    assert not broker.running and not log.exists()
    broker.stop()  # idempotent


def test_broker_does_not_outlive_a_sigkilled_parent(tmp_path: Path) -> None:
    code = (
        "import time; from guard.testing.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker().start(); print(b.pid, flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}  # its log: atexit never runs
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), f"tansu pid {child} outlived its SIGKILLed parent"


def _alive(pid: int) -> bool:
    """Running and not a zombie (a SIGKILLed orphan may wait for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# --------------------------------------------------------------------------- Apache Kafka from Maven jars


@pytest.mark.apache_kafka
async def test_apache_kafka_keeps_its_log_across_kill_and_restart(topic_name: str) -> None:
    """A SIGKILLed node started again on its log dirs still has the records; so after a clean
    restart; stop() removes what it created."""
    node = ApacheKafka()
    with node:
        await _produce(node.bootstrap_servers, topic_name, [b"one", b"two"])
        node.kill()
        assert not node.running and not port_accepts(node.port)
        node.start()
        assert await _values(node.bootstrap_servers, topic_name, 2) == [b"one", b"two"]
        node.restart()
        await _produce(node.bootstrap_servers, topic_name, [b"three"])
        assert await _values(node.bootstrap_servers, topic_name, 3) == [b"one", b"two", b"three"]
    assert not node.running and not node.data_dir.exists()
    node.stop()  # idempotent


@pytest.mark.apache_kafka
def test_apache_kafka_does_not_outlive_a_sigkilled_parent(tmp_path: Path) -> None:
    code = (
        "import time; from guard.testing.apache_kafka import ApacheKafka\n"
        "k = ApacheKafka(); k.spawn(); print(k.pid, flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}  # its data dir: atexit never runs
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), f"the Kafka JVM pid {child} outlived its SIGKILLed parent"


def test_apache_kafka_without_java_or_maven_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No java on the PATH, then java but no mvn: KafkaUnavailable names the missing tool (runs
    everywhere: it needs neither)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaUnavailable, match="no `java` on the PATH"):
        kafka_classpath(cache=tmp_path / "cache")
    with pytest.raises(KafkaUnavailable, match="no `java` on the PATH"):
        ApacheKafka(data_dir=tmp_path / "node").start()

    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    java.chmod(0o755)
    assert missing_tools() == "no `mvn` on the PATH (the broker's jars come from Maven Central)"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    assert missing_tools() == "java 11 found; Apache Kafka 4.1.1 needs Java 17+"
    assert not (tmp_path / "cache").exists()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # idempotent by default
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def _values(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                values.extend(r.value for r in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []))
        return values
    finally:
        await consumer.stop()
