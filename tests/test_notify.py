"""Notifications end to end (a real broker, the Leadterra stand-in, and Slack-like and webhook
receivers served by aiohttp on 127.0.0.1), and the notifier alone against such receivers: nothing a
link, a receiver or a bug does reaches the decision that asked for a message."""

from __future__ import annotations

import asyncio
import dataclasses
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
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from test_cli_run import RULES, free_port, run_cli
from test_dispatch import pause_decision
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

from guard.actions.audit import audit_event
from guard.actions.notify import NOTIFIER, Notifier, slack_message
from guard.contracts.audit import AuditEvent
from guard.engine import Decision
from guard.rules import RuleFileError, parse_rules
from guard.telemetry.metrics import Metrics
from guard.testing.leadterra import LeadterraStandIn

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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
    event = audit_event(pause_decision("camp_<!here>&"), "paused", decided_at=time.time(), dry_run=False)
    text = json.loads(slack_message(event, None))["text"]
    assert "camp_&lt;!here&gt;&amp;" in text and "<!here>" not in text


DECISION: Decision = pause_decision("camp_total")
ALERT_RULES = """
notify:
  outcomes: OUTCOMES
  slack: {url: {env: TEAM_SLACK_URL}}
groups:
  - name: g
    rules:
      - name: watched
        description: watched only
        count: complained
        window: 1h
        threshold: 1
        action: alert
"""
PAUSED = audit_event(DECISION, "paused", decided_at=time.time(), dry_run=False)

# Links a setting or a rule file may not give: each was accepted before, and each runs more of
# str.format than filling in a field (a 2 GB padding, a repr, an attribute, an index), or is no URL.
WRONG_LINKS = [
    pytest.param("https://app.example/c/{campaign_id:>2000000000}", "{campaign_id:>2000000000}", id="format-spec"),
    pytest.param("https://app.example/c/{campaign_id!r}", "{campaign_id!r}", id="conversion"),
    pytest.param("https://app.example/c/{rule.__class__}", "{rule.__class__}", id="attribute"),
    pytest.param("https://app.example/c/{rule[0]}", "{rule[0]}", id="index"),
    pytest.param("/campaigns/{campaign_id}", "https://", id="not-a-url"),
    pytest.param("https://app.example/c/{campaign_id}|<!here>", "'|'", id="slack-markup"),
]


class TestLinks:
    """A link is checked where it is given: a rule file, or GUARD_NOTIFY_LINK at start-up."""

    @pytest.mark.parametrize(("link", "named"), WRONG_LINKS)
    def test_a_rule_file_with_a_wrong_link_is_refused_saying_why(self, link: str, named: str) -> None:
        text = (
            f"notify:\n  slack:\n    url: {{env: TEAM_SLACK_URL}}\n    link: '{link}'\n" + RULE[RULE.index("groups:") :]
        )
        with pytest.raises(RuleFileError) as raised:
            parse_rules([("team.yaml", text)])
        [problem] = raised.value.problems
        assert problem.startswith("team.yaml:4:") and "link" in problem and named in problem, problem

    @pytest.mark.parametrize(
        ("link", "named"),
        [pytest.param("https://app.example/c/{campaign}", "{campaign}", id="typo"), *WRONG_LINKS],
    )
    async def test_guard_run_refuses_a_wrong_link_at_start_up(self, link: str, named: str) -> None:
        """Exit 2 with one line naming GUARD_NOTIFY_LINK, as for every wrong setting, before any
        connection (the broker here does not exist: reaching for it would be another error)."""
        env = {
            "GUARD_NOTIFY_LINK": link,
            "GUARD_RULES": str(RULES),
            "GUARD_HTTP_PORT": "0",
            "GUARD_KAFKA_CONNECT_TIMEOUT": "1",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "LEADTERRA_API_KEY": "sk_live_notify_link_test",
        }
        code, _, err = await run_cli("run", env=env)
        assert code == 2, err
        [line] = [line for line in err.splitlines() if "GUARD_NOTIFY_LINK" in line]
        assert named in line and "Traceback" not in err

    @settings(max_examples=300, deadline=None)
    @given(link=st.one_of(st.text(max_size=80), st.text(max_size=40).map(lambda tail: "https://app.example/" + tail)))
    def test_a_slack_message_is_made_whatever_the_link(self, link: str) -> None:
        """slack_message is total: a link that is not valid is left out, never an exception."""
        text = json.loads(slack_message(PAUSED, link))["text"]
        assert text.startswith(":octagonal_sign: Paused campaign `camp_total`")


@dataclass
class Endpoint:
    """A receiver on 127.0.0.1 answering 200 with a body of `body_size` bytes, sent as fast as taken."""

    body_size: int = 0
    url: str = ""
    requests: list[bytes] = field(default_factory=list)
    body_bytes_sent: int = 0
    answered: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    got = Endpoint()
    chunk = b"x" * 65536

    async def handle(request: web.Request) -> web.StreamResponse:
        got.requests.append(await request.read())
        response = web.StreamResponse(status=200)
        response.content_length = got.body_size
        await response.prepare(request)
        try:
            while got.body_bytes_sent < got.body_size:
                size = min(len(chunk), got.body_size - got.body_bytes_sent)
                await response.write(chunk[:size])
                got.body_bytes_sent += size
        except (ConnectionError, RuntimeError):  # the client hung up: what it read is what was sent
            pass
        finally:
            got.answered.set()
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got.url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3tT0ken"
    yield got
    await runner.cleanup()


def notifier(endpoint: Endpoint, published: list[AuditEvent], **kwargs: object) -> tuple[Notifier, Metrics]:
    async def publish(event: AuditEvent) -> None:
        published.append(event)

    metrics = Metrics()
    options: dict = {"global_slack_url": SecretStr(endpoint.url), "deadline": 5.0, "backoff_initial": 0.01, **kwargs}
    return Notifier(publish, metrics, **options), metrics


class TestNotifier:
    """The notifier alone, against a receiver on 127.0.0.1: no broker needed."""

    async def test_an_endless_answer_is_not_read_and_the_message_counts_as_sent(self, endpoint: Endpoint) -> None:
        """A receiver answering 200 with a 100 MB body: the status is the answer, the body is not read
        (the server can write only what the sockets buffer), the message is counted as sent."""
        endpoint.body_size = 100 * 1024 * 1024
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published)
        notify.notify(DECISION, PAUSED)
        await notify.aclose(grace=20)
        await asyncio.wait_for(endpoint.answered.wait(), timeout=20)
        assert len(endpoint.requests) == 1
        assert endpoint.body_bytes_sent < 32 * 1024 * 1024
        assert metrics.notifications.labels("slack", "sent")._value.get() == 1
        assert published == []

    async def test_no_try_starts_past_the_deadline_so_a_failure_is_audited_within_the_grace(
        self, endpoint: Endpoint
    ) -> None:
        """A receiver that refuses every connection, a deadline of 0.5 s and backoff of up to 1,000 s: the wait
        after the first try would end past the deadline, so there is no second try; the message is audited
        `notify_failed` long before a 5 s shutdown grace ends (a wait let past the deadline is uniform in
        0-1,000 s and outlasts the grace 99.5% of the time)."""
        published: list[AuditEvent] = []
        notify, metrics = notifier(
            endpoint, published, deadline=0.5, backoff_initial=1000.0, backoff_max=1000.0,
            global_slack_url=SecretStr("http://127.0.0.1:9/"),
        )  # fmt: skip
        notify.notify(DECISION, PAUSED)
        await notify.aclose(grace=5)
        assert [e.outcome for e in published] == ["notify_failed"]
        assert published[0].notification is not None and published[0].notification.attempts <= 2
        assert metrics.notifications.labels("slack", "failed")._value.get() == 1

    async def test_a_link_given_wrong_is_left_out_of_the_message(self, endpoint: Endpoint) -> None:
        """A Notifier made with a wrong link (only past the settings' check): messages go without it."""
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published, global_link="https://app.example/c/{campaign}")
        notify.notify(DECISION, PAUSED)
        await notify.aclose(grace=20)
        text = json.loads(endpoint.requests[0])["text"]
        assert "camp_total" in text and "Open the campaign" not in text
        assert metrics.notifications.labels("slack", "sent")._value.get() == 1

    async def test_an_alert_is_told_by_default_and_a_pause_decision_only_by_its_outcome(
        self, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An alert's one outcome is `fired`: the Slack URL alone tells of it, and so does a rule file's channel left
        at the default outcomes, unless it is a backlog's (decided long after its event). A pause rule's `fired` is
        not told (its outcome, `paused` or `failed`, is), nor an alert's when `notify.outcomes` leaves it out."""
        alert = dataclasses.replace(
            DECISION, rule=DECISION.rule.model_copy(update={"action": "alert"}), fired_at=time.time() - 1
        )
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published)
        notify.notify(alert, audit_event(alert, "fired", decided_at=time.time(), dry_run=False))
        notify.notify(DECISION, audit_event(DECISION, "fired", decided_at=time.time(), dry_run=False))
        await notify.aclose(grace=20)
        [text] = [json.loads(body)["text"] for body in endpoint.requests]
        assert text.startswith(":warning: Rule fired for campaign `camp_total`") and "Outcome: fired" in text
        assert metrics.notifications.labels("slack", "sent")._value.get() == 1

        old = dataclasses.replace(alert, fired_at=alert.fired_at - 3600)  # one of a backlog's: an hour old
        endpoint.requests.clear()
        notify, _ = notifier(endpoint, published)
        notify.notify(old, audit_event(old, "fired", decided_at=time.time(), dry_run=False))
        await notify.aclose(grace=20)
        assert endpoint.requests == []  # not news: a first deploy would flood the channel with its history

        monkeypatch.setenv("TEAM_SLACK_URL", endpoint.url)
        told = []
        for outcomes in ("[paused, failed]", "[failed]"):  # written out, the default does not add `fired`
            endpoint.requests.clear()
            rules = parse_rules([("r.yaml", ALERT_RULES.replace("OUTCOMES", outcomes))])
            default = parse_rules([("r.yaml", ALERT_RULES.replace("  outcomes: OUTCOMES\n", ""))])
            for rule in (rules.rules[0], default.rules[0]):
                watched = dataclasses.replace(alert, rule=rule)
                notify, _ = notifier(endpoint, published, global_slack_url=None)
                notify.notify(watched, audit_event(watched, "fired", decided_at=time.time(), dry_run=False))
                await notify.aclose(grace=20)
            told.append(len(endpoint.requests))
        assert told == [1, 1]  # the rule with the default outcomes only, each time
        assert published == []

    async def test_a_crash_inside_notify_is_audited_never_raised(self, endpoint: Endpoint) -> None:
        """Whatever fails inside `notify` (here a rule whose notify section is not one) stays there:
        the caller, a decision, goes on; the failure is logged, counted and audited `notify_failed`."""
        broken = dataclasses.replace(DECISION, rule=DECISION.rule.model_copy(update={"notify": "not a section"}))
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published)
        notify.notify(broken, PAUSED)
        await notify.aclose(grace=20)
        assert [(e.outcome, e.notification.channel if e.notification else None) for e in published] == [
            ("notify_failed", NOTIFIER)
        ]
        assert published[0].notification is not None
        assert published[0].notification.error == "internal error: AttributeError"
        assert metrics.notifications.labels(NOTIFIER, "failed")._value.get() == 1


class TestScopeNotifications:
    """The campaigns of one scope decision: one Slack message listing them, each campaign's webhook event apart."""

    @staticmethod
    def scoped(campaigns: int, scope_decision: str = "scope-decision-1") -> list[tuple[Decision, AuditEvent]]:
        out = []
        for n in range(campaigns):
            decision = dataclasses.replace(
                DECISION, id=f"d{n}", campaign_id=f"camp_{n:02}", scope="sender_domain:acme.com",
                scope_decision_id=scope_decision,
            )  # fmt: skip
            outcome = "failed" if n == 1 else "paused"
            out.append((decision, audit_event(decision, outcome, decided_at=time.time(), dry_run=False)))
        return out

    async def test_the_outcomes_of_a_scope_decision_make_one_slack_message(self, endpoint: Endpoint) -> None:
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published, scope_batch_seconds=0.2)
        for decision, event in self.scoped(60):
            notify.notify(decision, event)
        for decision, event in self.scoped(2, "scope-decision-2"):  # another decision of the scope: its own message
            notify.notify(decision, event)
        await notify.aclose(grace=20)
        texts = sorted(json.loads(body)["text"] for body in endpoint.requests)
        assert len(texts) == 2
        many = next(text for text in texts if "60 campaigns" in text)
        assert many.startswith(":rotating_light: Pause FAILED for 60 campaigns of `sender_domain:acme.com`")
        assert "Outcomes: failed 1, paused 59" in many
        assert "`camp_00` (paused), `camp_01` (failed)" in many and "and 10 more" in many
        assert "Scope decision: scope-decision-1" in many
        assert metrics.notifications.labels("slack", "sent")._value.get() == 2

    async def test_a_scope_message_gathered_at_shutdown_is_sent_within_the_grace(self, endpoint: Endpoint) -> None:
        """The guard stops just after a domain's campaigns were paused: their message, gathering for 2 s, goes out
        at once, well within a 2 s shutdown grace. It slept through the grace and was cancelled unsent."""
        published: list[AuditEvent] = []
        notify, metrics = notifier(endpoint, published, scope_batch_seconds=2.0)
        for decision, event in self.scoped(3):
            notify.notify(decision, event)
        await notify.aclose(grace=2.0)
        assert len(endpoint.requests) == 1 and "3 campaigns" in json.loads(endpoint.requests[0])["text"]
        assert metrics.notifications.labels("slack", "sent")._value.get() == 1

    async def test_an_undelivered_scope_message_is_audited_for_each_campaign(self, endpoint: Endpoint) -> None:
        published: list[AuditEvent] = []
        notify, _ = notifier(
            endpoint, published, scope_batch_seconds=0.1, global_slack_url=SecretStr("http://127.0.0.1:9/")
        )
        for decision, event in self.scoped(3):
            notify.notify(decision, event)
        await notify.aclose(grace=20)
        assert sorted((e.campaign_id, e.outcome) for e in published) == [
            (f"camp_{n:02}", "notify_failed") for n in range(3)
        ]
