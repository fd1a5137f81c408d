"""Notifications: after an outcome is audited, tell Slack and webhooks, in tasks of their own.

Nothing here is awaited by a pause or an offset commit: `notify` only starts tasks, and never
raises into its caller. Each message is retried with backoff (tenacity) until `deadline`; one that
cannot be delivered, or that fails in any other way, is logged, counted
(`guard_notifications_total{result="failed"}`) and audited as `notify_failed`. A receiver's answer
is read with a cap (guard.actions.responses). URLs and signing secrets are read from the
environment or files when first needed and registered with the redaction point at once: they never
reach a log line, an audit event or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_before_delay, wait_random_exponential

from guard import redact
from guard.actions.audit import audit_event
from guard.actions.responses import send_capped
from guard.actions.tasks import wait_then_cancel
from guard.contracts.audit import AuditEvent, NotificationFailure
from guard.engine import Decision
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.errors import GuardError
from guard.rules.notify import Notify, SecretSource, SlackChannel, WebhookChannel, check_link, render_link
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.notify")

SIGNATURE_HEADER = "X-Guard-Signature"  # sha256=<hex HMAC-SHA256 of the raw body>, as Leadterra signs its webhooks
GLOBAL = "GUARD_SLACK_WEBHOOK_URL"
GLOBAL_OUTCOMES = frozenset(Notify.model_fields["outcomes"].default)  # paused, failed: what a pause came to
# How a failure is named when it happened before its channel was known (a bug in `notify` itself).
NOTIFIER = "notifier"
# A scope's decision comes to one outcome per campaign of the scope within moments: Slack hears of those that
# arrive within this many seconds of the first in one message (a webhook gets each audit event, as ever).
SCOPE_BATCH_SECONDS = 2.0
MAX_LISTED = 50  # campaigns named in one such message; the rest are counted

Publish = Callable[[AuditEvent], Awaitable[None]]


class _Undeliverable(GuardError):
    """A receiver answered 429 or 5xx, or the connection failed: worth another try."""


class _Refused(GuardError):
    """A receiver answered 4xx (but 429) or a secret cannot be read: another try would not help."""


@dataclass(frozen=True)
class _Target:
    name: str  # `slack:ENV_NAME`, `webhook:/path/of/file`: says which channel, never its URL
    channel: SlackChannel | WebhookChannel
    url: SecretStr | None = None  # given by a setting rather than named by the channel


class Notifier:
    def __init__(
        self,
        publish: Publish,
        metrics: Metrics,
        *,
        global_slack_url: SecretStr | None = None,
        global_link: str | None = None,
        timeout: float = 10.0,
        deadline: float = 120.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        scope_batch_seconds: float = SCOPE_BATCH_SECONDS,
        backlog_after: float = DEFAULT_RESUME_GRACE,
    ) -> None:
        self._publish, self._metrics = publish, metrics
        # an alert decided this long after its event is a backlog's (a first deploy, an outage): not news by default
        self._backlog_after = backlog_after
        self._scope_batch_seconds = scope_batch_seconds
        self._batches: dict[tuple[str, str], list[tuple[Decision, AuditEvent]]] = {}
        self._closing = asyncio.Event()  # set at shutdown: what is gathered goes out at once
        self._global: _Target | None = None
        if global_slack_url is not None:
            channel = SlackChannel(url=SecretSource(env=GLOBAL), link=_usable_link(global_link))
            self._global = _Target(f"slack:{GLOBAL}", channel, global_slack_url)
        self._deadline, self._backoff, self._timeout = deadline, (backoff_initial, backoff_max), timeout
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, decision: Decision, event: AuditEvent) -> None:
        """Start a task per channel that wants to hear of `event`'s outcome; returns at once.

        Never raises: the caller is a decision, and a notification is a side path of it. Whatever goes
        wrong here is logged, counted and audited as `notify_failed`, like a message not delivered."""
        try:
            for target in self._targets(decision, event):
                if decision.scope_decision_id is not None and isinstance(target.channel, SlackChannel):
                    self._gather(target, decision, event)
                else:
                    self._spawn(self._deliver(target, [(decision, event)]), event)
        except Exception as error:
            try:
                log.exception("notification crashed", audit_id=event.id)
                self._metrics.notifications.labels(NOTIFIER, "failed").inc()
                failure = NotificationFailure(
                    channel=NOTIFIER, about=event.outcome, attempts=0, error=f"internal error: {type(error).__name__}"
                )
                self._spawn(self._audit_failure(decision, event, failure), event)
            except Exception:  # nothing left to tell it with; the decision goes on all the same
                log.exception("notification crashed and its failure cannot be audited")

    def _spawn(self, work: Coroutine[Any, Any, None], event: AuditEvent) -> None:
        try:
            task = asyncio.create_task(work, name=f"notify-{event.id}")
        except BaseException:
            work.close()  # never started: no "coroutine was never awaited" on top of the error
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gather(self, target: _Target, decision: Decision, event: AuditEvent) -> None:
        """One Slack message per scope decision and channel for the outcomes of its campaigns that arrive together."""
        assert decision.scope_decision_id is not None
        key = (target.name, decision.scope_decision_id)
        if key in self._batches:
            self._batches[key].append((decision, event))
            return
        self._batches[key] = [(decision, event)]
        self._spawn(self._deliver_batch(target, key), event)

    async def _deliver_batch(self, target: _Target, key: tuple[str, str]) -> None:
        try:
            # cut short at shutdown: the grace is for sending, not for gathering (a batch begun just before the
            # stop would sleep through it and be cancelled unsent)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scope_batch_seconds):
                    await self._closing.wait()
        finally:  # cancelled too: gone from the batches, so nothing is added to a message never sent
            about = self._batches.pop(key)
        await self._deliver(target, about)

    def _targets(self, decision: Decision, event: AuditEvent) -> list[_Target]:
        targets, outcome = [], event.outcome
        notify = decision.rule.notify
        # an alert comes to `fired` and nothing more: that is what it is for, told by default like a pause's outcome,
        # when it is news (one of a backlog's, hours old, would flood the channel as if current)
        lag = (event.timings.decided_at - event.timings.event_time).total_seconds()
        alerting = outcome == "fired" and decision.rule.action == "alert" and lag <= self._backlog_after
        if notify is not None and (
            outcome in notify.outcomes or (alerting and "outcomes" not in notify.model_fields_set)
        ):
            if notify.slack is not None:
                targets.append(_Target(f"slack:{_where(notify.slack.url)}", notify.slack))
            if notify.webhook is not None:
                targets.append(_Target(f"webhook:{_where(notify.webhook.url)}", notify.webhook))
        if self._global is not None and (outcome in GLOBAL_OUTCOMES or alerting):
            targets.append(self._global)
        return targets

    async def _deliver(self, target: _Target, about: list[tuple[Decision, AuditEvent]]) -> None:
        """One message about the outcomes of `about` (one, or those of a scope decision's campaigns)."""
        kind = "slack" if isinstance(target.channel, SlackChannel) else "webhook"
        attempts = 0
        event = about[0][1]
        try:
            request = self._request(target, [event for _, event in about])
            retrying = AsyncRetrying(
                # no try starts past the deadline: after it, a wait of up to `backoff_max` and one more try
                # would outlast a shutdown's grace, and the message would go unaudited
                stop=stop_before_delay(self._deadline),
                wait=wait_random_exponential(multiplier=self._backoff[0], max=self._backoff[1]),
                retry=retry_if_exception_type(_Undeliverable),
            )
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    await self._post(*request)
        except (RetryError, _Undeliverable, _Refused) as error:
            reason = error.last_attempt.exception() if isinstance(error, RetryError) else error
            for decision, failed in about:
                await self._failed(target.name, kind, decision, failed, attempts, str(reason))
            return
        except Exception as error:  # a bug must still be counted and audited, never a silent task
            log.exception("notification crashed", channel=target.name, audit_id=event.id)
            for decision, failed in about:
                await self._failed(
                    target.name, kind, decision, failed, attempts, f"internal error: {type(error).__name__}"
                )
            return
        self._metrics.notifications.labels(kind, "sent").inc()
        campaigns = [event.campaign_id for _, event in about]
        log.info(
            "notification sent",
            channel=target.name,
            outcome=event.outcome,
            campaign_id=campaigns[0] if len(campaigns) == 1 else campaigns,
        )

    def _request(self, target: _Target, events: list[AuditEvent]) -> tuple[str, bytes, dict[str, str]]:
        channel, event = target.channel, events[0]
        url = target.url.get_secret_value() if target.url is not None else _read(channel.url)
        if isinstance(channel, SlackChannel):
            body = slack_message(event, channel.link) if event.scope is None else slack_scope_message(events)
            return url, body, {"Content-Type": "application/json"}
        body = event.model_dump_json().encode()
        signature = hmac.new(_read(channel.secret).encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"sha256={signature}",
            "X-Guard-Event-Id": event.id,
        }
        return url, body, headers

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """One attempt, bounded in time; its status is the answer, so no byte of the body is read (a
        receiver answering 200 with an endless or trickling body has the message: a delivery, not a hang)."""
        try:
            async with asyncio.timeout(self._timeout):
                response, _ = await send_capped(self._client, "POST", url, headers=headers, content=body, cap=0)
        except (httpx.HTTPError, TimeoutError) as error:
            raise _Undeliverable(f"{type(error).__name__}") from None  # its text may quote the URL
        if response.status_code == 429 or response.status_code >= 500:
            raise _Undeliverable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise _Refused(f"HTTP {response.status_code}")

    async def _failed(
        self, name: str, kind: str, decision: Decision, event: AuditEvent, attempts: int, error: str
    ) -> None:
        self._metrics.notifications.labels(kind, "failed").inc()
        log.error("notification not delivered", channel=name, audit_id=event.id, attempts=attempts, error=error)
        failure = NotificationFailure(channel=name, about=event.outcome, attempts=attempts, error=error)
        await self._audit_failure(decision, event, failure)

    async def _audit_failure(self, decision: Decision, event: AuditEvent, failure: NotificationFailure) -> None:
        try:
            await self._publish(
                audit_event(
                    decision,
                    "notify_failed",
                    decided_at=event.timings.decided_at.timestamp(),
                    dry_run=event.dry_run,
                    workspace_id=event.workspace_id,
                    notification=failure,
                )
            )
        except Exception:  # the audit producer gave up: the log line and the metric still say it
            log.exception("notify_failed not audited", channel=failure.channel, audit_id=event.id)

    async def aclose(self, grace: float) -> None:
        """Give messages under way `grace` seconds, then cancel the rest (they are logged, not audited)."""
        self._closing.set()
        left = await wait_then_cancel(self._tasks, grace)
        if left:
            log.warning("notifications not sent at shutdown", count=left)
        await self._client.aclose()


def _usable_link(link: str | None) -> str | None:
    """GUARD_NOTIFY_LINK as checked at start-up; one given otherwise and wrong is left out of messages."""
    if not link:
        return None
    try:
        return check_link(link)
    except ValueError as error:
        log.error("the notification link is not valid; messages go without it", error=str(error))
        return None


def _where(source: SecretSource) -> str:
    return source.env or source.file or ""


def _read(source: SecretSource) -> str:
    """The value behind `source`, registered for redaction before anything can quote it."""
    if source.env is not None:
        value = os.environ.get(source.env, "")
        redact.register(value)
        if not value.strip():
            raise _Refused(f"the environment variable {source.env} is not set")
        return value.strip()
    assert source.file is not None
    try:
        value = Path(source.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _Refused(f"cannot read {source.file}: {type(error).__name__}") from None
    redact.register(value)
    if not value.strip():
        raise _Refused(f"{source.file} is empty")
    return value.strip()


_HEADLINES = {
    "paused": ":octagonal_sign: Paused",
    "already_paused": ":pause_button: Already paused",
    "not_running": ":information_source: Not running",
    "dry_run": ":test_tube: Would pause (dry run)",
    "failed": ":rotating_light: Pause FAILED for",
    "exempted": ":shield: Exempted, still running:",
    "superseded": ":fast_forward: Not paused (superseded after a backlog):",
    "fired": ":warning: Rule fired for",
}


def slack_message(event: AuditEvent, link: str | None) -> bytes:
    """A readable Slack message: campaign, rule, value against threshold, window, outcome, link."""
    evidence = event.evidence
    shown, threshold, counts = evidence.readable()
    bound = " (lower bound)" if evidence.lower_bound is not None else ""
    workspace = f" in workspace `{_escape(event.workspace_id)}`" if event.workspace_id else ""
    lines = [
        f"{_HEADLINES.get(event.outcome, event.outcome)} campaign `{_escape(event.campaign_id)}`{workspace}",
        f"Rule *{_escape(event.rule.name)}*: {shown}{bound} vs threshold {threshold} over {evidence.window} ({counts})",
        f"Outcome: {event.outcome}",
    ]
    if event.result is not None and event.result.error_code:
        lines.append(f"Error: {_escape(event.result.error_code)}")
    if event.exemption is not None:
        lines.append(
            f"Exemption {event.exemption.id} by {_escape(event.exemption.by)}: {_escape(event.exemption.reason)}"
        )
    if event.note:
        lines.append(f"Note: {_escape(event.note)}")
    fields = {  # quoted: an id is a path segment of the link, never more
        "campaign_id": quote(event.campaign_id, safe=""),
        "workspace_id": quote(event.workspace_id or "", safe=""),
        "rule": quote(event.rule.name, safe=""),
        "decision_id": quote(event.decision_id, safe=""),
    }
    if link and (url := render_link(link, fields)) is not None:  # a link that is not valid is left out
        lines.append(f"<{url}|Open the campaign>")
    return json.dumps({"text": "\n".join(lines)}).encode()


def slack_scope_message(events: list[AuditEvent]) -> bytes:
    """One Slack message for the campaigns of a scope's decision: the scope, the rule and its evidence (the scope's,
    the same in every event), each campaign's outcome. No link: a link names one campaign."""
    first = events[0]
    assert first.scope is not None
    evidence = first.evidence
    shown, threshold, counts = evidence.readable()
    bound = " (lower bound)" if evidence.lower_bound is not None else ""
    outcomes = Counter(event.outcome for event in events)
    headline = _HEADLINES.get("failed" if outcomes["failed"] else first.outcome, first.outcome)
    listed = [f"`{_escape(event.campaign_id)}` ({event.outcome})" for event in events[:MAX_LISTED]]
    more = f" and {len(events) - MAX_LISTED} more" if len(events) > MAX_LISTED else ""
    lines = [
        f"{headline} {len(events)} campaigns of `{_escape(first.scope.key)}`",
        f"Rule *{_escape(first.rule.name)}*, over every campaign of it: {shown}{bound} vs threshold {threshold} over "
        f"{evidence.window} ({counts})",
        "Outcomes: " + ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items())),
        "Campaigns: " + ", ".join(listed) + more,
        f"Scope decision: {first.scope.decision_id}",
    ]
    return json.dumps({"text": "\n".join(lines)}).encode()


def _escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
