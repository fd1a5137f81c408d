"""A signed Leadterra webhook body -> the record the guard reads (pure).

Leadterra documents `campaignId` only inside `data.reply`, so the campaign comes from
`data.campaignId`, else `data.reply.campaignId`, else the campaign the body's signing secret is bound
to (one webhook, with its own secret, registered per campaign), and is written into
`data.campaignId`, the guard's contract. The URL's `?campaign=` is not signed: it only picks which
campaign's secret to try (signature.py), and never attributes a body by itself. A body signed with a
campaign's secret that names another campaign is unusable: that secret cannot speak for it.

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


def webhook_record(body: bytes, bound_campaign: str | None) -> tuple[str, bytes]:
    """(campaign id, record value); the body's own bytes when it already carries data.campaignId.
    `bound_campaign`: the campaign the signing secret is bound to, None for an account secret."""
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
    in_data = _value(data.get("campaignId"))
    named = in_data if _usable(in_data) else _reply_campaign(data)
    if named is not None and bound_campaign is not None and named != bound_campaign:
        raise UnusableWebhook(
            f"the body names campaign {named[:80]!r}, but it is signed with the secret of campaign "
            f"{bound_campaign[:80]!r}, which speaks for that campaign only"
        )
    if named is not None and named == in_data:
        return named, body
    campaign_id = named or bound_campaign
    if not campaign_id and (kind := _not_text(data)) is not None:
        raise UnusableWebhook(f"{kind}: campaign ids are strings")
    if not campaign_id:
        raise UnusableWebhook(
            "no campaign id: neither data.campaignId nor data.reply.campaignId, and not signed with a campaign's "
            "own secret (the URL's ?campaign= is not signed: it counts only with that campaign's secret, "
            "LEADTERRA_WEBHOOK_CAMPAIGN_SECRETS_FILE)"
        )
    _bounded(campaign_id)
    data["campaignId"] = msgspec.Raw(msgspec.json.encode(campaign_id))
    envelope["data"] = msgspec.Raw(msgspec.json.encode(data))
    return campaign_id, msgspec.json.encode(envelope)


def _not_text(data: _Object) -> str | None:
    """Which campaign id field holds something other than a string, as `data.campaignId is a number`; None if none."""
    reply = _value(data.get("reply"))
    fields = {
        "data.campaignId": _value(data.get("campaignId")),
        "data.reply.campaignId": reply.get("campaignId") if isinstance(reply, dict) else None,
    }
    for field, value in fields.items():
        if value is not None and not isinstance(value, str):
            return f"{field} is {'a number' if type(value) in (int, float) else 'not a string'}"
    return None


def _reply_campaign(data: _Object) -> str | None:
    reply = _value(data.get("reply"))
    campaign_id = reply.get("campaignId") if isinstance(reply, dict) else None
    return campaign_id if _usable(campaign_id) else None


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
