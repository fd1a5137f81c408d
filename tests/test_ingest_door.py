"""`guard ingest` against clients that do not play fair, over raw TCP on 127.0.0.1 and a real broker:
credentials checked before the body is read, connections capped, slow headers and idle connections
closed, oversized headers refused."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from test_ingest import ARF_TOKEN, Topics, create_topics, running_ingest, signed, webhook

from guard.ingest.app import ARF_PATH, WEBHOOK_PATH
from guard.ingest.signature import SIGNATURE_HEADER

pytestmark = pytest.mark.integration

ANSWER_WITHIN = 10.0  # seconds: far above any answer the door gives, far below the settings' timeouts


async def status_line(port: int, head: bytes) -> bytes:
    """Send `head` (request line and headers, no body) and return the status line read back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)
    finally:
        writer.close()


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    names = Topics()
    await create_topics(kafka_bootstrap, names)
    return names


@pytest.mark.parametrize(
    ("path", "credentials"),
    [
        pytest.param(WEBHOOK_PATH, b"", id="webhook-unsigned"),
        pytest.param(WEBHOOK_PATH, SIGNATURE_HEADER.encode() + b": sha256=not-a-mac\r\n", id="webhook-malformed"),
        pytest.param(ARF_PATH, b"Authorization: Bearer wrong\r\n", id="arf-wrong-token"),
    ],
)
async def test_credentials_are_checked_before_the_body_is_read(kafka_broker, topics, path, credentials) -> None:
    """A request announcing a 900 kB body it never sends, without usable credentials: 401 at once
    (it was read, or waited for, first; every unsigned client held up to the body limit in memory)."""
    async with running_ingest(kafka_broker, topics, read_timeout=60) as service:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n%s\r\n" % (path.encode(), credentials)
        assert await status_line(service.port, head) == b"HTTP/1.1 401 Unauthorized\r\n"


async def test_connections_over_the_cap_are_refused_and_slow_headers_closed(kafka_broker, topics) -> None:
    """GUARD_INGEST_MAX_CONNECTIONS clients holding unfinished headers: one more is answered 503 and
    closed; the slow ones are closed after GUARD_INGEST_IDLE_TIMEOUT, and a signed webhook then passes."""
    async with running_ingest(kafka_broker, topics, max_connections=8, idle_timeout=1.0) as service:
        slow = [await asyncio.open_connection("127.0.0.1", service.port) for _ in range(8)]
        for _, writer in slow:
            writer.write(b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await asyncio.sleep(0.1)
        assert await status_line(service.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n") == (
            b"HTTP/1.1 503 Service Unavailable\r\n"
        )
        for reader, writer in slow:  # closed by the server: end of stream, no answer
            assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""
            writer.close()
        body = webhook("camp_door", "m-door")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as client:
            assert (await client.post(WEBHOOK_PATH, content=body, headers=signed(body))).status_code == 200
            metrics = (await client.get("/metrics")).text
    assert "guard_ingest_connections_refused_total 1.0" in metrics


async def test_an_idle_keep_alive_connection_is_closed(kafka_broker, topics) -> None:
    """After an answer, a connection that sends nothing more is closed after GUARD_INGEST_IDLE_TIMEOUT."""
    async with running_ingest(kafka_broker, topics, idle_timeout=0.5) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.read(), ANSWER_WITHIN)  # the rest of the answer, then end of stream
        assert reader.at_eof()
        writer.close()


async def test_headers_over_the_limits_are_400(kafka_broker, topics) -> None:
    """A header field over GUARD_INGEST_MAX_HEADER_BYTES, or more fields than GUARD_INGEST_MAX_HEADERS: 400."""
    async with running_ingest(kafka_broker, topics, max_header_bytes=2048, max_headers=16) as service:
        long_field = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 4000 + b"\r\n\r\n"
        many_fields = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20)) + b"\r\n"
        assert b" 400 " in await status_line(service.port, long_field)
        assert b" 400 " in await status_line(service.port, many_fields)
        ok = f"GET /livez HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ARF_TOKEN.decode()}\r\n\r\n".encode()
        assert (await status_line(service.port, ok)).startswith(b"HTTP/1.1 200")
