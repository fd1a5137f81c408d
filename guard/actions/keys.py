"""Which key pauses a campaign, and what its answers say about the keys: the one place that calls the pause API.

A campaign is paused with its workspace's key when the keys file has one, else with the single key. A 401 marks
that key rejected (the guard's health says so: all keys rejected means nothing is protected); a 200 with a key that
was rejected means it was rotated and works again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from guard.actions.pause import PauseClient, PauseResult
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.actions")


class PauseKeys:
    def __init__(
        self,
        default: PauseClient | None,
        by_workspace: dict[str, PauseClient],
        health: Health,
        metrics: Metrics,
    ) -> None:
        self._default, self._by_workspace, self._health, self._metrics = default, by_workspace, health, metrics
        self._keys = len(by_workspace) + (default is not None)

    @property
    def none(self) -> bool:
        """No key at all: the guard can only run dry."""
        return self._default is None and not self._by_workspace

    def _client_for(self, workspace: str | None) -> PauseClient | None:
        """The workspace's own key when the keys file has it, else the single key."""
        return self._by_workspace.get(workspace, self._default) if workspace is not None else self._default

    async def pause(
        self,
        campaign_id: str,
        workspace: str | None,
        idempotency_key: str,
        since: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> PauseResult:
        """The call's audited result (`since`, `stop`: PauseClient.pause); never raises (a missing key or a bug is a
        `failed` result saying so)."""
        client = self._client_for(workspace)
        if client is None:
            log.error("no API key for the campaign's workspace", campaign_id=campaign_id, workspace=workspace)
            self._health.no_key(workspace)
            return PauseResult(
                outcome="failed",
                attempts=0,
                error_code="no_api_key",
                error=f"no API key for workspace {workspace or '(none named)'}; no call made",
                answered_at=time.time(),
            )
        try:
            result = await client.pause(campaign_id, idempotency_key=idempotency_key, since=since, stop=stop)
        except Exception as error:  # a bug must still leave an audited outcome, never a silent task
            log.exception("pause call crashed", campaign_id=campaign_id, decision_id=idempotency_key)
            return PauseResult(
                outcome="failed", attempts=1, error_code="internal_error", error=repr(error), answered_at=time.time()
            )
        self._learn(result, workspace if client is not self._default else None, campaign_id)
        return result

    def _learn(self, result: PauseResult, key_of: str | None, campaign_id: str) -> None:
        """What the answer says of the key used (`key_of`: its workspace; None: the single key)."""
        if result.http_status == 200 and key_of in self._health.rejected:  # a rotated key works
            self._health.authenticated(key_of)
            self._metrics.auth_failed.set(0)
            if key_of is not None:
                self._metrics.workspace_auth_failed.labels(key_of).set(0)
        if result.authentication_failed:
            self._health.authentication_failed(key_of, self._keys)
            if self._health.auth_failed:
                self._metrics.auth_failed.set(1)
            if key_of is not None:
                self._metrics.workspace_auth_failed.labels(key_of).set(1)
            log.error(
                "Leadterra rejected the API key: campaigns of this workspace cannot be paused",
                campaign_id=campaign_id,
                workspace=key_of,
            )
