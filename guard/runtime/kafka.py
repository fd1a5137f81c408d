"""Kafka clients from settings: connection and security options, the producer, the consumer of the
input topics (which never makes the brokers create one) and its lag, and a reachability check that names
each bootstrap server's error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import BrokerResponseError, KafkaError
from aiokafka.helpers import create_ssl_context

from guard.errors import ConfigError, GuardError
from guard.runtime.settings import KafkaSettings

# how often, and how long at most, a probe checks Kafka is reachable (per bootstrap server for `reach`):
# `guard run` probes at start-up and while it runs, a `guard` command once before it reads or writes Kafka
PROBE_SECONDS = 5.0


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by the consumer and the producer."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_password is not None
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    return options


class KafkaUnreachable(GuardError):
    """No bootstrap server answered; the message names each server and its error."""


async def reach(settings: KafkaSettings, timeout: float) -> None:
    """Connect to the bootstrap servers in turn until one answers (TLS and SASL included); raises
    KafkaUnreachable naming each server's error. aiokafka's own bootstrap only says it failed."""
    options = client_options(settings)
    del options["bootstrap_servers"]
    errors = []
    for host, port, _ in collect_hosts(settings.bootstrap_servers, randomize=False):
        try:
            async with asyncio.timeout(timeout):
                connection = await create_conn(host, port, **options)
        except (OSError, KafkaError, TimeoutError) as error:
            errors.append(f"{host}:{port}: {_reason(error)}")
            continue
        connection.close()
        return
    raise KafkaUnreachable("; ".join(errors))


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer"
    return str(error) or type(error).__name__


def make_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    """acks=all: an audit or dead-letter record counts as written only once the replicas have it."""
    # linger 0: a `fired` record is written before its pause call, so waiting to batch delays pauses
    return AIOKafkaProducer(
        acks="all", enable_idempotence=settings.enable_idempotence, linger_ms=0, **client_options(settings)
    )


async def start_producer(producer: AIOKafkaProducer, settings: KafkaSettings) -> None:
    """Start `producer`; a broker that refuses the idempotent producer is a configuration error."""
    try:
        await producer.start()
    except BrokerResponseError as error:  # an unreachable broker is a KafkaConnectionError, not this
        if not settings.enable_idempotence:
            raise
        await producer.stop()
        raise ConfigError(
            f"the Kafka brokers refused the idempotent producer (InitProducerId: {error}); "
            "set KAFKA_ENABLE_IDEMPOTENCE=false for brokers without it"
        ) from None


class InputConsumer(AIOKafkaConsumer):
    """The consumer of the input topics. It never makes the brokers create one: a metadata request that
    names a missing topic creates it where brokers create topics on demand (Apache Kafka's default, the
    embedded test broker), so a typo would be made, with the brokers' default partitions, and reported
    found; aiokafka 0.14 has no setting for that request's `allow_auto_topic_creation` (KIP-361). So
    it subscribes to a pattern that matches exactly the configured names: aiokafka then asks for the
    metadata of every topic (which creates none) and subscribes to those of them that exist. A topic
    that appears changes the member's subscription, and with it the group's assignment."""

    def subscribe_exactly(self, topics: tuple[str, ...], listener: ConsumerRebalanceListener) -> None:
        names = "|".join(re.escape(topic) for topic in topics)
        self.subscribe(pattern=rf"^(?:{names})\Z", listener=listener)

    async def partition_counts(self) -> dict[str, int]:
        """Every topic the brokers know now, with its partition count (one metadata request; raises
        KafkaError when no broker answers)."""
        cluster = await self._client.fetch_all_metadata()
        return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}

    async def refresh_metadata(self) -> None:
        """Bring the consumer's own metadata up to date now, not at the next `metadata_max_age_ms`
        (5 minutes): a topic created since, or given more partitions, reaches the subscription."""
        await self._client.force_metadata_update()


async def consumer_lag(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> int:
    """Records of `partitions` the consumer has not read yet: the log end its last fetch saw (the high
    watermark) minus its position, summed, with no request to the brokers. A partition whose end is not
    known yet, or that was revoked meanwhile, counts 0."""
    lag = 0
    for tp in partitions:
        end = consumer.highwater(tp) if tp in consumer.assignment() else None
        if end is None:
            continue
        try:
            lag += max(0, end - await consumer.position(tp))
        except KafkaError:  # revoked meanwhile (IllegalStateError)
            continue
    return lag


def make_consumer(settings: KafkaSettings, group_id: str) -> InputConsumer:
    return InputConsumer(
        group_id=group_id,
        enable_auto_commit=False,  # offsets are committed only once their decisions are settled
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **client_options(settings),
    )
