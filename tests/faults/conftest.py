"""Shared parts of the fault-injection suite (issue 4).

Everything here runs the real thing: the real broker of the session (or a dedicated one), the
real `guard run` process (`python -m guard.cli run`), real HTTP to the Leadterra stand-in, which
lives in the test's event loop. Helpers reach the tests through fixtures (`kit`, `standin`,
`guards`, `report_row`), so no test imports this module.

The rows of `tests/faults/REPORT.md` (`report_row`) are collected by tests/fault_report.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from guard.engine import Decision, Engine, record_decisions
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.rules import load_rules
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import topic_partitions
from guard.testing.broker import BrokerInfo, free_port
from guard.testing.guard_process import GuardProcess, Guards, Metrics, clean_environ, wait_until
from guard.testing.kafka_reads import committed, read_all
from guard.testing.leadterra import LeadterraStandIn, RecordedRequest
from guard.tools.generate import Record
from guard.tools.replay import replay

HERE = Path(__file__).parent
# A resume grace longer than any history here: a history produced in a burst then has no send that reads as a
# resume, so its pause decisions stay current when the guard catches up (guard.runtime.catchup): the cases that
# crash or kill things while a backlog is read check that every decision is acted on. Catch-up itself is
# proven by tests/test_catchup.py and tests/deployed.
NO_RESUMES = 86_400.0
SHIPPED_RULES = HERE.parent.parent / "rules"

# The rules of the fault tests (cases 1-5): fixed here, so which campaigns fire does not move when
# the shipped rules are tuned. Sliding time windows; one pause per breach (cooldown 1 h).
FAULT_RULES = """groups:
  - name: faults
    rules:
      - name: hard-bounce-rate
        description: hard bounces above 6% of the sends of the last hour (at least 200 sends)
        rate:
          of: {signal: bounced, where: {bounce_type: hard}}
          per: sent
        window: 1h
        threshold: 6%
        min_volume: 200
        cooldown: 1h
        action: pause
        severity: critical
      - name: soft-bounce-rate
        description: soft bounces above 10% of the sends of the last hour (an alert, no pause)
        rate:
          of: {signal: bounced, where: {bounce_type: soft}}
          per: sent
        window: 1h
        threshold: 10%
        min_volume: 200
        cooldown: 6h
        action: alert
        severity: warning
      - name: complaint-spike
        description: ten complaints within an hour
        count: complained
        window: 1h
        threshold: 10
        cooldown: 1h
        action: pause
        severity: critical
      - name: complaint-rate-warning
        description: complaints above 0.1% of a day's sends (an alert, no pause)
        rate:
          of: complained
          per: sent
        window: 24h
        threshold: 0.1%
        min_volume: 1000
        cooldown: 12h
        action: alert
        severity: warning
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)  # integration too when it needs a broker (tests/conftest.py)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection tests on real processes (tests/faults)")


# --------------------------------------------------------------------------- Kafka helpers


@dataclass
class Topics:
    """Fresh input, audit, dead-letter and state (checkpoint) topics and a fresh group id."""

    input: str
    audit: str
    dlq: str
    group: str
    state: str

    @classmethod
    def fresh(cls, prefix: str = "fault") -> Topics:
        suffix = uuid.uuid4().hex[:10]
        return cls(
            f"{prefix}-events-{suffix}",
            f"{prefix}-audit-{suffix}",
            f"{prefix}-dlq-{suffix}",
            f"guard-{suffix}",
            f"{prefix}-state-{suffix}",
        )


async def create_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 4,
    *,
    replicas: Sequence[int] = (),
    configs: dict[str, str] | None = None,
) -> Topics:
    """Input, audit and dead-letter topics, and the compacted one-partition state topic. `replicas`: the
    broker ids holding every partition, the first one its preferred leader (a cluster test knows which
    broker leads what); one replica when empty. `configs`: topic configs, e.g. {"min.insync.replicas": "2"}."""

    def shape(count: int) -> dict[str, Any]:
        if replicas:
            assignment = {p: list(replicas) for p in range(count)}
            return {"num_partitions": -1, "replication_factor": -1, "replica_assignments": assignment}
        return {"num_partitions": count, "replication_factor": 1}

    compacted = (configs or {}) | {"cleanup.policy": "compact"}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(t, **shape(partitions), topic_configs=configs or {})
                for t in (topics.input, topics.audit, topics.dlq)
            ]
            + [NewTopic(topics.state, **shape(1), topic_configs=compacted)]
        )
    finally:
        await admin.close()
    failed = [(name, code) for name, code, *_ in response.topic_errors if code]  # aiokafka does not raise
    if failed:
        raise RuntimeError(f"creating {failed}: error codes from the broker")
    return topics


class Producer:
    """A batching producer: `send` without awaiting each delivery, then one flush per chunk."""

    def __init__(self, bootstrap: str, *, idempotence: bool = False, **options: Any) -> None:
        self.client = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence, linger_ms=5, **options
        )
        self.sent = 0

    async def __aenter__(self) -> Producer:
        await self.client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()

    async def send_all(
        self, topic: str, items: Iterable[tuple[bytes | str | None, bytes | None]], partition: int | None = None
    ) -> list[Any]:
        """Send (key, value) pairs without awaiting each delivery, then flush; returns each record's
        metadata (partition, offset), in order. Raises if any delivery failed. `partition` overrides
        the key's partition."""
        futures = []
        for key, value in items:
            key_bytes = key.encode() if isinstance(key, str) else key
            futures.append(await self.client.send(topic, key=key_bytes, value=value, partition=partition))
        await self.client.flush()
        self.sent += len(futures)
        return [future.result() for future in futures]

    async def send_batched(self, topic: str, items: Iterable[tuple[str, bytes]]) -> dict[int, int]:
        """Many keyed records fast: batches built per partition (the default partitioner, once per
        key) and sent with `send_batch`. Returns how many records went to each partition."""
        partitions = sorted(await self.client.partitions_for(topic))
        partitioner, where = DefaultPartitioner(), {}
        batches: dict[int, Any] = {}
        counts: dict[int, int] = dict.fromkeys(partitions, 0)
        futures = []
        for key, value in items:
            partition = where.get(key)
            if partition is None:
                partition = where[key] = partitioner(key.encode(), partitions, partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self.client.create_batch()
            if batch.append(key=key.encode(), value=value, timestamp=None) is None:  # full
                batch.close()
                futures.append(await self.client.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = self.client.create_batch()
                batch.append(key=key.encode(), value=value, timestamp=None)
            counts[partition] += 1
        for partition, batch in batches.items():
            batch.close()
            futures.append(await self.client.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        self.sent += sum(counts.values())
        return counts


@dataclass
class AuditTail:
    """Follows the audit topic from its beginning in the background; keeps (arrival, event) pairs."""

    bootstrap: str
    topic: str
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    written: dict[str, float] = field(default_factory=dict)  # audit id: the record's timestamp (the writer's clock)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AuditTail:
        partitions = await topic_partitions(KafkaSettings(bootstrap_servers=self.bootstrap), self.topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._follow(consumer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.monotonic()
                    for record in batch:
                        event = json.loads(record.value)
                        self.events.append((now, event))
                        self.written.setdefault(event["id"], record.timestamp / 1000)
        finally:
            await consumer.stop()

    def outcomes(self, decision_id: str) -> list[str]:
        return [e["outcome"] for _, e in self.events if e["decision_id"] == decision_id]

    def settled(self, decision_id: str) -> bool:
        return any(o != "fired" for o in self.outcomes(decision_id))

    def superseded(self) -> dict[str, float]:
        """Decisions audited `superseded` (a backlog's, not acted on: guard.runtime.catchup), each with when its
        first `superseded` record was written."""
        return {e["decision_id"]: self.written[e["id"]] for _, e in self.events if e["outcome"] == "superseded"}

    def covered(self) -> set[str]:
        """Decisions audited `already_paused`: covered by a pause that landed moments before (another rule's, or
        one acted on at catch-up: guard.runtime.catchup)."""
        return {e["decision_id"] for _, e in self.events if e["outcome"] == "already_paused"}

    def fired(self) -> dict[str, dict[str, Any]]:
        return {e["decision_id"]: e for _, e in self.events if e["outcome"] == "fired"}

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """Monotonic arrival time of the first event matching `predicate` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for arrived, event in self.events:
                if predicate(event):
                    return arrived
            if time.monotonic() > deadline:
                raise TimeoutError("no matching audit event in time")
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- expected decisions


@dataclass
class Expected:
    """What the engine decides over a log, computed offline: every decision, and for each the index
    of the record that made it fire."""

    decisions: list[Decision]
    cause: dict[str, int]

    @property
    def pauses(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "pause"]

    def pauses_by_campaign(self) -> dict[str, list[Decision]]:
        found: dict[str, list[Decision]] = {}
        for decision in self.pauses:
            found.setdefault(decision.campaign_id, []).append(decision)
        return found


def expected_decisions(
    records: Sequence[Record], rules_path: Path, resume_grace: float = DEFAULT_RESUME_GRACE
) -> Expected:
    """The same engine as `guard run`, over the same records in the same order (one engine for all
    campaigns; the engine promises that how campaigns share an engine changes no decision).
    Cross-checked with `guard.tools.replay.replay`, the engine behind `guard replay`."""
    rules = load_rules(rules_path)
    engine, decisions, cause = Engine(rules, resume_grace=resume_grace), [], {}
    for index, decision in record_decisions(engine, ((record.value, record.time) for record in records)):
        decisions.append(decision)
        cause[decision.id] = index
    replayed = replay(((r.value, r.time) for r in records), rules, resume_grace=resume_grace)
    assert {d.id for d in replayed.decisions} == set(cause), "guard.tools.replay disagrees with the engine"
    return Expected(decisions, cause)


# --------------------------------------------------------------------------- pause requests


@dataclass
class Ledger:
    """Every answered pause request and the campaign's status just before it (the stand-in's
    `on_request` runs right after the handler, before anything else can touch the campaign)."""

    standin: LeadterraStandIn
    status: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[RecordedRequest, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.standin.on_request = self._seen

    def _seen(self, request: RecordedRequest) -> None:
        if request.is_pause and request.status == 200:
            campaign = request.campaign_id or ""
            self.calls.append((request, self.status.get(campaign, "running")))
            self.status[campaign] = self.standin.status(campaign)

    def resume(self, campaign: str) -> None:
        self.standin.resume(campaign)
        self.status[campaign] = "running"

    def keys(self, campaign: str | None = None) -> list[str]:
        return [r.header("Idempotency-Key") or "" for r, _ in self.calls if campaign in (None, r.campaign_id)]


def check_pause_requests(
    ledger: Ledger,
    expected_ids: set[str],
    bad: set[str],
    healthy: list[str],
    superseded: Mapping[str, float] = MappingProxyType({}),
    lives: Sequence[GuardProcess] = (),
    covered: set[str] = frozenset(),
) -> tuple[int, int]:
    """The assertions shared by the cases; returns (answered requests, idempotent repeats). `superseded`: decisions
    audited `superseded` (a backlog's, no longer current when the guard caught up: guard.runtime.catchup) and when;
    every other expected decision is acted on, and each bad campaign paused. `lives`: the processes of a case that
    kills its guards. A killed life's `superseded` was never committed: a later life derives the decision again and
    judges it at its own catch-up, over a log that has grown since, so one life's superseded decision may be acted on
    by another; never by the life that superseded it. `covered`: decisions audited `already_paused`: a backlog's
    campaign paused at catch-up is paused from then on in the guard's reading, so its mail in flight may be covered
    live where the offline reading, which knows nothing of catch-up, calls for it."""
    standin = ledger.standin
    every = standin.pause_requests()
    keys = {r.header("Idempotency-Key") for r in every}
    assert keys <= expected_ids, f"pause requests for decisions the log does not justify: {keys - expected_ids}"
    assert set(superseded) <= expected_ids, "a decision the log does not justify was superseded"

    def life(moment: float) -> int | None:
        return next((i for i, guard in enumerate(lives) if guard.alive_at(moment)), None)

    for request in every:
        key = request.header("Idempotency-Key") or ""
        if key in superseded:
            by = life(superseded[key])
            assert by is not None and life(request.received_at) != by, f"superseded decision {key} was acted on"
    acted = expected_ids - set(superseded) - covered | set(ledger.keys())
    assert set(ledger.keys()) == acted, f"decisions never acted on: {acted - set(ledger.keys())}"
    assert {r.campaign_id for r in every} == bad, "exactly the bad campaigns are paused"
    assert not any(standin.pause_requests(campaign) for campaign in healthy)
    seen: set[str] = set()
    repeats = 0
    for request, before in ledger.calls:
        key = request.header("Idempotency-Key") or ""
        if key in seen:
            repeats += 1
            assert before == "paused", f"a repeat for {key} paused {request.campaign_id} again: not a no-op"
        seen.add(key)
    return len(ledger.calls), repeats


# --------------------------------------------------------------------------- the kit


class Kit:
    """What a fault test needs, bound to the session's broker and the test's stand-in."""

    Topics = Topics
    Producer = Producer
    AuditTail = AuditTail
    Metrics = Metrics
    wait_until = staticmethod(wait_until)
    free_port = staticmethod(free_port)
    read_all = staticmethod(read_all)
    committed = staticmethod(committed)
    Ledger = Ledger
    check_pause_requests = staticmethod(check_pause_requests)
    create_topics = staticmethod(create_topics)
    SHIPPED_RULES = SHIPPED_RULES
    NO_RESUMES = NO_RESUMES

    def __init__(self, broker: BrokerInfo, guards: Guards, tmp_path: Path) -> None:
        self.broker, self.guards, self.tmp_path = broker, guards, tmp_path
        self.bootstrap = broker.bootstrap_servers
        self.rules = tmp_path / "fault-rules.yaml"
        self.rules.write_text(FAULT_RULES, encoding="utf-8")

    def expected(self, records: Sequence[Record], resume_grace: float = DEFAULT_RESUME_GRACE) -> Expected:
        """The decisions of the fault rules over `records` (see `expected_decisions`)."""
        return expected_decisions(records, self.rules, resume_grace)

    async def topics(
        self,
        partitions: int = 4,
        bootstrap: str | None = None,
        *,
        replicas: Sequence[int] = (),
        configs: dict[str, str] | None = None,
    ) -> Topics:
        return await create_topics(
            bootstrap or self.bootstrap, Topics.fresh(), partitions, replicas=replicas, configs=configs
        )

    def env(
        self, topics: Topics, standin: LeadterraStandIn | None, *, bootstrap: str | None = None, **settings: object
    ) -> dict[str, str]:
        """The environment of `guard run` for these topics: the fault rules, fast group settings, a
        fresh HTTP port; dry run without a stand-in; checkpoints to the test's state topic, off unless
        the case sets GUARD_CHECKPOINT_INTERVAL. `settings` are extra variables, e.g.
        LEADTERRA_RETRY_DEADLINE=90 or GUARD_RULES=<the shipped rules>."""
        env = {
            **clean_environ(),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap or self.bootstrap,
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
            "GUARD_RULES": str(self.rules),
            "GUARD_INPUT_TOPICS": topics.input,
            "GUARD_AUDIT_TOPIC": topics.audit,
            "GUARD_DLQ_TOPIC": topics.dlq,
            "GUARD_GROUP_ID": topics.group,
            "GUARD_STATE_TOPIC": topics.state,
            "GUARD_CHECKPOINT_INTERVAL": "0",
            "GUARD_HTTP_HOST": "127.0.0.1",
            "GUARD_HTTP_PORT": str(free_port()),
            "GUARD_COMMIT_INTERVAL": "0.2",
            "GUARD_SHUTDOWN_GRACE": "2",
            "GUARD_RULES_RELOAD_INTERVAL": "0",
            "GUARD_LOG_LEVEL": "INFO",
            "LEADTERRA_BACKOFF_INITIAL": "0.05",
            "LEADTERRA_BACKOFF_MAX": "0.5",
            "LEADTERRA_RETRY_DEADLINE": "60",
        }
        if not self.broker.idempotence:  # else the default: the idempotent producer
            env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        if standin is not None:
            env |= {"LEADTERRA_API_URL": standin.url, "LEADTERRA_API_KEY": standin.api_key}
        else:
            env["GUARD_DRY_RUN"] = "true"
        env.update({k: str(v) for k, v in settings.items()})
        return env

    def guard(self, env: dict[str, str], name: str | None = None) -> GuardProcess:
        return self.guards.start(env, name)

    def producer(self, bootstrap: str | None = None, **options: Any) -> Producer:
        return Producer(bootstrap or self.bootstrap, idempotence=self.broker.idempotence, **options)

    def audit_tail(self, topics: Topics, bootstrap: str | None = None) -> AuditTail:
        return AuditTail(bootstrap or self.bootstrap, topics.audit)


@pytest.fixture
async def kit(kafka_broker: BrokerInfo, guards: Guards, tmp_path: Path) -> Kit:
    """The kit on the session's broker: the test runs once per broker of the matrix."""
    return Kit(kafka_broker, guards, tmp_path)


@pytest.fixture
def kit_on(guards: Guards, tmp_path: Path) -> Callable[[BrokerInfo], Kit]:
    """`kit_on(broker)`: a kit on a broker the test starts itself (it runs once, not per broker)."""
    return lambda broker: Kit(broker, guards, tmp_path)
