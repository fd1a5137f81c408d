"""Whether a campaign's events reach the partition Kafka's default partitioner gives its key.

State is kept per partition (DESIGN promise 7), so every event of a campaign must be read from one partition.
Producers key them by campaign id, and Kafka's Java client, aiokafka (`guard ingest`, `guard produce`, the scope
forwards) pick murmur2(key) % partitions; librdkafka's clients (confluent-kafka, kcat, node-rdkafka, Go) pick
crc32(key) % partitions unless set to `partitioner=murmur2_random`. Events of one campaign written by both kinds
land on two partitions, each engine sees part of the evidence (the sends on one, the complaints on the other), and
a rate that crosses its line over the whole campaign crosses it on neither: a pause is missed, silently.

The guard cannot move a record to another partition, so it says so: the first event of a campaign a partition's
engine reads (it tracks the campaign from then) is checked against the murmur2 placement; one elsewhere is counted
(`guard_misplaced_campaigns_total`), logged at most once a minute per topic, and named on /readyz for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiokafka.partitioner import murmur2

from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.placement")

LOG_EVERY = 60.0  # seconds between warnings of one topic while campaigns keep arriving misplaced


def key_hash(key: bytes) -> int:
    """A record key's hash as Kafka's default partitioner takes it (murmur2, made positive)."""
    return murmur2(key) & 0x7FFFFFFF


def default_partition(campaign_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by `campaign_id`."""
    return key_hash(campaign_id.encode()) % partitions


class Placement:
    """Checks where each campaign's first event is read, and its record's key; `partitions_of(topic)` is the topic's
    partition count as the consumer knows it (0 while unknown: nothing is checked)."""

    def __init__(self, partitions_of: Callable[[str], int], metrics: Metrics, health: Health) -> None:
        self._partitions_of, self._metrics, self._health = partitions_of, metrics, health
        self._logged_at: dict[str, float] = {}  # topic -> monotonic time of its latest warning
        self._unlogged: dict[str, int] = {}  # topic -> campaigns misplaced since

    def check(self, topic: str, partition: int, campaign_id: str, key: bytes | None) -> None:
        partitions = self._partitions_of(topic)
        if partitions <= 1 or (expected := default_partition(campaign_id, partitions)) == partition:
            return
        self._metrics.misplaced.labels(topic).inc()
        where = f"events of campaign {campaign_id} are on {topic}[{partition}], where Kafka's default partitioner puts"
        if key != campaign_id.encode():
            keyed = "without a key" if key is None else f"keyed {key[:64]!r}"
            why = (
                f"{where} a record keyed by it on [{expected}]: its producer writes them {keyed}; key every event "
                "by its campaignId, or a campaign's evidence can be split over partitions and its pauses missed"
            )
        else:
            why = (
                f"{where} them on [{expected}] (murmur2 of the key): a producer partitions them otherwise "
                "(librdkafka's default, crc32, does: set partitioner=murmur2_random), or partitions were added to "
                "the topic since; a campaign's evidence can be split over partitions and its pauses missed"
            )
        self._health.misplaced(why)
        now = time.monotonic()
        self._unlogged[topic] = self._unlogged.get(topic, 0) + 1
        if now - self._logged_at.get(topic, -LOG_EVERY) >= LOG_EVERY:
            log.warning(why, campaigns_misplaced_since_last=self._unlogged.pop(topic))
            self._logged_at[topic] = now
