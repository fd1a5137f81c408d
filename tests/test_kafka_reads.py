"""Reading a whole topic (guard.runtime.topics.read_topic, guard.runtime.settled.audited_decision_ids): every partition up to its
true end, on every broker of the matrix, and over a slow link.

Where a partition ends is learnt from ListOffsets LATEST, raised by a fetch's high watermark (the
embedded test broker answers the start of the last batch). A fetch that does not answer within a
fixed time used to leave a partition's end at 0, so its records were skipped without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from guard.runtime.settings import KafkaSettings
from guard.runtime.settled import audited_decision_ids
from guard.runtime.topics import read_topic, topic_partitions
from guard.testing.apache_kafka import ApacheKafka, KafkaCluster
from guard.testing.broker import BrokerInfo, EmbeddedBroker, free_port

SLOW_LINK_DELAY = 0.8  # seconds added to every answer of the broker: more than a fetch used to be given


class SlowLink:
    """A TCP proxy on 127.0.0.1 that delivers everything the broker sends `delay` seconds late, as
    a distant or overloaded broker would. The broker advertises the proxy's port, so every request
    of a client goes through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.delay = upstream_port, 0.0
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SlowLink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(
                self._pipe(client_reader, broker_writer, late=False),
                self._pipe(broker_reader, client_writer, late=True),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            client_writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, late: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + (self.delay if late else 0.0), data))
        finally:
            queue.put_nowait(None)
            await delivering


@contextlib.contextmanager
def dedicated_broker(kind: str, advertised_port: int) -> Iterator[str]:
    """A broker of the same kind as the session's (Apache Kafka or Tansu) advertising `advertised_port`."""
    if kind == "kafka":
        with ApacheKafka(advertised_port=advertised_port) as kafka:
            yield kafka.bootstrap_servers
    else:
        with EmbeddedBroker(advertised_port=advertised_port) as tansu:
            yield tansu.bootstrap_servers


@contextlib.asynccontextmanager
async def slow_broker(kind: str) -> AsyncIterator[tuple[SlowLink, str]]:
    link = SlowLink(upstream_port=0)
    with dedicated_broker(kind, link.port) as bootstrap:
        link.upstream_port = int(bootstrap.rpartition(":")[2])
        async with link:
            yield link, bootstrap


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(broker: BrokerInfo, topic: str, values: dict[int, list[bytes]], timestamp_ms: int) -> None:
    """Each partition's values in one batch each (Tansu's ListOffsets LATEST answers its start)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=50, **broker.producer_overrides
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, partition=partition, timestamp_ms=timestamp_ms)
            for partition, batch in values.items()
            for value in batch
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def outcome(decision_id: str, name: str) -> bytes:
    return json.dumps({"decision_id": decision_id, "outcome": name}).encode()


async def test_read_topic_reads_every_partition_to_its_true_end(kafka_broker: BrokerInfo, topic_name: str) -> None:
    """Batches of several records on some partitions, one record on another, none on the last:
    every record is read, including each partition's last batch."""
    await create_topic(kafka_broker.bootstrap_servers, topic_name, 4)
    values = {0: [b"a%d" % i for i in range(7)], 1: [b"b0"], 2: [b"c%d" % i for i in range(30)]}
    now_ms = int(time.time() * 1000)
    await produce(kafka_broker, topic_name, values, now_ms)

    settings = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    read: list = []
    async with asyncio.timeout(30):
        async for batch in read_topic(settings, topic_name, since_ms=now_ms - 60_000):
            read.extend(batch)

    assert sorted((r.partition, r.value) for r in read) == sorted((p, v) for p, vs in values.items() for v in vs)


@pytest.mark.timeout(180)
async def test_settled_ids_are_read_over_a_slow_link(kafka_broker: BrokerInfo) -> None:
    """Every answer of the broker arrives 0.8 s late. The settled decisions are still all found:
    before, a fetch not answered within 0.5 s left the partition's end at 0 and the audit records
    were skipped, so a restart would act again on decisions that already had an outcome (always
    on Apache Kafka; on Tansu a background fetch from its short ListOffsets LATEST sometimes
    brought the high watermark in time). A dedicated broker of the session's kind sits behind the
    slow link."""
    kind = "kafka" if kafka_broker.kind == "kafka" else "tansu"
    topic = f"audit-{uuid.uuid4().hex}"
    async with slow_broker(kind) as (link, bootstrap):
        await create_topic(bootstrap, topic, 1)
        settled = {str(uuid.uuid4()) for _ in range(5)}
        pending = str(uuid.uuid4())
        values = [outcome(d, "fired") for d in [*settled, pending]] + [outcome(d, "paused") for d in settled]
        now_ms = int(time.time() * 1000)
        await produce(BrokerInfo(bootstrap, kind), topic, {0: values}, now_ms)

        link.delay = SLOW_LINK_DELAY
        found = await asyncio.wait_for(
            audited_decision_ids(KafkaSettings(bootstrap_servers=bootstrap), topic, now_ms - 60_000), timeout=120
        )

    assert (found[0], set(found[1])) == (dict.fromkeys(settled, "paused"), {*settled, pending})


async def test_settled_ids_skip_and_count_records_that_are_no_audit_event(
    kafka_broker: BrokerInfo, topic_name: str
) -> None:
    """A record that does not validate as an audit event (not JSON, an empty value, an outcome the
    guard never writes, no decision id) settles nothing and stops nothing: the rest are read and
    the skipped ones are counted in one warning."""
    await create_topic(kafka_broker.bootstrap_servers, topic_name, 1)
    settled, pending = str(uuid.uuid4()), str(uuid.uuid4())
    bogus = json.dumps({"decision_id": str(uuid.uuid4()), "outcome": "vanished"}).encode()
    values = [b"{not json", outcome(settled, "fired"), bogus, b"", json.dumps({"outcome": "paused"}).encode()]
    values += [outcome(pending, "fired"), outcome(settled, "paused")]
    now_ms = int(time.time() * 1000)
    await produce(kafka_broker, topic_name, {0: values}, now_ms)

    with structlog.testing.capture_logs() as logs:
        found = await asyncio.wait_for(
            audited_decision_ids(KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers), topic_name, 0), 60
        )

    assert (found[0], set(found[1])) == ({settled: "paused"}, {settled, pending})
    skipped = [line for line in logs if line["event"] == "audit records that are no audit event skipped"]
    assert [(line["log_level"], line["count"], line["topic"]) for line in skipped] == [("warning", 4, topic_name)]


@pytest.mark.timeout(120)
async def test_topic_partitions_are_found_while_a_broker_of_the_cluster_is_down(kafka_cluster: KafkaCluster) -> None:
    """The admin client asks one broker of those it knows: with one of three down, a lookup that
    picked it is asked again of another (a new guard starting during a failover must not give up)."""
    topic = f"lookup-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=3)])
    finally:
        await admin.close()
    settings = KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)
    down = kafka_cluster.node(1)
    down.kill()
    try:
        found = [len(await topic_partitions(settings, topic)) for _ in range(12)]
    finally:
        down.start()
    assert found == [4] * 12
