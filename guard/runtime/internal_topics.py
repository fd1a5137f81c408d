"""The topics the guard keeps for itself, made as Kafka Streams makes its changelogs: when missing, with
the configuration they need and a replication factor that follows the cluster.

- the state topic (GUARD_STATE_TOPIC): checkpoints (guard.runtime.checkpoints), compacted. Kafka never
  compacts the active segment, so a short `segment.ms` lets superseded checkpoints go; a minute of
  `min.compaction.lag.ms` keeps what a restore in progress has seen the end of.
- the control topic (GUARD_CONTROL_TOPIC): exemptions (guard.runtime.control), compacted, one partition.
- the scope topic (GUARD_SCOPE_TOPIC): events forwarded keyed by scope for rules over a workspace, sender or
  domain (guard.engine.scopes), read by the same group, as Kafka Streams reads its repartition topics.
- the audit and dead-letter topics (GUARD_AUDIT_TOPIC, GUARD_DLQ_TOPIC): what the guard writes, with the
  brokers' default configuration and as many partitions as its input; a broker that does not create topics
  on demand would otherwise leave every decision unrecorded.

Input topics are never made here, nor anywhere in the guard (see guard.runtime.kafka.InputConsumer).
Where the brokers refuse (ACLs, a creation policy, too few brokers for the replication factor), one
error line and a /readyz warning say exactly what to create; the guard runs on without what needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from guard.runtime.kafka import client_options
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import topic_partitions
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.internal_topics")

MAX_REPLICAS = 3  # Kafka Streams' production advice for its internal topics; fewer where the cluster is smaller
SEGMENT_MS = 10 * 60 * 1000  # superseded records become compactable within ten minutes
STATE_COMPACTION_LAG_MS = 60 * 1000  # a restore reads backwards from the end it saw; this keeps that end in place


@dataclass(frozen=True, slots=True)
class InternalTopic:
    name: str
    setting: str  # the variable that names it
    role: str  # what it is, for the log line
    partitions: int
    configs: dict[str, str]
    without: str  # what the guard does without it

    def what_to_create(self, replicas: int | None) -> str:
        """The topic as an operator should create it, e.g. with kafka-topics.sh."""
        configs = ",".join(f"{key}={value}" for key, value in sorted(self.configs.items())) or "the defaults"
        factor = replicas or f"min({MAX_REPLICAS}, brokers)"
        return f"{self.name} with {self.partitions} partition(s), replication factor {factor}, configs {configs}"


def state_topic(name: str) -> InternalTopic:
    """One partition: a restore reads every partition of it back to its checkpoints' time, so more would
    only add reads (its keys name the group and input partition, whatever partition holds them)."""
    configs = {
        "cleanup.policy": "compact",
        "segment.ms": str(SEGMENT_MS),
        "min.compaction.lag.ms": str(STATE_COMPACTION_LAG_MS),
    }
    without = "no checkpoints: a restart replays the rules' look-back"
    return InternalTopic(name, "GUARD_STATE_TOPIC", "state topic", 1, configs, without)


def control_topic(name: str) -> InternalTopic:
    configs = {"cleanup.policy": "compact", "segment.ms": str(SEGMENT_MS), "min.compaction.lag.ms": "0"}
    return InternalTopic(name, "GUARD_CONTROL_TOPIC", "control topic", 1, configs, "no exemptions")


def scope_topic(name: str, partitions: int, lookback: float) -> InternalTopic:
    """Events forwarded keyed by scope (guard.engine.scopes): read back as far as the rules look, so kept twice
    that (a week at least), by the input records' times they carry; as many partitions as the input."""
    retention_ms = int(max(7 * 86400.0, 2 * lookback) * 1000)
    configs = {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}
    without = "rules over a workspace, sender or domain count nothing and pause nothing"
    return InternalTopic(name, "GUARD_SCOPE_TOPIC", "scope topic", partitions, configs, without)


def audit_topic(name: str, partitions: int) -> InternalTopic:
    """Where every decision is recorded before it is acted on: without it no decision is recorded (the guard
    pauses all the same, after a wait, but cannot prove it), so a missing one is made like the others. Keyed
    by campaign like the input, with as many partitions."""
    without = "decisions cannot be recorded (pauses go ahead after a wait, unaudited)"
    return InternalTopic(name, "GUARD_AUDIT_TOPIC", "audit topic", partitions, {}, without)


def dead_letter_topic(name: str, partitions: int) -> InternalTopic:
    without = "malformed records cannot be kept (they are skipped and logged)"
    return InternalTopic(name, "GUARD_DLQ_TOPIC", "dead-letter topic", partitions, {}, without)


async def ensure(
    settings: KafkaSettings, topic: InternalTopic, replicas: int | None, health: Health, metrics: Metrics
) -> bool:
    """Make `topic` when it does not exist; whether it exists afterwards. A refusal is one error line, a
    warning on /readyz naming what to create and a metric, never an exception."""
    health.internal_topics.pop(topic.name, None)
    refused = await create_if_missing(settings, topic, replicas)
    if refused is not None:
        log.error(
            f"the {topic.role} does not exist and cannot be created; create it",
            topic=topic.name,
            setting=topic.setting,
            create=topic.what_to_create(replicas),
            without=topic.without,
            error=refused,
        )
        health.internal_topics[topic.name] = (
            f"{topic.setting} {topic.name} does not exist and the brokers refused to create it ({refused}): "
            f"{topic.without}; create {topic.what_to_create(replicas)}"
        )
    metrics.internal_topics_missing.set(len(health.internal_topics))
    return refused is None


async def create_if_missing(settings: KafkaSettings, topic: InternalTopic, replicas: int | None) -> str | None:
    """Make `topic` when it does not exist, with `replicas` replicas (None: min(3, brokers)). None when it
    exists afterwards, else why not (the brokers' refusal, or their error)."""
    try:
        if await topic_partitions(settings, topic.name):
            return None
        refused = await _create(settings, topic, replicas)
    except (KafkaError, OSError) as error:
        refused = repr(error)
    if refused is not None and await _exists(settings, topic.name):  # made meanwhile by another replica
        return None
    return refused


async def _create(settings: KafkaSettings, topic: InternalTopic, replicas: int | None) -> str | None:
    """Ask the controller to create `topic`; None once it exists (made now, or by another replica
    meanwhile), else the brokers' reason. aiokafka returns per-topic errors rather than raising them."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if replicas is None:
            replicas = max(1, min(MAX_REPLICAS, len((await admin.describe_cluster())["brokers"])))
        response = await admin.create_topics(
            [NewTopic(topic.name, topic.partitions, replicas, topic_configs=topic.configs)]
        )
    finally:
        await admin.close()
    (_, code, message) = response.topic_errors[0][:3]
    error = for_code(code)
    if code and error is not TopicAlreadyExistsError:
        return f"{error.__name__}: {message}" if message else error.__name__
    if not code:
        log.info(
            f"{topic.role} created",
            topic=topic.name,
            partitions=topic.partitions,
            replicas=replicas,
            configs=topic.configs,
        )
    return None


async def _exists(settings: KafkaSettings, name: str) -> bool:
    try:
        return bool(await topic_partitions(settings, name))
    except (KafkaError, OSError):
        return False
