"""Checkpoints: each input partition's engine snapshot in a compacted Kafka topic, beside the offset it covers.

A checkpoint of partition `<topic>[<p>]` for group `<g>` is written as
- chunks of the snapshot, keyed `<g>/<topic>/<p>/<slot>/<n>`, each under CHUNK_BYTES (a message stays
  under the broker's default 1 MB limit), then
- a manifest, keyed `<g>/<topic>/<p>`, written only once every chunk is: it names the offset the
  snapshot covers (the next record to read), the rules' version, the snapshot format, the slot, the
  chunk count, the snapshot's length and SHA-256, and when it was written.
Consecutive checkpoints alternate between two slots, so a write torn by a crash leaves the previous
checkpoint whole: its manifest still names the other slot. Such a torn write shows on reading as chunks
written (by the writer's record timestamps) after the manifest: counted, and the manifest's checkpoint used.
Compaction keeps the newest value per key; reading keeps the same. A manifest whose chunks do not add up to
its hash is refused (torn or corrupt). Once a manifest is acknowledged, chunk keys of its slot beyond its
chunk count (left by a larger checkpoint, or a torn one) get tombstones, so compaction removes them.

Reading starts at the state topic's end and goes backwards in windows of doubling size, until it has every
asked partition's newest manifest and that manifest's chunks (written just before it), and has reached the
manifest's time in every partition of the state topic (so chunks of a torn later write are seen): superseded
checkpoints that compaction has not removed yet (it never touches the active segment) are not read. A
partition without a manifest costs a read to the start. What the writer must tombstone is not read either:
each manifest carries how many chunk keys the other slot holds, and chunks of the other slot seen in the
tail (a torn write) are added. Stale keys of a write cut between its manifest and its tombstones stay until
a larger checkpoint of that slot overwrites them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass

import msgspec
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from guard.engine import Engine
from guard.engine.snapshot import FORMAT, SnapshotError, rules_version
from guard.runtime.pipeline import Pipeline
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import UnknownTopic, Window, read_backwards, topic_partitions
from guard.telemetry.metrics import Metrics

log = structlog.get_logger("guard.runtime.checkpoints")

CHUNK_BYTES = 512 * 1024  # well under the broker's and the producer's 1 MB defaults, with room for key and headers
FIRST_WINDOW = 64  # offsets of each state partition read first (up to 32 MiB of chunks); each further window doubles
RECORD_FORMAT = 1  # the manifest's own layout


class Manifest(msgspec.Struct, array_like=True):
    format: int  # RECORD_FORMAT
    snapshot_format: int
    offset: int  # the first input record the snapshot does not cover
    rules_version: str
    slot: int
    chunks: int
    size: int
    sha256: bytes
    written_ms: int  # wall clock: a checkpoint older than the rules' look-back is not used
    other_chunks: int = 0  # chunk keys the other slot holds (numbers below this): the next write's tombstones


_manifest_decoder = msgspec.msgpack.Decoder(Manifest)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int
    rules_version: str
    snapshot_format: int
    written_ms: int
    slot: int
    data: bytes
    torn: int = 0  # chunks of a later write whose manifest never arrived (a crash mid-write); not used
    chunks: int = 0
    other_chunks: int = 0


class CheckpointError(ValueError):
    """A stored checkpoint that cannot be used: torn, corrupt, or of another record format."""


class TornCheckpoint(CheckpointError):
    """Chunks of a partition's first checkpoint, written without their manifest (a crash mid-write)."""


def partition_key(group: str, tp: TopicPartition) -> str:
    return f"{group}/{tp.topic}/{tp.partition}"


def chunk_key(prefix: str, slot: int, number: int) -> bytes:
    return f"{prefix}/{slot}/{number}".encode()


def stored_chunks(prefix: str, keys: Iterable[bytes]) -> dict[int, set[int]]:
    """The chunk numbers present per slot among `keys`, for the partition of `prefix`."""
    found: dict[int, set[int]] = {0: set(), 1: set()}
    start = f"{prefix}/".encode()
    for key in keys:
        if key.startswith(start):
            slot, _, number = key[len(start) :].partition(b"/")
            if slot in (b"0", b"1") and number.isdigit():
                found[int(slot)].add(int(number))
    return found


def records(
    group: str,
    tp: TopicPartition,
    data: bytes,
    offset: int,
    rules_version: str,
    snapshot_format: int,
    slot: int,
    other_chunks: int = 0,
) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of one checkpoint, in the order they must be written: the manifest last."""
    prefix = partition_key(group, tp)
    chunks = [data[at : at + CHUNK_BYTES] for at in range(0, len(data), CHUNK_BYTES)] or [b""]
    manifest = Manifest(
        RECORD_FORMAT,
        snapshot_format,
        offset,
        rules_version,
        slot,
        len(chunks),
        len(data),
        hashlib.sha256(data).digest(),
        int(time.time() * 1000),
        other_chunks,
    )
    written = [(chunk_key(prefix, slot, n), chunk) for n, chunk in enumerate(chunks)]
    return [*written, (prefix.encode(), msgspec.msgpack.encode(manifest))]


def assemble(manifest_value: bytes, latest: dict[bytes, bytes], prefix: str) -> Checkpoint:
    """The checkpoint a manifest names, from the newest value of every key; CheckpointError if it does not add up."""
    try:
        manifest = _manifest_decoder.decode(manifest_value)
    except msgspec.DecodeError as error:
        raise CheckpointError(f"unreadable manifest: {error}") from None
    if manifest.format != RECORD_FORMAT:
        raise CheckpointError(f"checkpoint record format {manifest.format}, this guard reads {RECORD_FORMAT}")
    parts = [latest.get(chunk_key(prefix, manifest.slot, n)) for n in range(manifest.chunks)]
    if any(part is None for part in parts):
        raise CheckpointError("chunks missing")
    data = b"".join(parts)  # type: ignore[arg-type]
    if len(data) != manifest.size or hashlib.sha256(data).digest() != manifest.sha256:
        raise CheckpointError("chunks do not match the manifest (a torn or corrupt write)")
    return Checkpoint(
        manifest.offset,
        manifest.rules_version,
        manifest.snapshot_format,
        manifest.written_ms,
        manifest.slot,
        data,
        chunks=manifest.chunks,
        other_chunks=manifest.other_chunks,
    )


def complete(prefix: str, latest: dict[bytes, tuple[bytes | None, int]]) -> int | None:
    """The time of the partition's newest manifest once it and its chunks have been read (or it is unreadable,
    so its chunks do not matter), else None: read further back."""
    found = latest.get(prefix.encode())
    if found is None:
        return None
    value, written_ms = found
    if value is None:
        return written_ms
    try:
        manifest = _manifest_decoder.decode(value)
    except msgspec.DecodeError:
        return written_ms
    if manifest.format != RECORD_FORMAT:
        return written_ms
    if all(chunk_key(prefix, manifest.slot, n) in latest for n in range(manifest.chunks)):
        return written_ms
    return None


class CheckpointStore:
    """Writes and reads the checkpoints of one consumer group's partitions."""

    def __init__(
        self,
        settings: KafkaSettings,
        producer: AIOKafkaProducer,
        topic: str,
        group: str,
        first_window: int = FIRST_WINDOW,
    ) -> None:
        self._settings, self._producer, self.topic, self._group = settings, producer, topic, group
        self._first_window = first_window
        self._slots: dict[TopicPartition, int] = {}
        self._chunks: dict[tuple[TopicPartition, int], set[int]] = {}  # chunk numbers stored per (partition, slot)
        self.records_read = 0  # records of the state topic the last `load` read

    async def exists(self) -> bool:
        return bool(await topic_partitions(self._settings, self.topic))

    async def write(
        self, tp: TopicPartition, data: bytes, offset: int, rules_version: str, snapshot_format: int
    ) -> int:
        """Write one checkpoint: every chunk acknowledged, then the manifest. Returns the bytes written."""
        slot = self._slots.get(tp, 0)
        other_chunks = max(self._chunks.get((tp, 1 - slot), set()), default=-1) + 1
        written = records(self._group, tp, data, offset, rules_version, snapshot_format, slot, other_chunks)
        *chunks, (manifest_key, manifest) = written
        deliveries = [await self._producer.send(self.topic, key=key, value=value) for key, value in chunks]
        await asyncio.gather(*deliveries)
        await self._producer.send_and_wait(self.topic, key=manifest_key, value=manifest)
        self._slots[tp] = 1 - slot
        await self._tombstone_beyond(tp, slot, len(chunks))
        return sum(len(value) for _, value in written)

    async def _tombstone_beyond(self, tp: TopicPartition, slot: int, count: int) -> None:
        """Null values for the slot's chunk keys the manifest just written does not use."""
        stored = self._chunks.get((tp, slot), set())
        stale = sorted(number for number in stored if number >= count)
        if stale:
            prefix = partition_key(self._group, tp)
            keys = [chunk_key(prefix, slot, n) for n in stale]
            deliveries = [await self._producer.send(self.topic, key=key, value=None) for key in keys]
            await asyncio.gather(*deliveries)
        self._chunks[(tp, slot)] = set(range(count))

    async def load(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Checkpoint | CheckpointError]:
        """The newest checkpoint of each of `partitions` that has one (or why it cannot be used)."""
        try:
            latest = await self._read_tail(partitions)
        except UnknownTopic:
            return {}
        values = {key: value for key, (value, _) in latest.items() if value is not None}
        found: dict[TopicPartition, Checkpoint | CheckpointError] = {}
        for tp in partitions:
            prefix = partition_key(self._group, tp)
            stored = stored_chunks(prefix, values)
            for slot, numbers in stored.items():
                self._chunks[(tp, slot)] = numbers
            manifest = values.get(prefix.encode())
            if manifest is None:
                if stored[0] or stored[1]:
                    found[tp] = TornCheckpoint("chunks without a manifest: the first checkpoint's write was torn")
                continue
            try:
                checkpoint = assemble(manifest, values, prefix)
            except CheckpointError as error:
                found[tp] = error
                continue
            other = 1 - checkpoint.slot
            torn = sum(1 for n in stored[other] if latest[chunk_key(prefix, other, n)][1] > checkpoint.written_ms)
            found[tp] = dataclasses.replace(checkpoint, torn=torn) if torn else checkpoint
            self._chunks[(tp, checkpoint.slot)] |= set(range(checkpoint.chunks))
            self._chunks[(tp, other)] |= set(range(checkpoint.other_chunks))
            # the next checkpoint goes to the other slot: the one just read stays whole until it is done
            self._slots[tp] = other
        return found

    async def _read_tail(self, partitions: list[TopicPartition]) -> dict[bytes, tuple[bytes | None, int]]:
        """The newest value (None: a tombstone) and record time of each key in the state topic's tail, read
        backwards until every partition's newest checkpoint is in it."""
        latest: dict[bytes, tuple[bytes | None, int]] = {}
        earliest: dict[int, int] = {}  # per state partition: the oldest record time read
        self.records_read = 0
        prefixes = [partition_key(self._group, tp) for tp in partitions]
        async with aclosing(read_backwards(self._settings, self.topic, self._first_window)) as windows:
            async for window in windows:
                self.records_read += len(window.records)
                newer = {}
                for record in window.records:  # offset order within a partition, and a key has one partition
                    if record.key is not None and record.key not in latest:
                        newer[record.key] = (record.value, record.timestamp)
                    earliest[record.partition] = min(earliest.get(record.partition, record.timestamp), record.timestamp)
                latest.update(newer)
                if self._enough(prefixes, latest, earliest, window):
                    break
        return latest

    @staticmethod
    def _enough(
        prefixes: list[str], latest: dict[bytes, tuple[bytes | None, int]], earliest: dict[int, int], window: Window
    ) -> bool:
        """Every newest manifest read with its chunks, and every state partition read back to their time."""
        times = [complete(prefix, latest) for prefix in prefixes]
        if any(written_ms is None for written_ms in times):
            return False
        since = min(times, default=0)
        reached = {tp.partition for tp in window.at_start}
        return all(partition in reached or oldest <= since for partition, oldest in earliest.items())


class Checkpointer:
    """When to checkpoint and whether a stored checkpoint is used, for the service and the rebalance listener.

    A snapshot of a partition covers offset O (its next record) only when every decision before O is
    settled (its outcome written, or an alert's `fired`): no decision is in flight anywhere in the
    process (`idle`), the partition is not in the middle of a batch, and its replay is over with the
    replayed decisions handed to the audit check. A restore then needs nothing from before O.
    """

    def __init__(self, store: CheckpointStore, pipeline: Pipeline, metrics: Metrics, idle: Callable[[], bool]) -> None:
        self._store, self._pipeline, self._metrics, self._idle = store, pipeline, metrics, idle

    async def write(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint each of `partitions` that can be now; a failed write is logged and counted, never raised."""
        for tp in partitions:
            if not self._idle():
                return
            started = time.monotonic()  # the snapshot's encoding counts: it holds the event loop
            taken = self._pipeline.snapshot(tp)
            if taken is None:
                continue
            data, offset = taken
            try:
                size = await self._store.write(tp, data, offset, rules_version(self._pipeline.rules), FORMAT)
            except Exception as error:  # the previous checkpoint stays whole: a restart replays a little more
                self._metrics.checkpoints.labels("failed").inc()
                log.warning("checkpoint not written", partition=f"{tp.topic}[{tp.partition}]", error=repr(error))
                continue
            self._metrics.checkpoints.labels("written").inc()
            self._metrics.checkpoint_bytes.set(size)
            self._metrics.checkpoint_seconds.observe(time.monotonic() - started)

    async def restore(
        self, partitions: list[TopicPartition], lookback_ms: int
    ) -> dict[TopicPartition, tuple[Engine, int]]:
        """An engine restored from each partition's newest usable checkpoint, and the offset to read on from.
        A partition without one replays the look-back as before; an unusable one is logged and counted."""
        try:
            found = await self._store.load(partitions)
        except Exception as error:  # the state topic unreadable: replay, as without checkpoints
            self._metrics.checkpoints.labels("unreadable").inc()
            log.warning("checkpoints not read; replaying the look-back", error=repr(error))
            return {}
        self._metrics.checkpoint_records_read.set(self._store.records_read)
        restored = {}
        version = rules_version(self._pipeline.rules)
        for tp, checkpoint in found.items():
            name = f"{tp.topic}[{tp.partition}]"
            if isinstance(checkpoint, TornCheckpoint):
                self._metrics.checkpoints.labels("torn").inc()
                log.warning("checkpoint write was torn; replaying the look-back", partition=name, error=str(checkpoint))
                continue
            if isinstance(checkpoint, CheckpointError):
                self._metrics.checkpoints.labels("corrupt").inc()
                log.warning("checkpoint unusable; replaying the look-back", partition=name, error=str(checkpoint))
                continue
            if checkpoint.torn:
                self._metrics.checkpoints.labels("torn").inc()
                log.warning(
                    "a later checkpoint write was torn (its chunks without a manifest); the previous one is used",
                    partition=name,
                    chunks=checkpoint.torn,
                )
            if checkpoint.snapshot_format != FORMAT or checkpoint.rules_version != version:
                self._metrics.checkpoints.labels("mismatch").inc()
                log.info("checkpoint of other rules or format; replaying the look-back", partition=name)
                continue
            if checkpoint.written_ms < lookback_ms:
                self._metrics.checkpoints.labels("stale").inc()
                log.info("checkpoint older than the look-back; replaying it", partition=name)
                continue
            try:
                engine = self._pipeline.restored_engine(checkpoint.data)
            except SnapshotError as error:
                self._metrics.checkpoints.labels("corrupt").inc()
                log.warning("checkpoint unusable; replaying the look-back", partition=name, error=str(error))
                continue
            self._metrics.checkpoints.labels("restored").inc()
            log.info("checkpoint restored", partition=name, offset=checkpoint.offset, bytes=len(checkpoint.data))
            restored[tp] = (engine, checkpoint.offset)
            await asyncio.sleep(0)  # decoding holds the loop: let heartbeats and the poll loop in between partitions
        return restored
