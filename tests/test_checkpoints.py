"""State checkpoints: written to a compacted topic, restored on assignment, refused when torn or corrupt."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from pathlib import Path

import cramjam
import httpx
import msgspec
import pytest
import structlog.testing
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_service import (  # noqa: F401  (fixtures)
    RunGuard,
    Topics,
    produce,
    producer,
    run_guard,
    topics,
    until,
)

from guard.contracts.events import decode
from guard.engine import Engine
from guard.engine import snapshot as snapshots
from guard.rules import load_rules
from guard.runtime.checkpoint_records import Manifest, complete, whole
from guard.runtime.checkpoints import (
    CHUNK_BYTES,
    FIRST_WINDOW,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    Found,
    InvalidCheckpoint,
    TornCheckpoint,
    assemble,
    partition_key,
    records,
)
from guard.runtime.settings import KafkaSettings
from guard.runtime.topics import read_topic, topic_partitions
from guard.testing.events import bounced, sent
from guard.testing.leadterra import LeadterraStandIn

RULE = """groups:
  - name: g
    rules:
      - name: bounce-count
        description: ten bounces within the hour
        count: bounced
        window: 1h
        threshold: 10
"""


class TestRecords:
    TP = TopicPartition("events", 3)

    def test_chunks_stay_under_the_message_limit_and_the_manifest_comes_last(self) -> None:
        data = random.Random(7).randbytes(3 * CHUNK_BYTES + 7 * 256)  # does not compress: four chunks
        written = records("g", self.TP, data, 42, "v1", 1, slot=1)
        assert [key for key, _ in written] == [
            b"g/events/3/1/0",
            b"g/events/3/1/1",
            b"g/events/3/1/2",
            b"g/events/3/1/3",
            b"g/events/3",
        ]
        assert all(len(value) <= CHUNK_BYTES for _, value in written)
        checkpoint = assemble(written[-1][1], dict(written), partition_key("g", self.TP))
        assert (checkpoint.offset, checkpoint.rules_version, checkpoint.slot, checkpoint.data) == (42, "v1", 1, data)

    def test_a_torn_write_leaves_the_previous_checkpoint_whole(self) -> None:
        """The next checkpoint goes to the other slot: its chunks written, its manifest not, the old one still reads."""
        prefix = partition_key("g", self.TP)
        old = records("g", self.TP, b"old" * 1000, 10, "v1", 1, slot=0)
        new = records("g", self.TP, b"new" * 1000, 20, "v1", 1, slot=1)
        latest = dict(old) | dict(new[:-1])
        assert assemble(latest[prefix.encode()], latest, prefix).data == b"old" * 1000

    def test_a_snapshot_is_stored_compressed(self) -> None:
        """A snapshot of a few thousand campaigns' windows takes well under half its size in the state topic."""
        rules = load_rules(Path(__file__).parent.parent / "rules")
        engine, now = Engine(rules), time.time()
        for n in range(20_000):
            engine.process(decode(sent(f"camp_{n % 2_000}", now - 3600 + n * 0.1), now))
        data = snapshots.snapshot(engine, rules)
        written = records("g", self.TP, data, 42, "v1", 1, slot=0)
        stored = sum(len(value) for _, value in written[:-1])
        assert stored < 0.5 * len(data), (stored, len(data))
        assert assemble(written[-1][1], dict(written), partition_key("g", self.TP)).data == data

    @pytest.mark.parametrize("fields", [10, 9], ids=["format 1", "format 1 before other_chunks"])
    def test_a_checkpoint_an_earlier_release_wrote_uncompressed_still_reads(self, fields: int) -> None:
        """Record format 1 stored the snapshot as it is (and at first its manifest ended before `other_chunks`):
        an upgraded guard restores it rather than replay the look-back."""
        prefix = partition_key("g", self.TP)
        data = random.Random(3).randbytes(CHUNK_BYTES + 10)
        latest = format_1_records(prefix, data, offset=10, slot=1, other_chunks=3)
        latest[prefix.encode()] = msgspec.msgpack.encode(msgspec.msgpack.decode(latest[prefix.encode()])[:fields])
        checkpoint = assemble(latest[prefix.encode()], latest, prefix)
        assert (checkpoint.offset, checkpoint.data, checkpoint.other_chunks) == (10, data, 3 if fields == 10 else 0)

    @pytest.mark.parametrize("damage", ["missing", "changed", "manifest"])
    def test_a_damaged_checkpoint_is_refused(self, damage: str) -> None:
        prefix = partition_key("g", self.TP)
        latest = dict(records("g", self.TP, random.Random(5).randbytes(CHUNK_BYTES + 10), 10, "v1", 1, slot=0))
        if damage == "missing":
            del latest[f"{prefix}/0/1".encode()]
        elif damage == "changed":
            latest[f"{prefix}/0/1".encode()] = b"y" * 10
        else:
            latest[prefix.encode()] = b"\xc1garbage"
        with pytest.raises(CheckpointError):
            assemble(latest[prefix.encode()], latest, prefix)


def assembled(found: Found | CheckpointError) -> Checkpoint | CheckpointError:
    """What a restore makes of a loaded checkpoint: the newest of it and those before it whose chunks add up, or why
    none does (the newest one's error)."""
    if isinstance(found, CheckpointError):
        return found
    checkpoint: Found | None = found
    error: CheckpointError | None = None
    while checkpoint is not None:
        try:
            return checkpoint.assembled()
        except CheckpointError as failed:
            error, checkpoint = error or failed, checkpoint.previous
    assert error is not None
    return error


def format_1_records(prefix: str, data: bytes, offset: int, slot: int, other_chunks: int) -> dict[bytes, bytes]:
    """A checkpoint as record format 1 stored it: the snapshot as it is, in chunks, and a manifest of 10 fields."""
    chunks = [data[at : at + CHUNK_BYTES] for at in range(0, len(data), CHUNK_BYTES)]
    manifest = [1, 1, offset, "v1", slot, len(chunks), len(data), hashlib.sha256(data).digest(), 1, other_chunks]
    return {f"{prefix}/{slot}/{n}".encode(): chunk for n, chunk in enumerate(chunks)} | {
        prefix.encode(): msgspec.msgpack.encode(manifest)
    }


def incompressible(size: int, seed: int) -> bytes:
    """Bytes zstd cannot shrink: a snapshot of `size` bytes stored in size / CHUNK_BYTES chunks."""
    return random.Random(seed).randbytes(size)


class CountingLookups(dict):
    """The newest values of the state topic, counting how many keys are looked up in it."""

    lookups = 0

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)


def forged_manifest(value: bytes, **changes: object) -> bytes:
    """A manifest with some fields changed, re-encoded as any writer of the state topic could."""
    fields = msgspec.msgpack.decode(value)
    for name, changed in changes.items():
        fields[Manifest.__struct_fields__.index(name)] = changed
    return msgspec.msgpack.encode(fields)


class TestBounds:
    """A manifest is input: its sizes, counts and offset are bounded as it is decoded, before anything is built."""

    TP = TopicPartition("events", 0)

    @pytest.mark.parametrize(
        "changes",
        [
            {"offset": -1},
            {"chunks": 300_000_000},
            {"chunks": 2},  # one chunk holds 10 bytes
            {"size": 2**40, "chunks": 2**40 // CHUNK_BYTES},
            {"slot": 7},
            {"other_chunks": 300_000_000},
            {"sha256": b"short"},
            {"written_ms": -5},
            {"raw_size": 2**40},
        ],
        ids=lambda changes: ",".join(changes),
    )
    def test_a_manifest_out_of_bounds_is_invalid_and_nothing_is_looked_up_for_it(self, changes: dict) -> None:
        """`chunks=300000000` built a list of that many lookups before any check (the event loop froze)."""
        prefix = partition_key("g", self.TP)
        latest = CountingLookups(records("g", self.TP, b"x" * 10, 10, "v1", 1, slot=0))
        manifest = forged_manifest(latest[prefix.encode()], **changes)
        latest[prefix.encode()] = manifest
        latest.lookups = 0
        with pytest.raises(InvalidCheckpoint):
            assemble(manifest, latest, prefix)
        assert complete(prefix, latest, [(manifest, 1)]) is None, "an unusable manifest: read further back"
        assert latest.lookups == 0

    @pytest.mark.parametrize("raw_size", [1_000, 10_000_001], ids=["bomb", "short"])
    def test_a_snapshot_that_does_not_decompress_to_its_size_is_invalid(self, raw_size: int) -> None:
        """Chunks that add up to their hash but inflate beyond the manifest's `raw_size` (a forged bomb: 10 MB of
        zeros in a few hundred bytes) or fall short of it are refused; no more than `raw_size` is ever written."""
        prefix = partition_key("g", self.TP)
        bomb = bytes(cramjam.zstd.compress(bytes(10_000_000), level=1))
        latest = dict(records("g", self.TP, b"x" * 10, 10, "v1", 1, slot=0))
        latest[f"{prefix}/0/0".encode()] = bomb
        manifest = forged_manifest(
            latest[prefix.encode()], size=len(bomb), sha256=hashlib.sha256(bomb).digest(), raw_size=raw_size
        )
        with pytest.raises(InvalidCheckpoint, match="decompress"):
            assemble(manifest, latest, prefix)

    def test_an_invalid_newest_manifest_leaves_the_whole_checkpoint_before_it_in_use(self) -> None:
        prefix = partition_key("g", self.TP)
        older = records("g", self.TP, b"old", 10, "v1", 1, slot=0)
        newer = records("g", self.TP, b"new", 20, "v1", 1, slot=1)
        forged = forged_manifest(newer[-1][1], offset=-1)
        values = dict(older) | dict(newer[:-1])
        manifests = [(forged, 3), (older[-1][1], 1)]
        assert complete(prefix, values, manifests) == 1
        invalid, checkpoint = whole(prefix, manifests, values)
        assert isinstance(invalid, InvalidCheckpoint) and "offset" in str(invalid)
        assert isinstance(checkpoint, Found) and (checkpoint.offset, checkpoint.assembled().data) == (10, b"old")

    def test_a_newest_checkpoint_whose_chunks_do_not_add_up_leaves_the_one_before_it_in_use(self) -> None:
        """Found without being assembled (a restore assembles it, off the event loop); its chunks' hash fails
        then, and the checkpoint before it is there to be used."""
        prefix = partition_key("g", self.TP)
        older = records("g", self.TP, b"old", 10, "v1", 1, slot=0)
        newer = records("g", self.TP, b"new", 20, "v1", 1, slot=1)
        values = dict(older) | dict(newer[:-1]) | {newer[0][0]: b"garbage"}
        [checkpoint] = whole(prefix, [(newer[-1][1], 3), (older[-1][1], 1)], values)
        assert isinstance(checkpoint, Found) and checkpoint.offset == 20
        with pytest.raises(CheckpointError, match="do not match"):
            checkpoint.assembled()
        assert checkpoint.previous is not None and checkpoint.previous.assembled().data == b"old"
        assert isinstance(assembled(checkpoint), Checkpoint) and assembled(checkpoint).offset == 10

    def test_no_more_than_the_checkpoint_before_the_newest_is_kept_to_try(self) -> None:
        """The slots alternate, so the chunks of any older checkpoint were written over: a tail of many manifests
        (or one forged many times over) gives two checkpoints to try, never more."""
        prefix = partition_key("g", self.TP)
        writes = [records("g", self.TP, f"v{n}".encode(), 10 * n, "v1", 1, slot=n % 2) for n in range(6)]
        values = {key: value for written in writes for key, value in written[:-1]}
        manifests = [(written[-1][1], n) for n, written in reversed(list(enumerate(writes)))]
        [newest] = whole(prefix, manifests, values)
        assert isinstance(newest, Found) and newest.offset == 50
        assert newest.previous is not None and newest.previous.offset == 40 and newest.previous.previous is None


async def create_state_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name, num_partitions=partitions, replication_factor=1, topic_configs={"cleanup.policy": "compact"}
                )
            ]
        )
    finally:
        await admin.close()
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + 15
    while not await topic_partitions(settings, name):  # metadata reaches every broker a moment later
        assert time.monotonic() < deadline, f"topic {name} not visible"
        await asyncio.sleep(0.1)


def bounces(campaign_id: str, start: float, count: int) -> list[tuple[str, bytes]]:
    return [(campaign_id, bounced(campaign_id, start + i)) for i in range(count)]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE)
    return path


@pytest.mark.integration
class TestRestart:
    async def started(self, run_guard: RunGuard, topics: Topics, rules: Path, **options: object):  # noqa: F811
        return await run_guard(rules=rules, state_topic=f"state-{topics.group}", checkpoint_interval=0.2, **options)

    async def six_bounces_then_stopped(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> float:
        """A send and six bounces of `camp` ten minutes ago, counted by a guard stopped since (SIGTERM: checkpoints
        written); their start time."""
        await create_state_topic(kafka_bootstrap, f"state-{topics.group}")
        standin.add_campaign("camp")
        start = time.time() - 600
        await produce(producer, topics.input, [("camp", sent("camp", start))] + bounces("camp", start, 6))
        first = await self.started(run_guard, topics, rules)
        await until(lambda: first.metrics.records.labels("counted")._value.get() == 7)
        await first.shutdown()
        assert first.metrics.checkpoints.labels("written")._value.get() >= 1
        return start

    async def test_evidence_from_before_a_restart_counts_without_replaying_it(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """Six bounces before SIGTERM, four after: the tenth pauses, and the second guard replays nothing."""
        start = await self.six_bounces_then_stopped(kafka_bootstrap, standin, producer, topics, run_guard, rules)

        second = await self.started(run_guard, topics, rules)
        await produce(producer, topics.input, bounces("camp", start + 100, 4))
        await standin.wait_for_pauses(1, timeout=20)
        assert second.metrics.checkpoints.labels("restored")._value.get() == 1
        assert second.metrics.records.labels("replayed")._value.get() == 0
        assert second.metrics.records.labels("counted")._value.get() == 4

    async def test_a_corrupt_checkpoint_is_ignored_and_the_look_back_replayed(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """Every chunk overwritten with garbage: counted as corrupt, the replay rebuilds the same evidence."""
        state_topic = f"state-{topics.group}"
        start = await self.six_bounces_then_stopped(kafka_bootstrap, standin, producer, topics, run_guard, rules)
        for partition in range(4):
            for slot in (0, 1):
                key = f"{topics.group}/{topics.input}/{partition}/{slot}/0".encode()
                await producer.send_and_wait(state_topic, key=key, value=b"garbage")

        second = await self.started(run_guard, topics, rules)
        await produce(producer, topics.input, bounces("camp", start + 100, 4))
        await standin.wait_for_pauses(1, timeout=20)
        # the newest, then the one before it where there is one (a periodic write before the stop's), each found
        # corrupt as the restore tries it
        assert second.metrics.checkpoints.labels("corrupt")._value.get() in (1, 2)
        assert second.metrics.checkpoints.labels("restored")._value.get() == 0
        assert second.metrics.records.labels("replayed")._value.get() == 7

    async def test_a_rule_file_edited_before_the_restart_restores_the_checkpoint_as_a_reload(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """Six bounces before SIGTERM; a rule added to the file and the guard restarted; four bounces after: the
        checkpoint is restored under the rules it was counted for and the edited ones taken as a hot reload takes
        them, so the tenth pauses with nothing replayed (a replay rebuilds only the look-back: a `cusum` or `last:`
        series older than it was lost)."""
        start = await self.six_bounces_then_stopped(kafka_bootstrap, standin, producer, topics, run_guard, rules)

        edited = rules.with_name("edited.yaml")
        edited.write_text(
            RULE + "      - name: complaints\n        description: d\n        count: complained\n"
            "        window: 1h\n        threshold: 5\n"
        )
        second = await self.started(run_guard, topics, edited)
        await produce(producer, topics.input, bounces("camp", start + 100, 4))
        await standin.wait_for_pauses(1, timeout=20)
        checkpoints = second.metrics.checkpoints.labels
        assert (checkpoints("restored")._value.get(), checkpoints("mismatch")._value.get()) == (1, 0)
        assert second.metrics.records.labels("replayed")._value.get() == 0
        assert second.metrics.records.labels("counted")._value.get() == 4

    async def test_a_checkpoint_under_other_settings_is_a_mismatch_and_the_look_back_replayed(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """Restarted with another GUARD_RESUME_GRACE: the checkpoint is sound but not of these settings, counted
        `mismatch` as one of other rules is (not `invalid`, twice, with warnings: what forged or broken writes are
        counted as); the replay rebuilds the same evidence, and the tenth bounce pauses."""
        start = await self.six_bounces_then_stopped(kafka_bootstrap, standin, producer, topics, run_guard, rules)

        second = await self.started(run_guard, topics, rules, resume_grace=120.0)
        await produce(producer, topics.input, bounces("camp", start + 100, 4))
        await standin.wait_for_pauses(1, timeout=20)
        checkpoints = second.metrics.checkpoints.labels
        assert checkpoints("mismatch")._value.get() == 1
        assert checkpoints("invalid")._value.get() == checkpoints("restored")._value.get() == 0
        assert second.metrics.records.labels("replayed")._value.get() == 7

    async def test_a_tombstone_on_the_manifest_key_deletes_the_checkpoint_and_is_no_torn_write(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """A reset (README): a tombstone written to a partition's manifest key. The next guard replays the look-back
        and says the checkpoint was deleted, not that a crash tore its first write (`torn`)."""
        state_topic = f"state-{topics.group}"
        start = await self.six_bounces_then_stopped(kafka_bootstrap, standin, producer, topics, run_guard, rules)
        for partition in range(4):
            await producer.send_and_wait(state_topic, key=f"{topics.group}/{topics.input}/{partition}".encode())

        with structlog.testing.capture_logs() as logs:
            second = await self.started(run_guard, topics, rules)
            await produce(producer, topics.input, bounces("camp", start + 100, 4))
            await standin.wait_for_pauses(1, timeout=20)
        checkpoints = second.metrics.checkpoints.labels
        assert checkpoints("torn")._value.get() == checkpoints("restored")._value.get() == 0
        assert second.metrics.records.labels("replayed")._value.get() == 7
        assert any(log["event"].startswith("checkpoint deleted (a tombstone") for log in logs)

    async def test_a_resumed_campaign_is_not_paused_again_after_a_restart(
        self,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        """Paused, then resumed by the user: the restored guard neither calls again nor re-decides."""
        await create_state_topic(kafka_bootstrap, f"state-{topics.group}")
        standin.add_campaign("camp")
        start = time.time() - 600
        await produce(producer, topics.input, bounces("camp", start, 10))
        first = await self.started(run_guard, topics, rules)
        await standin.wait_for_pauses(1, timeout=20)
        await until(lambda: first.metrics.inflight._value.get() == 0)
        await first.shutdown()
        standin.resume("camp")

        second = await self.started(run_guard, topics, rules)
        await produce(producer, topics.input, [("camp", sent("camp", start + 20 + i)) for i in range(5)])
        await until(lambda: second.metrics.records.labels("counted")._value.get() >= 5)
        assert second.metrics.checkpoints.labels("restored")._value.get() == 1
        assert second.metrics.records.labels("replayed")._value.get() == 0
        assert len(standin.pause_requests()) == 1
        assert standin.status("camp") == "running"


@pytest.mark.integration
async def test_chunk_keys_a_smaller_checkpoint_leaves_unused_get_tombstones(
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,  # noqa: F811
) -> None:
    """Three chunks in each slot, then one: the slot's two unused chunk keys end with null values (compaction
    drops them), also when the writer is a new process that learnt the stored chunks by reading."""
    state_topic = f"state-{uuid.uuid4().hex[:10]}"
    await create_state_topic(kafka_bootstrap, state_topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    tp = TopicPartition("events", 2)
    big, small = incompressible(2 * CHUNK_BYTES + 1, 11), b"small"
    first = CheckpointStore(settings, producer, state_topic, "g")
    await first.write(tp, big, 10, "v1", 1)  # slot 0
    await first.write(tp, big, 20, "v1", 1)  # slot 1

    async def newest() -> dict[bytes, bytes | None]:
        values: dict[bytes, bytes | None] = {}
        async for batch in read_topic(settings, state_topic, 0):
            values.update((record.key, record.value) for record in batch)
        return values

    stored = await newest()
    assert all(stored[f"g/events/2/{slot}/{n}".encode()] is not None for slot in (0, 1) for n in range(3))

    # a restarted guard whose first window holds just the newest checkpoint (slot 1: three chunks, the manifest):
    # slot 0's chunk count comes from that manifest, not from reading slot 0's chunks
    second = CheckpointStore(settings, producer, state_topic, "g", first_window=4)
    assert (await second.load([tp]))[tp].offset == 20
    assert second.records_read == 4
    await second.write(tp, small, 30, "v1", 1)  # slot 0, one chunk
    stored = await newest()
    assert bytes(cramjam.zstd.decompress(stored[b"g/events/2/0/0"])) == small
    assert stored[b"g/events/2/0/1"] is None and stored[b"g/events/2/0/2"] is None
    assert all(stored[f"g/events/2/1/{n}".encode()] is not None for n in range(3)), "the other slot is kept whole"
    assert assembled((await second.load([tp]))[tp]).data == small

    await second.write(tp, small, 40, "v1", 1)  # slot 1
    stored = await newest()
    assert stored[b"g/events/2/1/1"] is None and stored[b"g/events/2/1/2"] is None
    checkpoint = assembled((await CheckpointStore(settings, producer, state_topic, "g").load([tp]))[tp])
    assert (checkpoint.offset, checkpoint.data) == (40, small)


@pytest.mark.integration
async def test_chunks_written_after_the_manifest_are_a_torn_write(
    kafka_bootstrap: str,
    producer: AIOKafkaProducer,  # noqa: F811
) -> None:
    """A crash between the chunks and the manifest: a first checkpoint's chunks alone are TornCheckpoint; a later
    one's chunks beside an older whole checkpoint leave that one in use, with the torn chunks counted."""
    state_topic = f"state-{uuid.uuid4().hex[:10]}"
    await create_state_topic(kafka_bootstrap, state_topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    first, second = TopicPartition("events", 0), TopicPartition("events", 1)
    data = incompressible(CHUNK_BYTES + 1, 12)
    for key, value in records("g", first, data, 10, "v1", 1, slot=0)[:-1]:  # the manifest never written
        await producer.send_and_wait(state_topic, key=key, value=value)
    for key, value in records("g", second, data, 10, "v1", 1, slot=0):
        await producer.send_and_wait(state_topic, key=key, value=value)
    await asyncio.sleep(0.01)  # the torn write's chunks are stamped after the manifest
    for key, value in records("g", second, b"newer", 20, "v1", 1, slot=1)[:-1]:
        await producer.send_and_wait(state_topic, key=key, value=value)

    found = await CheckpointStore(settings, producer, state_topic, "g").load([first, second])
    assert isinstance(found[first], TornCheckpoint)
    assert (found[second].offset, assembled(found[second]).data, found[second].torn) == (10, data, 1)


async def write_records(producer: AIOKafkaProducer, topic: str, written: list[tuple[bytes, bytes]]) -> None:  # noqa: F811
    for key, value in written:
        await producer.send_and_wait(topic, key=key, value=value)


@pytest.mark.integration
class TestTail:
    """A restore reads the state topic from its end backwards, only as far as the newest checkpoints reach."""

    TP = TopicPartition("events", 1)
    OTHER = TopicPartition("events", 2)

    async def superseded(self, bootstrap: str, producer: AIOKafkaProducer, count: int) -> tuple[str, int]:  # noqa: F811
        """A state topic holding `count` superseded one-chunk checkpoints of two partitions (Tansu never compacts,
        Kafka never compacts the active segment); returns its name and the records it holds."""
        state_topic = f"state-{uuid.uuid4().hex[:10]}"
        await create_state_topic(bootstrap, state_topic)
        store = CheckpointStore(KafkaSettings(bootstrap_servers=bootstrap), producer, state_topic, "g")
        for n in range(count):
            await store.write(self.TP, b"old %d" % n, n, "v1", 1)
            await store.write(self.OTHER, b"other %d" % n, n, "v1", 1)
        return state_topic, 4 * count

    async def test_many_superseded_checkpoints_are_not_read(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        state_topic, held = await self.superseded(kafka_bootstrap, producer, 150)
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        data = incompressible(2 * CHUNK_BYTES + 1, 13)
        await CheckpointStore(settings, producer, state_topic, "g").write(self.TP, data, 1000, "v1", 1)

        store = CheckpointStore(settings, producer, state_topic, "g")
        found = await store.load([self.TP, self.OTHER])
        assert (found[self.TP].offset, assembled(found[self.TP]).data, found[self.TP].torn) == (1000, data, 0)
        assert (found[self.OTHER].offset, assembled(found[self.OTHER]).data) == (149, b"other 149")
        assert store.records_read <= FIRST_WINDOW < held

    async def test_a_newest_checkpoint_across_several_windows_is_read_whole(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        """Four chunks and the manifest, read in windows of 2, 4, ...: the load goes on until every chunk is in."""
        state_topic, held = await self.superseded(kafka_bootstrap, producer, 20)
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        data = incompressible(3 * CHUNK_BYTES + 256, 30)
        await write_records(producer, state_topic, records("g", self.TP, data, 500, "v1", 1, slot=0))

        store = CheckpointStore(settings, producer, state_topic, "g", first_window=2)
        found = await store.load([self.TP])
        assert (found[self.TP].offset, assembled(found[self.TP]).data) == (500, data)
        assert store.records_read == 2 + 4
        assert store.records_read < held

    async def test_a_torn_write_beyond_the_first_window_leaves_the_previous_checkpoint_in_use(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        """The newest records are a torn write's chunks (no manifest): reading goes past them to the whole
        checkpoint before, uses it and counts the torn chunks; the next write tombstones them."""
        state_topic, held = await self.superseded(kafka_bootstrap, producer, 20)
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        whole = incompressible(CHUNK_BYTES + 1, 14)
        await write_records(producer, state_topic, records("g", self.TP, whole, 600, "v1", 1, slot=0))
        await asyncio.sleep(0.01)  # the torn write's chunks are stamped after the manifest
        torn = records("g", self.TP, incompressible(2 * CHUNK_BYTES + 1, 15), 700, "v1", 1, slot=1)[:-1]
        await write_records(producer, state_topic, torn)

        store = CheckpointStore(settings, producer, state_topic, "g", first_window=2)
        found = await store.load([self.TP])
        assert (found[self.TP].offset, assembled(found[self.TP]).data, found[self.TP].torn) == (600, whole, 3)
        assert store.records_read < held

        await store.write(self.TP, b"small", 800, "v1", 1)  # slot 1, one chunk: the torn chunks 1 and 2 go
        values: dict[bytes, bytes | None] = {}
        async for batch in read_topic(settings, state_topic, 0):
            values.update((record.key, record.value) for record in batch)
        assert bytes(cramjam.zstd.decompress(values[b"g/events/1/1/0"])) == b"small"
        assert values[b"g/events/1/1/1"] is None and values[b"g/events/1/1/2"] is None

    async def test_a_damaged_newest_checkpoint_is_refused_not_replaced_by_an_older_one(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        """A chunk of the newest checkpoint overwritten: the newest value counts, so the checkpoint is corrupt."""
        state_topic, held = await self.superseded(kafka_bootstrap, producer, 20)
        settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
        written = records("g", self.TP, incompressible(2 * CHUNK_BYTES + 1, 16), 900, "v1", 1, slot=0)
        await write_records(producer, state_topic, written)
        await producer.send_and_wait(state_topic, key=written[1][0], value=b"garbage")

        store = CheckpointStore(settings, producer, state_topic, "g", first_window=2)
        found = await store.load([self.TP])
        assert isinstance(assembled(found[self.TP]), CheckpointError)
        assert store.records_read < held

    async def test_a_partition_without_a_checkpoint_reads_to_the_start(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        state_topic, held = await self.superseded(kafka_bootstrap, producer, 10)
        store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), producer, state_topic, "g", 2)
        never = TopicPartition("events", 3)
        found = await store.load([self.TP, never])
        assert never not in found and found[self.TP].offset == 9
        assert store.records_read == held

    async def test_a_state_topic_of_several_partitions_is_read_back_to_the_newest_manifest_in_each(
        self,
        kafka_bootstrap: str,
        producer: AIOKafkaProducer,  # noqa: F811
    ) -> None:
        """The checkpoint in state partition 1, a later torn write's chunks in partition 0 behind twenty newer
        records: partition 0 is read back past them to the manifest's time, so the torn write is seen."""
        state_topic = f"state-{uuid.uuid4().hex[:10]}"
        await create_state_topic(kafka_bootstrap, state_topic, partitions=3)
        whole = incompressible(3 * CHUNK_BYTES + 1, 17)
        for key, value in records("g", self.TP, whole, 600, "v1", 1, slot=0):
            await producer.send_and_wait(state_topic, key=key, value=value, partition=1)
        await asyncio.sleep(0.01)  # the torn write's chunks are stamped after the manifest
        for key, value in records("g", self.TP, incompressible(2 * CHUNK_BYTES - 100, 18), 700, "v1", 1, slot=1)[:-1]:
            await producer.send_and_wait(state_topic, key=key, value=value, partition=0)
        for n in range(20):  # another group's checkpoints, newer than everything above
            await producer.send_and_wait(state_topic, key=b"h/events/0/0/%d" % n, value=b"x", partition=0)

        store = CheckpointStore(KafkaSettings(bootstrap_servers=kafka_bootstrap), producer, state_topic, "g", 1)
        found = await store.load([self.TP])
        assert (found[self.TP].offset, assembled(found[self.TP]).data, found[self.TP].torn) == (600, whole, 2)


YEAR_9999 = 253_402_300_799.0


async def newest_values(settings: KafkaSettings, topic: str) -> dict[bytes, bytes | None]:
    values: dict[bytes, bytes | None] = {}
    async for batch in read_topic(settings, topic, 0):
        values.update((record.key, record.value) for record in batch)
    return values


def forged_snapshot(data: bytes, case: str) -> bytes:
    """The snapshot with its dedupe table size or every campaign's times forged."""
    fields = msgspec.msgpack.decode(data)
    if case == "bits":
        fields[snapshots._Partition.__struct_fields__.index("dedupe")][0] = 2**63 - 1
    else:
        for campaign in fields[snapshots._Partition.__struct_fields__.index("campaigns")]:
            for name in ("started_at", "watermark"):
                campaign[snapshots._Campaign.__struct_fields__.index(name)] = YEAR_9999
    return msgspec.msgpack.encode(fields)


async def forge(producer: AIOKafkaProducer, state_topic: str, group: str, case: str) -> int:  # noqa: F811
    """Write a forged newest checkpoint of every partition that has one, with a plain producer; returns how many."""
    values = await newest_values(KafkaSettings(bootstrap_servers=producer.client._bootstrap_servers), state_topic)
    manifests = {
        key: value for key, value in values.items() if key.count(b"/") == 2 and key.startswith(b"%s/" % group.encode())
    }
    for key, value in manifests.items():
        assert value is not None
        if case in ("offset", "chunks"):
            changes = {"offset": -1} if case == "offset" else {"chunks": 3_000_000}
            await producer.send_and_wait(state_topic, key=key, value=forged_manifest(value, **changes))
            continue
        prefix = key.decode()
        checkpoint = assemble(value, {k: v for k, v in values.items() if v is not None}, prefix)
        topic, partition = prefix.split("/")[1:]
        data = forged_snapshot(checkpoint.data, case)
        written = records(
            group,
            TopicPartition(topic, int(partition)),
            data,
            checkpoint.offset,
            checkpoint.rules_version,
            checkpoint.snapshot_format,
            slot=1 - checkpoint.slot,
        )
        await write_records(producer, state_topic, written)
    return len(manifests)


@pytest.mark.integration
class TestForged:
    """Forged newest checkpoints on the state topic (anyone who can write it): the restarted guard counts each
    as invalid, comes up live and ready with every partition positioned, and pauses a bad campaign."""

    @pytest.mark.parametrize("case", ["offset", "chunks", "bits", "year-9999"])
    async def test_a_forged_checkpoint_is_counted_and_skipped_and_the_bad_campaign_paused(
        self,
        case: str,
        kafka_bootstrap: str,
        standin: LeadterraStandIn,
        producer: AIOKafkaProducer,  # noqa: F811
        topics: Topics,  # noqa: F811
        run_guard: RunGuard,  # noqa: F811
        rules: Path,
    ) -> None:
        state_topic = f"state-{topics.group}"
        await create_state_topic(kafka_bootstrap, state_topic)
        standin.add_campaign("camp")
        start = time.time() - 600
        await produce(producer, topics.input, [("camp", sent("camp", start))] + bounces("camp", start, 6))
        first = await run_guard(rules=rules, state_topic=state_topic, checkpoint_interval=0.2)
        await until(lambda: first.metrics.records.labels("counted")._value.get() == 7)
        await first.shutdown()
        forged = await forge(producer, state_topic, topics.group, case)
        assert forged >= 1

        second = await run_guard(rules=rules, state_topic=state_topic, checkpoint_interval=60)
        await produce(producer, topics.input, bounces("camp", start + 100, 4))
        await standin.wait_for_pauses(1, timeout=20)
        checkpoints = second.metrics.checkpoints
        assert checkpoints.labels("invalid")._value.get() == forged
        assert checkpoints.labels("corrupt")._value.get() == 0
        await until(lambda: second.assigned == 4)  # every partition positioned and owned
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second.server.port}") as http:
            deadline = time.monotonic() + 15
            while (await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready"
                await asyncio.sleep(0.1)
            assert (await http.get("/livez")).status_code == 200
