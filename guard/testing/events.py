"""Builders for input records in Leadterra's webhook envelope, for tests and demos."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count

_ids = count(1)


def envelope(event: str, campaign_id: str, at: float, **data: object) -> bytes:
    """One record value: `{"event", "timestamp", "data": {"campaignId", ...}}` as JSON bytes."""
    timestamp = datetime.fromtimestamp(at, tz=UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": event, "timestamp": timestamp, "data": {"campaignId": campaign_id, **data}}).encode()


def sent(campaign_id: str, at: float, recipient: str = "lead@example.com") -> bytes:
    return envelope("message.sent", campaign_id, at, messageId=f"msg_{next(_ids)}", recipient=recipient, sequenceStep=1)


def bounced(campaign_id: str, at: float, bounce_type: str = "hard", reason: str = "550 5.1.1 user unknown") -> bytes:
    return envelope(
        "message.bounced", campaign_id, at, messageId=f"msg_{next(_ids)}", bounceType=bounce_type, bounceReason=reason
    )


def complained(campaign_id: str, at: float, recipient: str = "lead@gmail.com") -> bytes:
    return envelope("message.complained", campaign_id, at, messageId=f"msg_{next(_ids)}", recipient=recipient)


def started(campaign_id: str, at: float) -> bytes:
    return envelope("campaign.started", campaign_id, at)
