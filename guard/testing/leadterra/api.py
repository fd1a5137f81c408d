"""The Leadterra API as documented (shared/leadterra-api.md): auth, campaigns, status model, errors."""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

from aiohttp import web

from guard.testing.leadterra.records import (
    DEFAULT_API_KEY,
    DEFAULT_LEADS,
    STATUSES,
    WORKSPACE,
    ApiError,
    Campaign,
    CampaignStats,
    CampaignStatus,
    check_sequence_steps,
    new_campaign_id,
)


class LeadterraApi:
    """The documented behaviour: campaigns per workspace key, their status model, the endpoints."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, create_unknown: bool = False) -> None:
        self.api_key = api_key
        self.create_unknown = create_unknown
        self.clock_offset = 0.0  # seconds Leadterra's clock runs ahead of this machine's (negative: behind)
        self._campaigns: dict[str, Campaign] = {}
        # workspaces: one key each (the default `api_key` is the workspace None)
        self._workspace_keys: dict[str, str] = {}  # key -> workspace id
        self._campaign_workspace: dict[str, str | None] = {}

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
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        if campaign_id in self._campaigns:
            raise ValueError(f"campaign {campaign_id!r} already exists")
        self._campaign_workspace[campaign_id] = workspace
        campaign = Campaign(
            id=campaign_id,
            name=name or campaign_id,
            status="draft",
            stats=CampaignStats(total_enrolled=leads),
        )
        if status != "draft":
            campaign.start(self.clock_offset)
        if status == "paused":
            campaign.pause(self.clock_offset)
        self._campaigns[campaign_id] = campaign

    def status(self, campaign_id: str) -> CampaignStatus:
        """The campaign's current status (``KeyError`` if unknown)."""
        return self._campaign(campaign_id).status

    def resume(self, campaign_id: str) -> None:
        """What a user does in the UI: paused -> running (running stays running)."""
        campaign = self._campaign(campaign_id)
        if campaign.status == "draft":
            raise ValueError(f"campaign {campaign_id!r} is a draft; there is nothing to resume")
        campaign.start(self.clock_offset)

    def set_stats(self, campaign_id: str, **counters: float) -> CampaignStats:
        """Set stats counters by their ``CampaignStats`` names, e.g. ``bounced=3``; returns them all."""
        campaign = self._campaign(campaign_id)
        campaign.stats = dataclasses.replace(campaign.stats, **counters)
        return campaign.stats

    @property
    def campaigns(self) -> dict[str, CampaignStatus]:
        """A snapshot: campaign id -> status."""
        return {campaign_id: c.status for campaign_id, c in self._campaigns.items()}

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and secrets.compare_digest(token.encode(), self.api_key.encode())
        workspace = next(
            (ws for key, ws in self._workspace_keys.items() if secrets.compare_digest(token.encode(), key.encode())),
            None,
        )
        request[WORKSPACE] = workspace
        if not valid and (scheme.lower() != "bearer" or workspace is None):
            raise ApiError(
                401,
                "authentication_failed",
                "Authorization header missing, malformed, or key invalid",
                {"WWW-Authenticate": "Bearer"},
            )

    def _campaign(self, campaign_id: str) -> Campaign:
        """The campaign, created as ``running`` if unknown and ``create_unknown``; else KeyError."""
        if campaign_id not in self._campaigns and self.create_unknown:
            self.add_campaign(campaign_id, status="running")
        return self._campaigns[campaign_id]

    def _found(self, request: web.Request) -> Campaign:
        campaign_id = request.match_info["campaign_id"]
        try:
            campaign = self._campaign(campaign_id)
            if self._campaign_workspace.get(campaign_id) != request.get(WORKSPACE):
                raise KeyError(campaign_id)  # one key sees its own workspace only
            return campaign
        except KeyError:
            raise ApiError(404, "campaign_not_found", f"no campaign {campaign_id!r} in this workspace") from None

    @staticmethod
    async def _reject_parameters(request: web.Request) -> None:
        if request.query_string or await request.read():
            raise ApiError(400, "invalid_request", "this endpoint takes no body and no parameters")

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            raise ApiError(400, "invalid_request", "the body must be a JSON object") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        return payload

    # ----------------------------------------------------------------- endpoints

    async def _create(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns: a new draft (no leads enrolled yet)."""
        if request.query_string:
            raise ApiError(400, "invalid_request", "unexpected query parameters")
        payload = await self._json_object(request)
        unexpected = sorted(set(payload) - {"name", "sequenceSteps"})
        if unexpected:
            raise ApiError(400, "invalid_request", f"unexpected parameters: {unexpected}")
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "invalid_request", "name is required")
        check_sequence_steps(payload.get("sequenceSteps", []))
        campaign_id = new_campaign_id()
        self.add_campaign(campaign_id, status="draft", name=name, leads=0)
        return web.json_response({"id": campaign_id, "name": name, "status": "draft"})

    async def _pause(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns/{id}/pause: running -> paused; paused and draft are no-ops."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        campaign.pause(self.clock_offset)
        return web.json_response({"id": campaign.id, "status": campaign.status, "pausedAt": campaign.paused_at})

    async def _start(self, request: web.Request) -> web.Response:
        """POST /v1/campaigns/{id}/start: draft/paused -> running; running is a no-op."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        if campaign.status == "draft" and campaign.stats.total_enrolled == 0:
            raise ApiError(400, "no_leads_enrolled", "the campaign has no enrolled leads")
        campaign.start(self.clock_offset)
        return web.json_response({"id": campaign.id, "status": campaign.status, "startedAt": campaign.started_at})

    async def _stats(self, request: web.Request) -> web.Response:
        """GET /v1/campaigns/{id}/stats: the counters set with ``set_stats``."""
        await self._reject_parameters(request)
        campaign = self._found(request)
        return web.json_response(campaign.stats.to_json(campaign.id))
