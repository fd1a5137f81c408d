"""A campaign's events written by clients that partition differently (guard.runtime.placement): sends through aiokafka,
as `guard ingest` writes them (murmur2 of the key), complaints through librdkafka, as a feedback-loop bridge written
with confluent-kafka would (crc32 by default). Each partition's engine then sees part of the campaign; the guard says
so on /readyz and in a metric, and librdkafka set as the README says puts them together again."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from test_service import (  # noqa: F401  (fixtures)
    RunGuard,
    Topics,
    audits,
    committed_total,
    producer,
    read_topic,
    run_guard,
    topics,
)

from guard.runtime.placement import default_partition
from guard.testing.broker import BrokerInfo
from guard.testing.events import complained, sent

PARTITIONS = 4  # test_service's topics
SENDS, COMPLAINTS = 40, 5  # 12.5% complained: over the rule's 5% once both are counted together
RULE = """\
groups:
  - name: complaints
    rules:
      - name: complaint-rate
        description: Complaints over sends in the last hour.
        rate: {of: complained, per: sent}
        window: 1h
        threshold: 5%
        min_volume: 20
        action: pause
"""


def split_campaign() -> str:
    """A campaign id that librdkafka's default partitioner (crc32 of the key) puts elsewhere than murmur2 does."""
    for number in range(100):
        campaign_id = f"camp_split_{number}"
        if zlib.crc32(campaign_id.encode()) % PARTITIONS != default_partition(campaign_id, PARTITIONS):
            return campaign_id
    raise AssertionError("no campaign id the two partitioners place apart")


async def send_with_aiokafka(client: AIOKafkaProducer, topic: str, campaign_id: str, start: float) -> set[int]:
    """SENDS sends keyed by campaign, as `guard ingest` writes them; the partitions they landed on."""
    written = [
        await client.send(topic, key=campaign_id.encode(), value=sent(campaign_id, start + i)) for i in range(SENDS)
    ]
    return {(await delivery).partition for delivery in written}


def complain_with_librdkafka(
    bootstrap: str, topic: str, campaign_id: str, start: float, partitioner: str | None
) -> set[int]:
    """COMPLAINTS complaints keyed by campaign through confluent-kafka (its default partitioner unless `partitioner`);
    the partitions they landed on, from the delivery reports."""
    config = {"bootstrap.servers": bootstrap, "acks": "all"} | ({"partitioner": partitioner} if partitioner else {})
    client = Producer(config)
    landed: set[int] = set()
    for i in range(COMPLAINTS):
        value = complained(campaign_id, start + SENDS + i)
        client.produce(topic, value, key=campaign_id.encode(), on_delivery=lambda _, m: landed.add(m.partition()))
    assert client.flush(15) == 0
    return landed


async def readyz_and_misplaced(guard_port: int, topic: str) -> tuple[int, list[str], float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{guard_port}") as http:
        ready, metrics = await http.get("/readyz"), await http.get("/metrics")
    misplaced = sum(
        sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "guard_misplaced_campaigns_total" and sample.labels.get("topic") == topic
    )
    return ready.status_code, ready.json()["warnings"], misplaced


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE)
    return path


async def test_a_campaign_split_by_another_partitioner_is_named_on_readyz_and_counted(
    kafka_broker: BrokerInfo,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
    rules: Path,
) -> None:
    campaign_id, start = split_campaign(), time.time() - 300
    sends = await send_with_aiokafka(producer, topics.input, campaign_id, start)
    complaints = complain_with_librdkafka(kafka_broker.bootstrap_servers, topics.input, campaign_id, start, None)
    assert sends == {default_partition(campaign_id, PARTITIONS)} and complaints.isdisjoint(sends)

    guard = await run_guard(dry_run=True, rules=rules)
    assert await committed_total(kafka_broker.bootstrap_servers, topics, SENDS + COMPLAINTS) == SENDS + COMPLAINTS
    status, warnings, misplaced = await readyz_and_misplaced(guard.server.port, topics.input)
    assert status == 200  # still protecting what it reads
    assert misplaced == 1  # the complaints' partition tracked the campaign from its first complaint
    (warning,) = [w for w in warnings if campaign_id in w]
    assert f"on {topics.input}[{min(complaints)}]" in warning and "partitioner=murmur2_random" in warning
    # the split: sends on one partition, complaints on another, neither over the line alone
    assert audits(await read_topic(kafka_broker.bootstrap_servers, topics.audit, expected=1, timeout=2)) == []


async def test_librdkafka_set_as_the_readme_says_keeps_the_campaign_together(
    kafka_broker: BrokerInfo,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
    rules: Path,
) -> None:
    campaign_id, start = split_campaign(), time.time() - 300
    sends = await send_with_aiokafka(producer, topics.input, campaign_id, start)
    complaints = complain_with_librdkafka(
        kafka_broker.bootstrap_servers, topics.input, campaign_id, start, "murmur2_random"
    )
    assert complaints == sends

    guard = await run_guard(dry_run=True, rules=rules)
    events = audits(await read_topic(kafka_broker.bootstrap_servers, topics.audit, expected=2))
    assert [(e["campaign_id"], e["rule"]["name"], e["outcome"]) for e in events] == [
        (campaign_id, "complaint-rate", "fired"),
        (campaign_id, "complaint-rate", "dry_run"),
    ]
    status, warnings, misplaced = await readyz_and_misplaced(guard.server.port, topics.input)
    assert (status, misplaced) == (200, 0) and not [w for w in warnings if "partitioner" in w]


async def test_events_without_the_campaign_as_their_key_are_named_as_such(
    kafka_broker: BrokerInfo,
    producer: AIOKafkaProducer,  # noqa: F811
    topics: Topics,  # noqa: F811
    run_guard: RunGuard,  # noqa: F811
    rules: Path,
) -> None:
    """A producer that writes no key (or another one) spreads a campaign by its own choice: the warning says to key
    by campaign, not to change the partitioner."""
    campaign_id, start = split_campaign(), time.time() - 300
    elsewhere = (default_partition(campaign_id, PARTITIONS) + 1) % PARTITIONS
    await producer.send_and_wait(topics.input, value=sent(campaign_id, start), partition=elsewhere)
    guard = await run_guard(dry_run=True, rules=rules)
    assert await committed_total(kafka_broker.bootstrap_servers, topics, 1) == 1
    status, warnings, misplaced = await readyz_and_misplaced(guard.server.port, topics.input)
    (warning,) = [w for w in warnings if campaign_id in w]
    assert (status, misplaced) == (200, 1)
    assert "writes them without a key; key every event by its campaignId" in warning
