"""Shared fixtures: one real Kafka broker per test session, fresh names per test.

Broker choice: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else Apache Kafka in testcontainers if a
Docker engine answers; else the embedded Tansu broker (see guard/testing/broker.py).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from guard.testing.broker import BrokerInfo, EmbeddedBroker
from guard.testing.leadterra import LeadterraStandIn


def _docker_answers() -> bool:
    """True if a Docker engine answers a ping within ~2 s; never raises."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        return False  # the common case here: no socket, no need to ask the SDK
    try:
        import docker

        with warnings.catch_warnings():  # a failed ping leaks a socket (ResourceWarning)
            warnings.simplefilter("ignore", ResourceWarning)
            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BrokerInfo]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield BrokerInfo(servers, "env")
    elif _docker_answers():
        # testcontainers.kafka is a deprecated alias of this module (its import warns).
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield BrokerInfo(kafka.get_bootstrap_server(), "testcontainers")
    else:
        with EmbeddedBroker() as broker:
            yield BrokerInfo(broker.bootstrap_servers, "tansu")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerInfo) -> str:
    return kafka_broker.bootstrap_servers


@pytest.fixture
def topic_name() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def group_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def standin() -> AsyncIterator[LeadterraStandIn]:
    """The Leadterra stand-in on a free port of 127.0.0.1, with no campaigns yet."""
    async with LeadterraStandIn() as server:
        yield server
