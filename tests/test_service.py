"""The guard end to end on a real broker with the Leadterra stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import structlog.testing
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from test_reload import RULE as RELOAD_RULE
from test_reload import ConfigMapVolume

from guard.actions.audit import audit_event
from guard.contracts.events import decode
from guard.engine import Decision, Engine
from guard.engine.episodes import DEFAULT_RESUME_GRACE
from guard.rules import load_rules
from guard.runtime.service import Service
from guard.runtime.settings import GuardSettings, KafkaSettings, LeadterraSettings, Settings
from guard.runtime.topics import topic_partitions
from guard.testing.broker import BrokerInfo
from guard.testing.events import bounced, complained, sent
from guard.testing.leadterra import LeadterraStandIn
from guard.tools.generate import generate

RULES = Path(__file__).parent.parent / "rules"


class Topics:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.input, self.audit, self.dlq = f"events-{suffix}", f"audit-{suffix}", f"dlq-{suffix}"
        self.group = f"guard-{suffix}"


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    """Fresh input, audit and dead-letter topics (4 partitions each) and group id."""
    names = Topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=4, replication_factor=1) for t in (names.input, names.audit, names.dlq)]
        )
    finally:
        await admin.close()
    return names


@pytest.fixture
async def producer(kafka_broker: BrokerInfo) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, acks="all", **kafka_broker.producer_overrides
    )
    await client.start()
    yield client
    await client.stop()


def settings_for(broker: BrokerInfo, standin: LeadterraStandIn, topics: Topics, **guard: object) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            session_timeout_ms=2000,
            heartbeat_interval_ms=200,
            **({} if broker.idempotence else {"enable_idempotence": False}),  # else the default: on
        ),
        leadterra=LeadterraSettings(
            api_url=standin.url,
            api_key=SecretStr(standin.api_key),
            backoff_initial=0.02,
            backoff_max=0.1,
            retry_deadline=10,
        ),
        guard=GuardSettings(
            rules=guard.pop("rules", RULES),
            input_topics=(topics.input,),
            audit_topic=topics.audit,
            dlq_topic=topics.dlq,
            group_id=topics.group,
            http_host="127.0.0.1",
            http_port=0,
            **{"commit_interval": 0.1, "checkpoint_interval": 0, **guard},  # checkpoints: test_checkpoints
        ),
    )


class Guard(Service):
    """A Service running as a task of the test's event loop."""

    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        """What SIGTERM does: stop fetching, drain, commit, close; wait for it."""
        self.stop()
        await asyncio.wait_for(self.task, timeout=30)


RunGuard = Callable[..., Awaitable[Guard]]


@pytest.fixture
async def run_guard(kafka_broker: BrokerInfo, standin: LeadterraStandIn, topics: Topics) -> AsyncIterator[RunGuard]:
    """Starts guards in this event loop; each is shut down gracefully at the end of the test."""
    running: list[Guard] = []

    async def start(**guard: object) -> Guard:
        settings = settings_for(kafka_broker, standin, topics, **guard)
        service = Guard(settings, load_rules(settings.guard.rules))
        service.task = asyncio.create_task(service.run())
        running.append(service)
        await until(lambda: service.assigned > 0 or service.task.done(), timeout=20)
        if service.task.done():
            service.task.result()
        return service

    yield start
    for service in running:
        await service.shutdown()


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def produce(producer: AIOKafkaProducer, topic: str, values: list[tuple[str, bytes]]) -> None:
    for key, value in values:
        await producer.send(topic, key=key.encode(), value=value)
    await producer.flush()


async def produce_as_logged(producer: AIOKafkaProducer, topic: str, values: list[tuple[str, bytes]]) -> None:
    """As a producer logs events as they happen, each record's time its event's: a stream over the minutes ahead
    produced at once (an event written before its time counts at its record's: README "Event time")."""
    for key, value in values:
        at = _epoch(json.loads(value)["timestamp"])
        await producer.send(topic, key=key.encode(), value=value, timestamp_ms=int(at * 1000))
    await producer.flush()


def sending(campaign_id: str, start: float, sends: int, bounce_every: int) -> list[tuple[str, bytes]]:
    """`sends` sends a second apart, each `bounce_every`-th followed by its hard bounce."""
    records = []
    for i in range(sends):
        records.append((campaign_id, sent(campaign_id, start + i)))
        if (i + 1) % bounce_every == 0:
            records.append((campaign_id, bounced(campaign_id, start + i + 0.5)))
    return records


def bad_campaign(campaign_id: str, start: float) -> list[tuple[str, bytes]]:
    """300 healthy sends (1% bounces), then a stale list (12.5%): the default hard-bounce-rate pauses it."""
    return sending(campaign_id, start, 300, 100) + sending(campaign_id, start + 300, 150, 8)


def good_campaign(campaign_id: str, start: float) -> list[tuple[str, bytes]]:
    """450 sends at 1% hard bounces: a healthy list."""
    return sending(campaign_id, start, 450, 100)


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list:
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list = []
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def committed_total(bootstrap: str, topics: Topics, expected: int, timeout: float = 15.0) -> int:
    """The group's committed offsets on the input topic, summed, once they reach `expected` (or time runs out)."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), topics.input)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.group, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            total = sum([await consumer.committed(tp) or 0 for tp in partitions])
            if total >= expected or time.monotonic() > deadline:
                return total
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


def audits(records: list) -> list[dict]:
    return [json.loads(record.value) for record in records]


class TestPausing:
    async def test_pauses_the_bad_campaign_once_and_leaves_the_good_one_alone(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """Evidence over the default hard-bounce line -> one pause, audited with its evidence, offsets committed."""
        standin.add_campaign("camp_bad")
        standin.add_campaign("camp_good")
        now = time.time() - 600
        await produce(producer, topics.input, bad_campaign("camp_bad", now) + good_campaign("camp_good", now))
        service = await run_guard()

        await standin.wait_for_pauses(1, timeout=20)
        records = await read_topic(kafka_bootstrap, topics.audit, expected=2)
        await until(
            lambda: service.metrics.commits.labels("ok")._value.get() > 0 and not service.metrics.inflight._value.get()
        )
        await asyncio.sleep(0.5)

        assert [r.campaign_id for r in standin.pause_requests()] == ["camp_bad"]
        assert standin.status("camp_good") == "running"
        events = audits(records)
        assert [(e["outcome"], e["campaign_id"], e["rule"]["name"]) for e in events] == [
            ("fired", "camp_bad", "hard-bounce-rate"),
            ("paused", "camp_bad", "hard-bounce-rate"),
        ]
        fired, paused = events
        assert fired["decision_id"] == paused["decision_id"] and fired["id"] != paused["id"]
        evidence = fired["evidence"]
        assert evidence["window"] == "cusum 2% vs 8%"  # the sequential test of every send
        assert evidence["value"] >= evidence["threshold"] == pytest.approx(10.41, abs=0.01)
        assert 0 < evidence["numerator"] <= evidence["denominator"] and evidence["lower_bound"] is None
        assert len(evidence["message_ids"]) == 3
        assert paused["result"]["http_status"] == 200 and paused["result"]["paused_at"]
        assert all(record.key == b"camp_bad" for record in records)
        assert standin.pause_requests()[0].header("Idempotency-Key") == fired["decision_id"]

    async def test_commits_every_offset_once_settled(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """After the pause is settled the group's committed offsets cover every produced record."""
        standin.add_campaign("camp_bad")
        values = bad_campaign("camp_bad", time.time() - 600)
        await produce(producer, topics.input, values)
        service = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)

        assert await committed_total(kafka_bootstrap, topics, expected=len(values)) == len(values)
        await until(lambda: service.metrics.inflight._value.get() == 0)


class TestApiFaults:
    async def test_retries_503_twice_then_audits_one_pause(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """503, 503, 200: the pause lands on the third attempt and is audited once as paused."""
        standin.add_campaign("camp_bad")
        standin.fail_next(2, status=503)
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [r.status for r in standin.pause_requests()] == [503, 503, 200]
        assert [e["outcome"] for e in events] == ["fired", "paused"]
        assert events[1]["result"]["attempts"] == 3

    async def test_audits_404_without_retrying(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """An unknown campaign gets one call, audited as failed with campaign_not_found."""
        await produce(producer, topics.input, bad_campaign("camp_unknown", time.time() - 600))
        await run_guard()
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [e["outcome"] for e in events] == ["fired", "failed"]
        assert events[1]["result"]["error_code"] == "campaign_not_found"
        assert len(standin.pause_requests()) == 1

    async def test_a_rejected_key_is_not_retried_and_makes_the_guard_unhealthy(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """401: one call, audited as failed, and /livez and /readyz say the guard protects nothing."""
        standin.add_campaign("camp_bad")
        service = await run_guard()
        standin.api_key = "sk_test_rotated"  # the guard still holds the old key
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [e["outcome"] for e in events] == ["fired", "failed"]
        assert events[1]["result"]["http_status"] == 401
        assert len(standin.pause_requests()) == 1
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.server.port}") as http:
            live, ready = await http.get("/livez"), await http.get("/readyz")
            metrics = (await http.get("/metrics")).text
        assert (live.status_code, ready.status_code) == (503, 503)
        assert "401" in live.json()["reason"]
        assert "guard_api_authentication_failed 1.0" in metrics
        assert "sk_test_standin" not in metrics


class TestBadInput:
    async def test_dead_letters_malformed_records_and_keeps_going(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """Garbage goes to the dead-letter topic with its reason; the bad campaign behind it is still paused."""
        standin.add_campaign("camp_bad")
        garbage = [
            ("camp_bad", b"not json"),
            ("camp_bad", b'{"event": "message.sent", "data": {}}'),
            ("camp_bad", b"\xff\xfe"),
        ]
        await produce(producer, topics.input, garbage + bad_campaign("camp_bad", time.time() - 600))
        await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        dead = await read_topic(kafka_bootstrap, topics.dlq, expected=3)
        assert sorted(record.value for record in dead) == sorted(value for _, value in garbage)
        reasons = {dict(record.headers)["guard.error"].decode() for record in dead}
        assert any("campaignId" in reason for reason in reasons)
        assert all(dict(record.headers)["guard.source"].startswith(topics.input.encode()) for record in dead)

    async def test_a_poison_record_too_big_to_dead_letter_as_is_is_truncated_and_the_partition_goes_on(
        self,
        kafka_broker: BrokerInfo,
        standin: LeadterraStandIn,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """A 2 MiB malformed record (gzip on the wire, so the broker takes it) exceeds the guard
        producer's request limit: its dead letter is a truncated copy naming its source, and the
        bad campaign behind it on the same partition is still paused and committed."""
        standin.add_campaign("camp_bad")
        poison = b"{" + b"x" * (2 * 1024 * 1024)
        big = AIOKafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap_servers,
            acks="all",
            max_request_size=4 * 1024 * 1024,
            compression_type="gzip",
            **kafka_broker.producer_overrides,
        )
        await big.start()
        try:
            values = [("camp_bad", poison), *bad_campaign("camp_bad", time.time() - 600)]
            await produce(big, topics.input, values)
        finally:
            await big.stop()
        service = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)

        [dead] = await read_topic(kafka_broker.bootstrap_servers, topics.dlq, expected=1)
        headers = dict(dead.headers)
        assert headers["guard.truncated"] == b"true"
        assert headers["guard.source.size"] == str(len(poison)).encode()
        assert headers["guard.source"].startswith(f"{topics.input}/".encode())
        assert poison.startswith(dead.value) and 0 < len(dead.value) < 1024 * 1024
        assert b"not an event envelope" in headers["guard.error"]
        assert await committed_total(kafka_broker.bootstrap_servers, topics, expected=len(values)) == len(values)
        assert service.metrics.dead_letters.labels("truncated")._value.get() == 1

    async def test_an_event_time_the_audit_cannot_write_is_dead_lettered_and_never_stalls_the_partition(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """Timestamps before year 1 in UTC (`0001-01-01T00:00:00+23:59`) parse as ISO 8601 but
        cannot be written into an audit event: they are dead-lettered with a clear reason, and
        every offset is committed."""
        standin.add_campaign("camp_bad")
        values = bad_campaign("camp_ancient", time.time() - 600)
        ancient = [
            (key, value.replace(b'"timestamp": "20', b'"timestamp": "0001-01-01T00:00:00+23:59", "x": "20'))
            for key, value in values
        ]
        assert all(b"0001-01-01" in value for _, value in ancient)  # premise: every record was rewritten
        healthy = bad_campaign("camp_bad", time.time() - 600)
        await produce(producer, topics.input, ancient + healthy)
        await run_guard()
        await standin.wait_for_pauses(1, timeout=20)

        total = len(ancient) + len(healthy)
        assert await committed_total(kafka_bootstrap, topics, expected=total) == total
        dead = await read_topic(kafka_bootstrap, topics.dlq, expected=len(ancient))
        assert len(dead) == len(ancient)
        assert all(b"timestamp" in dict(record.headers)["guard.error"] for record in dead)


class TestStartOffsets:
    async def test_a_new_group_starts_at_the_look_back_and_never_fetches_older_records(
        self, kafka_broker: BrokerInfo, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """A group without committed offsets starts each partition at `now - look-back` (the longest
        any shipped rule looks back) through offsets_for_times: on Apache Kafka records older than
        that are never fetched (no `too_old` count, no warning). Tansu cannot look offsets up by time:
        there the guard reads from the beginning, skips the old records by their timestamp, and says
        so once for all partitions."""
        old, recent = time.time() - load_rules(RULES).retention - 3600, time.time() - 600
        for at, count in ((old, 40), (recent, 20)):
            for i in range(count):
                campaign = f"camp_{i % 8}"
                await producer.send(
                    topics.input, key=campaign.encode(), value=sent(campaign, at + i), timestamp_ms=int((at + i) * 1000)
                )
        await producer.flush()
        records = lambda outcome: service.metrics.records.labels(outcome)._value.get()  # noqa: E731

        with structlog.testing.capture_logs() as logs:
            service = await run_guard(dry_run=True)
            await until(lambda: records("counted") + records("too_old") >= 20 and not service.health.recovering)
            await asyncio.sleep(0.5)  # anything else fetched would be counted by now

        fallback = [entry for entry in logs if "cannot look up offsets by time" in entry["event"]]
        assert records("counted") == 20
        if kafka_broker.kind == "tansu":
            assert (records("too_old"), len(fallback)) == (40, 1)
        else:
            assert (records("too_old"), len(fallback)) == (0, 0)


class TestHealth:
    async def test_serves_probes_and_metrics(self, standin: LeadterraStandIn, run_guard: RunGuard) -> None:
        """A consuming guard is live and ready, and exposes guard_ metrics."""
        service = await run_guard()
        await until(lambda: service.health.ready()[0])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.server.port}") as http:
            live, ready, metrics = await http.get("/livez"), await http.get("/readyz"), await http.get("/metrics")
        assert (live.status_code, ready.status_code) == (200, 200)
        assert "guard_records_total" in metrics.text

    async def test_dry_run_audits_without_calling_the_api(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """GUARD_DRY_RUN: the decision and a dry_run outcome are audited; Leadterra hears nothing."""
        standin.add_campaign("camp_bad")
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        await run_guard(dry_run=True)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [(e["outcome"], e["dry_run"]) for e in events] == [("fired", True), ("dry_run", True)]
        assert standin.requests == []


class TestRestart:
    async def test_a_restart_does_not_pause_again_a_campaign_the_user_resumed(
        self, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """The second guard rebuilds the windows from the log without acting on evidence that already fired."""
        standin.add_campaign("camp_bad")
        start = time.time() - 600
        await produce(producer, topics.input, bad_campaign("camp_bad", start))
        first = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: first.metrics.inflight._value.get() == 0)
        await first.shutdown()
        standin.resume("camp_bad")

        second = await run_guard()
        await produce(producer, topics.input, [("camp_bad", sent("camp_bad", start + 500 + i)) for i in range(5)])
        await until(lambda: second.metrics.records.labels("counted")._value.get() >= 5)
        await asyncio.sleep(0.5)
        assert second.metrics.records.labels("replayed")._value.get() == len(bad_campaign("camp_bad", start))
        assert len(standin.pause_requests()) == 1
        assert standin.status("camp_bad") == "running"

    async def test_a_decision_recorded_but_not_acted_on_at_shutdown_is_resumed_after_restart(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """API down at SIGTERM: the next guard finds `fired` without an outcome in the audit topic and pauses."""
        standin.add_campaign("camp_bad")
        await standin.down()
        first = await run_guard(shutdown_grace=0.5)
        await produce(producer, topics.input, bad_campaign("camp_bad", time.time() - 600))
        await until(lambda: first.metrics.decisions.labels("hard-bounce-rate", "pause")._value.get() == 1)
        await first.shutdown()
        await standin.up()

        second = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [e["outcome"] for e in events] == ["fired", "paused"]
        assert len({e["decision_id"] for e in events}) == 1
        assert second.metrics.resumed._value.get() == 1
        assert len(standin.pause_requests()) == 1

    async def test_a_decision_in_flight_the_replay_does_not_derive_again_is_resumed_from_its_record(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """The process before read the campaign otherwise than a replay does: a pause it acted on at catch-up (not in
        the log) moved the campaign's episode, so the decision it recorded `fired`, committed past and was calling
        about when it died is one the replay never derives. Its partition's new owner resumes it from its record."""
        standin.add_campaign("camp_bad")
        start = time.time() - 600
        records = bad_campaign("camp_bad", start)
        await produce(producer, topics.input, records)
        in_flight = decision_of_another_reading("camp_bad", records, paused_at=start + 5)
        replayed = decisions_of(records)
        assert in_flight.id not in {d.id for d in replayed} and replayed, "premise: the replay derives other decisions"
        await producer.send_and_wait(
            topics.audit,
            audit_event(in_flight, "fired", decided_at=time.time(), dry_run=False).model_dump_json().encode(),
            key=b"camp_bad",
        )
        await commit_log_end(kafka_bootstrap, topics)  # the process before read it all

        second = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: second.metrics.inflight._value.get() == 0)
        assert [r.header("Idempotency-Key") for r in standin.pause_requests()] == [in_flight.id]
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [(e["decision_id"], e["outcome"]) for e in events] == [(in_flight.id, "fired"), (in_flight.id, "paused")]
        assert second.metrics.resumed._value.get() == 1

    @pytest.mark.parametrize("edit", ["reworded", "removed"])
    async def test_a_decision_in_flight_is_seen_through_after_its_rule_was_edited(
        self,
        tmp_path: Path,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
        edit: str,
    ) -> None:
        """The process before recorded a pause `fired` and died before its call (Leadterra slow); the rules were
        edited meanwhile (a ConfigMap change rolled the pods): its rule reworded, or removed. The next guard still
        pauses, and audits the outcome with the rule and evidence of the record."""
        standin.add_campaign("camp_bad")
        start = time.time() - 600
        records = bad_campaign("camp_bad", start)
        await produce(producer, topics.input, records)
        in_flight = decision_of_another_reading("camp_bad", records, paused_at=start + 5)
        fired = audit_event(in_flight, "fired", decided_at=time.time() - 30, dry_run=False)
        await producer.send_and_wait(topics.audit, fired.model_dump_json().encode(), key=b"camp_bad")
        await commit_log_end(kafka_bootstrap, topics)
        document = yaml.safe_load((RULES / "default.yaml").read_text())
        [rule] = [r for group in document["groups"] for r in group["rules"] if r["name"] == in_flight.rule.name]
        if edit == "reworded":
            rule["description"] = "Reworded after the pause was decided."
        else:
            rule["name"] = "renamed-since"
        (tmp_path / "default.yaml").write_text(yaml.safe_dump(document))

        second = await run_guard(rules=tmp_path)
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: second.metrics.inflight._value.get() == 0)
        assert [r.header("Idempotency-Key") for r in standin.pause_requests()] == [in_flight.id]
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [(e["decision_id"], e["outcome"]) for e in events] == [(in_flight.id, "fired"), (in_flight.id, "paused")]
        assert events[1]["rule"] == events[0]["rule"] and events[1]["evidence"] == events[0]["evidence"]

    async def test_a_pause_that_landed_before_the_process_died_is_audited_as_its_own(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """The process before recorded `fired`, called, and died before the answer was recorded: Leadterra paused the
        campaign then. The resumed decision's call is a no-op whose pausedAt is older than this process, not older
        than the decision's first call: `paused` (announced as the guard's), not `already_paused` (someone else's)."""
        start = time.time() - 600
        records = bad_campaign("camp_bad", start)
        await produce(producer, topics.input, records)
        in_flight = decision_of_another_reading("camp_bad", records, paused_at=start + 5)
        fired_at = time.time() - 40
        await producer.send_and_wait(
            topics.audit,
            audit_event(in_flight, "fired", decided_at=fired_at, dry_run=False).model_dump_json().encode(),
            key=b"camp_bad",
            timestamp_ms=int(fired_at * 1000),
        )
        standin.clock_offset = -39.0  # its call landed a second after the record
        standin.add_campaign("camp_bad", status="paused")
        standin.clock_offset = 0.0
        await commit_log_end(kafka_bootstrap, topics)

        second = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: second.metrics.inflight._value.get() == 0)
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=2))
        assert [(e["decision_id"], e["outcome"]) for e in events] == [(in_flight.id, "fired"), (in_flight.id, "paused")]


def decisions_of(records: list[tuple[str, bytes]], note_pause_at: float | None = None) -> list[Decision]:
    """The pause decisions an engine with the shipped rules takes over `records`; with `note_pause_at`, as the
    reading of a process that acted on a pause at that moment outside the log (a backlog's, at catch-up)."""
    engine, decisions = Engine(load_rules(RULES)), []
    for _, value in records:
        event = decode(value, time.time())
        if note_pause_at is not None and event.time > note_pause_at:
            engine.note_pause(event.campaign_id, "acted-at-catch-up", note_pause_at)
            note_pause_at = None
        decisions += [d for d in engine.process(event) if d.action == "pause"]
    return decisions


def decision_of_another_reading(campaign_id: str, records: list[tuple[str, bytes]], paused_at: float) -> Decision:
    return next(d for d in decisions_of(records, note_pause_at=paused_at) if d.campaign_id == campaign_id)


async def commit_log_end(bootstrap: str, topics: Topics) -> None:
    """The group's offsets committed at the input topic's end, as a guard that read it all leaves them."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), topics.input)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(ends)
    finally:
        await consumer.stop()


class TestResumedCampaign:
    """A campaign the user resumes is judged on what it sends after the resume, not on what paused it."""

    CAMPAIGN = "camp_resumed"

    async def paused_then_resumed(
        self, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> tuple[Guard, float]:
        """A stale list (20% hard bounces, four hours old) is paused by the guard once it has read it; the user
        resumes it through the API. Returns the guard and the event time the stream goes on from: past the pause
        call (where a backlog's pause lands) plus the grace, a few minutes ahead of the clock."""
        standin.add_campaign(self.CAMPAIGN)
        start = time.time() - 4 * 3600
        stale = sending(self.CAMPAIGN, start, 200, 5)
        await produce(producer, topics.input, stale)
        service = await run_guard()
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: service.metrics.records.labels("counted")._value.get() == len(stale))
        async with httpx.AsyncClient(base_url=standin.url) as http:
            answer = await http.post(
                f"/v1/campaigns/{self.CAMPAIGN}/start", headers={"Authorization": f"Bearer {standin.api_key}"}
            )
        assert answer.json()["status"] == "running"
        return service, standin.pause_requests(self.CAMPAIGN)[0].received_at + DEFAULT_RESUME_GRACE + 1

    async def test_a_cleaned_list_is_not_paused_again(
        self, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """Resumed with 1% hard bounces: the evidence that paused it no longer counts, no second pause call."""
        service, resumed_at = await self.paused_then_resumed(standin, producer, topics, run_guard)
        clean = sending(self.CAMPAIGN, resumed_at, 300, 100)
        counted = service.metrics.records.labels("counted")._value.get()
        await produce_as_logged(producer, topics.input, clean)
        await until(lambda: service.metrics.records.labels("counted")._value.get() == counted + len(clean))
        await asyncio.sleep(0.5)
        assert len(standin.pause_requests(self.CAMPAIGN)) == 1
        assert standin.status(self.CAMPAIGN) == "running"

    async def test_a_still_bad_list_is_paused_once_more_after_min_volume(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """Resumed with the same 20%: exactly one more pause call, on evidence from after the resume, at min volume or later."""
        service, resumed_at = await self.paused_then_resumed(standin, producer, topics, run_guard)
        bad = sending(self.CAMPAIGN, resumed_at, 200, 5)  # 200 s: within the grace of the second pause
        counted = service.metrics.records.labels("counted")._value.get()
        await produce_as_logged(producer, topics.input, bad)
        await standin.wait_for_pauses(2, timeout=20)
        await until(lambda: service.metrics.records.labels("counted")._value.get() == counted + len(bad))
        await until(lambda: not service.metrics.inflight._value.get())
        await asyncio.sleep(0.5)

        assert len(standin.pause_requests(self.CAMPAIGN)) == 2
        assert standin.status(self.CAMPAIGN) == "paused"
        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=10**9, timeout=3))
        called = [e for e in events if e["outcome"] == "fired" and e["superseded_by"] is None]
        assert len(called) == 2
        second = called[1]["evidence"]
        assert (_epoch(second["episode_from"]), second["episode_began"]) == (pytest.approx(resumed_at), "resumed")
        assert _epoch(second["evidence_from"]) >= _epoch(second["episode_from"])
        assert second["denominator"] >= (second["min_volume"] or second["numerator"])
        assert standin.pause_requests(self.CAMPAIGN)[1].header("Idempotency-Key") == called[1]["decision_id"]

    async def test_a_campaign_that_kept_sending_while_the_api_was_down_gets_every_pause(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """The pause call cannot land, the stale list keeps going past the grace: the first call is kept
        retrying, a second decision is taken on the new evidence, and both calls are made once the API is back."""
        standin.add_campaign(self.CAMPAIGN)
        await standin.down()
        # ten minutes of sending from now, produced at once, each logged at its time (ahead of the clock, as a live
        # campaign's would be by the time they arrive): a guard keeping up, not a backlog, so nothing is held back
        start = time.time() - 30
        service = await run_guard()
        await produce_as_logged(producer, topics.input, sending(self.CAMPAIGN, start, 600, 5))  # 10 minutes
        await until(lambda: service.metrics.decisions.labels("hard-bounce-burst", "pause")._value.get() >= 2)
        await standin.up()
        await standin.wait_for_pauses(2, timeout=20)
        await until(lambda: not service.metrics.inflight._value.get())

        events = audits(await read_topic(kafka_bootstrap, topics.audit, expected=10**9, timeout=3))
        called = sorted(e["decision_id"] for e in events if e["outcome"] == "fired" and e["superseded_by"] is None)
        outcomes = {e["decision_id"]: e["outcome"] for e in events if e["outcome"] != "fired"}
        assert len(called) >= 2
        assert all(outcomes[decision_id] in ("paused", "already_paused") for decision_id in called)
        keys = {r.header("Idempotency-Key") for r in standin.pause_requests(self.CAMPAIGN) if r.status == 200}
        assert keys == set(called)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


class TestReadiness:
    async def test_not_ready_until_the_log_up_to_the_committed_offset_is_replayed(
        self, kafka_broker: BrokerInfo, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics
    ) -> None:
        """A restarted guard rebuilding its windows says 503 on /readyz (and how much is left on
        guard_recovery_records_remaining) until every record before the committed offset is replayed."""
        traffic = generate(seed=3, campaigns=40, bad=0, start=time.time() - 3600, duration=3500, sends=(200, 300))
        records = [(r.key, r.value) for r in traffic.records]
        await produce(producer, topics.input, records)
        first = Guard(settings_for(kafka_broker, standin, topics, dry_run=True), load_rules(RULES))
        first.task = asyncio.create_task(first.run())
        await until(lambda: first.metrics.records.labels("counted")._value.get() == len(records), timeout=60)
        await first.shutdown()  # commits the end of every partition

        # the production tick: readiness must not wait for it, nor be given before the replay is done
        second = Guard(
            settings_for(kafka_broker, standin, topics, dry_run=True, commit_interval=1.0), load_rules(RULES)
        )
        samples: list[tuple[bool, float, float]] = []  # (ready, replayed so far, recovery gauge)

        async def sample() -> None:
            while True:
                replayed = second.metrics.records.labels("replayed")._value.get()
                samples.append((second.health.ready()[0], replayed, second.metrics.recovering._value.get()))
                await asyncio.sleep(0)  # the poll loop yields after every batch: a sample between each

        sampler = asyncio.create_task(sample())
        second.task = asyncio.create_task(second.run())
        try:
            await until(lambda: second.health.ready()[0], timeout=60)
        finally:
            sampler.cancel()
        try:
            assert [s for s in samples if s[0] and s[1] < len(records)] == [], "ready before the replay was done"
            assert any(not ready and 0 < replayed < len(records) for ready, replayed, _ in samples)
            assert max(gauge for _, _, gauge in samples) > 0
            assert second.metrics.records.labels("replayed")._value.get() == len(records)
            assert second.metrics.recovering._value.get() == 0
        finally:
            await second.shutdown()


class TestReplayEquivalence:
    async def test_replaying_the_topic_gives_the_decisions_the_live_guard_took(
        self, kafka_broker: BrokerInfo, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """Same log, same rules: `guard replay kafka:TOPIC` lists exactly the live guard's decision ids."""
        traffic = generate(seed=11, campaigns=16, bad=4, start=time.time() - 7200, duration=7000, sends=(1000, 2500))
        await produce(producer, topics.input, [(r.key, r.value) for r in traffic.records])
        service = await run_guard(dry_run=True)
        consumed = lambda: sum(  # noqa: E731
            service.metrics.records.labels(outcome)._value.get() for outcome in ("counted", "ignored", "dead_lettered")
        )
        await until(
            lambda: consumed() == len(traffic.records) and not service.metrics.inflight._value.get(), timeout=60
        )
        live = audits(await read_topic(kafka_broker.bootstrap_servers, topics.audit, expected=10**9, timeout=5))
        live_fired = sorted(e["decision_id"] for e in live if e["outcome"] == "fired")

        replay = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "guard.cli",
            "replay",
            f"kafka:{topics.input}",
            "--rules",
            str(RULES),
            "--format",
            "json",
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await replay.communicate()
        replayed = sorted(json.loads(line)["decision_id"] for line in out.decode().splitlines())
        assert replay.returncode == 0
        assert live_fired and live_fired == replayed


class TestNoHeadOfLineBlocking:
    async def test_a_campaign_whose_pause_keeps_failing_holds_up_neither_others_nor_commits(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,
        topics: Topics,
        run_guard: RunGuard,
    ) -> None:
        """One campaign's pause retries 503s; another is paused at once and every offset is committed."""
        standin.add_campaign("camp_stuck")
        standin.add_campaign("camp_other")
        standin.fail_next(10_000, status=503, campaign_id="camp_stuck")
        service = await run_guard(shutdown_grace=0.5)
        start = time.time() - 600
        await produce(producer, topics.input, bad_campaign("camp_stuck", start))
        await asyncio.sleep(0.5)
        produced_at = time.monotonic()
        other = bad_campaign("camp_other", start)
        await produce(producer, topics.input, other)
        await standin.wait_for_pauses(1, timeout=20, campaign_id="camp_other")
        delay = time.monotonic() - produced_at

        await until(lambda: len(standin.pause_requests("camp_stuck")) >= 2)  # it keeps retrying
        assert all(r.status == 503 for r in standin.pause_requests("camp_stuck"))
        assert delay < 5.0
        assert await committed_total(kafka_bootstrap, topics, expected=2 * len(other)) == 2 * len(other)
        assert service.metrics.inflight._value.get() == 1


class TestRuleReload:
    async def test_a_configmap_swap_changes_the_rules_and_keeps_the_evidence(
        self, tmp_path: Path, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """5 complaints needed, 3 seen; the threshold drops to 3 and the next complaint pauses; a bad swap is refused."""
        volume = ConfigMapVolume(tmp_path)
        volume.publish({"rules.yaml": RELOAD_RULE.format(threshold=5)})
        standin.add_campaign("camp_a")
        service = await run_guard(rules=tmp_path, rules_reload_interval=0.1)
        start = time.time() - 600
        await produce(producer, topics.input, [("camp_a", complained("camp_a", start + i)) for i in range(3)])
        await until(lambda: service.metrics.records.labels("counted")._value.get() == 3)

        volume.publish({"rules.yaml": RELOAD_RULE.format(threshold=3)})
        await until(lambda: service.metrics.rule_reloads.labels("applied")._value.get() == 1)
        assert standin.pause_requests() == []
        await produce(producer, topics.input, [("camp_a", complained("camp_a", start + 10))])
        await standin.wait_for_pauses(1, timeout=10)

        volume.publish({"rules.yaml": RELOAD_RULE.format(threshold="many")})
        await until(lambda: service.metrics.rule_reloads.labels("rejected")._value.get() == 1)
        assert [rule.threshold for rule in service.rules.rules] == [3]
        assert service.health.live()[0]

    async def test_an_alert_turned_into_a_pause_pauses_a_campaign_already_over_its_line(
        self, tmp_path: Path, standin: LeadterraStandIn, producer: AIOKafkaProducer, topics: Topics, run_guard: RunGuard
    ) -> None:
        """A team watches a rule as an alert, then ships it as a pause: the campaign it alerted on, still sending and
        still over its line, is paused at its next event (not after the breach ends and starts again)."""
        volume = ConfigMapVolume(tmp_path)
        alerting = RELOAD_RULE.format(threshold=3) + "        action: alert\n"
        volume.publish({"rules.yaml": alerting})
        standin.add_campaign("camp_a")
        service = await run_guard(rules=tmp_path, rules_reload_interval=0.1)
        start = time.time() - 600
        await produce(producer, topics.input, [("camp_a", complained("camp_a", start + i)) for i in range(3)])
        await until(lambda: service.metrics.decisions.labels("complaints", "alert")._value.get() == 1)

        volume.publish({"rules.yaml": RELOAD_RULE.format(threshold=3)})
        await until(lambda: service.metrics.rule_reloads.labels("applied")._value.get() == 1)
        await produce(producer, topics.input, [("camp_a", sent("camp_a", start + 10))])
        await standin.wait_for_pauses(1, timeout=10)
        assert service.metrics.decisions.labels("complaints", "pause")._value.get() == 1
