"""Input topics as a deployment meets them (DESIGN promise 11): the real `guard run` started before its
topic exists, with a typo, and as a standby; on brokers that create topics on demand (Tansu does, and
the Apache Kafka test node does, as Apache Kafka's default). Only documented settings; events come from
aiokafka's producer, as from any producer of the user's."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_cli_run import free_port
from test_first_contact import Guard, guard_env

from guard.testing.broker import BrokerInfo
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn


async def topics_of(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def produce_a_bad_campaign(broker: BrokerInfo, topic: str) -> None:
    """200 sends and 15 hard bounces of camp_bad, stamped now: the hard-bounce rule fires. The producer's
    first send creates the topic where the broker creates topics on demand, as a user's producer would."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", **broker.producer_overrides)
    await producer.start()
    try:
        start = time.time() - 300
        for i in range(200):
            await producer.send(topic, key=b"camp_bad", value=sent("camp_bad", start + i))
        for i in range(15):
            await producer.send(topic, key=b"camp_bad", value=bounced("camp_bad", start + 200 + i))
        await producer.flush()
    finally:
        await producer.stop()


def metric(text: str, name: str) -> float:
    (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(value)


def live_env(broker: BrokerInfo, port: int, suffix: str, standin: LeadterraStandIn, **extra: str) -> dict[str, str]:
    env = guard_env(broker.bootstrap_servers, port, suffix, GUARD_DRY_RUN="false", **extra)
    env.update(LEADTERRA_API_URL=standin.url, LEADTERRA_API_KEY=standin.api_key)
    if not broker.idempotence:
        env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
    return env


class TestATopicCreatedAfterStart:
    async def test_is_not_created_by_the_guard_and_is_protected_within_30_s_of_its_creation(
        self, kafka_broker: BrokerInfo, tmp_path: Path
    ) -> None:
        """Started before its topic exists: /readyz 503 naming it and the metric say so, the guard does not
        create it; the topic made 10 s after start by the user's producer is read, the bad campaign paused
        within 30 s, and /readyz turns 200."""
        suffix = uuid.uuid4().hex[:8]
        topic = f"events-{suffix}"
        async with LeadterraStandIn() as standin:
            standin.add_campaign("camp_bad")
            env = live_env(kafka_broker, free_port(), suffix, standin)
            async with Guard(env, tmp_path / "guard.log") as guard:
                started = time.monotonic()
                await guard.until_logged("guard started")
                ready = await guard.until("/readyz", 503)
                assert topic in ready.json()["reason"] and "GUARD_INPUT_TOPICS" in ready.json()["reason"], ready.text
                assert metric((await guard.get("/metrics")).text, "guard_input_topics_missing") == 1
                await asyncio.sleep(max(0.0, 10 - (time.monotonic() - started)))
                assert topic not in await topics_of(kafka_broker.bootstrap_servers)
                assert (await guard.get("/readyz")).status_code == 503

                await produce_a_bad_campaign(kafka_broker, topic)
                created = time.monotonic()
                await standin.wait_for_pauses(1, timeout=30, campaign_id="camp_bad")
                assert time.monotonic() - created < 30
                ready = await guard.until("/readyz", 200, timeout=10)
                text = (await guard.get("/metrics")).text
                assert (
                    metric(text, "guard_input_topics_missing") == 0 and metric(text, "guard_input_topics_unread") == 0
                )
            assert [r.campaign_id for r in standin.pause_requests()] == ["camp_bad"]
        assert any(entry["event"] == "input topics found" for entry in guard.logs())


class TestATypoInTheTopics:
    async def test_stays_unready_naming_it_and_is_never_created(self, kafka_broker: BrokerInfo, tmp_path: Path) -> None:
        """One topic right, one misspelt: the right one is read, yet /readyz stays 503 naming only the typo
        (nothing on it is protected), with the metric and one error line; the typo is never created."""
        suffix = uuid.uuid4().hex[:8]
        present, typo = f"events-{suffix}", f"evnets-{suffix}"
        async with LeadterraStandIn() as standin:
            standin.add_campaign("camp_bad")
            await produce_a_bad_campaign(kafka_broker, present)
            env = live_env(kafka_broker, free_port(), suffix, standin, GUARD_INPUT_TOPICS=f"{present},{typo}")
            async with Guard(env, tmp_path / "guard.log") as guard:
                await standin.wait_for_pauses(1, timeout=30, campaign_id="camp_bad")  # the right one is read
                await asyncio.sleep(3)
                ready = await guard.get("/readyz")
                assert ready.status_code == 503, ready.text
                reason = ready.json()["reason"]
                assert typo in reason and present not in reason and "GUARD_INPUT_TOPICS" in reason
                assert metric((await guard.get("/metrics")).text, "guard_input_topics_missing") == 1
                assert typo not in await topics_of(kafka_broker.bootstrap_servers)
        (error,) = [entry for entry in guard.logs() if entry["event"].startswith("input topics do not exist")]
        assert error["missing"] == [typo] and error["present"] == [present] and error["level"] == "error"


class TestAStandby:
    async def test_two_replicas_on_a_one_partition_topic_made_after_start_both_get_ready(
        self, kafka_broker: BrokerInfo, tmp_path: Path
    ) -> None:
        """Two replicas start before their topic exists (503 both); the operator creates it with one
        partition: one replica owns it, the other is a standby, and both are ready: the standby is in the
        group, the topic exists and its partition is owned."""
        suffix = uuid.uuid4().hex[:8]
        topic = f"events-{suffix}"
        extra = {} if kafka_broker.idempotence else {"KAFKA_ENABLE_IDEMPOTENCE": "false"}
        first = guard_env(kafka_broker.bootstrap_servers, free_port(), suffix, **extra)
        second = {**first, "GUARD_HTTP_PORT": str(free_port())}
        async with Guard(first, tmp_path / "one.log") as one, Guard(second, tmp_path / "two.log") as two:
            for guard in (one, two):
                await guard.until_logged("guard started")
                assert topic in (await guard.until("/readyz", 503)).json()["reason"]
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
            await admin.start()
            try:
                response = await admin.create_topics([NewTopic(topic, 1, 1)])
            finally:
                await admin.close()
            assert response.topic_errors[0][1] == 0, response  # not made before by either replica
            await one.until("/readyz", 200, timeout=30)
            await two.until("/readyz", 200, timeout=30)
            await asyncio.sleep(2)
            owned = [metric((await guard.get("/metrics")).text, "guard_assigned_partitions") for guard in (one, two)]
            assert sorted(owned) == [0, 1]
            assert [(await guard.get("/readyz")).status_code for guard in (one, two)] == [200, 200]
