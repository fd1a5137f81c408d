"""Notifications end to end: a real broker, the Leadterra stand-in, and Slack-like and webhook
receivers served by aiohttp on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from test_service import (  # noqa: F401  (fixtures)
    RunGuard,
    Topics,
    audits,
    bad_campaign,
    committed_total,
    produce,
    producer,
    read_topic,
    run_guard,
    topics,
    until,
)

from guard.actions.notify import slack_message
from guard.testing.leadterra import LeadterraStandIn

pytestmark = pytest.mark.integration

RULE = """
notify:
  outcomes: [paused, failed]
  webhook:
    url: {env: TEAM_WEBHOOK_URL}
    secret: {file: SECRET_FILE}
groups:
  - name: bounces
    rules:
      - name: team-bounces
        description: Hard bounces over 4% of the last 150 sends.
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        last: 150
        threshold: 4%
        min_volume: 50
        action: pause
        severity: critical
"""


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 recording what it got; `status` is what it answers."""

    url: str = ""
    status: int = 200
    received: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()

    async def handle(request: web.Request) -> web.Response:
        got.received.append((time.time(), dict(request.headers), await request.read()))
        return web.Response(status=got.status, text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got.url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3tT0ken"
    yield got
    await runner.cleanup()


class TestSlack:
    async def test_the_slack_url_alone_tells_of_every_pause(
        self,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        receiver: Receiver,
    ) -> None:
        """GUARD_SLACK_WEBHOOK_URL and no rule change: a readable message after the pause, with a link."""
        standin.add_campaign("camp_bad")
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        guard = await run_guard(
            slack_webhook_url=SecretStr(receiver.url), notify_link="https://app.example/campaigns/{campaign_id}"
        )
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: len(receiver.received) == 1)

        text = json.loads(receiver.received[0][2])["text"]
        assert "Paused campaign `camp_bad`" in text
        # the shipped hard-bounce-rate is a cusum: its statistic against its alarm level, not a percentage
        assert re.search(
            r"Rule \*hard-bounce-rate\*: \d+\.\d\d vs threshold 10\.41 over cusum 2% vs 8% \(\d+ of \d+ since it rose\)",
            text,
        )
        assert "Outcome: paused" in text
        assert "<https://app.example/campaigns/camp_bad|Open the campaign>" in text
        assert receiver.received[0][0] >= standin.pause_requests()[0].received_at  # after the outcome
        assert guard.metrics.notifications.labels("slack", "sent")._value.get() == 1


class TestWebhook:
    async def test_a_rule_file_webhook_gets_the_audit_event_signed(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        receiver: Receiver,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The body is the `paused` audit event; X-Guard-Signature is its HMAC-SHA256 with the secret."""
        (tmp_path / "secret").write_text("whsec_team_1234\n")
        (tmp_path / "rules.yaml").write_text(RULE.replace("SECRET_FILE", str(tmp_path / "secret")))
        monkeypatch.setenv("TEAM_WEBHOOK_URL", receiver.url)
        standin.add_campaign("camp_bad")
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        await run_guard(rules=tmp_path / "rules.yaml")
        await until(lambda: len(receiver.received) == 1, timeout=20)

        _, headers, body = receiver.received[0]
        expected = hmac.new(b"whsec_team_1234", body, hashlib.sha256).hexdigest()
        assert headers["X-Guard-Signature"] == f"sha256={expected}"
        event = json.loads(body)
        paused = [e for e in audits(await read_topic(kafka_bootstrap, topics.audit, 2)) if e["outcome"] == "paused"]
        assert event == paused[0]
        assert headers["X-Guard-Event-Id"] == event["id"]


class TestFailingReceiver:
    async def test_a_failing_receiver_delays_no_pause_and_its_failure_is_audited(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        receiver: Receiver,
    ) -> None:
        """A receiver answering 503 is retried; meanwhile both campaigns are paused and every offset
        committed; in the end `notify_failed` is audited (no URL in it) and counted."""
        receiver.status = 503
        standin.add_campaign("camp_a")
        standin.add_campaign("camp_b")
        now = time.time() - 600
        values = bad_campaign("camp_a", now) + bad_campaign("camp_b", now)
        await produce(producer, topics.input, values)
        guard = await run_guard(slack_webhook_url=SecretStr(receiver.url), notify_deadline=4.0)
        await standin.wait_for_pauses(2, timeout=20)
        assert await committed_total(kafka_bootstrap, topics, expected=len(values)) == len(values)
        assert guard.metrics.notifications.labels("slack", "failed")._value.get() == 0  # still retrying

        records = await read_topic(kafka_bootstrap, topics.audit, expected=6, timeout=20)
        failed = [e for e in audits(records) if e["outcome"] == "notify_failed"]
        assert sorted(e["campaign_id"] for e in failed) == ["camp_a", "camp_b"]
        assert failed[0]["notification"]["channel"] == "slack:GUARD_SLACK_WEBHOOK_URL"
        assert failed[0]["notification"]["about"] == "paused"
        assert failed[0]["notification"]["attempts"] >= 2
        assert "s3cr3tT0ken" not in b"".join(r.value for r in records).decode()
        await until(lambda: guard.metrics.notifications.labels("slack", "failed")._value.get() == 2)


def test_slack_text_escapes_what_slack_would_read_as_markup() -> None:
    """A campaign id with `<`, `>` or `&` cannot make a link or a mention in the message."""
    from test_dispatch import pause_decision

    from guard.actions.audit import audit_event

    event = audit_event(pause_decision("camp_<!here>&"), "paused", decided_at=time.time(), dry_run=False)
    text = json.loads(slack_message(event, None))["text"]
    assert "camp_&lt;!here&gt;&amp;" in text and "<!here>" not in text
