"""The stand-in's server: real HTTP on 127.0.0.1, fault injection, and a record of every request."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from types import TracebackType

from aiohttp import web

from guard.testing.leadterra.api import LeadterraApi
from guard.testing.leadterra.records import (
    DEFAULT_API_KEY,
    ApiError,
    Fault,
    RecordedRequest,
    format_seconds,
    headers_of,
    route_error,
)

_SHUTDOWN_TIMEOUT = 1.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LeadterraStandIn(LeadterraApi):
    """A real HTTP server on 127.0.0.1 that behaves like the documented Leadterra API.

    Seed state with ``add_campaign``, inject faults with ``fail_next``, ``rate_limit_next``,
    ``latency`` and ``down()``/``up()``, and inspect ``requests``, ``status()`` and
    ``wait_for_pauses()``. Use ``async with`` or ``await start()`` / ``await stop()``.
    All methods must be called from the event loop the server runs in.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        create_unknown: bool = False,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        """Configure (not start) a stand-in.

        ``create_unknown=True`` makes any unknown campaign id behave as an existing ``running``
        campaign; by default it is a 404 ``campaign_not_found``. ``host``/``port`` are the
        defaults for ``start()`` (port 0 picks a free port). ``on_request`` is called with each
        recorded request (the CLI logs with it).
        """
        super().__init__(api_key, create_unknown)
        self.latency: float = 0.0
        """Seconds added before every answer; may be changed at any time."""
        self.date_offset: float = 0.0
        """Seconds the Date header runs ahead of the stand-in's clock (a proxy in front stamping its own)."""
        self.campaign_latency: dict[str, float] = {}
        """Extra seconds per campaign id, added to ``latency`` (a slow API for one campaign)."""
        self.body_bytes_sent = 0
        """Bytes of streamed bodies (``huge_body_next``) written before the client stopped reading."""
        self.requests: list[RecordedRequest] = []
        """Every request received (failed and injected ones too), in the order answered."""
        self.on_request = on_request
        self._host = host
        self._port = port
        self._faults: deque[Fault] = deque()
        self._waiters: set[asyncio.Future[None]] = set()
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Start serving on ``host:port`` (port 0 = a free port; see ``url``)."""
        if self._runner is not None:
            raise RuntimeError("the stand-in is already started")
        self._host = host if host is not None else self._host
        self._port = port if port is not None else self._port
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        try:
            await self._open_site()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop serving and close every connection. Safe to call twice."""
        if self._runner is None:
            return
        await self.down()
        await self._runner.cleanup()
        self._runner = None

    async def down(self) -> None:
        """Take the API down: close open connections and refuse new ones until ``up()``."""
        if self._site is None:
            return
        await self._site.stop()
        self._site = None
        await self._drop_connections()

    async def up(self) -> None:
        """Serve again, on the same port, after ``down()``."""
        if self._runner is None:
            raise RuntimeError("the stand-in is not started")
        if self._site is None:
            await self._open_site()

    async def __aenter__(self) -> LeadterraStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def is_up(self) -> bool:
        """True while the stand-in accepts connections."""
        return self._site is not None

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._runner is None:
            raise RuntimeError("the stand-in is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (paths start with ``/v1``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # ----------------------------------------------------------------- fault injection

    def fail_next(
        self,
        n: int,
        status: int = 503,
        code: str = "internal_error",
        *,
        campaign_id: str | None = None,
        body: bytes | str | None = None,
    ) -> None:
        """Answer the next ``n`` API calls with ``status`` and error ``code``.

        ``campaign_id`` limits the fault to calls for that campaign. ``body`` replaces the JSON
        error with a raw (e.g. empty or HTML) body. Faults queue up in the order injected.
        """
        raw = body.encode() if isinstance(body, str) else body
        fault = Fault(status, code, "injected failure", body=raw, campaign_id=campaign_id)
        self._faults.extend([fault] * n)

    def rate_limit_next(self, n: int, retry_after: float | None = 1.0, *, campaign_id: str | None = None) -> None:
        """Answer the next ``n`` API calls with 429 and ``Retry-After: <seconds>``.

        ``retry_after=None`` sends no ``Retry-After`` (Leadterra documents none). Fractional
        seconds (``"0.2"``) are sent as given, a test convenience.
        """
        headers = {} if retry_after is None else {"Retry-After": format_seconds(retry_after)}
        fault = Fault(429, "rate_limited", "rate limit exceeded", headers, campaign_id=campaign_id)
        self._faults.extend([fault] * n)

    def huge_body_next(self, n: int, size: int, status: int = 500, *, campaign_id: str | None = None) -> None:
        """Answer the next ``n`` API calls with ``status`` and a plain-text body of ``size`` bytes,
        streamed; ``body_bytes_sent`` counts what was written before the client hung up."""
        fault = Fault(status, "huge_body", "", campaign_id=campaign_id, body_size=size)
        self._faults.extend([fault] * n)

    def clear_faults(self) -> None:
        """Forget the injected failures not yet served: the API is back."""
        self._faults.clear()

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered (e.g. held by ``latency``)."""
        return self._in_flight

    @property
    def pending_faults(self) -> int:
        """Injected failures not yet served."""
        return len(self._faults)

    # ----------------------------------------------------------------- inspection

    def pause_requests(self, campaign_id: str | None = None) -> list[RecordedRequest]:
        """Every ``POST .../pause`` received (failed ones too), optionally for one campaign."""
        return [r for r in self.requests if r.is_pause and (campaign_id is None or r.campaign_id == campaign_id)]

    async def wait_for_pauses(
        self, n: int = 1, timeout: float = 10.0, *, campaign_id: str | None = None
    ) -> list[RecordedRequest]:
        """Wait until at least ``n`` pause requests were answered 200; return them.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while len(done := self._successful_pauses(campaign_id)) < n:
                    await self._next_record()
        except TimeoutError:
            seen = len(self._successful_pauses(campaign_id))
            raise TimeoutError(f"saw {seen} of {n} successful pause requests within {timeout} s") from None
        return done

    def _successful_pauses(self, campaign_id: str | None) -> list[RecordedRequest]:
        return [r for r in self.pause_requests(campaign_id) if r.status == 200]

    async def _next_record(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def _record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_request is not None:
            self.on_request(request)

    # ----------------------------------------------------------------- server plumbing

    def _make_app(self) -> web.Application:
        @web.middleware
        async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
            return await self._serve_request(request, handler)

        async def date(request: web.Request, response: web.StreamResponse) -> None:
            # the Date header by Leadterra's clock, which `clock_offset` moves, and `date_offset` beyond it (a proxy
            # in front writing its own); aiohttp only sets one if none is set
            if self.clock_offset or self.date_offset:
                response.headers["Date"] = formatdate(time.time() + self.clock_offset + self.date_offset, usegmt=True)

        app = web.Application(middlewares=[middleware])
        app.on_response_prepare.append(date)
        app.router.add_post("/v1/campaigns", self._create)
        app.router.add_post("/v1/campaigns/{campaign_id}/pause", self._pause)
        app.router.add_post("/v1/campaigns/{campaign_id}/start", self._start)
        app.router.add_get("/v1/campaigns/{campaign_id}/stats", self._stats)
        return app

    async def _open_site(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._site = site
        self._port = site.port

    async def _drop_connections(self) -> None:
        """Close every open connection (in-flight handlers are cancelled) and wait for it."""
        server = self._runner.server if self._runner is not None else None
        if server is None:
            return
        for connection in server.connections:
            connection.force_close()
        for _ in range(200):
            if not server.connections:
                return
            await asyncio.sleep(0.005)

    async def _serve_request(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Latency, then route errors, injected faults, auth and the handler; record it all."""
        received_at = time.time()
        campaign_id = request.match_info.get("campaign_id")
        body = await request.read()
        status: int | None = None
        self._in_flight += 1
        try:
            await self._delay(campaign_id)
            response = await self._respond(request, handler, campaign_id)
            status = response.status
            return response
        except Exception:
            status = 500
            raise
        finally:
            self._in_flight -= 1
            self._record(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    campaign_id=campaign_id,
                    headers=headers_of(request),
                    body=body,
                    received_at=received_at,
                    status=status,
                    query=request.query_string,
                )
            )

    async def _delay(self, campaign_id: str | None) -> None:
        seconds = self.latency + self.campaign_latency.get(campaign_id or "", 0.0)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _respond(self, request: web.Request, handler: _Handler, campaign_id: str | None) -> web.StreamResponse:
        unroutable = request.match_info.http_exception
        if unroutable is not None:
            return route_error(unroutable)
        fault = self._take_fault(campaign_id)
        if fault is not None and fault.body_size is not None:
            return await self._stream_body(request, fault.status, fault.body_size)
        if fault is not None:
            return fault.response()
        try:
            self._authenticate(request)
            return await handler(request)
        except ApiError as error:
            return error.response()

    async def _stream_body(self, request: web.Request, status: int, size: int) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/plain"})
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while size > 0:
                piece = chunk[: min(size, len(chunk))]
                await response.write(piece)  # waits while the client's socket is full
                self.body_bytes_sent += len(piece)
                size -= len(piece)
            await response.write_eof()
        except ConnectionError:  # the client stopped reading and closed the connection
            pass
        return response

    def _take_fault(self, campaign_id: str | None) -> Fault | None:
        for fault in self._faults:
            if fault.matches(campaign_id):
                self._faults.remove(fault)
                return fault
        return None
