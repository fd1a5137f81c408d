"""`guard demo`: the whole guard on a laptop, in under a minute.

It starts the embedded Kafka broker and the Leadterra stand-in, runs the real services (the code
behind `guard ingest` and `guard run`) with the shipped rules, posts seeded synthetic traffic in
which a few campaigns go bad (two hours of sending, replayed fast) as signed webhooks, with a few
forged ones among them that are rejected, shows what happens live, prints a summary and cleans up
after itself, Ctrl-C included. The path is Leadterra's: webhook -> ingest -> Kafka -> guard -> pause.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr, ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from guard.contracts.audit import read_audit
from guard.engine import Engine, Measure, record_decisions
from guard.ingest.app import WEBHOOK_PATH, Ingest, IngestConfig
from guard.ingest.signature import SIGNATURE_HEADER, sign
from guard.rules import RuleSet, load_rules
from guard.rules.durations import format_duration
from guard.rules.models import Rule
from guard.runtime.service import Service
from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings, LeadterraSettings, Settings
from guard.telemetry.logs import configure_logging
from guard.testing.broker import FAST_GROUP, EmbeddedBroker
from guard.testing.leadterra import LeadterraStandIn
from guard.tools.explain import noun
from guard.tools.generate import Traffic, generate

SIMULATED_SECONDS = 7200.0  # two hours of sending, squeezed into the demo's duration
SETTLE_SECONDS = 3.0  # after the last event, time for the last pauses to land
WEBHOOK_SECRET = b"whsec_demo"
FORGERIES = 6  # unsigned or wrongly signed webhooks among the traffic, to show them rejected
DEMO_PARTITIONS = 4  # as the embedded broker makes topics on demand


@dataclass
class DemoResult:
    traffic: Traffic
    paused: dict[str, str] = field(default_factory=dict)  # campaign -> rule, from the audit topic
    pause_calls: list[str] = field(default_factory=list)  # campaigns the stand-in got a pause for
    audit_lines: list[str] = field(default_factory=list)
    accepted: int = 0  # webhooks `guard ingest` answered 200
    rejected: list[int] = field(default_factory=list)  # its answers to the forged ones
    fired: dict[str, set[str]] = field(default_factory=dict)  # campaign -> rules the view's engine fired

    @property
    def caught(self) -> list[str]:
        return sorted(set(self.traffic.bad) & set(self.pause_calls))

    @property
    def missed(self) -> list[str]:
        return sorted(set(self.traffic.bad) - set(self.pause_calls))

    @property
    def wrongly_paused(self) -> list[str]:
        return sorted(set(self.pause_calls) - set(self.traffic.bad))


async def run_demo(
    duration: float = 40.0, campaigns: int = 12, bad: int = 3, seed: int = 7, rules_path: Path = Path("rules")
) -> int:
    console = Console()
    result = await demo(duration, campaigns, bad, seed, rules_path, console)
    console.print(summary(result))
    return 0


async def demo(duration: float, campaigns: int, bad: int, seed: int, rules_path: Path, console: Console) -> DemoResult:
    rules = load_rules(rules_path)
    scratch = Path(tempfile.mkdtemp(prefix="guard-demo-"))
    _quiet_logs(scratch / "guard.log")
    now = time.time()
    traffic = generate(
        seed,
        campaigns,
        bad,
        start=now - SIMULATED_SECONDS,
        duration=SIMULATED_SECONDS,
        sends=(1500, 4000),
        bad_kinds=("bounces",),  # stale lists show within seconds; complaint-heavy ones need thousands of sends
    )
    result = DemoResult(traffic)
    console.print(
        f"[bold]guard demo[/]: {campaigns} campaigns, {len(traffic.records):,} events, "
        f"{len(rules.rules)} rules from {rules_path}; logs in {scratch / 'guard.log'}"
    )
    with EmbeddedBroker() as broker:
        async with LeadterraStandIn(create_unknown=True) as standin:
            suffix = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=False, **FAST_GROUP),
                leadterra=LeadterraSettings(api_url=standin.url, api_key=SecretStr(standin.api_key)),
                guard=GuardSettings(
                    rules=rules_path,
                    input_topics=(f"demo.events.{suffix}",),
                    audit_topic=f"demo.audit.{suffix}",
                    dlq_topic=f"demo.dlq.{suffix}",
                    group_id=f"demo-{suffix}",
                    http_host="127.0.0.1",
                    http_port=0,
                ),
            )
            await _make_topic(broker.bootstrap_servers, settings.guard.input_topics[0])
            service = Service(settings, rules)
            ingest = Ingest(IngestConfig(settings.kafka, settings.guard, IngestSettings(), (WEBHOOK_SECRET,)))
            running = asyncio.create_task(service.run())
            receiving = asyncio.create_task(ingest.run())
            watcher = asyncio.create_task(_watch_audit(broker.bootstrap_servers, settings.guard.audit_topic, result))
            try:
                await _until_consuming(service, running)
                while not ingest.health.ready()[0]:
                    if receiving.done():
                        receiving.result()
                    await asyncio.sleep(0.05)
                url = f"http://127.0.0.1:{ingest.port}{WEBHOOK_PATH}"
                await _stream(traffic, url, duration, rules, standin, result, console)
                await asyncio.sleep(SETTLE_SECONDS)
            finally:
                ingest.stop()
                service.stop()
                await asyncio.wait_for(asyncio.gather(running, receiving), timeout=30)
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            result.pause_calls = sorted(
                {r.campaign_id for r in standin.pause_requests() if r.status == 200 and r.campaign_id}
            )
    return result


def _quiet_logs(path: Path) -> None:
    configure_logging("INFO")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    for kept in logging.getLogger().handlers[0].filters:  # repeated client lines held back there too
        handler.addFilter(kept)
    logging.getLogger().handlers[:] = [handler]


async def _make_topic(bootstrap: str, topic: str) -> None:
    """The events topic, made as a deployment's own side makes it: the guard never creates an input topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, DEMO_PARTITIONS, 1)])
    finally:
        await admin.close()


async def _until_consuming(service: Service, running: asyncio.Task[None]) -> None:
    while not service.assigned:
        if running.done():
            running.result()
        await asyncio.sleep(0.05)


async def _stream(
    traffic: Traffic,
    url: str,
    duration: float,
    rules: RuleSet,
    standin: LeadterraStandIn,
    result: DemoResult,
    console: Console,
) -> None:
    """Post the traffic as signed webhooks evenly over `duration` seconds (and a few forged ones
    that must be refused) while redrawing the live view."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
    mirror = Engine(rules)  # the view's own copy of the windows, to show how close each rule is
    records, started, sent = traffic.records, time.monotonic(), 0
    forge_at = {len(records) * (n + 1) // (FORGERIES + 1) for n in range(FORGERIES)}
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    async def post(body: bytes, signature: str | None) -> int:
        headers = {SIGNATURE_HEADER: signature} if signature else {}
        async with session.post(url, data=body, headers=headers) as answer:
            await answer.read()
            return answer.status

    try:
        if live is not None:
            live.start()
        while sent < len(records):
            await asyncio.sleep(0.1)
            due = min(len(records), int(len(records) * (time.monotonic() - started) / duration) + 1)
            batch = records[sent:due]
            statuses = await asyncio.gather(*(post(r.value, sign(WEBHOOK_SECRET, r.value)) for r in batch))
            result.accepted += sum(status == 200 for status in statuses)
            for _, decision in record_decisions(mirror, ((record.value, record.time) for record in batch)):
                result.fired.setdefault(decision.campaign_id, set()).add(decision.rule.name)
            for n in sorted(forge_at & set(range(sent, due))):
                forged = records[n].value.replace(b'"message.sent"', b'"message.bounced"')
                signature = None if n % 2 else sign(b"whsec_guessed", forged)  # unsigned, or a guessed secret
                result.rejected.append(await post(forged, signature))
            sent = due
            if live is not None:
                live.update(_view(traffic, mirror, standin, result, sent), refresh=True)
        if live is None:
            console.print(_view(traffic, mirror, standin, result, sent))
    finally:
        if live is not None:
            live.stop()
        await session.close()


async def _watch_audit(bootstrap: str, topic: str, result: DemoResult) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        async for record in consumer:
            try:
                event = read_audit(record.value)
            except ValidationError:
                result.audit_lines.append(f"skipped an audit record that is no audit event (offset {record.offset})")
                continue
            evidence = event.evidence
            if event.outcome == "paused":  # the first: a later pause of the same campaign finds it paused
                result.paused.setdefault(event.campaign_id, event.rule.name)
            if event.outcome != "fired":
                result.audit_lines.append(
                    f"{event.outcome:>8}  {event.campaign_id}  {event.rule.name}: "
                    + compared_text(
                        evidence.window, evidence.value, evidence.threshold, evidence.numerator, evidence.denominator
                    )
                )
    finally:
        await consumer.stop()


def compared_text(window: str, value: float, threshold: float, numerator: int, denominator: float | None) -> str:
    """What a rule compared, as its audit event says: a cusum's statistic against its alarm level, a
    rate in percent against its threshold, a count against its threshold."""
    if window.startswith("cusum"):
        return (
            f"statistic {value:.2f} reached its level {threshold:.2f} ({window}; "
            f"{numerator} of {denominator:,.0f} since it rose)"
        )
    if denominator is not None:
        return f"{value:.2%} of {denominator:,.0f} reached {threshold:.2%} ({numerator} events, {window})"
    return f"{numerator} events reached {threshold:g} ({window})"


def _view(traffic: Traffic, mirror: Engine, standin: LeadterraStandIn, result: DemoResult, sent: int) -> Group:
    table = Table(title=f"{sent:,} of {len(traffic.records):,} events streamed", expand=False)
    for column in ("campaign", "truth", "rule"):  # names whole; the last column wraps instead
        table.add_column(column, no_wrap=True)
    table.add_column("% of its threshold", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("why not paused", overflow="fold")
    for spec in traffic.campaigns:
        status = standin.campaigns.get(spec.campaign_id, "running")
        ratios = {  # how far each rule is along its way to firing (the statistic or value over its level)
            compiled.rule.name: (compiled.rule, measure, measure.value / compiled.rule.level)
            for compiled in mirror.rules_for(spec.campaign_id)
            if (measure := mirror.measure(spec.campaign_id).get(compiled.rule.name)) is not None
        }
        paused_by = result.paused.get(spec.campaign_id) if status == "paused" else None
        closest = paused_by or max(ratios, key=lambda name: ratios[name][2], default=None)
        ratio = ratios[closest][2] if closest in ratios else 0.0
        why = ""
        if closest in ratios and ratio >= 1 and status != "paused":
            rule, measure, _ = ratios[closest]
            why = _why_not_paused(mirror, spec.campaign_id, rule, measure, result.fired)
        style = "bold red" if status == "paused" else ("yellow" if ratio >= 0.7 else "")
        truth = f"bad ({spec.bad_kind})" if spec.turns_at is not None else "healthy"
        shown_rule = f"paused by {paused_by}" if paused_by else (closest or "-")
        table.add_row(spec.campaign_id, truth, shown_rule, f"{ratio:.0%}", status, why, style=style)
    webhooks = f"webhooks accepted by guard ingest: {result.accepted:,}; forged ones rejected: " + (
        ", ".join(str(status) for status in result.rejected) or "none yet"
    )
    tail = result.audit_lines[-6:]
    if any("already_paused" in line for line in tail):
        tail.append(KEEPS_SENDING)
    return Group(table, webhooks, *tail)


KEEPS_SENDING = (
    "(the synthetic history keeps sending after a pause, as if nobody had paused it: the rules keep firing on "
    "it, and each later decision is recorded already_paused, with no call)"
)


def _why_not_paused(engine: Engine, campaign_id: str, rule: Rule, measure: Measure, fired: dict[str, set[str]]) -> str:
    """Why a rule whose raw value is at or over its threshold has not paused the campaign."""
    if measure.denominator is not None and measure.denominator < (rule.min_volume or 0):
        per = noun(rule.rate.per) if rule.rate is not None else "events"
        return f"below min volume: {measure.denominator:,} of {rule.min_volume:,} {per}"
    if measure.lower_bound is not None and not measure.holds:
        return (
            f"not sure enough: {rule.confidence:.0%} bound {measure.lower_bound:.2%} below {rule.threshold:.2%}"
        ).replace(".0%", "%")
    if engine.cooldown_until(campaign_id, rule.name) is not None:
        return f"in cooldown ({format_duration(rule.cooldown)}) after it fired"
    if rule.action != "pause":
        did = " (it fired)" if rule.name in fired.get(campaign_id, ()) else ""
        return f"an {rule.action} rule: it records, never pauses{did}"
    if measure.holds and rule.for_:
        return f"must hold for {format_duration(rule.for_)} first"
    return "pausing"


def summary(result: DemoResult) -> str:
    bad = result.traffic.bad
    lines = ["", "[bold]summary[/]"]
    rejected = sum(status == 401 for status in result.rejected)
    lines.append(
        f"  webhooks through guard ingest: {result.accepted:,} signed accepted, "
        f"{rejected} of {len(result.rejected)} forged rejected (401)"
    )
    lines.append(
        f"  bad campaigns paused through the API: {len(result.caught)} of {len(bad)}  {', '.join(result.caught)}"
    )
    if result.missed:
        lines.append(f"  [red]missed[/]: {', '.join(result.missed)}")
    lines.append(f"  healthy campaigns paused: {len(result.wrongly_paused)}  {', '.join(result.wrongly_paused)}")
    for campaign_id in result.caught:
        lines.append(f"    {campaign_id}: paused by {result.paused.get(campaign_id, '?')}")
    return "\n".join(lines)
