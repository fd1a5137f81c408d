"""`guard ingest` against clients that do not play fair, over raw TCP on 127.0.0.1 and a real broker:
credentials checked before the body is read, connections capped, slow headers and idle connections
closed, oversized headers refused."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from test_ingest import ARF_TOKEN, Topics, create_topics, running_ingest, signed, webhook

from guard.ingest.app import ARF_PATH, WEBHOOK_PATH
from guard.ingest.signature import SIGNATURE_HEADER

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


async def hold_unfinished_headers(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`count` connections, each with a request's headers begun and never finished."""
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.1)
    return held


async def test_at_the_cap_the_oldest_connection_without_a_request_makes_room(kafka_broker, topics) -> None:
    """GUARD_INGEST_MAX_CONNECTIONS clients holding unfinished headers (the idle timeout far away): a signed
    webhook is still answered 200, because the oldest of them is closed to admit it; the others stay open."""
    async with running_ingest(kafka_broker, topics, max_connections=8, idle_timeout=60.0) as service:
        slow = await hold_unfinished_headers(service.port, 8)
        body = webhook("camp_door", "m-door")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=ANSWER_WITHIN) as client:
            assert (await client.post(WEBHOOK_PATH, content=body, headers=signed(body))).status_code == 200
            metrics = (await client.get("/metrics")).text  # the same (kept-alive) connection: no eviction
        oldest_reader, _ = slow[0]
        assert await asyncio.wait_for(oldest_reader.read(), ANSWER_WITHIN) == b""  # closed, no answer
        assert not any(reader.at_eof() for reader, _ in slow[1:])
        for _, writer in slow:
            writer.close()
    assert "guard_ingest_connections_evicted_total 1.0" in metrics
    assert "guard_ingest_connections_refused_total 0.0" in metrics


async def test_at_the_cap_the_longest_body_in_progress_makes_room(kafka_broker, topics) -> None:
    """A connection with unfinished headers is closed after GUARD_INGEST_IDLE_TIMEOUT. With every open
    connection sending a body (announced, never sent: its MAC cannot be checked yet), a new one closes the
    one that has been sending longest, and is answered."""
    async with running_ingest(kafka_broker, topics, max_connections=3, idle_timeout=1.0, read_timeout=60) as service:
        [(slow, slow_writer)] = await hold_unfinished_headers(service.port, 1)
        assert await asyncio.wait_for(slow.read(), ANSWER_WITHIN) == b""  # closed by the idle timeout
        slow_writer.close()
        busy = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n%s: sha256=%s\r\n\r\n"
                % (WEBHOOK_PATH.encode(), SIGNATURE_HEADER.encode(), b"0" * 64)
            )
            busy.append((reader, writer))
            await asyncio.sleep(0.05)
        assert (await status_line(service.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(busy[0][0].read(), ANSWER_WITHIN) == b""  # the first body sender
        assert not any(reader.at_eof() for reader, _ in busy[1:])
        assert service.metrics.requests.labels("leadterra", "disconnected")._value.get() == 1
        for _, writer in busy:
            writer.close()


class TestConnectionCap:
    """The cap's choice, over a server whose connections are all being answered (a small stand-in)."""

    def test_with_every_connection_past_its_body_a_new_one_is_refused(self) -> None:
        from types import SimpleNamespace

        from prometheus_client import CollectorRegistry, Counter

        from guard.ingest.door import ConnectionCap, _Busy

        answering = [SimpleNamespace(transport=object(), _waiter=None) for _ in range(2)]  # no waiter: in a request
        registry = CollectorRegistry()
        refused, evicted = Counter("r", "r", registry=registry), Counter("e", "e", registry=registry)
        cap = ConnectionCap(SimpleNamespace(connections=answering), 2, refused, evicted)  # type: ignore[arg-type]
        assert isinstance(cap(), _Busy)
        assert (refused._value.get(), evicted._value.get()) == (1, 0)


async def test_an_idle_keep_alive_connection_is_closed(kafka_broker, topics) -> None:
    """After an answer, a connection that sends nothing more is closed after GUARD_INGEST_IDLE_TIMEOUT."""
    async with running_ingest(kafka_broker, topics, idle_timeout=0.5) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.read(), ANSWER_WITHIN)  # the rest of the answer, then end of stream
        assert reader.at_eof()
        writer.close()


async def test_headers_over_the_limits_are_400_counted_not_logged_as_errors(kafka_broker, topics, caplog) -> None:
    """A header field over GUARD_INGEST_MAX_HEADER_BYTES, or more fields than GUARD_INGEST_MAX_HEADERS: 400,
    counted in guard_ingest_bad_requests_total; no error line (with a traceback) per request."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with running_ingest(kafka_broker, topics, max_header_bytes=2048, max_headers=16) as service:
        long_field = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 4000 + b"\r\n\r\n"
        many_fields = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20)) + b"\r\n"
        assert b" 400 " in await status_line(service.port, long_field)
        assert b" 400 " in await status_line(service.port, many_fields)
        ok = f"GET /livez HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ARF_TOKEN.decode()}\r\n\r\n".encode()
        assert (await status_line(service.port, ok)).startswith(b"HTTP/1.1 200")
        assert service.metrics.bad_requests._value.get() == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
