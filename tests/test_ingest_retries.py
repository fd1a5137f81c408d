"""A webhook Leadterra retries hours later is counted once by the guard (its dedupe horizon)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from guard.contracts.events import decode
from guard.engine import Engine
from guard.ingest.webhook import webhook_record
from guard.rules import Rule, RuleSet
from guard.runtime.settings import GuardSettings

T0, MINUTE, HOUR = 1_767_225_600.0, 60.0, 3600.0
BOUNCES_PER_DAY = Rule.model_validate(
    {"name": "bounces", "description": "bounces over a day", "count": "bounced", "window": "24h", "threshold": 1000}
)


def delivery(event: str, at: float, message_id: str) -> bytes:
    """What Leadterra POSTs (no data.campaignId; one webhook per campaign) -> the record `guard ingest` produces."""
    stamp = datetime.fromtimestamp(at, tz=UTC).isoformat()
    body = json.dumps({"event": event, "timestamp": stamp, "data": {"messageId": message_id}}).encode()
    return webhook_record(body, "camp_retry")[1]


@pytest.mark.parametrize("retried_after", [8 * HOUR, 10 * HOUR + 36 * MINUTE], ids=["8h", "last-retry-10h36m"])
def test_a_delivery_retried_hours_later_is_counted_once(retried_after: float) -> None:
    """The campaign goes on sending while Leadterra retries a bounce it thinks undelivered; the retry
    carries the original body, so its event time is the first delivery's, and it counts once."""
    engine = Engine(RuleSet(rules=(BOUNCES_PER_DAY,)), dedupe_horizon=GuardSettings().dedupe_horizon)
    engine.process(decode(delivery("message.bounced", T0, "msg_b1"), T0))
    for minute in range(0, int(retried_after / MINUTE) + 10, 10):  # a send every 10 minutes
        at = T0 + minute * MINUTE
        engine.process(decode(delivery("message.sent", at, f"msg_s{minute}"), at))
    retry_arrives = T0 + retried_after
    engine.process(decode(delivery("message.bounced", T0, "msg_b1"), retry_arrives))
    assert engine.measure("camp_retry")["bounces"].numerator == 1
    assert engine.stats.duplicates == 1
