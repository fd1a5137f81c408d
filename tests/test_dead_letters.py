"""DeadLetters on a real broker: whatever the record, the write settles and never raises."""

from __future__ import annotations

import pytest
import structlog.testing
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from test_service import read_topic

from guard.runtime.dead_letters import TRUNCATED_BYTES, DeadLetters
from guard.telemetry.metrics import Metrics
from guard.testing.broker import BrokerInfo


def record(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(
        topic="events",
        partition=2,
        offset=41,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"camp_1",
        value=value,
        checksum=None,
        serialized_key_size=6,
        serialized_value_size=len(value or b""),
        headers=headers or [],
    )


@pytest.fixture
async def producer(kafka_broker: BrokerInfo):  # noqa: ANN201
    client = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", **kafka_broker.producer_overrides
    )
    await client.start()
    yield client
    await client.stop()


class TestDeadLetters:
    async def test_a_record_within_the_limits_is_copied_as_it_came(
        self, kafka_bootstrap: str, producer: AIOKafkaProducer, topic_name: str
    ) -> None:
        """Value, key and the record's own headers, plus the reason and the source."""
        metrics = Metrics()
        await (await DeadLetters(producer, topic_name, metrics).send(record(b"junk", [("trace", b"1")]), "bad"))
        [dead] = await read_topic(kafka_bootstrap, topic_name, expected=1)
        assert (dead.key, dead.value) == (b"camp_1", b"junk")
        assert dict(dead.headers) == {
            "trace": b"1",
            "guard.error": b"bad",
            "guard.source": b"events/2/41",
            "guard.source.timestamp": b"1700000000000",
        }
        assert metrics.dead_letters.labels("written")._value.get() == 1

    async def test_huge_headers_are_dropped_and_the_value_cut_naming_the_source(
        self, kafka_bootstrap: str, producer: AIOKafkaProducer, topic_name: str
    ) -> None:
        """Over the producer's 1 MiB request limit through its headers: a truncated copy is written."""
        metrics = Metrics()
        value = b"v" * (TRUNCATED_BYTES * 2)
        poison = record(value, [("padding", b"h" * (2 * 1024 * 1024))])
        await (await DeadLetters(producer, topic_name, metrics).send(poison, "r" * 5000))
        [dead] = await read_topic(kafka_bootstrap, topic_name, expected=1)
        headers = dict(dead.headers)
        assert "padding" not in headers and dead.value == value[:TRUNCATED_BYTES]
        assert headers["guard.truncated"] == b"true" and headers["guard.source.size"] == str(len(value)).encode()
        assert headers["guard.source"] == b"events/2/41" and len(headers["guard.error"]) == 1000
        assert metrics.dead_letters.labels("truncated")._value.get() == 1

    async def test_when_nothing_can_be_written_the_record_is_skipped_with_an_error_log_and_a_metric(
        self, kafka_broker: BrokerInfo, topic_name: str
    ) -> None:
        """A producer that takes nothing this big, not even cut: the send settles without raising,
        logged with the source offset."""
        tiny = AIOKafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap_servers, max_request_size=200, **kafka_broker.producer_overrides
        )
        await tiny.start()
        metrics = Metrics()
        try:
            with structlog.testing.capture_logs() as logs:
                await (await DeadLetters(tiny, topic_name, metrics).send(record(b"j" * 100_000), "bad"))
        finally:
            await tiny.stop()
        assert metrics.dead_letters.labels("failed")._value.get() == 1
        [entry] = [entry for entry in logs if entry["log_level"] == "error"]
        assert entry["source"] == "events/2/41" and entry["size"] == 100_000
