"""A signed Leadterra webhook body -> the record the guard reads (pure).

Leadterra documents `campaignId` only inside `data.reply`, so the campaign comes from
`data.campaignId`, else `data.reply.campaignId`, else the webhook URL's `campaign` query parameter
(one webhook registered per campaign), and is written into `data.campaignId`, the guard's contract.

Only the envelope and `data` are decoded; every other value is copied byte for byte (msgspec.Raw),
so the record is never larger than the body plus the campaign id it gains (a number such as `1e15`
re-encoded would grow fourfold).
"""

from __future__ import annotations

from typing import Any

import msgspec

from guard.contracts.events import MAX_ID_LENGTH
from guard.errors import GuardError

_Object = dict[str, msgspec.Raw]
TOO_DEEP = "not JSON the guard can read: nested too deep"


class UnusableWebhook(GuardError):
    """A signed body the guard cannot use (a retry would not help); dead-lettered with this reason."""


def webhook_record(body: bytes, campaign_param: str | None) -> tuple[str, bytes]:
    """(campaign id, record value); the body's own bytes when it already carries data.campaignId."""
    try:
        envelope = msgspec.json.decode(body, type=_Object)
    except msgspec.ValidationError:
        raise UnusableWebhook("not a webhook envelope: the JSON is not an object") from None
    except msgspec.DecodeError as error:
        raise UnusableWebhook(f"not JSON: {error}") from None
    except RecursionError:  # msgspec's answer to nesting deeper than it decodes
        raise UnusableWebhook(TOO_DEEP) from None
    event = _value(envelope.get("event"))
    if not isinstance(event, str) or not event:
        raise UnusableWebhook("not a webhook envelope: no event name")
    raw_data = envelope.get("data")
    data = {} if raw_data is None else _value(raw_data, _Object | None)
    if data is None and bytes(raw_data or b"").strip() != b"null":
        raise UnusableWebhook("not a webhook envelope: data is not an object")
    data = data or {}
    if _usable(own := _value(data.get("campaignId"))):
        return own, body
    reply = _value(data.get("reply"))
    campaign_id = reply.get("campaignId") if isinstance(reply, dict) else None
    if not _usable(campaign_id):
        campaign_id = campaign_param.strip() if campaign_param else None
    if not campaign_id:
        raise UnusableWebhook(
            "no campaign id: neither data.campaignId, data.reply.campaignId nor the URL's ?campaign= parameter"
        )
    _bounded(campaign_id)
    data["campaignId"] = msgspec.Raw(msgspec.json.encode(campaign_id))
    envelope["data"] = msgspec.Raw(msgspec.json.encode(data))
    return campaign_id, msgspec.json.encode(envelope)


def _value(raw: msgspec.Raw | None, kind: Any = Any) -> Any:
    """A raw JSON value decoded as `kind`; None when absent or not of that kind."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError:
        return None
    except RecursionError:
        raise UnusableWebhook(TOO_DEEP) from None


def _usable(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and _bounded(value)


def _bounded(campaign_id: str) -> bool:
    if len(campaign_id) > MAX_ID_LENGTH:
        raise UnusableWebhook(f"campaign id longer than {MAX_ID_LENGTH} characters")
    return True
