"""`guard demo`: the whole guard on a laptop, in under a minute.

It starts the embedded Kafka broker and the Leadterra stand-in, runs the real services (the code
behind `guard ingest` and `guard run`) with the shipped rules and the domain rules beside them, posts
seeded synthetic traffic in which a few campaigns go bad (two hours of sending, replayed fast) as
signed webhooks, with a few forged ones among them that are rejected, shows what happens live, prints
a summary and cleans up after itself, Ctrl-C included. The path is Leadterra's: webhook -> ingest ->
Kafka -> guard -> pause.

Beside those campaigns, which name no sender, two sending domains send: one burns a stale list over
many small campaigns, each too small for any campaign rule to judge, which only a rule over the
sending domain sees (every one of its campaigns paused); the other is healthy (none paused).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr, ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from guard.contracts.audit import read_audit
from guard.contracts.events import Event, Signal
from guard.engine import Engine, Measure, decide, decode_records, scopes_beside
from guard.engine.scopes import ScopeEngine
from guard.ingest.app import WEBHOOK_PATH, Ingest, IngestConfig
from guard.ingest.signature import SIGNATURE_HEADER, sign
from guard.rules import RuleSet, load_rules
from guard.rules.durations import format_duration
from guard.rules.loader import RuleFileError, rule_files
from guard.rules.models import Rule
from guard.runtime.catchup import QUIET_SECONDS
from guard.runtime.service import Service
from guard.runtime.settings import GuardSettings, IngestSettings, KafkaSettings, LeadterraSettings, Settings
from guard.telemetry.logs import configure_logging
from guard.testing.broker import FAST_GROUP, EmbeddedBroker
from guard.testing.leadterra import LeadterraStandIn
from guard.tools.explain import noun
from guard.tools.generate import Traffic, plan, stream

SIMULATED_SECONDS = 7200.0  # two hours of sending, squeezed into the demo's duration
SETTLE_SECONDS = 3.0  # after the last event, time for the last pauses to land...
# ...and up to this long while a campaign the view's engine decided to pause is not yet paused at the stand-in and
# in the audit topic. The replayed history is a backlog to the guard, which acts on its pauses once caught up
# (guard.runtime.catchup): for a campaign whose newest event is a few minutes old at the end of the history, or
# once a partition has had no new record for QUIET_SECONDS (a domain whose campaigns stopped sending earlier).
SETTLE_LIMIT = SETTLE_SECONDS + QUIET_SECONDS + 6.0
WEBHOOK_SECRET = b"whsec_demo"
POST_ATTEMPTS = 3  # a webhook sender retries, as Leadterra does; a retried event counts once (its messageId)
FORGERIES = 6  # unsigned or wrongly signed webhooks among the traffic, to show them rejected
DEMO_PARTITIONS = 4  # as the embedded broker makes topics on demand
# Two sending domains beside the campaigns that name no sender (rules over a sending domain: guard/engine/scopes.py).
# One spreads a stale list (8-15% hard bounces) over many small campaigns, each below what any campaign rule can
# judge: fewer sends than hard-bounce-burst's min_volume (20), too few bounces for hard-bounce-rate's statistic to
# climb to its level. Only domain-hard-bounce-rate, over the domain's sends pooled, sees it. The other is healthy.
BURNING_DOMAIN, BURNING_CAMPAIGNS, BURNING_SENDS = "burning.example", 24, (12, 19)
BURNING_FROM, BURNING_SECONDS = 1800.0, 3000.0  # sending from half an hour in, for 50 minutes: ~370 sends pooled
HEALTHY_DOMAIN, HEALTHY_DOMAIN_CAMPAIGNS, HEALTHY_DOMAIN_SENDS = "healthy.example", 4, (150, 400)
DOMAIN_RULES = Path("rules/domains/sender-domain.yaml")  # opt-in rules, run beside --rules


@dataclass
class Pooled:
    """What the campaigns of one sending domain have sent and hard-bounced so far, all together."""

    sends: int = 0
    hard_bounces: int = 0


@dataclass
class DemoResult:
    traffic: Traffic
    paused: dict[str, str] = field(default_factory=dict)  # campaign -> rule, from the audit topic
    pause_calls: list[str] = field(default_factory=list)  # campaigns the stand-in got a pause for
    audit_lines: list[str] = field(default_factory=list)
    accepted: int = 0  # webhooks `guard ingest` answered 200
    rejected: list[int] = field(default_factory=list)  # its answers to the forged ones
    fired: dict[str, set[str]] = field(default_factory=dict)  # campaign or scope -> rules the view's engine fired
    decided: set[str] = field(default_factory=set)  # campaigns the view's engine decided to pause
    pooled: dict[str, Pooled] = field(default_factory=dict)  # sending domain -> its campaigns' events streamed
    # one audit line per scope decision and outcome: (scope decision, outcome) -> its line and campaigns
    scope_lines: dict[tuple[str, str], tuple[int, set[str]]] = field(default_factory=dict)

    @property
    def domains(self) -> dict[str, list[str]]:
        """Each sending domain of the traffic -> its campaigns."""
        found: dict[str, list[str]] = {}
        for spec in self.traffic.campaigns:
            if spec.sender is not None:
                found.setdefault(spec.sender.rpartition("@")[2].lower(), []).append(spec.campaign_id)
        return found

    def count(self, event: Event) -> None:
        """Pool an event of a campaign that names its sender into its domain's counts."""
        if event.sender_domain is None:
            return
        pooled = self.pooled.setdefault(event.sender_domain, Pooled())
        if event.signal is Signal.SENT:
            pooled.sends += 1
        elif event.signal is Signal.BOUNCED and event.bounce_type == "hard":
            pooled.hard_bounces += 1

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
    duration: float = 40.0,
    campaigns: int = 12,
    bad: int = 3,
    seed: int = 7,
    rules_path: Path = Path("rules"),
    domain_rules: Path = DOMAIN_RULES,
) -> int:
    console = Console()
    result = await demo(duration, campaigns, bad, seed, rules_path, console, domain_rules)
    console.print(summary(result))
    return 0


def demo_traffic(seed: int, campaigns: int, bad: int, start: float) -> Traffic:
    """The demo's campaigns and their events: `campaigns` that name no sender, `bad` of them turning to a stale
    list; then the small campaigns of the burning domain, on a stale list from their first send, and the
    healthy domain's. The first `campaigns` draw the same events as `generate(seed, campaigns, bad, ...)`."""
    span = {"start": start, "duration": SIMULATED_SECONDS}
    # stale lists show within seconds; complaint-heavy ones need thousands of sends
    own = plan(seed, campaigns, bad, **span, sends=(1500, 4000), bad_kinds=("bounces",))
    stale = plan(
        seed + 1,
        BURNING_CAMPAIGNS,
        BURNING_CAMPAIGNS,
        start=start + BURNING_FROM,
        duration=BURNING_SECONDS,
        sends=BURNING_SENDS,
        bad_kinds=("bounces",),
    )
    burning = [
        replace(spec, campaign_id=f"camp_burn{n:02d}", turns_at=spec.start, sender=f"team@{BURNING_DOMAIN}")
        for n, spec in enumerate(stale)
    ]
    healthy = [
        replace(spec, campaign_id=f"camp_well{n:02d}", sender=f"team@{HEALTHY_DOMAIN}")
        for n, spec in enumerate(plan(seed + 2, HEALTHY_DOMAIN_CAMPAIGNS, 0, **span, sends=HEALTHY_DOMAIN_SENDS))
    ]
    specs = [*own, *burning, *healthy]
    return Traffic(tuple(specs), tuple(stream(specs, seed)))


def demo_rules(rules_path: Path, domain_rules: Path, into: Path) -> Path:
    """The rule files of `rules_path` and `domain_rules` copied into the directory `into`, which the guard
    then reads (and its rule watcher watches): the shipped rules with the domain rules beside them."""
    into.mkdir(parents=True, exist_ok=True)
    for file in [*rule_files(rules_path), *rule_files(domain_rules)]:
        if (into / file.name).exists():
            raise RuleFileError([f"{file}: a rule file named {file.name} is already among the demo's rules"])
        shutil.copyfile(file, into / file.name)
    return into


async def demo(
    duration: float,
    campaigns: int,
    bad: int,
    seed: int,
    rules_path: Path,
    console: Console,
    domain_rules: Path = DOMAIN_RULES,
) -> DemoResult:
    scratch = Path(tempfile.mkdtemp(prefix="guard-demo-"))
    rules_dir = demo_rules(rules_path, domain_rules, scratch / "rules")
    rules = load_rules(rules_dir)
    _quiet_logs(scratch / "guard.log")
    traffic = demo_traffic(seed, campaigns, bad, start=time.time() - SIMULATED_SECONDS)
    result = DemoResult(traffic)
    over_domains = sum(rule.scope == "sender_domain" for rule in rules.rules)
    console.print(
        f"[bold]guard demo[/]: {campaigns} campaigns that name no sender; {BURNING_CAMPAIGNS} small ones "
        f"({BURNING_SENDS[0]}-{BURNING_SENDS[1]} sends each) from {BURNING_DOMAIN} and {HEALTHY_DOMAIN_CAMPAIGNS} "
        f"from {HEALTHY_DOMAIN}; {len(traffic.records):,} events\n"
        f"{len(rules.rules)} rules ({over_domains} over a sending domain) from {rules_path} and {domain_rules}, "
        f"read from {rules_dir}; logs in {scratch / 'guard.log'}"
    )
    with EmbeddedBroker() as broker:
        async with LeadterraStandIn(create_unknown=True) as standin:
            suffix = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=False, **FAST_GROUP),
                leadterra=LeadterraSettings(api_url=standin.url, api_key=SecretStr(standin.api_key)),
                guard=GuardSettings(
                    rules=rules_dir,
                    input_topics=(f"demo.events.{suffix}",),
                    scope_topic=f"demo.scopes.{suffix}",
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
            finally:
                ingest.stop()
                service.stop()
                async with asyncio.timeout(30):
                    await asyncio.gather(running, receiving)
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
    that must be refused) while redrawing the live view; then wait for the last pauses to land."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
    mirror = Engine(rules)  # the view's own copy of the windows, to show how close each rule is
    scopes = scopes_beside(rules, mirror)  # and of the windows of each sending domain
    records, started, sent = traffic.records, time.monotonic(), 0
    forge_at = {len(records) * (n + 1) // (FORGERIES + 1) for n in range(FORGERIES)}
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    async def post(body: bytes, signature: str | None) -> int:
        headers = {SIGNATURE_HEADER: signature} if signature else {}
        for attempt in range(POST_ATTEMPTS):
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status
            except aiohttp.ClientConnectionError:  # a kept-alive connection the server closed as it was reused
                if attempt == POST_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    try:
        if live is not None:
            live.start()
        while sent < len(records):
            await asyncio.sleep(0.1)
            due = min(len(records), int(len(records) * (time.monotonic() - started) / duration) + 1)
            batch = records[sent:due]
            statuses = await asyncio.gather(*(post(r.value, sign(WEBHOOK_SECRET, r.value)) for r in batch))
            result.accepted += sum(status == 200 for status in statuses)
            events = decode_records(((record.value, record.time) for record in batch), decode=mirror.kinds.decode)
            for event, decisions in decide(mirror, events, scopes, first=sent):
                result.count(event)
                for decision in decisions:
                    if decision.rule.action == "pause":
                        result.decided.add(decision.campaign_id)
                    for fired_for in (decision.campaign_id, decision.scope):
                        if fired_for is not None:
                            result.fired.setdefault(fired_for, set()).add(decision.rule.name)
            for n in sorted(forge_at & set(range(sent, due))):
                forged = records[n].value.replace(b'"message.sent"', b'"message.bounced"')
                signature = None if n % 2 else sign(b"whsec_guessed", forged)  # unsigned, or a guessed secret
                result.rejected.append(await post(forged, signature))
            sent = due
            if live is not None:
                live.update(_view(traffic, mirror, scopes, standin, result, sent), refresh=True)
        ended = time.monotonic()
        while time.monotonic() - ended < SETTLE_SECONDS or (
            time.monotonic() - ended < SETTLE_LIMIT and _unpaused(result.decided, standin, result)
        ):
            await asyncio.sleep(0.2)
            if live is not None:
                live.update(_view(traffic, mirror, scopes, standin, result, sent), refresh=True)
        if live is None:
            console.print(_view(traffic, mirror, scopes, standin, result, sent))
    finally:
        if live is not None:
            live.stop()
        await session.close()


def _unpaused(campaigns: set[str], standin: LeadterraStandIn, result: DemoResult) -> bool:
    """Whether some of `campaigns` is not paused at the stand-in yet, or its pause not yet read from the audit topic."""
    statuses = standin.campaigns
    return any(statuses.get(campaign_id) != "paused" or campaign_id not in result.paused for campaign_id in campaigns)


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
            if event.outcome == "fired":
                continue
            compared = compared_text(
                evidence.window, evidence.value, evidence.threshold, evidence.numerator, evidence.denominator
            )
            if event.scope is None:
                result.audit_lines.append(f"{event.outcome:>8}  {event.campaign_id}  {event.rule.name}: {compared}")
                continue
            # a scope's decision is one per campaign of the scope: one line for them all, its count kept up to date
            at, campaigns = result.scope_lines.setdefault(
                (event.scope.decision_id, event.outcome), (len(result.audit_lines), set())
            )
            if at == len(result.audit_lines):
                result.audit_lines.append("")
            campaigns.add(event.campaign_id)
            result.audit_lines[at] = (
                f"{event.outcome:>8}  {_plural(len(campaigns), 'campaign')} of {event.scope.key}  "
                f"{event.rule.name}: {compared}"
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


def _view(
    traffic: Traffic,
    mirror: Engine,
    scopes: ScopeEngine | None,
    standin: LeadterraStandIn,
    result: DemoResult,
    sent: int,
) -> Group:
    table = Table(title=f"{sent:,} of {len(traffic.records):,} events streamed", expand=False)
    for column in ("campaign", "truth", "rule"):  # names whole; the last column wraps instead
        table.add_column(column, no_wrap=True)
    table.add_column("% of its threshold", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("why not paused", overflow="fold")
    in_domains = {campaign_id for ids in result.domains.values() for campaign_id in ids}
    for spec in traffic.campaigns:
        if spec.campaign_id in in_domains:  # a line per sending domain below, not a row per campaign
            continue
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
    domains = [_domain_view(domain, ids, scopes, standin, result) for domain, ids in result.domains.items()]
    tail = result.audit_lines[-6:]
    if any("already_paused" in line for line in tail):
        tail.append(KEEPS_SENDING)
    return Group(table, *domains, webhooks, *tail)


def _domain_view(
    domain: str, campaigns: list[str], scopes: ScopeEngine | None, standin: LeadterraStandIn, result: DemoResult
) -> Text:
    """A sending domain's line of the live view: its summary line, and while not all of its campaigns are paused,
    that a domain rule fired (the guard acts on it once caught up), or how far the closest is along its way to
    firing, and why it has not where it is past its line."""
    statuses = standin.campaigns
    paused = [campaign_id for campaign_id in campaigns if statuses.get(campaign_id) == "paused"]
    line, ratio, scope = domain_line(result, domain, campaigns, paused), 0.0, f"sender_domain:{domain}"
    if scopes is not None and len(paused) < len(campaigns):
        measures = scopes.engine.measure(scope)
        ratios = {
            compiled.rule.name: (compiled.rule, measure, measure.value / compiled.rule.level)
            for compiled in scopes.engine.rules_for(scope)
            if (measure := measures.get(compiled.rule.name)) is not None
        }
        fired = [name for name in ratios if ratios[name][0].action == "pause" and name in result.fired.get(scope, ())]
        if fired:  # a backlog's pause waits for the guard to catch up (guard.runtime.catchup)
            line += f" ({fired[0]} fired, held until caught up)"
            ratio = ratios[fired[0]][2]
        elif ratios:
            closest = max(ratios, key=lambda name: ratios[name][2])
            rule, measure, ratio = ratios[closest]
            why = _why_not_paused(scopes.engine, scope, rule, measure, result.fired) if ratio >= 1 else ""
            line += f" ({closest} at {ratio:.0%} of its threshold{': ' + why if why else ''})"
    style = "bold red" if paused and len(paused) == len(campaigns) else ("yellow" if ratio >= 0.7 else "")
    return Text(line, style=style)


def domain_line(result: DemoResult, domain: str, campaigns: list[str], paused: list[str]) -> str:
    """One line for a sending domain: its campaigns, their hard bounces so far pooled, and how many of them are
    paused, by which rules (as the audit topic says)."""
    pooled = result.pooled.get(domain, Pooled())
    rate = pooled.hard_bounces / pooled.sends if pooled.sends else 0.0
    by = Counter(result.paused.get(campaign_id, "a rule not yet in the audit topic") for campaign_id in paused)
    how = ", ".join(f"{count} by {rule}" for rule, count in by.most_common()) if len(by) > 1 else ""
    if len(by) == 1:
        how = f"by {next(iter(by))}"
    return (
        f"sender_domain:{domain}: {_plural(len(campaigns), 'campaign')}, pooled {rate:.1%} hard bounces "
        f"over {pooled.sends:,} sends, paused {len(paused)}/{len(campaigns)}" + (f" {how}" if how else "")
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
    domains = result.domains
    domain_of = {campaign_id: domain for domain, ids in domains.items() for campaign_id in ids}
    caught = [campaign_id for campaign_id in result.caught if campaign_id not in domain_of]
    in_domains = Counter(domain_of[campaign_id] for campaign_id in result.caught if campaign_id in domain_of)
    named = [*caught, *(f"{count} of sender_domain:{domain}" for domain, count in in_domains.items())]
    lines.append(f"  bad campaigns paused through the API: {len(result.caught)} of {len(bad)}  {', '.join(named)}")
    if result.missed:
        lines.append(f"  [red]missed[/]: {', '.join(result.missed)}")
    lines.append(f"  healthy campaigns paused: {len(result.wrongly_paused)}  {', '.join(result.wrongly_paused)}")
    for campaign_id in caught:  # a domain's campaigns: on its line below
        lines.append(f"    {campaign_id}: paused by {result.paused.get(campaign_id, '?')}")
    for domain, ids in domains.items():
        paused = [campaign_id for campaign_id in ids if campaign_id in set(result.pause_calls)]
        lines.append(f"  {domain_line(result, domain, ids, paused)}")
    return "\n".join(lines)
