"""Checkpoints: each input partition's engine snapshot in a compacted Kafka topic, beside the offset it covers.

A checkpoint is chunks of the snapshot, then a manifest naming them (checkpoint_records.py). Consecutive
checkpoints alternate between two slots, so a write torn by a crash leaves the previous checkpoint whole:
its manifest still names the other slot. Such a torn write shows on reading as chunks written (by the
writer's record timestamps) after the manifest: counted, and the manifest's checkpoint used. Compaction
keeps the newest value per key; reading keeps the same. A manifest whose chunks do not add up to its hash
is refused (torn or corrupt), and so is one whose values are out of bounds (invalid: an offset outside the
partition, a clock ahead of when it was written, sizes its rules and settings do not give): the whole
checkpoint before it is used when it was read, else the look-back replayed. Once a manifest is acknowledged,
chunk keys of its slot beyond its chunk count (left by a larger checkpoint, or a torn one) get tombstones,
so compaction removes them.

Reading starts at the state topic's end and goes backwards in windows of doubling size, until it has every
asked partition's newest usable manifest and that manifest's chunks (written just before it), and has reached
the manifest's time in every partition of the state topic (so chunks of a torn later write are seen): superseded
checkpoints that compaction has not removed yet (it never touches the active segment) are not read. A
partition without a manifest costs a read to the start. What the writer must tombstone is not read either:
each manifest carries how many chunk keys the other slot holds, and chunks of the other slot seen in the
tail (a torn write) are added. Stale keys of a write cut between its manifest and its tombstones stay until
a larger checkpoint of that slot overwrites them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from guard.engine import Engine
from guard.engine.engine import MAX_AHEAD_SECONDS
from guard.engine.scope_snapshot import engine_part
from guard.engine.scopes import ScopeEngine
from guard.engine.snapshot import FORMAT, OtherSettings, PendingSnapshot, check_clock, rules_version
from guard.rules import RuleSet
from guard.runtime.checkpoint_records import (
    CHUNK_BYTES,
    Checkpoint,
    CheckpointError,
    Found,
    InvalidCheckpoint,
    OtherSettingsCheckpoint,
    TornCheckpoint,
    assemble,
    chunk_key,
    complete,
    partition_key,
    records,
    stored_chunks,
    whole,
)
from guard.runtime.pipeline import Pipeline
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import UnknownTopic, Window, offset_ranges, read_backwards
from guard.telemetry.metrics import Metrics

__all__ = [
    "CHUNK_BYTES",
    "FIRST_WINDOW",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "Checkpointer",
    "Found",
    "InvalidCheckpoint",
    "TornCheckpoint",
    "assemble",
    "partition_key",
    "records",
]

log = structlog.get_logger("guard.runtime.checkpoints")
T = TypeVar("T")

FIRST_WINDOW = 64  # offsets of each state partition read first (up to 32 MiB of chunks); each further window doubles
# a checkpoint encodes campaigns this many at a time, for up to STEP_SECONDS, then lets the poll loop in: a step
# bounded in time, not in campaigns, so a checkpoint keeps pace while a busy loop takes a batch between steps
CAMPAIGNS_PER_STEP = 100
STEP_SECONDS = 0.01
CLOCK_SKEW_MS = 300_000  # how far another pod's clock may run ahead of this one's: a manifest written later is forged


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

    async def offset_ranges(self, partitions: list[TopicPartition]) -> dict[TopicPartition, range]:
        """The offsets a checkpoint of each input partition may name: its log start to its log end."""
        return await offset_ranges(self._settings, partitions)

    async def write(
        self, tp: TopicPartition, data: bytes, offset: int, rules_version: str, snapshot_format: int
    ) -> int:
        """Write one checkpoint: every chunk acknowledged, then the manifest. Returns the bytes written."""
        slot = self._slots.get(tp, 0)
        other_chunks = max(self._chunks.get((tp, 1 - slot), set()), default=-1) + 1
        # chunked and hashed in a thread: for a large partition that is tens of milliseconds the loop goes on
        written = await asyncio.to_thread(
            records, self._group, tp, data, offset, rules_version, snapshot_format, slot, other_chunks
        )
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

    async def load(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Found | CheckpointError]:
        """The newest checkpoint of each of `partitions` that has one (or why none can be used), read back but not
        assembled (`Found.assembled`); a manifest that cannot be used is passed over for the checkpoint before it,
        when that was read."""
        try:
            latest, manifests = await self._read_tail(partitions)
        except UnknownTopic:
            return {}
        values = {key: value for key, (value, _) in latest.items() if value is not None}
        found: dict[TopicPartition, Found | CheckpointError] = {}
        for tp in partitions:
            prefix = partition_key(self._group, tp)
            stored = stored_chunks(prefix, values)
            for slot, numbers in stored.items():
                self._chunks[(tp, slot)] = numbers
            history = manifests.get(prefix.encode(), [])
            candidates = whole(prefix, history, values)
            if not candidates:
                if history and history[0][0] is None:  # no crash: a tombstone deletes the checkpoint (a reset)
                    log.info("checkpoint deleted (a tombstone on its manifest key); replaying", partition=_name(tp))
                elif stored[0] or stored[1]:
                    found[tp] = TornCheckpoint("chunks without a manifest: the first checkpoint's write was torn")
                continue
            if isinstance(candidates[-1], CheckpointError):
                found[tp] = candidates[0]  # type: ignore[assignment]  # the newest manifest's error
                continue
            checkpoint = candidates[-1]
            other = 1 - checkpoint.slot
            torn = sum(1 for n in stored[other] if latest[chunk_key(prefix, other, n)][1] > checkpoint.written_ms)
            skipped = tuple(error for error in candidates[:-1] if isinstance(error, CheckpointError))
            found[tp] = dataclasses.replace(checkpoint, torn=torn, skipped=skipped)
            self._chunks[(tp, checkpoint.slot)] |= set(range(checkpoint.chunks))
            self._chunks[(tp, other)] |= set(range(checkpoint.other_chunks))
            # the next checkpoint goes to the other slot: the one just read stays whole until it is done (`in_use`
            # says otherwise when the restore falls back to the one before it)
            self._slots[tp] = other
        return found

    def in_use(self, tp: TopicPartition, slot: int) -> None:
        """The checkpoint in `slot` is the one restored: the next write goes to the other slot, keeping it whole."""
        self._slots[tp] = 1 - slot

    async def _read_tail(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[bytes, tuple[bytes | None, int]], dict[bytes, list[tuple[bytes | None, int]]]]:
        """The newest value (None: a tombstone) and record time of each key in the state topic's tail, read
        backwards until every partition's newest usable checkpoint is in it; and every value read of each
        partition's manifest key, newest first."""
        latest: dict[bytes, tuple[bytes | None, int]] = {}
        manifests: dict[bytes, list[tuple[bytes | None, int]]] = {}
        earliest: dict[int, int] = {}  # per state partition: the oldest record time read
        self.records_read = 0
        prefixes = [partition_key(self._group, tp) for tp in partitions]
        manifest_keys = {prefix.encode() for prefix in prefixes}
        async with aclosing(read_backwards(self._settings, self.topic, self._first_window)) as windows:
            async for window in windows:
                self.records_read += len(window.records)
                newer = {}
                for record in reversed(window.records):  # newest first within a partition; a key has one partition
                    if record.key is not None and record.key not in latest:
                        newer.setdefault(record.key, (record.value, record.timestamp))
                    if record.key in manifest_keys:
                        manifests.setdefault(record.key, []).append((record.value, record.timestamp))
                    earliest[record.partition] = min(earliest.get(record.partition, record.timestamp), record.timestamp)
                latest.update(newer)
                if self._enough(prefixes, latest, manifests, earliest, window):
                    break
        return latest, manifests

    @staticmethod
    def _enough(
        prefixes: list[str],
        latest: dict[bytes, tuple[bytes | None, int]],
        manifests: dict[bytes, list[tuple[bytes | None, int]]],
        earliest: dict[int, int],
        window: Window,
    ) -> bool:
        """Every newest usable manifest read with its chunks, and every state partition read back to their time."""
        times = [complete(prefix, latest, manifests.get(prefix.encode(), [])) for prefix in prefixes]
        if any(written_ms is None for written_ms in times):
            return False
        since = min(times, default=0)
        reached = {tp.partition for tp in window.at_start}
        return all(partition in reached or oldest <= since for partition, oldest in earliest.items())


def encode_for(pending: PendingSnapshot, seconds: float) -> bool:
    """One step of a checkpoint: encode for up to `seconds` (at least one slice); True once the snapshot is whole."""
    deadline = time.monotonic() + seconds
    while not pending.step(CAMPAIGNS_PER_STEP):
        if time.monotonic() >= deadline:
            return False
    return True


class Checkpointer:
    """When to checkpoint and whether a stored checkpoint is used, for the service and the rebalance listener.

    A snapshot of a partition covers offset O (its next record) only when every decision before O is
    settled (its outcome written, or an alert's `fired`): no decision is in flight anywhere in the
    process (`idle`), the partition is not in the middle of a batch, and its replay is over with the
    replayed decisions handed to the audit check. A restore then needs nothing from before O.
    """

    def __init__(
        self,
        store: CheckpointStore,
        pipeline: Pipeline,
        metrics: Metrics,
        idle: Callable[[], bool],
        step_seconds: float = STEP_SECONDS,
    ) -> None:
        self._store, self._pipeline, self._metrics, self._idle = store, pipeline, metrics, idle
        self._step_seconds = step_seconds
        # one write at a time: the periodic one and a revoke's must not share a slot (the slots alternate per write)
        self._writing = asyncio.Lock()
        # a restore in a worker thread never beside an encoding on the loop: each turns the garbage collector off,
        # and back on as it found it (snapshot.py), which two threads at once could leave off for good
        self._collector = asyncio.Lock()
        self._other_rules: set[TopicPartition] = set()  # refused at the last restore for being of other rules

    def other_rules(self, tp: TopicPartition) -> bool:
        """Whether `tp`'s checkpoint was of other rules or settings than those in force: the records before the
        committed offset were read live under those, so a pause the replay derives and the audit never saw was not
        theirs to make."""
        return tp in self._other_rules

    async def write(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint each of `partitions` that can be now; a failed one is logged and counted, never raised."""
        async with self._writing:
            for tp in partitions:
                if not self._idle():
                    return
                await self._write_one(tp)

    async def _write_one(self, tp: TopicPartition) -> None:
        started = time.monotonic()
        taken = self._pipeline.snapshot(tp)
        if taken is None:
            return
        pending, offset = taken
        try:
            # encoded a slice at a time, the poll loop and the other partitions going on in between; the engine
            # goes on counting too, and the snapshot stays that of its offset (copy on write)
            async with self._collector:
                while not encode_for(pending, self._step_seconds):
                    await asyncio.sleep(0)
            data = await asyncio.to_thread(pending.finish)  # the parts joined: a copy without the GIL
            # the records before `offset` forwarded to the scope topic: written (or failed) before a checkpoint says
            # they need no reading again (they are never forwarded again after a restore)
            await asyncio.gather(*self._pipeline.forwarding(tp), return_exceptions=True)
            size = await self._store.write(tp, data, offset, pending.rules_version, FORMAT)
        except Exception as error:  # the previous checkpoint stays whole: a restart replays a little more
            self._metrics.checkpoints.labels("failed").inc()
            log.warning("checkpoint not written", partition=_name(tp), error=repr(error))
            return
        finally:  # done, failed or cancelled (a stop): the engine is let go of the snapshot
            pending.close()
        self._metrics.checkpoints.labels("written").inc()
        self._metrics.checkpoint_bytes.set(size)
        self._metrics.checkpoint_seconds.observe(time.monotonic() - started)

    async def restore(
        self, partitions: list[TopicPartition], lookback_ms: int
    ) -> dict[TopicPartition, tuple[Engine, int]]:
        """An engine restored from each partition's newest usable checkpoint, and the offset to read on from.
        A partition without one replays the look-back as before; an unusable one is logged and counted, and
        the whole checkpoint before it is used if it was read. Never raises: whatever the state topic holds,
        the worst it can do is a look-back replay."""
        self._other_rules.difference_update(partitions)
        try:
            found = await self._store.load(partitions)
            self._metrics.checkpoint_records_read.set(self._store.records_read)
            usable = [tp for tp, checkpoint in found.items() if isinstance(checkpoint, Found)]
            ranges = await self._store.offset_ranges(usable) if usable else {}
        except Exception as error:  # the state topic or the input's offsets unreadable: replay, as without checkpoints
            self._metrics.checkpoints.labels("unreadable").inc()
            log.warning("checkpoints not read; replaying the look-back", error=repr(error))
            return {}
        restored = {}
        for tp, checkpoint in found.items():
            try:
                # decoded in a worker thread: hundreds of milliseconds a partition, which on the loop would hold the
                # group's heartbeats (a restore outlasting the session timeout cost the membership, and restored
                # again at each new assignment), the other partitions' decisions, the API calls and /livez
                async with self._collector:
                    restored_one = await _to_thread_whole(
                        self._restore_one, tp, checkpoint, lookback_ms, ranges.get(tp)
                    )
            except Exception as error:  # MemoryError, RecursionError, anything: that checkpoint is unusable
                self._metrics.checkpoints.labels("corrupt").inc()
                log.warning("checkpoint unusable; replaying the look-back", partition=_name(tp), error=repr(error))
                continue
            if restored_one is not None:
                engine, used = restored_one
                self._store.in_use(tp, used.slot)
                restored[tp] = engine, used.offset
        return restored

    def _restore_one(
        self, tp: TopicPartition, found: Found | CheckpointError, lookback_ms: int, offsets: range | None
    ) -> tuple[Engine, Found] | None:
        """The engine of `tp`'s newest usable checkpoint, and that checkpoint, trying the one before an unusable one."""
        name = _name(tp)
        if isinstance(found, TornCheckpoint):
            self._metrics.checkpoints.labels("torn").inc()
            log.warning("checkpoint write was torn; replaying the look-back", partition=name, error=str(found))
            return None
        if isinstance(found, CheckpointError):
            self._unusable(name, found, "replaying the look-back")
            return None
        if found.torn:
            self._metrics.checkpoints.labels("torn").inc()
            log.warning(
                "a later checkpoint write was torn (its chunks without a manifest); the previous one is used",
                partition=name,
                chunks=found.torn,
            )
        for error in found.skipped:
            self._unusable(name, error, "using the checkpoint before it")
        rules = self._pipeline.rules  # one rule set throughout (the caller sets a reload's rules on the engine)
        version = rules_version(rules)
        checkpoint: Found | None = found
        if found.rules_version != version:
            # the records after it were read live under other rules: a replay's unrecorded pauses are judged, not
            # dropped (`other_rules`), whether it is restored (under the rules it carries, then reloaded) or not
            self._other_rules.add(tp)  # a set's add holds the GIL: safe from this worker thread
        while checkpoint is not None:
            if checkpoint.snapshot_format != FORMAT:
                self._metrics.checkpoints.labels("mismatch").inc()
                log.info("checkpoint of another format; replaying the look-back", partition=name)
                return None
            other_rules = checkpoint.rules_version != version  # restored under those it carries, then reloaded
            if checkpoint.written_ms < lookback_ms:
                self._metrics.checkpoints.labels("stale").inc()
                log.info("checkpoint older than the look-back; replaying it", partition=name)
                return None
            try:
                engine, size = self._engine(tp, checkpoint, offsets, rules)
            except OtherSettingsCheckpoint as error:
                self._other_rules.add(tp)  # the records before the committed offset were read under those
                self._metrics.checkpoints.labels("mismatch").inc()
                log.info("checkpoint of other settings; replaying the look-back", partition=name, reason=str(error))
                return None
            except CheckpointError as error:
                checkpoint = checkpoint.previous
                self._unusable(
                    name, error, "using the checkpoint before it" if checkpoint else "replaying the look-back"
                )
                continue
            self._metrics.checkpoints.labels("restored").inc()
            reloaded = {"rules": "other: restored under its own, then reloaded"} if other_rules else {}
            log.info("checkpoint restored", partition=name, offset=checkpoint.offset, bytes=size, **reloaded)
            return engine, checkpoint  # type: ignore[return-value]
        return None

    def _engine(
        self, tp: TopicPartition, found: Found, offsets: range | None, rules: RuleSet
    ) -> tuple[Engine | ScopeEngine, int]:
        """The checkpoint's engine and its snapshot's size, once its times and offset are within what this partition
        and clock allow and its chunks add up to its manifest."""
        if offsets is None or found.offset not in offsets:
            raise InvalidCheckpoint(f"offset {found.offset} outside the partition's records ({offsets})")
        if found.written_ms > time.time() * 1000 + CLOCK_SKEW_MS:
            raise InvalidCheckpoint(f"written in the future ({found.written_ms} ms)")
        try:
            data = found.assembled().data
        except CheckpointError:
            raise
        except Exception as error:  # MemoryError, whatever the chunks hold: unusable, the one before it is tried
            raise CheckpointError(f"unreadable checkpoint: {error!r}") from None
        try:  # the clock first: a snapshot from the future is refused before it is read whole
            check_clock(engine_part(data), found.written_ms / 1000 + MAX_AHEAD_SECONDS)
            scopes, other_rules = self._pipeline.counts_scopes(tp), found.rules_version != rules_version(rules)
            return self._pipeline.restored_engine(data, scopes, rules, other_rules=other_rules), len(data)
        except OtherSettings as error:
            raise OtherSettingsCheckpoint(str(error)) from None
        except Exception as error:  # a SnapshotError, or whatever decoding forged bytes raised
            raise InvalidCheckpoint(str(error) or repr(error)) from None

    def _unusable(self, name: str, error: CheckpointError, then: str) -> None:
        self._metrics.checkpoints.labels("invalid" if isinstance(error, InvalidCheckpoint) else "corrupt").inc()
        log.warning(f"checkpoint unusable; {then}", partition=name, error=str(error))


async def _to_thread_whole(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in a worker thread; cancelled, it waits for the thread to end before raising (a thread cannot
    be stopped), so a lock the caller holds covers the whole call."""
    work = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():  # a second cancel (a stop during a revoke's) must not end the wait either
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue
        raise


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"
