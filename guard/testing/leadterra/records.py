"""The stand-in's records: what it was asked, the campaigns it holds, the faults it will inject."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from aiohttp import web

CampaignStatus = Literal["draft", "running", "paused"]
"""The only three campaign statuses Leadterra documents."""

DEFAULT_API_KEY = "sk_test_standin"
"""The key the stand-in accepts unless told otherwise."""

DEFAULT_LEADS = 100
"""Enrolled leads of a campaign seeded through the Python API (so it can be started)."""

STATUSES: tuple[str, ...] = get_args(CampaignStatus)


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


WORKSPACE = web.RequestKey("workspace", str)  # the workspace of the request's key (None: the default key)


@dataclass
class Campaign:
    id: str
    name: str
    status: CampaignStatus
    stats: CampaignStats
    paused_at: str | None = None
    started_at: str | None = None

    def start(self, clock_offset: float = 0.0) -> None:
        """draft/paused -> running (running stays as it is); `clock_offset`: how far Leadterra's clock runs ahead."""
        if self.status != "running":
            self.status = "running"
            self.started_at = now_iso(clock_offset)
            self.paused_at = None

    def pause(self, clock_offset: float = 0.0) -> None:
        """running -> paused (paused and draft stay as they are)."""
        if self.status == "running":
            self.status = "paused"
            self.paused_at = now_iso(clock_offset)


@dataclass(frozen=True)
class Fault:
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
        return error_response(self.status, self.code, self.message, self.headers)


class ApiError(Exception):
    """Raised inside a handler; becomes a documented error response."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers)


# --------------------------------------------------------------------------- helpers


def now_iso(clock_offset: float = 0.0) -> str:
    """Now plus `clock_offset` seconds, ISO 8601 UTC with a ``Z`` (milliseconds): ``2025-01-15T14:22:00.123Z``."""
    now = datetime.now(UTC) + timedelta(seconds=clock_offset)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_campaign_id() -> str:
    """An id shaped like ``camp_01HZA1TPNQ8RD4KF``."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "camp_" + "".join(secrets.choice(alphabet) for _ in range(16))


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"`` (fractions are a test convenience)."""
    return format(seconds, "f").rstrip("0").rstrip(".") or "0"


def headers_of(request: web.BaseRequest) -> dict[str, str]:
    """Request headers as a dict with lower-case names; repeated headers are comma-joined."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def route_error(exc: web.HTTPException) -> web.Response:
    """Unknown path (404) or wrong method (405), in the documented error shape."""
    code = "method_not_allowed" if exc.status == 405 else "not_found"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, code, exc.reason, headers)


def check_sequence_steps(steps: Any) -> None:
    ok = isinstance(steps, list) and all(
        isinstance(step, dict)
        and set(step) <= {"subject", "bodyHtml"}
        and all(isinstance(value, str) for value in step.values())
        for step in steps
    )
    if not ok:
        raise ApiError(400, "invalid_request", "sequenceSteps must be a list of {subject, bodyHtml}")


# --------------------------------------------------------------------------- the stand-in
