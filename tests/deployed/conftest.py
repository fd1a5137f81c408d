"""The deployed-as-users-deploy suite (issue 25): the guard as a user runs it, watched from outside.

The guard runs as a real process (`python -m guard.cli run`) configured only as the README tells a
user to: brokers, the Leadterra URL and key, input topics, rules, the health port, fresh topic and
group names through their documented variables, a Slack webhook for notifications; every other
setting at its default (checkpoint and commit intervals, session timeout, resume grace). On the
embedded broker, which has no idempotent producer for the guard's client, the README's
`KAFKA_ENABLE_IDEMPOTENCE=false` as well. Nothing is made by hand on the broker except the input
topic, by the broker's auto-create (a producer writing to it) or an admin request, as its user would:
the audit, dead-letter, state and control topics are the guard's business.

Events come from confluent-kafka (librdkafka), a client the project did not write, in the envelope
of the README's "Run it against your cluster", with record timestamps equal to the event times, as
a recorded history has them; or as Leadterra posts them, signed webhooks through `guard ingest` (run
with its README settings), from httpx. Each scenario counts what a user would count: pause calls per
campaign (the Leadterra stand-in records them), audit events per campaign and outcome, and Slack
messages per campaign and outcome (a small receiver on 127.0.0.1).

Helpers reach the tests through the `deploy` fixture, so no test imports this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import json
import re
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from aiohttp import web
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from guard.contracts.audit import FINAL_OUTCOMES
from guard.testing.broker import BrokerInfo, free_port
from guard.testing.events import envelope
from guard.testing.guard_process import GuardProcess, Guards, Metrics, clean_environ, wait_until
from guard.testing.kafka_reads import committed, read_all
from guard.testing.leadterra import LeadterraStandIn

HERE = Path(__file__).parent
SHIPPED_RULES = HERE.parent.parent / "rules"
PARTITIONS = 4  # what both test brokers give a topic they create on demand (num.partitions)
WEBHOOK_SECRET = "whsec_deployed"  # the signing secret Leadterra was given for the door


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.deployed)
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deployed: black-box scenarios with documented settings only (tests/deployed)")


# --------------------------------------------------------------------------- a history of mail


class Record(NamedTuple):
    campaign: str
    value: bytes
    at: float  # event time, epoch seconds: also the record's timestamp


@dataclass(frozen=True)
class Stretch:
    """A stretch of a campaign's mail, [start, end) in event time: one send every `every` seconds, a
    `bounces` share of them hard-bouncing (spread evenly: deterministic)."""

    start: float
    end: float
    bounces: float
    every: float = 6.0


BAD = 0.25  # a stale list: 25% hard bounces (stale lists run at 8-15%, dead ones higher)
HEALTHY = 0.005  # 0.5%: a clean list
BOUNCE_DELAY = 20.0  # seconds from a send to its bounce webhook


def mail(campaign: str, *stretches: Stretch, until: float) -> Iterator[Record]:
    """The campaign's `message.sent` and `message.bounced` events over its stretches, in event-time
    order, none after `until`."""
    bounces: deque[Record] = deque()  # bounces of earlier sends, not yet due
    for stretch in stretches:
        steps = int((min(stretch.end, until) - stretch.start) / stretch.every)
        for i in range(max(0, steps)):
            at = stretch.start + i * stretch.every
            while bounces and bounces[0].at <= at:
                yield bounces.popleft()
            message = f"{campaign}-{int(at * 1000)}"  # unique over calls: a repeated id is a duplicate
            recipient = f"{message}@example.com"
            yield Record(
                campaign,
                envelope("message.sent", campaign, at, messageId=message, recipient=recipient, sequenceStep=1),
                at,
            )
            if int((i + 1) * stretch.bounces) > int(i * stretch.bounces) and at + BOUNCE_DELAY <= until:
                bounce = envelope(
                    "message.bounced",
                    campaign,
                    at + BOUNCE_DELAY,
                    messageId=message,
                    bounceType="hard",
                    bounceReason="550 5.1.1 user unknown",
                    recipient=recipient,
                )
                bounces.append(Record(campaign, bounce, at + BOUNCE_DELAY))
    yield from bounces


def history(*campaigns: Iterable[Record]) -> Iterator[Record]:
    """Several campaigns' mail merged in event-time order, as a webhook bridge would have written it
    (lazily: a large history is never held in memory)."""
    return heapq.merge(*campaigns, key=lambda record: record.at)


# --------------------------------------------------------------------------- librdkafka


def produce(bootstrap: str, topic: str, records: Iterable[Record], compression: str = "none") -> dict[int, int]:
    """Write `records` with confluent-kafka, keyed by campaign, timestamped with their event time, in
    batches compressed with `compression` (librdkafka's `compression.type`). Returns the end offset of
    each partition written to; raises if any delivery failed, or if a campaign's records landed out of
    the order they were given in.

    Idempotent, so a retried batch keeps its place: hours of history written in one go by a producer that
    may reorder on a retry (librdkafka's default) could land hours-old mail after the present, where a
    bridge writing as the mail happens reorders seconds at most."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": compression,
            "enable.idempotence": True,
            # as the README asks of librdkafka (its default is crc32): where `guard ingest` puts the same campaign
            "partitioner": "murmur2_random",
        }
    )
    ends: dict[int, int] = {}
    failures: list[str] = []
    written: dict[str, list[tuple[int, int]]] = {}  # campaign -> (sequence given, offset written)

    def delivered(sequence: int, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)
            written.setdefault(message.key().decode(), []).append((sequence, message.offset()))

    for sequence, record in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    record.value,
                    record.campaign,
                    timestamp=int(record.at * 1000),
                    on_delivery=partial(delivered, sequence),
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60) or failures:
        raise RuntimeError(f"producing to {topic}: {len(failures)} failed ({failures[:3]}) or not flushed")
    for campaign, deliveries in written.items():  # the premise of every scenario: the log holds the mail in order
        # a retry librdkafka knows landed (a duplicate sequence) is delivered with no offset: nothing to order
        offsets = [offset for _, offset in sorted(deliveries) if offset >= 0]
        if offsets != sorted(offsets):
            raise RuntimeError(f"producing to {topic}: {campaign}'s records landed out of the order given")
    return ends


def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    """Where each partition of `topic` ends (its high watermark)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def topic_names(bootstrap: str) -> set[str]:
    """Every topic the brokers know (a request for all topics: it creates none)."""
    return set(admin(bootstrap).list_topics(timeout=10).topics)


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> bool:
    """Create `topic` as its user would; False when it exists already (someone else made it)."""
    client = admin(bootstrap)  # held until answered: a client collected early fails its requests
    future = client.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic]
    try:
        future.result(timeout=15)
    except KafkaException as error:
        if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


# --------------------------------------------------------------------------- Slack


class SlackReceiver:
    """A Slack incoming webhook on 127.0.0.1: keeps every message's (campaign, outcome)."""

    HEADLINE = re.compile(r"campaign `([^`]+)`")
    OUTCOME = re.compile(r"^Outcome: (\S+)$", re.MULTILINE)

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        text = json.loads(await request.read())["text"]
        campaign, outcome = self.HEADLINE.search(text), self.OUTCOME.search(text)
        self.messages.append((campaign[1] if campaign else "?", outcome[1] if outcome else "?"))
        return web.Response(text="ok")

    async def __aenter__(self) -> SlackReceiver:
        app = web.Application()
        app.router.add_post("/services/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/services/T000/B000/deployed"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# --------------------------------------------------------------------------- what a user counts


@dataclass(repr=False)
class Tally:
    """What became of each campaign: pause calls received by Leadterra, audit events by outcome, Slack
    messages by outcome."""

    calls: Counter[str] = field(default_factory=Counter)
    audit: dict[str, Counter[str]] = field(default_factory=dict)
    slack: dict[str, Counter[str]] = field(default_factory=dict)
    # each decision acted on, with its event time and evidence: enough to tell which stretch of mail paused a campaign
    acted: list[str] = field(default_factory=list)

    def outcomes(self, campaign: str) -> Counter[str]:
        return self.audit.get(campaign, Counter())

    def notified(self, campaign: str) -> Counter[str]:
        return self.slack.get(campaign, Counter())

    def __repr__(self) -> str:  # what an assertion message shows
        campaigns = sorted(set(self.calls) | set(self.audit) | set(self.slack))
        return (
            "; ".join(
                f"{c}: {self.calls[c]} pause calls, audit {dict(self.outcomes(c))}, slack {dict(self.notified(c))}"
                for c in campaigns
            )
            or "no pause call, audit event or notification"
        ) + "".join(f"\n  acted on: {account}" for account in self.acted)


# --------------------------------------------------------------------------- the deployment


@dataclass
class Names:
    """Fresh names for what a deployment configures, so tests on one broker never meet."""

    input: str
    audit: str
    dlq: str
    state: str
    control: str
    group: str
    scopes: str

    @classmethod
    def fresh(cls) -> Names:
        suffix = uuid.uuid4().hex[:10]
        return cls(
            f"leadterra.events-{suffix}",
            f"guard.audit-{suffix}",
            f"guard.dlq-{suffix}",
            f"guard.state-{suffix}",
            f"guard.control-{suffix}",
            f"deliverability-guard-{suffix}",
            f"guard.scopes-{suffix}",
        )


class Deployment:
    """A user's deployment on the session's broker: the stand-in with their campaigns, a Slack
    receiver, documented settings, fresh names."""

    Stretch = Stretch
    BAD, HEALTHY = BAD, HEALTHY
    shipped_rules = SHIPPED_RULES
    mail = staticmethod(mail)
    history = staticmethod(history)
    wait_until = staticmethod(wait_until)
    Metrics = Metrics

    def __init__(self, broker: BrokerInfo, guards: Guards, standin: LeadterraStandIn, slack: SlackReceiver) -> None:
        self.broker, self.guards, self.standin, self.slack = broker, guards, standin, slack
        self.bootstrap = broker.bootstrap_servers
        self.names = Names.fresh()
        self.ends: dict[int, int] = {}  # end offset of each input partition written to, so far

    def campaigns(self, *campaigns: str) -> None:
        """The user's running campaigns in Leadterra."""
        for campaign in campaigns:
            self.standin.add_campaign(campaign)

    def env(self, **settings: str) -> dict[str, str]:
        """`guard run`'s environment: the README's variables only, the rest at their defaults."""
        env = {
            **clean_environ(),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LEADTERRA_API_URL": self.standin.url,
            "LEADTERRA_API_KEY": self.standin.api_key,
            "GUARD_RULES": str(SHIPPED_RULES),
            "GUARD_INPUT_TOPICS": self.names.input,
            "GUARD_AUDIT_TOPIC": self.names.audit,
            "GUARD_DLQ_TOPIC": self.names.dlq,
            "GUARD_STATE_TOPIC": self.names.state,
            "GUARD_CONTROL_TOPIC": self.names.control,
            "GUARD_SCOPE_TOPIC": self.names.scopes,
            "GUARD_GROUP_ID": self.names.group,
            "GUARD_HTTP_PORT": str(free_port()),
            "GUARD_SLACK_WEBHOOK_URL": self.slack.url,
        }
        if not self.broker.idempotence:  # README: off only for brokers without it (the embedded one)
            env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        return env | settings

    def start(self, name: str | None = None, **settings: str) -> GuardProcess:
        return self.guards.start(self.env(**settings), name)

    def start_ingest(self) -> GuardProcess:
        """`guard ingest` as the README runs it: the brokers, the input and dead-letter topics, its port, the
        signing secret."""
        env = {
            **clean_environ(),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "GUARD_INPUT_TOPICS": self.names.input,
            "GUARD_DLQ_TOPIC": self.names.dlq,
            "GUARD_HTTP_PORT": str(free_port()),
            "LEADTERRA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        if not self.broker.idempotence:
            env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        return self.guards.start(env, "ingest", command="ingest")

    async def post(self, door: GuardProcess, records: Iterable[Record]) -> None:
        """POST each record's value to the door as Leadterra posts a webhook, signed with the HMAC-SHA256 of the
        body in hex: one campaign's in the order given, campaigns side by side. A 503 is posted again a second
        later, as Leadterra retries; anything else but an accepted 200 raises."""
        by_campaign: dict[str, list[bytes]] = defaultdict(list)
        for record in records:
            by_campaign[record.campaign].append(record.value)

        async def deliver(client: httpx.AsyncClient, bodies: list[bytes]) -> None:
            for body in bodies:
                signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                headers = {"X-Leadterra-Signature": signature, "Content-Type": "application/json"}
                for _ in range(30):
                    response = await client.post("/v1/webhooks/leadterra", content=body, headers=headers)
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(1.0)
                if response.status_code != 200 or response.json().get("status") != "accepted":
                    raise RuntimeError(f"the door answered {response.status_code} {response.text} to {body[:200]!r}")

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{door.port}", timeout=30.0) as client:
            await asyncio.gather(*(deliver(client, bodies) for bodies in by_campaign.values()))
        for partition, end in (await asyncio.to_thread(end_offsets, self.bootstrap, self.names.input)).items():
            self.ends[partition] = max(self.ends.get(partition, 0), end)

    async def produce(self, records: Iterable[Record], topic: str | None = None, compression: str = "none") -> None:
        """Write records to the input topic (or `topic`) with librdkafka, compressed with `compression`; a
        missing topic is made by the broker's auto-create, as a user's bridge would make it."""
        ends = await asyncio.to_thread(produce, self.bootstrap, topic or self.names.input, records, compression)
        if topic in (None, self.names.input):
            for partition, end in ends.items():
                self.ends[partition] = max(self.ends.get(partition, 0), end)

    async def create_input_topic(self, topic: str | None = None) -> bool:
        """The user creates the input topic (admin request); False when it existed already."""
        return await asyncio.to_thread(create_topic, self.bootstrap, topic or self.names.input)

    async def topics(self) -> set[str]:
        return await asyncio.to_thread(topic_names, self.bootstrap)

    async def caught_up(self) -> bool:
        """The group's committed offsets reached the end of everything produced to the input topic."""
        offsets = await committed(self.bootstrap, self.names.group, self.names.input, PARTITIONS)
        return all(offsets.get(p, 0) >= end for p, end in self.ends.items())

    async def audit_events(self) -> list[dict[str, Any]]:
        if self.names.audit not in await self.topics():
            return []
        return [json.loads(record.value) for record in await read_all(self.bootstrap, self.names.audit)]

    async def settle(self, guard: GuardProcess, timeout: float = 45.0) -> float:
        """Wait until the guard has committed everything produced, every pause decision in the audit
        topic has its outcome, nothing is in flight, and each pause outcome's notification has arrived
        (a few seconds at most). Returns the seconds it took until committed."""

        async def quiet() -> bool:
            if not await self.caught_up():
                return False
            events = await self.audit_events()
            fired = {e["decision_id"] for e in events if e["outcome"] == "fired" and e["rule"]["action"] == "pause"}
            settled = {e["decision_id"] for e in events if e["outcome"] in FINAL_OUTCOMES}
            return fired <= settled and (await guard.metrics())("guard_inflight_actions") == 0

        took = await wait_until(quiet, timeout, 0.5, "the guard caught up and settled")
        with_notification = sum(1 for e in await self.audit_events() if e["outcome"] in ("paused", "failed"))
        try:
            await wait_until(lambda: len(self.slack.messages) >= with_notification, 5, 0.1)
        except TimeoutError:
            pass  # the tally shows what arrived
        return took

    async def tally(self) -> Tally:
        tally = Tally()
        for request in self.standin.pause_requests():
            tally.calls[request.campaign_id or "?"] += 1
        for event in await self.audit_events():
            tally.audit.setdefault(event["campaign_id"], Counter())[event["outcome"]] += 1
            if event["outcome"] in {"paused", "already_paused", "failed", "not_running", "dry_run"}:
                evidence = event["evidence"]
                tally.acted.append(
                    f"{event['campaign_id']} {event['rule']['name']} {event['outcome']}: event time "
                    f"{event['timings']['event_time']}, evidence {evidence.get('evidence_from')} .. "
                    f"{evidence.get('evidence_to')}, value {evidence.get('value')}, decision {event['decision_id']}"
                )
        for campaign, outcome in self.slack.messages:
            tally.slack.setdefault(campaign, Counter())[outcome] += 1
        return tally

    async def readyz(self, guard: GuardProcess) -> tuple[int | None, str]:
        response = await guard.get("/readyz")
        return (response.status_code, response.text) if response is not None else (None, "")

    async def watch_readyz(self, guard: GuardProcess, seconds: float) -> list[tuple[int | None, str]]:
        """Every /readyz answer over `seconds` (None: not answering yet), a few a second."""
        answers = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            answers.append(await self.readyz(guard))
            await asyncio.sleep(0.2)
        return answers

    @staticmethod
    def assigned_at(guard: GuardProcess) -> float | None:
        """Wall clock of the README's `partitions assigned` line that gave this replica every input
        partition (None: not yet)."""
        for entry in guard.logs():
            if entry.get("event") == "partitions assigned" and len(entry.get("partitions", ())) == PARTITIONS:
                return datetime.fromisoformat(entry["timestamp"]).timestamp()
        return None

    async def ready_owning_all(self, guard: GuardProcess, timeout: float = 60.0) -> float:
        """Wall clock when /readyz first said 200 after the group gave this replica every partition."""

        async def ready() -> bool:
            if not guard.running:
                raise RuntimeError(f"{guard.name} exited with {guard.returncode}:\n{guard.log_tail()}")
            return self.assigned_at(guard) is not None and (await self.readyz(guard))[0] == 200

        await wait_until(ready, timeout, 0.05, f"{guard.name} ready with every partition")
        return time.time()


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    async with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
async def deploy(
    kafka_broker: BrokerInfo, guards: Guards, standin: LeadterraStandIn, slack: SlackReceiver
) -> Deployment:
    """A deployment on the session's broker: the test runs once per broker of the matrix."""
    return Deployment(kafka_broker, guards, standin, slack)
