"""Connections to `guard ingest` before they are requests: how many may be open at once, and who
makes room when that many are.

aiohttp bounds header size and count and closes connections idle past `keepalive_timeout` (which
also runs from the moment a connection opens, so a header sent too slowly is cut off too); it has
no bound on open connections. The listener's protocol factory is that bound. At the bound, the
oldest connection that is not in a request (its headers unfinished, or idle between requests) is
closed to admit the new one, else the one that has been sending its body the longest (a body is read
before its signature can be checked: a sender slower than the others is the likeliest to be no
sender at all), so clients that hold connections cannot keep a signed webhook out. Only when every
connection is past its body (being answered: produced, refused) is the new one answered 503 and
closed, before any of its bytes are read.

A request line or header over the limits, or bytes that are not HTTP, is answered 400 by aiohttp,
which logs an error with a traceback for each: such requests are counted instead, and the first
one said once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

log = structlog.get_logger("guard.ingest")

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()


def _between_requests(handler: RequestHandler) -> bool:
    """Waiting for a request's headers: none yet, unfinished, or idle after an answer. aiohttp's own
    keep-alive check reads the same waiter (a request queued or being handled has none pending)."""
    waiter = handler._waiter
    return handler.transport is not None and waiter is not None and not waiter.done()


class ConnectionCap:
    """A protocol factory for `loop.create_server`: aiohttp's handler while fewer than `limit` are open;
    at the limit, the oldest connection between requests, else the oldest still sending its body, is
    closed to make room (`evicted`), and otherwise the new one is answered 503 (`refused`)."""

    def __init__(self, server: web.Server, limit: int, refused: Counter, evicted: Counter) -> None:
        self._server, self._limit, self._refused, self._evicted = server, limit, refused, evicted
        self._reading: dict[RequestHandler, None] = {}  # an ordered set: the longest reading first

    @contextlib.contextmanager
    def reading_body(self, connection: RequestHandler | None) -> Iterator[None]:
        """While a request's body is read on `connection`, it may be closed to make room."""
        if connection is not None:
            self._reading[connection] = None
        try:
            yield
        finally:
            self._reading.pop(connection, None)  # type: ignore[arg-type]

    def __call__(self) -> asyncio.BaseProtocol:
        open_ = [handler for handler in self._server.connections if handler.transport is not None]
        if len(open_) >= self._limit:
            # oldest first: the server keeps its connections in the order they were made
            idle = (handler for handler in open_ if _between_requests(handler))
            reading = (handler for handler in self._reading if handler.transport is not None)
            if (oldest := next(idle, None) or next(reading, None)) is None:
                self._refused.inc()
                return _Busy()
            oldest.force_close()
            self._evicted.inc()
        return self._server()


class ParserErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger (`logger=` of its handlers) without a traceback per malformed request:
    those are counted in `counter`, the first said once; every other line passes as it was."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._counter, self._said = counter, False

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._counted(kwargs.get("exc_info")):
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
