"""POST /v1/campaigns/{id}/pause, following the action contract in DESIGN.md.

200 is done (`paused`, or `draft` for a campaign that never ran); 400/404 are final; 401 is final
and means the guard can protect nothing; 429, 5xx, timeouts and connection errors are retried with
exponential backoff and full jitter, honouring Retry-After, until the deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay, wait_random_exponential

from guard.events import epoch_from_iso

# pausedAt this long before our first attempt means someone (a user, an earlier call) paused it.
ALREADY_PAUSED_TOLERANCE_SECONDS = 5.0
RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))

PauseOutcome = Literal["paused", "already_paused", "not_running", "failed"]


@dataclass(frozen=True, slots=True)
class PauseResult:
    outcome: PauseOutcome
    http_status: int | None
    attempts: int
    paused_at: str | None = None
    campaign_status: str | None = None
    error_code: str | None = None
    error: str | None = None
    answered_at: float = 0.0

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
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}", "Content-Type": "application/json"},
        )
        self._deadline = deadline
        self._jitter = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def pause(self, campaign_id: str, idempotency_key: str) -> PauseResult:
        """Pause one campaign; never raises for API or network trouble, it returns a failed result."""
        started = time.time()
        attempts, last_status, last_error = 0, None, "no attempt made"
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_before_delay(self._deadline),
            wait=self._wait,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        response = await self._client.post(
                            # one path segment, whatever the id holds: "a/../b" must not pause b
                            f"/v1/campaigns/{quote(campaign_id, safe='')}/pause",
                            headers={"Idempotency-Key": idempotency_key},
                        )
                    except httpx.TransportError as error:
                        last_status, last_error = None, f"{type(error).__name__}: {error}"
                        raise _Retryable(last_error) from None
                    last_status = response.status_code
                    if response.status_code in RETRYABLE_STATUSES:
                        last_error = f"HTTP {response.status_code} {_error_code(response) or ''}".strip()
                        raise _Retryable(last_error, response.status_code, _retry_after(response))
                    return _result(response, attempts, started)
        except _Retryable:
            pass
        return PauseResult(
            "failed",
            last_status,
            attempts,
            error_code="retry_deadline_exceeded",
            error=last_error,
            answered_at=time.time(),
        )

    def _wait(self, state: RetryCallState) -> float:
        wait = self._jitter(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


def _result(response: httpx.Response, attempts: int, started: float) -> PauseResult:
    now, status, code = time.time(), response.status_code, _error_code(response)
    if status != 200:
        return PauseResult(
            "failed", status, attempts, error_code=code or f"http_{status}", error=_text(response), answered_at=now
        )
    body = _json(response)
    campaign_status = body.get("status") if isinstance(body, dict) else None
    paused_at = body.get("pausedAt") if isinstance(body, dict) else None
    if campaign_status == "draft":
        return PauseResult("not_running", status, attempts, paused_at, campaign_status, answered_at=now)
    if campaign_status != "paused":
        return PauseResult(
            "failed", status, attempts, paused_at, campaign_status, "unexpected_response", _text(response), now
        )
    outcome = "already_paused" if _before(paused_at, started - ALREADY_PAUSED_TOLERANCE_SECONDS) else "paused"
    return PauseResult(outcome, status, attempts, paused_at, campaign_status, answered_at=now)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_code(response: httpx.Response) -> str | None:
    body = _json(response)
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    code = error.get("code") if isinstance(error, dict) else error
    return code if isinstance(code, str) else None


def _text(response: httpx.Response) -> str:
    return response.text[:500]


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
