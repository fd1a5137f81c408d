"""Launch a real Apache Kafka (KRaft) from Maven Central jars: one node, or a cluster of three.

No release tarball is needed: :func:`kafka_classpath` asks Maven for ``org.apache.kafka:kafka_2.13``
and an SLF4J binding (the tarball's only addition to the POM's runtime dependencies) and copies
them into a cache folder once. Java 17+ and ``mvn`` must be on the PATH::

    from guard.testing.apache_kafka import ApacheKafka, KafkaCluster

    with ApacheKafka() as broker:          # combined broker+controller, node id 1
        ... broker.bootstrap_servers ...
    with KafkaCluster(3) as cluster:       # three combined nodes, a 3-voter quorum
        cluster.nodes[0].kill(); cluster.nodes[0].start()   # a crash, then a restart on its log dirs

Each node is started in its own process group, dies with its parent (``PR_SET_PDEATHSIG``), and is
stopped at exit. A node is ready when its broker port accepts connections: Kafka opens it only
once the broker is unfenced. Measured on a 2-core machine (Kafka 4.1.1, the JVM options below):
ready in ~2 s, ~170 MiB RSS per node.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from guard.testing.broker import ChildProcess, free_port, port_accepts

__all__ = ["KAFKA_VERSION", "ApacheKafka", "KafkaCluster", "KafkaUnavailable", "kafka_classpath"]

KAFKA_VERSION = "4.1.1"
# the log4j 2 binding of the slf4j-api 1.7 that Kafka 4.1 uses (the version Kafka 4.1.1 ships)
_SLF4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_HOST = "127.0.0.1"
# Small heap, serial GC and C1 only: the defaults (1 GiB heap, G1, C2) suit a server, not a test
# machine with 2 cores running three brokers beside the tests.
JVM_OPTIONS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError"]
_LOG4J2 = """status = warn
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d %p %c{1} %m%n
logger.server.name = kafka.server.KafkaServer
logger.server.level = info
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = info
"""


class KafkaUnavailable(RuntimeError):
    """Java 17+ or Maven is missing, or Maven could not fetch the broker's jars."""


def _pom(version: str) -> str:
    group, artifact, binding = _SLF4J_BINDING.split(":")
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.test</groupId><artifactId>apache-kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{binding}</version></dependency>
  </dependencies>
</project>
"""


def default_cache() -> Path:
    """``GUARD_KAFKA_CACHE`` if set, else ``$XDG_CACHE_HOME/deliverability-guard`` (~/.cache/...)."""
    if configured := os.environ.get("GUARD_KAFKA_CACHE"):
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deliverability-guard"


def java_version() -> int | None:
    """The major version of ``java`` on the PATH, or None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.split('"')[1::2]:  # `openjdk version "17.0.15" 2025-04-15`
        head = token.split(".")[0]
        if head.isdigit():
            return int(head)
    return None


def missing_tools() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, no Maven), or None when it can."""
    major = java_version()
    if major is None:
        return "no `java` on the PATH (Apache Kafka needs Java 17+)"
    if major < 17:
        return f"java {major} found; Apache Kafka {KAFKA_VERSION} needs Java 17+"
    if shutil.which("mvn") is None:
        return "no `mvn` on the PATH (the broker's jars come from Maven Central)"
    return None


def kafka_classpath(version: str = KAFKA_VERSION, cache: Path | None = None) -> str:
    """The classpath of the broker, fetching the jars with Maven into the cache on first use.

    Raises :class:`KafkaUnavailable` naming what is missing or Maven's last lines.
    """
    if why := missing_tools():
        raise KafkaUnavailable(why)
    return maven_classpath(f"kafka-{version}", _pom(version), f"Apache Kafka {version}", cache)


def maven_classpath(name: str, pom: str, what: str, cache: Path | None = None) -> str:
    """The runtime dependencies `pom` names, fetched by Maven into the cache's `name/lib` once, as a classpath.

    Raises :class:`KafkaUnavailable` with Maven's last lines when it cannot fetch them.
    """
    root = cache or default_cache()
    lib = root / name / "lib"
    done = lib / ".complete"
    if done.exists():
        return f"{lib}/*"
    lib.mkdir(parents=True, exist_ok=True)
    # one Maven at a time on the cache: parallel test workers (pytest -n) each ask for jars on a fresh machine
    with (root / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _fetch(name, pom, what, lib)
            done.write_text(name)
    return f"{lib}/*"


def _fetch(name: str, pom: str, what: str, lib: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{name}-pom-"))
    try:
        (work / "pom.xml").write_text(pom)
        command = [
            "mvn",
            "-B",
            "-q",
            f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        raise KafkaUnavailable(f"mvn could not fetch {what} (exit {result.returncode}):\n{tail}")


def random_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, unpadded, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafka(ChildProcess):
    """One Apache Kafka node in KRaft combined mode (broker and controller) on loopback ports.

    ``node_id``, ``voters`` (``{node_id: controller_port}``) and ``cluster_id`` let
    :class:`KafkaCluster` build a quorum; alone it is a single-node cluster. ``data_dir`` holds
    its log dirs, config and output log; it survives :meth:`kill` and :meth:`restart` (a
    restarted node recovers its own log), and :meth:`stop` deletes it unless it was given.
    ``advertised_port`` is the port clients connect to after bootstrap (default ``port``), e.g.
    that of a proxy in front of the node.
    """

    def __init__(
        self,
        *,
        node_id: int = 1,
        port: int | None = None,
        controller_port: int | None = None,
        voters: dict[int, int] | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
        data_dir: Path | None = None,
        classpath: str | None = None,
        auto_create_topics: bool = True,
        advertised_port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.controller_port = controller_port or free_port()
        self.voters = voters or {node_id: self.controller_port}
        self.cluster_id = cluster_id or random_cluster_id()
        self.replication = replication
        self.auto_create_topics = auto_create_topics
        self.bootstrap_servers = f"{_HOST}:{self.port}"
        self._owns_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"kafka-{node_id}-"))
        self._classpath = classpath
        self.log_path = self.data_dir / "kafka.log"

    def __repr__(self) -> str:
        return f"<ApacheKafka node {self.node_id} {self.bootstrap_servers} {'running' if self.running else 'stopped'}>"

    def properties(self) -> str:
        """The node's server.properties. Test settings: no initial rebalance delay, and sessions down
        to 1 s accepted (the default minimum, 6 s, rejects the tests' 2 s sessions with
        InvalidSessionTimeoutError)."""
        voters = ",".join(f"{node}@{_HOST}:{port}" for node, port in sorted(self.voters.items()))
        replicas, min_isr = self.replication, max(1, self.replication - 1)
        return f"""process.roles=broker,controller
node.id={self.node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{_HOST}:{self.port},CONTROLLER://{_HOST}:{self.controller_port}
advertised.listeners=PLAINTEXT://{_HOST}:{self.advertised_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={self.data_dir / "data"}
auto.create.topics.enable={str(self.auto_create_topics).lower()}
num.partitions=4
default.replication.factor={replicas}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
# tests use 2 s sessions (the default minimum is 6 s) so a crashed member is noticed quickly
group.min.session.timeout.ms=500
log.cleaner.dedupe.buffer.size=2097152
"""

    def _java(self, main: str, *args: str) -> list[str]:
        log4j = self.data_dir / "log4j2.properties"
        classpath = self._classpath or kafka_classpath()
        return ["java", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, main, *args]

    def format(self) -> None:
        """Write the config and format the log dirs (once; a restart keeps them)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "server.properties").write_text(self.properties())
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        config = str(self.data_dir / "server.properties")
        command = self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", config)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-2000:]
            raise RuntimeError(f"formatting Kafka node {self.node_id} failed:\n{output}")

    def spawn(self) -> None:
        """Start the JVM without waiting for it (:meth:`wait_ready` waits)."""
        if self.running:
            return
        if port_accepts(self.port):
            raise RuntimeError(f"{self.bootstrap_servers} is already in use")
        self.format()
        command = self._java("kafka.Kafka", str(self.data_dir / "server.properties"))
        self._spawn(command)
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 60.0) -> ApacheKafka:
        """Wait until the broker port accepts (Kafka opens it once the broker is unfenced)."""
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"Kafka node {self.node_id} exited with code {code}\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                self._signal(signal.SIGKILL)
                raise RuntimeError(f"Kafka node {self.node_id} not ready within {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def start(self, timeout: float = 60.0) -> ApacheKafka:
        """Start the node and wait until it serves. No-op when running."""
        self.spawn()
        return self.wait_ready(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """A clean shutdown (SIGTERM) and a start on the same ports and log dirs."""
        self._signal(signal.SIGTERM)
        self.start(timeout)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; delete the data dir if this object created it."""
        self._signal(signal.SIGTERM, grace=10.0)
        atexit.unregister(self.stop)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class KafkaCluster:
    """``size`` combined nodes forming one KRaft quorum; replication factor ``size`` by default.

    Internal topics are replicated ``size`` times with ``min.insync.replicas`` one less, so the
    cluster survives one node down. :attr:`nodes` can be killed and started one by one.
    """

    def __init__(self, size: int = 3, *, classpath: str | None = None, auto_create_topics: bool = True) -> None:
        ports = {node: free_port() for node in range(1, size + 1)}
        cluster_id = random_cluster_id()
        self.nodes = [
            ApacheKafka(
                node_id=node,
                controller_port=port,
                voters=ports,
                cluster_id=cluster_id,
                replication=size,
                classpath=classpath,
                auto_create_topics=auto_create_topics,
            )
            for node, port in ports.items()
        ]
        self.bootstrap_servers = ",".join(node.bootstrap_servers for node in self.nodes)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def node(self, node_id: int) -> ApacheKafka:
        return next(node for node in self.nodes if node.node_id == node_id)

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Start every node at once (a quorum forms only when a majority runs) and wait for all."""
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
