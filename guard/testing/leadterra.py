"""A local stand-in for the Leadterra API, served over real HTTP on 127.0.0.1.

Leadterra has no sandbox, so tests, the demo and users' own tests run against this server. It
serves the documented behaviour the guard relies on (shared/leadterra-api.md): bearer auth, the
draft/running/paused status model with its no-ops, the documented error codes, plus fault
injection (5xx, 429 with ``Retry-After``, latency, the whole API down) and a record of every
request it received.

Example::

    async with LeadterraStandIn() as standin:
        standin.add_campaign("camp_a", status="running")
        # point the client under test at standin.url with standin.api_key, then:
        await standin.wait_for_pauses(1)
        assert standin.status("camp_a") == "paused"

Error bodies always have the shape ``{"error": {"code": "...", "message": "..."}}``.

From a shell: ``python -m guard.testing.leadterra --port 8099 [--create-unknown]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, get_args

from aiohttp import web

__all__ = [
    "DEFAULT_API_KEY",
    "CampaignStats",
    "CampaignStatus",
    "LeadterraStandIn",
    "RecordedRequest",
    "main",
    "serve",
]

CampaignStatus = Literal["draft", "running", "paused"]
"""The only three campaign statuses Leadterra documents."""

DEFAULT_API_KEY = "sk_test_standin"
"""The key the stand-in accepts unless told otherwise."""

DEFAULT_LEADS = 100
"""Enrolled leads of a campaign seeded through the Python API (so it can be started)."""

_STATUSES: tuple[str, ...] = get_args(CampaignStatus)
_SHUTDOWN_TIMEOUT = 1.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received, and the HTTP status it answered."""

    method: str
    path: str
    campaign_id: str | None
    headers: dict[str, str]
    """Header names lower-cased; values exactly as sent (``authorization`` included)."""
    body: bytes
    received_at: float
    """``time.time()`` when the request arrived."""
    status: int | None
    """The status answered; ``None`` if the connection was dropped first (see ``down()``)."""
    query: str = ""
    """The raw query string, usually empty."""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        return self.headers.get(name.lower())

    @property
    def is_pause(self) -> bool:
        """True for ``POST /v1/campaigns/{id}/pause``."""
        return self.method == "POST" and self.campaign_id is not None and self.path.endswith("/pause")


@dataclass(frozen=True)
class CampaignStats:
    """The counters ``GET /v1/campaigns/{id}/stats`` reports (snake_case here, camelCase on the wire)."""

    total_enrolled: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    replied: int = 0
    queued: int = 0
    open_rate: float = 0.0
    reply_rate: float = 0.0

    def to_json(self, campaign_id: str) -> dict[str, Any]:
        """The documented response body."""
        return {
            "campaignId": campaign_id,
            "totalEnrolled": self.total_enrolled,
            "sent": self.sent,
            "delivered": self.delivered,
            "bounced": self.bounced,
            "replied": self.replied,
            "queued": self.queued,
            "openRate": self.open_rate,
            "replyRate": self.reply_rate,
        }


_WORKSPACE = web.RequestKey("workspace", str)  # the workspace of the request's key (None: the default key)


@dataclass
class _Campaign:
    id: str
    name: str
    status: CampaignStatus
    stats: CampaignStats
    paused_at: str | None = None
    started_at: str | None = None

    def start(self) -> None:
        """draft/paused -> running (running stays as it is)."""
        if self.status != "running":
            self.status = "running"
            self.started_at = _now_iso()
            self.paused_at = None

    def pause(self) -> None:
        """running -> paused (paused and draft stay as they are)."""
        if self.status == "running":
            self.status = "paused"
            self.paused_at = _now_iso()


@dataclass(frozen=True)
class _Fault:
    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    campaign_id: str | None = None
    body_size: int | None = None  # stream this many bytes of body instead (see `huge_body_next`)

    def matches(self, campaign_id: str | None) -> bool:
        return self.campaign_id is None or self.campaign_id == campaign_id

    def response(self) -> web.Response:
        if self.body is not None:
            return web.Response(status=self.status, body=self.body, headers=self.headers, content_type="text/plain")
        return _error_response(self.status, self.code, self.message, self.headers)


class _ApiError(Exception):
    """Raised inside a handler; becomes a documented error response."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return _error_response(self.status, self.code, self.message, self.headers)


# --------------------------------------------------------------------------- helpers


def _now_iso() -> str:
    """Now, ISO 8601 UTC with a ``Z`` (milliseconds), e.g. ``2025-01-15T14:22:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_campaign_id() -> str:
    """An id shaped like ``camp_01HZA1TPNQ8RD4KF``."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "camp_" + "".join(secrets.choice(alphabet) for _ in range(16))


def _error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def _format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"`` (fractions are a test convenience)."""
    return format(seconds, "f").rstrip("0").rstrip(".") or "0"


def _headers_of(request: web.BaseRequest) -> dict[str, str]:
    """Request headers as a dict with lower-case names; repeated headers are comma-joined."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _route_error(exc: web.HTTPException) -> web.Response:
    """Unknown path (404) or wrong method (405), in the documented error shape."""
    code = "method_not_allowed" if exc.status == 405 else "not_found"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return _error_response(exc.status, code, exc.reason, headers)


def _check_sequence_steps(steps: Any) -> None:
    ok = isinstance(steps, list) and all(
        isinstance(step, dict)
        and set(step) <= {"subject", "bodyHtml"}
        and all(isinstance(value, str) for value in step.values())
        for step in steps
    )
    if not ok:
        raise _ApiError(400, "invalid_request", "sequenceSteps must be a list of {subject, bodyHtml}")


# --------------------------------------------------------------------------- the stand-in


class LeadterraStandIn:
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
        self.api_key = api_key
        self.create_unknown = create_unknown
        self.latency: float = 0.0
        """Seconds added before every answer; may be changed at any time."""
        self.campaign_latency: dict[str, float] = {}
        """Extra seconds per campaign id, added to ``latency`` (a slow API for one campaign)."""
        self.body_bytes_sent = 0
        """Bytes of streamed bodies (``huge_body_next``) written before the client stopped reading."""
        self.requests: list[RecordedRequest] = []
        """Every request received (failed and injected ones too), in the order answered."""
        self.on_request = on_request
        self._host = host
        self._port = port
        self._campaigns: dict[str, _Campaign] = {}
        self._faults: deque[_Fault] = deque()
        # workspaces: one key each (the default `api_key` is the workspace None)
        self._workspace_keys: dict[str, str] = {}  # key -> workspace id
        self._campaign_workspace: dict[str, str | None] = {}
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

    # ----------------------------------------------------------------- state

    def add_workspace(self, workspace_id: str, key: str) -> None:
        """Another workspace with its own key; its campaigns answer only to that key."""
        self._workspace_keys[key] = workspace_id

    def revoke_key(self, key: str) -> None:
        """The key stops working: every call with it is a 401 from now on."""
        self._workspace_keys.pop(key, None)

    def add_campaign(
        self,
        campaign_id: str,
        status: CampaignStatus = "running",
        *,
        name: str | None = None,
        leads: int = DEFAULT_LEADS,
        workspace: str | None = None,
    ) -> None:
        """Seed a campaign (in `workspace`, else in the default key's). ``leads=0`` makes ``start``
        on a draft fail with ``no_leads_enrolled``."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, not {status!r}")
        if campaign_id in self._campaigns:
            raise ValueError(f"campaign {campaign_id!r} already exists")
        self._campaign_workspace[campaign_id] = workspace
        campaign = _Campaign(
            id=campaign_id,
            name=name or campaign_id,
            status="draft",
            stats=CampaignStats(total_enrolled=leads),
        )
        if status != "draft":
            campaign.start()
        if status == "paused":
            campaign.pause()
        self._campaigns[campaign_id] = campaign

    def status(self, campaign_id: str) -> CampaignStatus:
        """The campaign's current status (``KeyError`` if unknown)."""
        return self._campaign(campaign_id).status

    def resume(self, campaign_id: str) -> None:
        """What a user does in the UI: paused -> running (running stays running)."""
        campaign = self._campaign(campaign_id)
        if campaign.status == "draft":
            raise ValueError(f"campaign {campaign_id!r} is a draft; there is nothing to resume")
        campaign.start()

    def set_stats(self, campaign_id: str, **counters: float) -> CampaignStats:
        """Set stats counters by their ``CampaignStats`` names, e.g. ``bounced=3``; returns them all."""
        campaign = self._campaign(campaign_id)
        campaign.stats = dataclasses.replace(campaign.stats, **counters)
        return campaign.stats

    @property
    def campaigns(self) -> dict[str, CampaignStatus]:
        """A snapshot: campaign id -> status."""
        return {campaign_id: c.status for campaign_id, c in self._campaigns.items()}

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
        fault = _Fault(status, code, "injected failure", body=raw, campaign_id=campaign_id)
        self._faults.extend([fault] * n)

    def rate_limit_next(self, n: int, retry_after: float | None = 1.0, *, campaign_id: str | None = None) -> None:
        """Answer the next ``n`` API calls with 429 and ``Retry-After: <seconds>``.

        ``retry_after=None`` sends no ``Retry-After`` (Leadterra documents none). Fractional
        seconds (``"0.2"``) are sent as given, a test convenience.
        """
        headers = {} if retry_after is None else {"Retry-After": _format_seconds(retry_after)}
        fault = _Fault(429, "rate_limited", "rate limit exceeded", headers, campaign_id=campaign_id)
        self._faults.extend([fault] * n)

    def huge_body_next(self, n: int, size: int, status: int = 500, *, campaign_id: str | None = None) -> None:
        """Answer the next ``n`` API calls with ``status`` and a plain-text body of ``size`` bytes,
        streamed; ``body_bytes_sent`` counts what was written before the client hung up."""
        fault = _Fault(status, "huge_body", "", campaign_id=campaign_id, body_size=size)
        self._faults.extend([fault] * n)

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

        app = web.Application(middlewares=[middleware])
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
                    headers=_headers_of(request),
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
        route_error = request.match_info.http_exception
        if route_error is not None:
            return _route_error(route_error)
        fault = self._take_fault(campaign_id)
        if fault is not None and fault.body_size is not None:
            return await self._stream_body(request, fault.status, fault.body_size)
        if fault is not None:
            return fault.response()
        try:
            self._authenticate(request)
            return await handler(request)
        except _ApiError as error:
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

    def _take_fault(self, campaign_id: str | None) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(campaign_id):
                self._faults.remove(fault)
                return fault
        return None

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), self.api_key.encode())
        workspace = next(
            (ws for key, ws in self._workspace_keys.items() if secrets.compare_digest(token.encode(), key.encode())),
            None,
        )
        request[_WORKSPACE] = workspace
        if not valid and (scheme.lower() != "bearer" or workspace is None):
            raise _ApiError(
                401,
                "authentication_failed",
                "Authorization header missing, malformed, or key invalid",
                {"WWW-Authenticate": "Bearer"},
            )

    def _campaign(self, campaign_id: str) -> _Campaign:
        """The campaign, created as ``running`` if unknown and ``create_unknown``; else KeyError."""
        if campaign_id not in self._campaigns and self.create_unknown:
            self.add_campaign(campaign_id, status="running")
        return self._campaigns[campaign_id]

    def _found(self, request: web.Request) -> _Campaign:
        campaign_id = request.match_info["campaign_id"]
        try:
            campaign = self._campaign(campaign_id)
            if self._campaign_workspace.get(campaign_id) != request.get(_WORKSPACE):
                raise KeyError(campaign_id)  # one key sees its own workspace only
            return campaign
        except KeyError:
            raise _ApiError(404, "campaign_not_found", f"no campaign {campaign_id!r} in this workspace") from None

    @staticmethod
    async def _reject_parameters(request: web.Request) -> None:
        if request.query_string or await request.read():
            raise _ApiError(400, "invalid_request", "this endpoint takes no body and no parameters")

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            raise _ApiError(400, "invalid_request", "the body must be a JSON object") from None
        if not isinstance(payload, dict):
            raise _ApiError(400, "invalid_request", "the body must be a JSON object")
        return payload

    # ----------------------------------------------------------------- endpoints

    async def _create(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns: a new draft (no leads enrolled yet)."""
        if request.query_string:
            raise _ApiError(400, "invalid_request", "unexpected query parameters")
        payload = await self._json_object(request)
        unexpected = sorted(set(payload) - {"name", "sequenceSteps"})
        if unexpected:
            raise _ApiError(400, "invalid_request", f"unexpected parameters: {unexpected}")
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _ApiError(400, "invalid_request", "name is required")
        _check_sequence_steps(payload.get("sequenceSteps", []))
        campaign_id = _new_campaign_id()
        self.add_campaign(campaign_id, status="draft", name=name, leads=0)
        return web.json_response({"id": campaign_id, "name": name, "status": "draft"})

    async def _pause(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns/{id}/pause: running -> paused; paused and draft are no-ops."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        campaign.pause()
        return web.json_response({"id": campaign.id, "status": campaign.status, "pausedAt": campaign.paused_at})

    async def _start(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns/{id}/start: draft/paused -> running; running is a no-op."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        if campaign.status == "draft" and campaign.stats.total_enrolled == 0:
            raise _ApiError(400, "no_leads_enrolled", "the campaign has no enrolled leads")
        campaign.start()
        return web.json_response({"id": campaign.id, "status": campaign.status, "startedAt": campaign.started_at})

    async def _stats(self, request: web.Request) -> web.Response:
        """GET /v1/campaigns/{id}/stats: the counters set with ``set_stats``."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        return web.json_response(campaign.stats.to_json(campaign.id))


# --------------------------------------------------------------------------- CLI


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_request(request: RecordedRequest) -> None:
    """One line per request; never prints header values (the key stays out of logs)."""
    elapsed_ms = (time.time() - request.received_at) * 1000
    answer = request.status if request.status is not None else "dropped"
    stamp = datetime.fromtimestamp(request.received_at, UTC).strftime("%H:%M:%S.%f")[:-3]
    _log(f"{stamp} {request.method} {request.path} -> {answer} ({elapsed_ms:.1f} ms)")


async def serve(
    host: str = "127.0.0.1",
    port: int = 8099,
    api_key: str = DEFAULT_API_KEY,
    create_unknown: bool = False,
) -> None:
    """Run a stand-in until cancelled, logging one line per request to stderr."""
    standin = LeadterraStandIn(api_key=api_key, create_unknown=create_unknown, on_request=_log_request)
    await standin.start(host=host, port=port)
    key_hint = f"key {api_key}" if api_key == DEFAULT_API_KEY else "the key given by --api-key"
    unknown = "unknown campaigns act as running" if create_unknown else "unknown campaigns are 404"
    _log(f"Leadterra stand-in on {standin.url} (Bearer {key_hint}; {unknown})")
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m guard.testing.leadterra [--host H] [--port P] [--api-key K] [--create-unknown]``."""
    parser = argparse.ArgumentParser(
        prog="python -m guard.testing.leadterra",
        description="Serve a local stand-in for the Leadterra API.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.api_key, args.create_unknown))
    except KeyboardInterrupt:
        pass
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stand-in's options (`guard standin` has the same)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port (default 8099)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LEADTERRA_API_KEY", DEFAULT_API_KEY),
        help=f"the accepted bearer key (default: $LEADTERRA_API_KEY, else {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--create-unknown",
        action="store_true",
        help="treat any unknown campaign id as an existing running campaign",
    )


if __name__ == "__main__":
    raise SystemExit(main())
