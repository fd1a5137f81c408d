"""`guard ingest` at its limits, over real HTTP on 127.0.0.1 and a real broker: the body limit, the
producer's request size and the topic's record size agree; too large is 413 at the door, never a
503 that blames Kafka; dead letters stay bounded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_ingest import ARF, ARF_TOKEN, Topics, read_all, running_ingest, signed

from guard.ingest.app import ARF_PATH, WEBHOOK_PATH
from guard.runtime.dead_letters import MAX_REASON_CHARS
from guard.runtime.settings import IngestSettings
from guard.testing.broker import BrokerInfo


async def make_topics(bootstrap: str, topics: Topics, max_message_bytes: int | None = None) -> None:
    configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=1, replication_factor=1, topic_configs=configs) for t in (topics.input,)]
            + [NewTopic(topics.dlq, num_partitions=1, replication_factor=1)]
        )
    finally:
        await admin.close()


@asynccontextmanager
async def door(broker: BrokerInfo, topics: Topics, **ingest: object) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(broker, topics, **ingest) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=15) as client:
            yield client


def webhook_of_size(size: int, campaign_id: str = "camp_big") -> bytes:
    """A valid signed-webhook body of exactly `size` bytes."""
    head = json.dumps({"event": "message.sent", "data": {"campaignId": campaign_id, "messageId": "m-big", "pad": ""}})
    body = head[:-3] + "x" * (size - len(head)) + head[-3:]
    assert len(body) == size
    return body.encode()


async def ready(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


@pytest.mark.parametrize(
    ("max_body_bytes", "topic_max_message_bytes"),
    [
        pytest.param(None, None, id="defaults"),
        pytest.param(2 * 1024 * 1024, 4 * 1024 * 1024, id="raised-limit-and-topic"),
    ],
)
async def test_a_body_at_the_limit_is_produced_not_blamed_on_kafka(
    kafka_broker, max_body_bytes, topic_max_message_bytes
) -> None:
    """Any body the door accepts fits the producer's request and the topic's record: 200, in the topic,
    ready throughout (it was 503 "Kafka unavailable" with /readyz flipped)."""
    topics = Topics()
    await make_topics(kafka_broker.bootstrap_servers, topics, topic_max_message_bytes)
    settings = {"max_body_bytes": max_body_bytes} if max_body_bytes else {}
    body = webhook_of_size(IngestSettings(**settings).max_body_bytes)
    async with door(kafka_broker, topics, **settings) as client:
        answer = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        assert answer.status_code == 200, answer.text
        assert await ready(client) == 200
        over = body[:-3] + b"x" + body[-3:]
        assert (await client.post(WEBHOOK_PATH, content=over, headers=signed(over))).status_code == 413
    records = await read_all(kafka_broker.bootstrap_servers, topics.input, lambda r: len(r) >= 1)
    assert [len(r.value) for r in records] == [len(body)]


async def test_a_topic_that_takes_smaller_records_lowers_the_door_with_one_warning(kafka_broker) -> None:
    """The input topic's max.message.bytes is checked at start-up: one warning naming both limits, and a
    body the topic could not hold is 413 at the door, the service still ready, nothing produced."""
    topics = Topics()
    await make_topics(kafka_broker.bootstrap_servers, topics, max_message_bytes=100_000)
    with structlog.testing.capture_logs() as logs:
        async with door(kafka_broker, topics) as client:
            body = webhook_of_size(150_000)
            answer = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
            assert answer.status_code == 413, answer.text
            assert await ready(client) == 200
            small = webhook_of_size(50_000)
            assert (await client.post(WEBHOOK_PATH, content=small, headers=signed(small))).status_code == 200
    warnings = [e for e in logs if "max.message.bytes" in e["event"]]
    assert len(warnings) == 1, logs
    assert warnings[0]["max_message_bytes"] == 100_000 and warnings[0]["body_limit"] < 100_000
    records = await read_all(kafka_broker.bootstrap_servers, topics.input, lambda r: len(r) >= 1)
    assert [len(r.value) for r in records] == [50_000]


async def test_a_dead_letter_reason_is_bounded_whatever_the_body_says(kafka_broker) -> None:
    """An ARF report whose Feedback-Type is 600,000 characters: dead-lettered (200) as it came, the reason
    in the header and the answer cut to MAX_REASON_CHARS; no 503, readiness untouched."""
    topics = Topics()
    await make_topics(kafka_broker.bootstrap_servers, topics)
    raw = (ARF / "abuse.eml").read_bytes().replace(b"Feedback-Type: abuse", b"Feedback-Type: " + b"q" * 600_000)
    async with door(kafka_broker, topics) as client:
        answer = await client.post(ARF_PATH, content=raw, headers={"Authorization": f"Bearer {ARF_TOKEN.decode()}"})
        assert answer.status_code == 200, answer.text[:200]
        assert answer.json()["status"] == "dead_lettered" and len(answer.json()["reason"]) <= MAX_REASON_CHARS
        assert await ready(client) == 200
    dead = await read_all(kafka_broker.bootstrap_servers, topics.dlq, lambda r: len(r) >= 1)
    assert [r.value for r in dead] == [raw]
    reason = dict(dead[0].headers)["guard.error"]
    assert reason.startswith(b"Feedback-Type q") and len(reason) <= MAX_REASON_CHARS


HEADERS_ONLY = (ARF / "abuse-headers-only.eml").read_bytes()


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        pytest.param(
            WEBHOOK_PATH,
            b'{"event": "message.sent", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}",
            "nested too deep",
            id="json",
        ),
        pytest.param(
            ARF_PATH,
            HEADERS_ONLY.replace(b"text/rfc822-headers\n", b"text/rfc822-headers; charset=x-no-such\n"),
            "unknown charset",
            id="arf-unknown-charset",
        ),
        pytest.param(
            ARF_PATH,
            HEADERS_ONLY.replace(b"message/feedback-report\n", b"message/feedback-report " + b"(" * 2000 + b"\n"),
            "unreadable report: RecursionError",
            id="arf-comment-2000-deep",
        ),
        pytest.param(
            ARF_PATH,
            b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\n\n'
            + b"--b\nContent-Type: text/plain\n\nx\n" * 30_000
            + b"--b--\n",
            "more than 100 MIME parts",
            id="arf-30000-parts",
        ),
    ],
)
async def test_a_hostile_body_is_dead_lettered_with_its_reason_not_a_500(kafka_broker, path, body, reason) -> None:
    """Nesting past the recursion limit, an unknown charset: 200 and in the dead-letter topic as it
    came, with the reason, like any unusable body (they were 500s); 30,000 parts are refused unparsed
    (the email package took seconds over them, on the event loop)."""
    topics = Topics()
    await make_topics(kafka_broker.bootstrap_servers, topics)
    headers = signed(body) if path == WEBHOOK_PATH else {"Authorization": f"Bearer {ARF_TOKEN.decode()}"}
    async with door(kafka_broker, topics) as client:
        answer = await client.post(path, content=body, headers=headers)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["status"] == "dead_lettered" and reason in answer.json()["reason"]
    dead = await read_all(kafka_broker.bootstrap_servers, topics.dlq, lambda r: len(r) >= 1)
    assert [r.value for r in dead] == [body]
