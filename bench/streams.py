"""The JVM peers of the throughput race: Kafka Streams 4.1.1 (1 h tumbling window, 1 h hopping by
1 min) and a Processor-API ring of 60 one-minute buckets per campaign, the hard-bounce-rate rule
evaluated on every record (bench/streams/Race.java says what each does).

Assembled from Maven Central as the test broker is (guard/testing/apache_kafka.py): `mvn` copies
kafka-streams and its runtime dependencies once into $GUARD_KAFKA_CACHE/kafka-streams-4.1.1/lib,
`javac` compiles bench/streams/*.java into bench/.cache (again only when the sources change). No
Java 17+, javac or Maven: `prepare()` says why, and the race reports these contenders as skipped.

Each runs in a fresh JVM with a consumer group of its own. The JVM samples (records, time, CPU of
all its threads) as it goes; `result()` turns the samples into the race's fields. **rate** and
**cpu_rate** are over the second half of the records processed (after the warm-up: class loading,
JIT compilation, the group join); `whole_rate` and `whole_cpu_rate` from the first record, as the
Python contenders are measured.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.child import CACHE, ROOT, ChildFailed, run_child
from guard.testing.apache_kafka import KAFKA_VERSION, KafkaUnavailable, maven_classpath, missing_tools

SOURCES = ROOT / "bench" / "streams"
MODES = ("tumbling", "hopping", "ring")
LABELS = {
    "tumbling": "Kafka Streams, 1 h tumbling, in-memory store",
    "hopping": "Kafka Streams, 1 h hopping by 1 min, in-memory store",
    "ring": "Kafka Streams Processor API, ring of 60 one-minute buckets per campaign",
}
_DEPENDENCIES = (
    f"org.apache.kafka:kafka-streams:{KAFKA_VERSION}",
    "com.fasterxml.jackson.core:jackson-databind:2.19.0",  # the version kafka-streams 4.1.1 brings
    "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",  # an SLF4J binding, as for the broker
)
# The JVM's defaults (G1, C2) as a team would run it, with a heap that suits a shared 2-core machine
JVM_OPTIONS = ["-Xms256m", "-Xmx1g", "-XX:+ExitOnOutOfMemoryError"]
_LOG4J2 = """status = warn
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d %p %c{1} %m%n
"""


class StreamsUnavailable(RuntimeError):
    """Java 17+, javac or Maven is missing, or Maven or javac failed."""


def _pom() -> str:
    dependencies = "\n".join(
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version></dependency>"
        for group, artifact, version in (dependency.split(":") for dependency in _DEPENDENCIES)
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.bench</groupId><artifactId>kafka-streams-peers</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _run(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        raise StreamsUnavailable(f"{what} failed (exit {result.returncode}):\n{tail}")


def classpath(cache: Path | None = None) -> str:
    """kafka-streams and its runtime dependencies, fetched by Maven into the cache on first use."""
    try:
        return maven_classpath(f"kafka-streams-{KAFKA_VERSION}", _pom(), f"Kafka Streams {KAFKA_VERSION}", cache)
    except KafkaUnavailable as error:
        raise StreamsUnavailable(str(error)) from None


def compiled(jars: str) -> Path:
    """bench/streams/*.java compiled against `jars`, in a folder named by the sources' hash."""
    sources = sorted(SOURCES.glob("*.java"))
    digest = hashlib.sha256(KAFKA_VERSION.encode())
    for source in sources:
        digest.update(source.read_bytes())
    classes = CACHE / f"streams-classes-{digest.hexdigest()[:16]}"
    if not (classes / "Race.class").exists():
        work = Path(tempfile.mkdtemp(prefix="streams-classes-", dir=CACHE))
        _run(["javac", "-d", str(work), "-cp", jars, *map(str, sources)], ROOT, "javac bench/streams")
        work.rename(classes)
    (classes / "log4j2.properties").write_text(_LOG4J2)
    return classes


def prepare() -> dict[str, str]:
    """`{"classpath": ...}` ready to run, or `{"skipped": why}` in one line."""
    if why := missing_tools():
        return {"skipped": why}
    if shutil.which("javac") is None:
        return {"skipped": "no `javac` on the PATH (the Kafka Streams peers are compiled at bench time)"}
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        jars = classpath()
        return {"classpath": f"{compiled(jars)}:{jars}"}
    except (StreamsUnavailable, OSError, subprocess.TimeoutExpired) as error:
        return {"skipped": str(error).splitlines()[0]}


def result(raw: dict[str, Any]) -> dict[str, Any]:
    """The race's fields from the JVM's samples: each of `first`, `half` (where the warm-up ends),
    `done` is [records, nanoTime, process CPU nanos]; `started_ns` and `committed_ns` are nanoTime."""
    first, half, done = raw["first"], raw["half"], raw["done"]
    started = raw["started_ns"]

    def rates(since: list[int]) -> tuple[float | None, float | None, float | None]:
        records, seconds, cpu = done[0] - since[0], (done[1] - since[1]) / 1e9, (done[2] - since[2]) / 1e9
        return (
            records / seconds if seconds > 0 else None,
            records / cpu if cpu > 0 else None,
            cpu / seconds if seconds > 0 else None,
        )

    rate, cpu_rate, cpu_share = rates(half)
    whole_rate, whole_cpu_rate, _ = rates(first)
    return {
        "records": done[0],
        "to_first_s": (first[1] - started) / 1e9,
        "to_done_s": (done[1] - started) / 1e9,
        "to_commit_s": (raw["committed_ns"] - started) / 1e9,
        "rate": rate,
        "cpu_rate": cpu_rate,
        "cpu_share": cpu_share,
        "whole_rate": whole_rate,
        "whole_cpu_rate": whole_cpu_rate,
        "warmup_records": half[0],
        "finished": done[0] >= raw["expect"],
        "window": raw["mode"],
        "campaigns_over_threshold": raw["campaigns_over_threshold"],
    }


def contender(
    setup: dict[str, str], mode: str, bootstrap: str, topic: str, group: str, expect: int, limit: float
) -> dict[str, Any]:
    """One JVM peer over the topic: its fields, `{"skipped": why}` or `{"error": ...}`."""
    if "skipped" in setup:
        return {"skipped": setup["skipped"], "group": group}
    state = Path(tempfile.mkdtemp(prefix="streams-state-", dir=CACHE))
    classes = setup["classpath"].split(":", 1)[0]
    argv = [
        "java",
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={classes}/log4j2.properties",
        "-cp",
        setup["classpath"],
        "Race",
        *(mode, bootstrap, topic, group, str(expect), str(limit), str(state)),
    ]
    try:
        raw = run_child("Race", [], limit + 120, group, argv=argv)
    except ChildFailed as error:
        return {"error": str(error), "group": group}
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return {**result(raw), "group": group}
