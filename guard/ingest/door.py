"""Connections to `guard ingest` before they are requests: how many may be open at once, and who
makes room when that many are.

aiohttp bounds header size and count and closes connections idle past `keepalive_timeout` (which
also runs from the moment a connection opens, so a header sent too slowly is cut off too); it has
no bound on open connections. The listener's protocol factory is that bound, counting each connection
from its acceptance (connections that waited in the kernel's queue are accepted together, a turn
before aiohttp registers them). At the bound, room is made by closing, in this order: the oldest
connection the door has read from that is not in a request (its headers unfinished, or idle between
requests) and has no bytes waiting in the kernel; else the one that has been sending its body the
longest (a body is read before its signature can be checked: a sender slower than the others is the
likeliest to be no sender at all), or one answered before its body was in and still discarding the
rest; else the oldest connection not read from yet, if nothing it sent is waiting to be read.
Otherwise the new connection is answered 503 (`Retry-After: 1`) and closed before any of its bytes
are read: every connection is in a request being answered, accepted in the same turn, or holds bytes
the process has not read yet because it is busy. Closing those instead lost signed webhooks whose
request sat in the kernel's buffer, and at worst closed each batch of new connections before it was
read, so that none was. So clients that hold connections, or come back as fast as they are closed,
cannot keep a signed webhook out.

A request line or header over the limits, or bytes that are not HTTP, is answered 400 by aiohttp,
which logs an error with a traceback for each: such requests are counted instead, and the first
one said once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sys
import termios
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

log = structlog.get_logger("guard.ingest")

CLOSED_WHILE_DISCARDING = "Connection closed."  # aiohttp's error when a lingering connection is closed
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()


def _unread(handler: RequestHandler) -> bool:
    """Bytes wait in the kernel's buffer for this connection: it is not idle, only not read yet."""
    socket = handler.transport.get_extra_info("socket") if handler.transport is not None else None
    if socket is None:
        return False
    try:
        waiting = fcntl.ioctl(socket.fileno(), termios.FIONREAD, bytes(4))
    except OSError:
        return False
    return int.from_bytes(waiting, sys.byteorder) > 0


def _between_requests(handler: RequestHandler) -> bool:
    """Waiting for a request's headers: none yet, unfinished, or idle after an answer. aiohttp's own
    keep-alive check reads the same waiter (a request queued or being handled has none pending)."""
    waiter = handler._waiter
    return handler.transport is not None and waiter is not None and not waiter.done()


class _Door(asyncio.Protocol):
    """aiohttp's handler of one connection, as the cap sees it: open from the moment it is made (the
    loop says `connection_made` a turn later: a burst of new connections counts at once), unheard until
    its first bytes are read."""

    __slots__ = ("_handler", "_cap")

    def __init__(self, handler: RequestHandler, cap: ConnectionCap) -> None:
        self._handler, self._cap = handler, cap
        cap._open[handler] = cap._unheard[handler] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler in self._cap._unheard:
            del self._cap._unheard[self._handler]
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cap.forget(self._handler)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class ConnectionCap:
    """A protocol factory for `loop.create_server`: aiohttp's handler while fewer than `limit` are open;
    at the limit, a connection is closed to make room (`evicted`; the order is the module's), and
    otherwise the new one is answered 503 (`refused`)."""

    def __init__(self, server: web.Server, limit: int, refused: Counter, evicted: Counter) -> None:
        self._server, self._limit, self._refused, self._evicted = server, limit, refused, evicted
        # ordered sets, the oldest first
        self._open: dict[RequestHandler, None] = {}
        self._unheard: dict[RequestHandler, None] = {}  # nothing read from it yet
        self._reading: dict[RequestHandler, None] = {}  # sending its body
        self._discarding: dict[RequestHandler, None] = {}  # answered before its body was in, closed after

    @contextlib.contextmanager
    def reading_body(self, connection: RequestHandler | None) -> Iterator[None]:
        """While a request's body is read on `connection`, it may be closed to make room."""
        if connection is not None:
            self._reading[connection] = None
        try:
            yield
        finally:
            self._reading.pop(connection, None)  # type: ignore[arg-type]

    def answered_early(self, connection: RequestHandler | None) -> None:
        """`connection` was answered before its body was in and is closed once the rest is discarded
        (aiohttp's lingering): until then it may be closed to make room."""
        if connection is not None and connection in self._open:
            self._discarding[connection] = None

    def forget(self, connection: RequestHandler) -> None:
        for connections in (self._open, self._unheard, self._reading, self._discarding):
            connections.pop(connection, None)

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._open) >= self._limit:
            if (victim := self._victim()) is None:
                self._refused.inc()
                return _Busy()
            self.forget(victim)
            victim.force_close()
            self._evicted.inc()
        return _Door(self._server(), self)

    def _victim(self) -> RequestHandler | None:
        idle = (
            handler
            for handler in self._open
            if handler not in self._unheard and _between_requests(handler) and not _unread(handler)
        )
        reading = (handler for handler in self._reading if handler.transport is not None)
        discarding = (handler for handler in self._discarding if handler.transport is not None)
        if victim := next(idle, None) or next(reading, None) or next(discarding, None):
            return victim
        # the oldest not read from yet, unless its bytes wait to be read: then the loop is behind, and
        # closing unread connections to admit newer ones would keep it from ever reading any
        unheard = next((handler for handler in self._unheard if _between_requests(handler)), None)
        return None if unheard is None or _unread(unheard) else unheard


class ParserErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger (`logger=` of its handlers) without a traceback per malformed request:
    those are counted in `counter`, the first said once; nor for a connection the cap closed while
    aiohttp discarded the rest of its body (counted as evicted); every other line passes as it was."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._counter, self._said = counter, False

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, RuntimeError) and str(error) == CLOSED_WHILE_DISCARDING:
            return
        if not self._counted(error):
            super().exception(msg, *args, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:  # aiohttp's level for a first non-HTTP line
        if not self._counted(kwargs.get("exc_info")):
            super().debug(msg, *args, **kwargs)

    def _counted(self, error: object) -> bool:
        if not isinstance(error, HttpProcessingError):
            return False
        self._counter.inc()
        if not self._said:
            self._said = True
            log.warning(
                "malformed request answered 400; such requests are counted in guard_ingest_bad_requests_total, "
                "not logged",
                error=f"{type(error).__name__}: {error.message}"[:200],
            )
        return True
