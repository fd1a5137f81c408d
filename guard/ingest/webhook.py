"""A signed Leadterra webhook body -> the record the guard reads (pure).

Leadterra documents `campaignId` only inside `data.reply`, so the campaign comes from
`data.campaignId`, else `data.reply.campaignId`, else the webhook URL's `campaign` query parameter
(one webhook registered per campaign), and is written into `data.campaignId`, the guard's contract.
"""

from __future__ import annotations

from typing import Any

import msgspec

from guard.errors import GuardError


class UnusableWebhook(GuardError):
    """A signed body the guard cannot use (a retry would not help); dead-lettered with this reason."""


def webhook_record(body: bytes, campaign_param: str | None) -> tuple[str, bytes]:
    """(campaign id, record value); the body's own bytes when it already carries data.campaignId."""
    try:
        envelope = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise UnusableWebhook(f"not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise UnusableWebhook("not a webhook envelope: the JSON is not an object")
    if not isinstance(envelope.get("event"), str) or not envelope["event"]:
        raise UnusableWebhook("not a webhook envelope: no event name")
    data = envelope.get("data")
    if data is None:
        data = envelope["data"] = {}
    if not isinstance(data, dict):
        raise UnusableWebhook("not a webhook envelope: data is not an object")
    if _usable(own := data.get("campaignId")):
        return own, body
    reply = data.get("reply")
    campaign_id = reply.get("campaignId") if isinstance(reply, dict) else None
    if not _usable(campaign_id):
        campaign_id = campaign_param.strip() if campaign_param else None
    if not campaign_id:
        raise UnusableWebhook(
            "no campaign id: neither data.campaignId, data.reply.campaignId nor the URL's ?campaign= parameter"
        )
    data["campaignId"] = campaign_id
    return campaign_id, msgspec.json.encode(envelope)


def _usable(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
