"""Shared fixtures: real Kafka brokers for the test session, fresh names per test.

Which brokers run (the matrix): every test that uses ``kafka_broker`` (directly or through
``kafka_bootstrap``, ``kit``, ...) runs once per broker, named ``[tansu]``, ``[kafka]``, ...

* ``KAFKA_BOOTSTRAP_SERVERS`` set: only that broker (``[env]``).
* ``GUARD_TEST_BROKERS`` set (``tansu``, ``kafka``, ``testcontainers``, comma-separated): exactly
  those. A requested broker that cannot start makes its tests ERROR, never skip (CI sets
  ``tansu,kafka``).
* Otherwise, Apache Kafka in testcontainers when a Docker engine answers; else the embedded Tansu
  and Apache Kafka from Maven Central jars (guard/testing/apache_kafka.py) when Java 17+ and Maven
  are present, Tansu alone when not. The terminal summary says which brokers ran and why not.

Each broker starts once per session: pytest orders the tests by the session-scoped parameter. In workers
(`make test`: pytest -n 2 --dist loadgroup) a broker's tests form one group, run by one worker, which alone
starts that broker; the workers hand what their brokers did to the controller for the summary line.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from guard.testing.apache_kafka import KAFKA_VERSION, ApacheKafka, KafkaCluster, kafka_classpath, missing_tools
from guard.testing.broker import BrokerInfo, EmbeddedBroker
from guard.testing.guard_process import Guards
from guard.testing.leadterra import LeadterraStandIn

pytest_plugins = ("fault_report",)  # tests/fault_report.py: REPORT.md of the fault suite

KNOWN_BROKERS = ("tansu", "kafka", "testcontainers")
BROKER_FIXTURES = frozenset({"kafka_broker", "kafka_cluster"})
# within the tests' 120 s timeout; the jars are fetched before the first test (pytest_collection_finish)
KAFKA_START_TIMEOUT = 90.0


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


@dataclass
class Matrix:
    """The brokers of this session, why Apache Kafka is not among them, and what each did."""

    brokers: list[str]
    kafka_not_run: str | None = None
    used: bool = False  # some collected test needs a broker
    started: dict[str, str] = field(default_factory=dict)  # broker -> detail for the summary
    failed: dict[str, str] = field(default_factory=dict)  # broker -> why it did not start


def _requested() -> list[str] | None:
    """The brokers named by GUARD_TEST_BROKERS, or None when it is unset or empty."""
    names = [name.strip() for name in os.environ.get("GUARD_TEST_BROKERS", "").split(",") if name.strip()]
    return list(dict.fromkeys(names)) or None


@functools.cache
def matrix() -> Matrix:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return Matrix(["env"], "KAFKA_BOOTSTRAP_SERVERS is set: only that broker")
    if requested := _requested():
        not_run = None if "kafka" in requested else f"not requested (GUARD_TEST_BROKERS={','.join(requested)})"
        return Matrix(requested, not_run)
    if _docker_answers():
        return Matrix(["testcontainers"], "a Docker engine answers: Apache Kafka runs in testcontainers")
    why = missing_tools()
    return Matrix(["tansu", "kafka"]) if why is None else Matrix(["tansu"], why)


def _core_missing() -> str | None:
    """Why the compiled core (guard_core, built from core/) cannot be used, or None when it can: not installed, or
    another build (guard/engine/kinds.py takes only its own version)."""
    from guard.engine.kinds import compiled, why_not_compiled

    return why_not_compiled() if compiled() is None else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "apache_kafka: runs only when Apache Kafka is in the matrix (its launcher)")
    config.addinivalue_line(
        "markers", "compiled_core: needs the compiled core (guard_core); skipped without it, except under CI=true"
    )
    unknown = [name for name in _requested() or () if name not in KNOWN_BROKERS]
    if unknown:
        raise pytest.UsageError(f"GUARD_TEST_BROKERS: unknown broker(s) {unknown}; known: {', '.join(KNOWN_BROKERS)}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """CI builds and tests both engines: there, a missing compiled core stops the session instead of
    quietly skipping the compiled engine's tests."""
    if os.environ.get("CI") == "true" and (why := _core_missing()):
        raise pytest.UsageError(
            f"CI=true, and the compiled core cannot be used ({why}): CI tests both engines; "
            "build it with `make` (cargo on PATH) or `pip install ./core`"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test is an integration test when it uses a broker fixture (or says so itself, when it starts a broker
    of its own): the mark follows what the test needs, not the module it is in. Tests of the Apache Kafka
    launcher need Java and Maven: left out (deselected, and the summary says why Apache Kafka did not run)
    when Apache Kafka is not in the matrix."""
    core_missing = _core_missing()
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
            # run in workers (pytest -n, --dist loadgroup): a broker's tests share one worker, which alone starts it
            item.add_marker(pytest.mark.xdist_group(_broker_of(item) or "kafka_cluster"))
        if core_missing and item.get_closest_marker("compiled_core"):
            item.add_marker(
                pytest.mark.skip(reason=f"the compiled core cannot be used ({core_missing}): make builds it")
            )
    needing = [item for item in items if item.get_closest_marker("apache_kafka")]
    if needing and "kafka" not in matrix().brokers:
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if not item.get_closest_marker("apache_kafka")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kafka_broker" in metafunc.fixturenames:
        brokers = matrix().brokers
        metafunc.parametrize("kafka_broker", brokers, ids=brokers, indirect=True, scope="session")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fetch Apache Kafka's jars before the first test, outside any test's timeout."""
    selected = {_broker_of(item) for item in session.items} - {None}
    if not selected:
        return
    matrix().used = True
    if "kafka" in selected:
        try:
            kafka_classpath()
        except Exception as error:  # the fixture tries again and raises: its tests ERROR
            matrix().failed["kafka"] = str(error)


def _broker_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("kafka_broker") if callspec is not None else None


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[BrokerInfo]:
    name = getattr(request, "param", None) or matrix().brokers[0]
    try:
        with _running(name) as broker:
            yield broker
    except Exception as error:
        if name not in matrix().started:  # it did not start: the summary says so too
            matrix().failed[name] = (str(error) or repr(error)).splitlines()[0]
        raise


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes (KRaft, combined broker+controller) for the failover cases: run when
    Apache Kafka is in the matrix (an error when it cannot start), else skipped with the reason."""
    if "kafka" not in matrix().brokers:
        pytest.skip(f"Apache Kafka not in the matrix: {matrix().kafka_not_run}")
    with KafkaCluster(3, auto_create_topics=False) as cluster:
        yield cluster


@contextlib.contextmanager
def _running(name: str) -> Iterator[BrokerInfo]:
    """Start the named broker, note what the summary reports, stop it at the end."""
    if name == "env":
        matrix().started[name] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        yield BrokerInfo(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "env")
    elif name == "testcontainers":
        # testcontainers.kafka is a deprecated alias of this module (its import warns).
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as container:
            matrix().started[name] = "Apache Kafka in a container"
            yield BrokerInfo(container.get_bootstrap_server(), "testcontainers")
    elif name == "tansu":
        with EmbeddedBroker() as tansu:
            matrix().started[name] = ""
            yield BrokerInfo(tansu.bootstrap_servers, "tansu")
    else:
        began = time.monotonic()
        kafka = ApacheKafka()
        try:
            kafka.start(KAFKA_START_TIMEOUT)
            detail = f"Apache Kafka {KAFKA_VERSION}, ready in {time.monotonic() - began:.1f} s"
            matrix().started[name] = detail
            yield BrokerInfo(kafka.bootstrap_servers, "kafka")
            if (rss := _rss_mib(kafka.pid)) is not None:
                matrix().started[name] = f"{detail}, {rss:.0f} MiB RSS at the end"
        finally:
            kafka.stop()


def _rss_mib(pid: int | None) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a worker (pytest -n), hand what its brokers did to the controller, which prints the summary."""
    if hasattr(session.config, "workeroutput") and matrix.cache_info().currsize:
        run = matrix()
        session.config.workeroutput["brokers"] = {"used": run.used, "started": run.started, "failed": run.failed}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    if brokers := getattr(node, "workeroutput", {}).get("brokers"):
        run = matrix()
        run.used |= brokers["used"]
        run.started |= brokers["started"]
        run.failed |= brokers["failed"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line: which brokers the integration tests ran on, and why Apache Kafka did not."""
    run = matrix.cache_info().currsize and matrix()
    if not run or not run.used:
        return
    ran = [
        f"{name} ({run.started[name]})" if run.started[name] else name for name in run.brokers if name in run.started
    ]
    line = "brokers: " + (", ".join(ran) if ran else "none started")
    if len(ran) == 1 and ran[0].startswith("tansu"):
        line = f"brokers: {ran[0]} only"
    for name, why in run.failed.items():
        line += f"; {name} FAILED to start: {why}"
    if run.kafka_not_run and "kafka" not in run.failed:
        line += f"; Apache Kafka not run: {run.kafka_not_run}"
    terminalreporter.write_line(line)


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


@pytest.fixture
async def guards(tmp_path: Path) -> AsyncIterator[Guards]:
    """Guard processes started by the test (`guard run` as deployed), all stopped at its end."""
    fleet = Guards(tmp_path)
    yield fleet
    await fleet.close()
