"""aiokafka wiring: clients from settings, where each assigned partition starts reading, the
rebalance listener, and the dead-letter sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import BrokerResponseError, KafkaError, KafkaTimeoutError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential_jitter

from guard.audit import read_audit_outcome
from guard.errors import ConfigError, GuardError
from guard.metrics import Metrics
from guard.settings import KafkaSettings

log = structlog.get_logger("guard.kafka")

LOG_END_TIMEOUT = 30.0  # a fetch from a record the log holds is answered at once; this is for a broker in trouble


class UnknownTopic(GuardError):
    """The topic does not exist (or has no partitions)."""


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
            connection = await asyncio.wait_for(create_conn(host, port, **options), timeout)
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


def make_consumer(settings: KafkaSettings, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,  # offsets are committed only once their decisions are settled
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **client_options(settings),
    )


async def start_offset(
    consumer: AIOKafkaConsumer, tp: TopicPartition, committed: int | None, lookback_ms: int
) -> int | None:
    """Where to start reading `tp` so the windows see all evidence since `lookback_ms`.

    Returns an offset, or None for "from the beginning" when the broker cannot look up offsets by
    time (records older than the lookback are then skipped by their timestamp as they arrive).
    """
    found = (await consumer.offsets_for_times({tp: lookback_ms})).get(tp)
    if found is None:  # nothing newer than the lookback
        if committed is not None:
            return committed
        await consumer.seek_to_end(tp)
        return await consumer.position(tp)
    if found.timestamp < lookback_ms:  # a broker that ignores the timestamp (e.g. the embedded test broker)
        return None
    return found.offset if committed is None else min(found.offset, committed)


class Rebalance(ConsumerRebalanceListener):
    """Commits what is settled before partitions move, and positions newly assigned ones.

    aiokafka runs these in its coordinator task: the poll loop goes on while they await. They
    share no lock with it; a partition joins the pipeline only once it is positioned.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pipeline: Any,
        on_assigned: Callable[[int, bool], None] = lambda lookback_ms, fresh: None,
        checkpoints: Any = None,  # a guard.checkpoints.Checkpointer: restores on assignment, writes on revoke
    ) -> None:
        self._consumer, self._pipeline, self._on_assigned = consumer, pipeline, on_assigned
        self._checkpoints = checkpoints
        self._warned_time_lookup = False

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        offsets = {tp: offset for tp, offset in self._pipeline.committable().items() if tp in revoked}
        if offsets:
            try:
                await self._consumer.commit(offsets)
                self._pipeline.committed(offsets)
            except Exception as error:  # the new owner replays from the last commit: late, not lost
                log.warning("commit on revoke failed", error=str(error))
        if self._checkpoints is not None:  # the next owner restores from here
            await self._checkpoints.write([tp for tp in revoked if self._pipeline.owns(tp)])
        for tp in revoked:
            self._pipeline.revoke(tp)
        log.info("partitions revoked", partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # the rules in force now decide how far back to rebuild (a reload may have changed them)
        lookback_ms = max(0, int((time.time() - self._pipeline.rules.retention) * 1000))
        fresh = [tp for tp in assigned if not self._pipeline.owns(tp)]
        # first: the poll loop runs while this listener awaits, and must not act on what the
        # new partitions replay before the audit has been read again
        self._on_assigned(lookback_ms, bool(fresh))
        restored = await self._checkpoints.restore(fresh, lookback_ms) if self._checkpoints and fresh else {}
        for tp in fresh:
            committed = await self._consumer.committed(tp)
            if tp in restored:  # state as of the checkpoint's offset: read on from there
                engine, offset = restored[tp]
                self._consumer.seek(tp, offset)
                self._pipeline.assign(tp, committed, lookback_ms, engine)
                continue
            start = await start_offset(self._consumer, tp, committed, lookback_ms)
            if start is None:
                if not self._warned_time_lookup:
                    log.warning(
                        "the broker cannot look up offsets by time; reading from the beginning and skipping old records"
                    )
                    self._warned_time_lookup = True
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, start)
            self._pipeline.assign(tp, committed, lookback_ms)
        log.info("partitions assigned", partitions=_names(assigned), fresh=_names(fresh))


def _names(partitions: list[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


TRUNCATED_BYTES = 16 * 1024  # what a dead letter keeps of a record too big to copy whole
MAX_REASON_CHARS = 1000


class DeadLetters:
    """Malformed records go to the dead-letter topic as they came, with the reason in headers.

    A record that cannot be written whole (over the producer's request limit or the broker's
    message size, say) is written cut to TRUNCATED_BYTES, without its own headers, naming its
    source (topic/partition/offset) and original size; if even that fails it is skipped with an
    error log and a metric. `send` and the future it returns never raise: no input record can
    stop a partition.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics) -> None:
        self._producer, self._topic, self._metrics = producer, topic, metrics

    async def send(self, record: ConsumerRecord, reason: str) -> asyncio.Future:
        reason = reason[:MAX_REASON_CHARS]
        try:
            headers = [*(record.headers or ()), *_why(record, reason)]
            delivery: asyncio.Future | None = await self._producer.send(
                self._topic, value=record.value, key=record.key, headers=headers
            )
            error: Exception | None = None
        except Exception as refused:  # e.g. MessageSizeTooLargeError, raised before anything is sent
            delivery, error = None, refused
        return asyncio.create_task(self._settle(record, reason, delivery, error))

    async def _settle(
        self, record: ConsumerRecord, reason: str, delivery: asyncio.Future | None, error: Exception | None
    ) -> None:
        if delivery is not None:
            try:
                await delivery
                self._metrics.dead_letters.labels("written").inc()
                return
            except Exception as failed:  # the broker refused it (too large, ...) or gave no answer
                error = failed
        source, size = _source(record), len(record.value or b"")
        headers = [*_why(record, reason), ("guard.truncated", b"true"), ("guard.source.size", str(size).encode())]
        try:
            cut = await self._producer.send(
                self._topic, value=_cut(record.value), key=_cut(record.key, 256), headers=headers
            )
            await cut
        except Exception as failed:
            self._metrics.dead_letters.labels("failed").inc()
            log.error(
                "dead letter not written; the record is skipped",
                source=source,
                size=size,
                reason=reason,
                error=repr(failed),
                first_error=repr(error),
            )
            return
        self._metrics.dead_letters.labels("truncated").inc()
        log.warning("dead letter written truncated", source=source, size=size, error=repr(error))


def _source(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _why(record: ConsumerRecord, reason: str) -> list[tuple[str, bytes]]:
    return [
        ("guard.error", reason.encode(errors="replace")),
        ("guard.source", _source(record).encode()),
        ("guard.source.timestamp", str(record.timestamp).encode()),
    ]


def _cut(data: bytes | None, limit: int = TRUNCATED_BYTES) -> bytes | None:
    return data[:limit] if data is not None else None


async def read_topic(
    settings: KafkaSettings, topic: str, since_ms: int, until_ms: int | None = None
) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of the records of every partition of `topic` with record time in [since, until],
    up to the end each partition had when reading started. Reads without a consumer group."""
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        raise UnknownTopic(f"topic {topic!r} does not exist or has no partitions")
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    try:
        await consumer.start()
        consumer.assign(partitions)
        for tp in partitions:
            start = await start_offset(consumer, tp, None, since_ms)
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        ends = await log_ends(consumer, partitions)
        reading = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while reading:
            fetched = await consumer.getmany(*reading, timeout_ms=1000, max_records=10_000)
            batch = []
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp] or (until_ms is not None and record.timestamp > until_ms):
                        reading.discard(tp)
                        break
                    if record.timestamp >= since_ms:
                        batch.append(record)
                if tp in reading and await consumer.position(tp) >= ends[tp]:
                    reading.discard(tp)
            if batch:
                yield batch
    finally:
        await consumer.stop()


@retry(
    # the admin client asks one broker; while that one is down (a failover) another answers on retry
    retry=retry_if_exception(lambda error: isinstance(error, KafkaError) and error.retriable),
    wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
    stop=stop_after_delay(30),
    reraise=True,
)
async def _describe_topics(settings: KafkaSettings) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return await admin.describe_topics()
    finally:
        await admin.close()


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, asked of the brokers; [] when it does not exist.

    A consumer's first metadata names no topics on Apache Kafka (the embedded test broker lists them
    all), and a request that names the topic would create it where brokers auto-create topics: so
    this asks for the metadata of every topic.
    """
    described = await _describe_topics(settings)
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0:
            return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
    return []


async def log_ends(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end when reading starts.

    `end_offsets` (ListOffsets LATEST) is the end on Apache Kafka; the embedded test broker answers
    the start of the last batch instead, so the high watermark of a fetch from just before that
    offset (where the log has a record, so the broker answers at once) raises it to the true end.
    An end that cannot be learnt is an error, never 0: that would skip the partition's records.
    """
    ends = await consumer.end_offsets(partitions)
    positions = {tp: await consumer.position(tp) for tp in partitions}
    for tp in partitions:
        consumer.seek(tp, max(0, ends[tp] - 1))
    unknown = set(partitions)
    deadline = time.monotonic() + LOG_END_TIMEOUT
    while unknown:
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"no high watermark within {LOG_END_TIMEOUT:.0f} s for {_names(sorted(unknown))}")
        await consumer.getmany(*unknown, timeout_ms=100, max_records=1)
        for tp in list(unknown):
            if (highwater := consumer.highwater(tp)) is not None:
                ends[tp] = max(ends[tp], highwater)
                unknown.discard(tp)
    for tp, position in positions.items():
        consumer.seek(tp, position)
    return ends


async def settled_decision_ids(settings: KafkaSettings, audit_topic: str, since_ms: int) -> set[str]:
    """Decisions with a final outcome (anything but `fired`) in the audit topic since `since_ms`."""
    settled: set[str] = set()
    unreadable = 0
    try:
        async with aclosing(read_topic(settings, audit_topic, since_ms)) as batches:  # closed even if cancelled
            async for records in batches:
                for record in records:
                    try:
                        event = read_audit_outcome(record.value)
                    except ValidationError:
                        unreadable += 1  # not an audit event of ours: nothing to learn from it
                        continue
                    if event.outcome != "fired":
                        settled.add(event.decision_id)
    except UnknownTopic:
        pass  # nothing was ever audited
    if unreadable:
        log.warning("audit records that are no audit event skipped", topic=audit_topic, count=unreadable)
    return settled
