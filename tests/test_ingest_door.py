"""`guard ingest` against clients that do not play fair, over raw TCP on 127.0.0.1 and a real broker:
credentials checked before the body is read, connections capped, slow headers and idle connections
closed, oversized headers refused."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from test_ingest import ARF_TOKEN, Topics, create_topics, running_ingest, signed, webhook

from guard.ingest.app import ARF_PATH, WEBHOOK_PATH
from guard.ingest.door import ConnectionCap, _Busy
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


async def test_a_connection_not_read_from_yet_is_closed_last(kafka_broker, topics) -> None:
    """A connection the door has not read from (its request still on the way, or in the kernel's buffer
    while the process is busy) outlives slow clients that come back as fast as they are closed: each
    returning one closes a slow one, never it, and its signed webhook is answered 200 when it comes."""
    cap = 4
    async with running_ingest(kafka_broker, topics, max_connections=cap, idle_timeout=60.0) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)  # nothing sent yet
        await asyncio.sleep(0.1)
        slow = await hold_unfinished_headers(service.port, cap - 1)
        for _ in range(3 * cap):  # each one returning makes room by closing one
            slow += await hold_unfinished_headers(service.port, 1)
        body = webhook("camp_door", "m-unheard")
        writer.write(raw_post(body, signed(body)))
        status = await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)
        still_open = [not slow_reader.at_eof() for slow_reader, _ in slow]
        for _, slow_writer in [*slow, (reader, writer)]:
            slow_writer.close()
    assert status == b"HTTP/1.1 200 OK\r\n"
    assert service.metrics.connections_evicted._value.get() == 3 * cap
    assert still_open == [False] * (3 * cap) + [True] * (cap - 1)  # the oldest slow ones made room


async def test_the_cap_holds_for_connections_that_arrive_together(kafka_broker, topics) -> None:
    """Connections that wait in the kernel's queue while the process is busy are accepted together, a
    turn before aiohttp registers them: the cap counts each from its acceptance. Three times the cap at
    once: the cap's worth admitted, the others answered 503; a signed webhook after them is answered."""
    cap = 4
    async with running_ingest(kafka_broker, topics, max_connections=cap, idle_timeout=60.0) as service:
        # blocking connects: the kernel completes them; the loop accepts none until this test awaits
        burst = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(3 * cap)]
        await asyncio.sleep(0.1)
        metrics = service.metrics
        assert (metrics.connections_evicted._value.get(), metrics.connections_refused._value.get()) == (0, 2 * cap)
        body = webhook("camp_door", "m-after-burst")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=ANSWER_WITHIN) as client:
            assert (await client.post(WEBHOOK_PATH, content=body, headers=signed(body))).status_code == 200
        for connection in burst:
            connection.close()
    assert metrics.connections_evicted._value.get() == 1  # the oldest silent one made room


async def test_a_connection_answered_before_its_body_can_make_room(kafka_broker, topics, caplog) -> None:
    """Answered 401 before its body (announced, never sent), a connection is kept a moment for the
    client to read the answer while the rest is discarded, then closed; meanwhile, at the cap, it is
    closed to admit a new one (no error logged for it). Before, the new one was refused 503."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with running_ingest(kafka_broker, topics, max_connections=2, idle_timeout=60.0, read_timeout=60) as service:
        unsigned = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n" % WEBHOOK_PATH.encode()
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            writer.write(unsigned)
            assert await asyncio.wait_for(reader.readline(), ANSWER_WITHIN) == b"HTTP/1.1 401 Unauthorized\r\n"
            held.append(writer)
        livez = await status_line(service.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        for writer in held:
            writer.close()
    assert livez.startswith(b"HTTP/1.1 200")
    assert service.metrics.connections_refused._value.get() == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def raw_post(body: bytes, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{lines}\r\n"
    return head.encode() + body


class _Handler:
    """aiohttp's connection handler as the cap reads it: open or not, waiting for headers or not, over a
    real socket whose kernel buffer holds what the peer sent and the process has not read."""

    def __init__(self, closed: list[_Handler]) -> None:
        self._socket, self.peer = socket.socketpair()
        self.transport: SimpleNamespace | None = SimpleNamespace(get_extra_info={"socket": self._socket}.get)
        self._waiter: SimpleNamespace | None = None  # in a request, or not started yet
        self._closed = closed

    def wait_for_headers(self) -> None:
        self._waiter = SimpleNamespace(done=lambda: False)

    def force_close(self) -> None:
        self.transport = None
        self._closed.append(self)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def release(self) -> None:
        self._socket.close()
        self.peer.close()


class _Server:
    def __init__(self) -> None:
        self.made: list[_Handler] = []
        self.closed: list[_Handler] = []

    def __call__(self) -> _Handler:
        self.made.append(_Handler(self.closed))
        return self.made[-1]


class TestConnectionCap:
    """The cap's choice of who makes room, over stand-in handlers."""

    @pytest.fixture
    def server(self) -> Iterator[_Server]:
        server = _Server()
        yield server
        for handler in server.made:
            handler.release()

    @staticmethod
    def cap(server: _Server, limit: int) -> tuple[ConnectionCap, Counter, Counter]:
        registry = CollectorRegistry()
        refused, evicted = Counter("r", "r", registry=registry), Counter("e", "e", registry=registry)
        return ConnectionCap(server, limit, refused, evicted), refused, evicted  # type: ignore[arg-type]

    def test_room_is_made_by_heard_waiting_then_body_senders_then_discarding_then_unheard(self, server) -> None:
        cap, refused, evicted = self.cap(server, 4)
        doors = [cap() for _ in range(4)]
        unheard, heard, sending, discarding = server.made
        unheard.wait_for_headers()
        heard.wait_for_headers()
        doors[1].data_received(b"POST / HTTP/1.1\r\n")  # type: ignore[attr-defined]
        cap.answered_early(discarding)  # type: ignore[arg-type]
        with cap.reading_body(sending):  # type: ignore[arg-type]
            for _ in range(4):
                cap()  # a newcomer: open, not started yet, so not a candidate itself
        assert server.closed == [heard, sending, discarding, unheard]
        assert isinstance(cap(), _Busy)  # every open connection is new: none to close
        assert (evicted._value.get(), refused._value.get()) == (4, 1)

    def test_a_waiting_connection_with_bytes_not_read_yet_is_not_closed(self, server) -> None:
        """Bytes in its kernel buffer: the process is behind, the connection not idle. A heard one is
        passed over for the next; when the oldest unheard one has bytes waiting, the newcomer is refused."""
        cap, refused, evicted = self.cap(server, 3)
        doors = [cap() for _ in range(3)]
        for handler in server.made:
            handler.wait_for_headers()
        for door in doors[:2]:
            door.data_received(b"POST / HTTP/1.1\r\n")  # type: ignore[attr-defined]
        first, second, unheard = server.made
        first.peer.send(b"Host: x\r\n\r\n")
        unheard.peer.send(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        cap()
        assert server.closed == [second]
        assert isinstance(cap(), _Busy)  # left: `first` and `unheard` with bytes waiting, a newcomer not started
        assert (evicted._value.get(), refused._value.get()) == (1, 1)

    def test_a_closed_connection_frees_its_place(self, server) -> None:
        cap, refused, evicted = self.cap(server, 1)
        door = cap()
        assert isinstance(cap(), _Busy)
        door.connection_lost(None)
        assert not isinstance(cap(), _Busy)
        assert (evicted._value.get(), refused._value.get()) == (0, 1)


async def test_an_idle_keep_alive_connection_is_closed(kafka_broker, topics) -> None:
    """After an answer, a connection that sends nothing more is closed after GUARD_INGEST_IDLE_TIMEOUT."""
    async with running_ingest(kafka_broker, topics, idle_timeout=0.5) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.read(), ANSWER_WITHIN)  # the rest of the answer, then end of stream
        assert reader.at_eof()
        writer.close()


async def test_by_default_a_pooled_connection_outlives_the_pools_that_reuse_it(kafka_broker, topics) -> None:
    """A client pool reuses a connection idle for up to its own expiry (httpx 5 s, an Ingress's upstream 60 s): had
    the door closed it first, a request sent as the close crossed it would fail, unanswered. By default an idle
    connection stays open past the common pools' expiry: reused after 6 s, it is answered."""
    async with running_ingest(kafka_broker, topics) as service:
        assert service.config.ingest.idle_timeout > 60
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        for _ in range(2):
            body = webhook()
            headers = "".join(f"{name}: {value}\r\n" for name, value in signed(body).items())
            head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
            writer.write(head.encode() + body)
            assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 200")
            length = 0
            while (line := await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert b'"accepted"' in await reader.readexactly(length)
            await asyncio.sleep(6)
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
