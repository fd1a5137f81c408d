"""The guard's own topics as a deployment meets them (DESIGN promise 11): the real `guard run` with the
documented settings only makes its state and control topics, compacted, and restarts from a checkpoint;
where the brokers refuse, one line and a /readyz warning say what to create."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from test_cli_run import free_port
from test_first_contact import Guard, guard_env
from test_input_topics import metric, produce_a_bad_campaign

from guard.testing.broker import BrokerInfo


async def describe(bootstrap: str, topic: str) -> tuple[int, dict[str, str]]:
    """The topic's partition count and the configs the broker reports for it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    return len(described["partitions"]), configs


def env_of(broker: BrokerInfo, suffix: str, **extra: str) -> dict[str, str]:
    """The test's names for the topics (fresh per test on the session's broker); every other setting default."""
    env = guard_env(
        broker.bootstrap_servers,
        free_port(),
        suffix,
        GUARD_STATE_TOPIC=f"state-{suffix}",
        GUARD_CONTROL_TOPIC=f"control-{suffix}",
        **extra,
    )
    if not broker.idempotence:
        env["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
    return env


class TestADefaultDeployment:
    async def test_makes_a_compacted_state_topic_and_restarts_from_a_checkpoint(
        self, kafka_broker: BrokerInfo, tmp_path: Path
    ) -> None:
        """Nothing made by hand: the first start creates the state and control topics (compacted, one
        partition, a short segment.ms); SIGTERM writes a checkpoint, and the restart restores it."""
        suffix = uuid.uuid4().hex[:8]
        await produce_a_bad_campaign(kafka_broker, f"events-{suffix}")
        env = env_of(kafka_broker, suffix)
        async with Guard(env, tmp_path / "first.log") as first:
            await first.until("/readyz", 200, timeout=60)
        for topic in (f"state-{suffix}", f"control-{suffix}"):
            partitions, configs = await describe(kafka_broker.bootstrap_servers, topic)
            assert partitions == 1
            assert configs["cleanup.policy"] == "compact" and configs["segment.ms"] == "600000", configs
        assert any(entry["event"] == "state topic created" for entry in first.logs())

        env["GUARD_HTTP_PORT"] = str(free_port())
        async with Guard(env, tmp_path / "second.log") as second:
            await second.until_logged("checkpoint restored")
            await second.until("/readyz", 200, timeout=60)
            assert 'guard_checkpoints_total{result="restored"}' in (await second.get("/metrics")).text
        assert not [entry for entry in second.logs() if "cannot be created" in entry["event"]]


class TestRefusedInternalTopics:
    async def test_are_one_error_line_each_and_a_readyz_warning_naming_what_to_create(
        self, kafka_broker: BrokerInfo, tmp_path: Path
    ) -> None:
        """GUARD_INTERNAL_REPLICATION_FACTOR=3 on one broker: Apache Kafka refuses the topics, and the guard
        runs ready without checkpoints and exemptions, saying exactly what to create. Tansu accepts any
        replication factor on its one node and makes them (docs/brokers.md)."""
        suffix = uuid.uuid4().hex[:8]
        await produce_a_bad_campaign(kafka_broker, f"events-{suffix}")
        env = env_of(kafka_broker, suffix, GUARD_INTERNAL_REPLICATION_FACTOR="3")
        async with Guard(env, tmp_path / "guard.log") as guard:
            ready = await guard.until("/readyz", 200, timeout=60)
            text = (await guard.get("/metrics")).text
        if kafka_broker.kind == "tansu":
            assert ready.json()["warnings"] == [] and metric(text, "guard_internal_topics_missing") == 0
            return
        warnings = ready.json()["warnings"]
        assert len(warnings) == 2 and metric(text, "guard_internal_topics_missing") == 2, warnings
        for setting, topic in (("GUARD_STATE_TOPIC", f"state-{suffix}"), ("GUARD_CONTROL_TOPIC", f"control-{suffix}")):
            (warning,) = [w for w in warnings if w.startswith(f"{setting} {topic} ")]
            assert "InvalidReplicationFactorError" in warning
            assert (
                f"create {topic} with 1 partition(s), replication factor 3, configs cleanup.policy=compact" in warning
            )
            (line,) = [entry for entry in guard.logs() if entry.get("topic") == topic and entry["level"] == "error"]
            assert (
                line["event"].endswith("does not exist and cannot be created; create it") and line["setting"] == setting
            )
            assert "segment.ms=600000" in line["create"]
