"""The session broker is a real Kafka-protocol broker, and EmbeddedBroker behaves as documented."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from guard.testing.broker import FAST_GROUP, BrokerInfo, EmbeddedBroker, tansu_binary

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
