"""POST /v1/campaigns/{id}/pause, following the action contract in DESIGN.md.

200 is done (`paused`, or `draft` for a campaign that never ran); 400/404 are final; 429, 5xx,
timeouts, connection errors and a 200 that does not say the campaign is paused or a draft (a proxy's
page, a cut body: a pause is safe to repeat) are retried with exponential backoff and full jitter,
honouring Retry-After, until the deadline: a wait that would pass it is cut short, so the last attempt
is made at the deadline. 401 means the key was rejected: a key read from a file (a mounted
Secret, rewritten in place when the key is rotated) is read again (off the event loop, see
guard.actions.keyfiles), and a new one there is used at once, for this call and the next; otherwise
401 is final and means this key protects nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic import SecretStr, model_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_random_exponential

from guard import redact
from guard.actions.responses import send_capped
from guard.contracts.audit import Result
from guard.contracts.events import epoch_from_iso

# pausedAt this long before the decision's first call, by our clock and by Leadterra's, means someone else paused it.
ALREADY_PAUSED_TOLERANCE_SECONDS = 5.0
MAX_CLOCK_SKEW_SECONDS = 300.0
RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
STOPPED = "stopped"  # the error code of a call its caller stopped between attempts (an exemption written meanwhile)
# Values taken from a response into the audit (status, pausedAt, error code) look like this; anything
# else, e.g. a body echoing the request's headers, is not copied.
_TOKEN = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
# Path segments that HTTP clients and servers remove or resolve ("a/.." is "/"): never a campaign.
_DOT_SEGMENTS = frozenset({".", ".."})

log = structlog.get_logger("guard.actions.pause")

# What the key is now, read again from its file after a 401; None: no new key (unreadable, or gone).
KeySource = Callable[[], Awaitable[SecretStr | None]]

PauseOutcome = Literal["paused", "already_paused", "not_running", "failed"]


class PauseResult(Result):
    """The audited result of a call, with what the audit event carries elsewhere: the outcome (the
    event's own) and when the answer came (its timings). As an audit event's `result` it is written
    as a `Result`: these two fields stay off the wire."""

    outcome: PauseOutcome
    answered_at: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _unanswered_are_null(cls, fields: dict[str, object]) -> dict[str, object]:
        """What the answer did not give (no status without an answer, no error on success) is null."""
        return {**dict.fromkeys(Result.model_fields, None), **fields}

    @property
    def authentication_failed(self) -> bool:
        return self.http_status == 401


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class PauseClient:
    """Pauses campaigns. One instance per process; calls for different campaigns run concurrently."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 10.0,
        deadline: float = 300.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        key_source: KeySource | None = None,
        workspace: str | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers={"Content-Type": "application/json"}
        )
        self._use(api_key)
        self._key_source = key_source  # the key as its file holds it now (None: a key that cannot change)
        self._workspace = workspace  # whose key this is, for logs
        self._deadline, self._timeout = deadline, timeout
        self._jitter = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)

    def _use(self, key: SecretStr) -> None:
        self._key = key.get_secret_value()
        redact.register(self._key)  # whatever echoes it (an error, a proxy) is masked

    async def _untried_key(self, tried: set[str]) -> bool:
        """After a 401: whether a key this call has not sent yet is in use now, switched by another call
        meanwhile or read from the key's file (then it is in use for every call)."""
        if self._key not in tried:
            return True
        if self._key_source is None:
            return False
        key = await self._key_source()  # off the event loop, one read shared by the calls asking together
        if self._key not in tried:  # switched by another call while this one waited
            return True
        if key is None or key.get_secret_value() in tried:
            return False
        self._use(key)
        log.info("the API key was rejected and its file holds a new one; using it", workspace=self._workspace)
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    async def pause(
        self,
        campaign_id: str,
        idempotency_key: str,
        since: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> PauseResult:
        """Pause one campaign; never raises for API or network trouble, it returns a failed result. `since`: when
        the decision's first call was made (an earlier process's, for a decision resumed after a restart; default
        now): a campaign Leadterra says was paused before then was paused by someone else (`already_paused`).
        `stop`, asked before each attempt: true ends the call there, a failed result with error code STOPPED."""
        started = time.time()
        since = started if since is None else min(since, started)
        if campaign_id in _DOT_SEGMENTS:
            # quote() keeps dots, and a dot segment is resolved away: ".." would POST /v1/pause
            return PauseResult(
                outcome="failed",
                attempts=0,
                error_code="invalid_campaign_id",
                error="a campaign id of only dots cannot be a path segment; no call made",
                answered_at=time.time(),
            )
        # one path segment, whatever the id holds: "a/../b" must not pause b
        path = f"/v1/campaigns/{quote(campaign_id, safe='')}/pause"
        attempts, last_status, last_error = 0, None, "no attempt made"
        tried: set[str] = set()  # keys this call sent: after a 401, one not among them is tried at once
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_delay(self._deadline),
            wait=self._wait,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if stop is not None and stop():
                        return PauseResult(
                            outcome="failed",
                            http_status=last_status,
                            attempts=attempts,
                            error_code=STOPPED,
                            error=last_error,
                            answered_at=time.time(),
                        )
                    while True:  # again at once only after a 401 with a key since replaced
                        attempts += 1
                        key = self._key
                        tried.add(key)
                        try:
                            async with asyncio.timeout(self._timeout):  # the whole attempt, a trickling body too
                                response, body = await self._post(path, key, idempotency_key)
                        except (httpx.TransportError, TimeoutError) as error:
                            last_status, last_error = None, f"{type(error).__name__}: {error}"
                            raise _Retryable(last_error) from None
                        last_status = response.status_code
                        if response.status_code in RETRYABLE_STATUSES:
                            last_error = f"HTTP {response.status_code} {_error_code(body) or ''}".strip()
                            raise _Retryable(last_error, response.status_code, _retry_after(response))
                        if response.status_code == 200 and (unreadable := _unreadable(body, campaign_id)):
                            last_error = f"HTTP 200: {unreadable}"
                            raise _Retryable(last_error, 200)
                        if response.status_code != 401 or not await self._untried_key(tried):
                            return _result(response, body, attempts, since)
        except _Retryable:
            pass
        return PauseResult(
            outcome="failed",
            http_status=last_status,
            attempts=attempts,
            error_code="retry_deadline_exceeded",
            error=last_error,
            answered_at=time.time(),
        )

    async def _post(self, path: str, key: str, idempotency_key: str) -> tuple[httpx.Response, bytes]:
        """The response and at most 64 KiB of its body (a proxy's error page, or worse)."""
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
        return await send_capped(self._client, "POST", path, headers=headers)

    def _wait(self, state: RetryCallState) -> float:
        """The backoff, or the Retry-After asked for if longer; never past the deadline (stop_after_delay then
        ends the retries after one last attempt there): a Retry-After beyond it must not leave the pause untried."""
        wait = self._jitter(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return max(0.0, min(wait, self._deadline - (state.seconds_since_start or 0.0)))


def _unreadable(body: bytes, campaign_id: str) -> str | None:
    """Why a 200 does not answer the pause (retried: a proxy's page, a cut body, another campaign); None if it does."""
    answer = _json(body)
    if not isinstance(answer, dict):
        return "the answer is not a JSON object"
    if answer.get("status") not in ("paused", "draft"):
        return "the answer does not say the campaign is paused" if "status" in answer else "the answer has no status"
    if "id" in answer and answer["id"] != campaign_id:
        return "the answer is about another campaign"
    return None


def _result(response: httpx.Response, body: bytes, attempts: int, since: float) -> PauseResult:
    now, status = time.time(), response.status_code
    if status != 200:
        code = _error_code(body) or ("authentication_failed" if status == 401 else None)
        return PauseResult(
            outcome="failed",
            http_status=status,
            attempts=attempts,
            error_code=code or f"http_{status}",
            error=f"HTTP {status}",
            answered_at=now,
        )
    answer = _json(body)
    campaign_status = _token(answer.get("status")) if isinstance(answer, dict) else None
    paused_at = _token(answer.get("pausedAt")) if isinstance(answer, dict) else None
    answered = {"http_status": status, "attempts": attempts, "paused_at": paused_at, "campaign_status": campaign_status}
    if campaign_status == "draft":
        return PauseResult(outcome="not_running", **answered, answered_at=now)
    # before the decision's first call by our clock and by Leadterra's (its Date header: the clocks may differ by
    # seconds, and a proxy may write its own): someone else paused it; a doubt is the guard's own pause
    first_call = _server_time(response, now) - (now - since)
    earlier = min(since, first_call) - ALREADY_PAUSED_TOLERANCE_SECONDS
    outcome = "already_paused" if _before(paused_at, earlier) else "paused"
    return PauseResult(outcome=outcome, **answered, answered_at=now)


def _server_time(response: httpx.Response, now: float) -> float:
    """Leadterra's clock when it answered (the Date header, to the second), or ours without a usable one (none, or
    one further from ours than MAX_CLOCK_SKEW_SECONDS: a clock that wrong is not Leadterra's to trust)."""
    try:
        server = parsedate_to_datetime(response.headers["Date"]).timestamp() + 0.5  # the middle of its second
    except (KeyError, TypeError, ValueError, OverflowError):
        return now
    return server if abs(server - now) <= MAX_CLOCK_SKEW_SECONDS else now


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_code(body: bytes) -> str | None:
    answer = _json(body)
    if not isinstance(answer, dict):
        return None
    error = answer.get("error", answer)
    return _token(error.get("code") if isinstance(error, dict) else error)


def _token(value: object) -> str | None:
    """A short identifier-like string from a response, or None: free text is never copied."""
    return value if isinstance(value, str) and _TOKEN.fullmatch(value) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _before(timestamp: str | None, moment: float) -> bool:
    epoch = epoch_from_iso(timestamp) if isinstance(timestamp, str) else None
    return epoch is not None and epoch < moment
