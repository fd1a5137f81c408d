"""Connections to `guard ingest` before they are requests: how many may be open at once.

aiohttp bounds header size and count and closes connections idle past `keepalive_timeout` (which
also runs from the moment a connection opens, so a header sent too slowly is cut off too); it has
no bound on open connections. The listener's protocol factory is that bound: one connection over
the limit is answered 503 and closed at once, before any of its bytes are read.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import Counter

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY)
        transport.close()


class ConnectionCap:
    """A protocol factory for `loop.create_server`: aiohttp's handler while fewer than `limit` are open."""

    def __init__(self, server: web.Server, limit: int, refused: Counter) -> None:
        self._server, self._limit, self._refused = server, limit, refused

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self._limit:
            self._refused.inc()
            return _Busy()
        return self._server()
