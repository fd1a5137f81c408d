"""Case 1b: the guard SIGKILLed while it writes a checkpoint (a torn write).

A state of 90k campaigns on one partition makes its checkpoint several 512 KiB chunks (compressed, about 16
bytes a campaign). The test follows
the state topic and SIGKILLs the guard the moment a chunk of a new checkpoint arrives; the kill is
proven torn from the topic itself: some partition's newest chunks were written after its newest
manifest (a checkpoint whose manifest never arrived). The restarted guard must restore every
partition from its last whole checkpoint, count the torn write, and then decide exactly as the
offline run: every pause paid once, none for a decision the log does not justify.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from test_fault_kill import chunks, wait_settled

from guard.testing.events import sent
from guard.tools.generate import generate

FILLER_CAMPAIGNS = 90_000  # all on partition 0: ~16 bytes of compressed state each, its checkpoint 3 chunks
ATTEMPTS = 8


def filler_ids(count: int, partition: int = 0, partitions: int = 4) -> list[str]:
    """Campaign ids the default partitioner puts on `partition`, so their state fills one checkpoint."""
    partitioner, every = DefaultPartitioner(), list(range(partitions))
    ids: list[str] = []
    n = 0
    while len(ids) < count:
        campaign = f"filler-{n:06d}"
        if partitioner(campaign.encode(), every, every) == partition:
            ids.append(campaign)
        n += 1
    return ids


class StateTail:
    """Follows the state topic (one partition): the offset of each key's newest record, and a signal
    when a checkpoint chunk newer than `armed_from` arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=5
        )
        self.newest: dict[bytes, int] = {}
        self.armed_from = self.seen = -1
        self.chunk_arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StateTail:
        await self.consumer.start()
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _follow(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=5)).values():
                for record in records:
                    self.newest[record.key] = record.offset
                    self.seen = record.offset
                    if record.key.count(b"/") == 4 and record.offset > self.armed_from:
                        self.chunk_arrived.set()

    def arm(self) -> None:
        self.armed_from = self.seen
        self.chunk_arrived.clear()

    def manifests(self, group: str) -> list[bytes]:
        return [key for key in self.newest if key.count(b"/") == 2 and key.startswith(group.encode())]

    def torn(self, group: str) -> dict[str, int]:
        """Per partition key: how many of its chunks are newer than its newest manifest."""
        found: Counter[str] = Counter()
        for key, offset in self.newest.items():
            prefix, _, rest = key.decode().rpartition("/")
            prefix = prefix.rpartition("/")[0]  # <group>/<topic>/<p>/<slot>/<n> -> <group>/<topic>/<p>
            if (
                key.count(b"/") == 4
                and key.startswith(group.encode())
                and offset > self.newest.get(prefix.encode(), -1)
            ):
                found[prefix] += 1
        return dict(found)


@pytest.mark.timeout(300)
async def test_a_sigkill_mid_checkpoint_tears_it_and_the_restart_uses_the_previous(kit, standin, report_row) -> None:
    now = time.time()
    traffic = generate(
        3, campaigns=24, bad=5, start=now - 7200, duration=7000, sends=(800, 2000), bad_kinds=("bounces",)
    )
    records = traffic.records
    # the filler only sends (no bounce, no complaint) and stays under every rule's min_volume: no decision of its
    # own; its sends come before the traffic's, so partition 0's clock moves as in the offline run
    filler = [(c, sent(c, now - 7300 + n / 1000)) for n, c in enumerate(filler_ids(FILLER_CAMPAIGNS))]
    expected = kit.expected(records, kit.NO_RESUMES)
    expected_ids = {d.id for d in expected.pauses}
    assert set(expected.pauses_by_campaign()) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    standin.latency = 0.05
    ledger = kit.Ledger(standin)
    topics = await kit.topics()
    env = kit.env(
        topics,
        standin,
        GUARD_CHECKPOINT_INTERVAL=1,
        GUARD_MAX_CAMPAIGNS=8 * FILLER_CAMPAIGNS,  # a partition's share: twice the filler
        GUARD_RESUME_GRACE=kit.NO_RESUMES,
    )
    parts = chunks(records, 3)

    started = time.monotonic()
    lives = []
    async with (
        kit.audit_tail(topics) as tail,
        kit.producer() as producer,
        StateTail(kit.bootstrap, topics.state) as state,
    ):
        await producer.send_batched(topics.input, filler)
        await producer.send_all(topics.input, [(r.key, r.value) for r in parts[0]])

        async def checkpointed(guard) -> bool:
            """Every partition has a whole checkpoint (a kill tears the next one), this life wrote some."""
            assert guard.running, f"{guard.name} died by itself:\n{guard.log_tail()}"
            if len(state.manifests(topics.group)) < 4:
                return False
            response = await guard.get("/metrics")
            return response is not None and kit.Metrics(response.text)("guard_checkpoints_total", result="written") >= 4

        torn: dict[str, int] = {}
        spare = iter(filler_ids(FILLER_CAMPAIGNS + ATTEMPTS * 100)[FILLER_CAMPAIGNS:])
        for attempt in range(ATTEMPTS):
            if attempt:  # the last life's checkpoints hold every record: a partition checkpoints once it reads more
                more = [(c, sent(c, now - 7300 + n / 1000)) for n, c in zip(range(100), spare, strict=False)]
                await producer.send_batched(topics.input, more)
                filler += more
            guard = kit.guard(env | {"GUARD_HTTP_PORT": str(kit.free_port())}, name=f"life-{attempt}")
            lives.append(guard)
            await kit.wait_until(lambda guard=guard: checkpointed(guard), 60, 0.1, f"{guard.name} checkpointed")
            state.arm()
            await asyncio.wait_for(state.chunk_arrived.wait(), 10)
            await guard.kill()  # the moment a chunk of the next checkpoint is stored
            await asyncio.sleep(0.5)  # the state tail reads whatever the broker took before the kill
            torn = state.torn(topics.group)
            if torn:
                break
        assert torn, f"no kill in {ATTEMPTS} landed inside a checkpoint write"

        after = kit.guard(env | {"GUARD_HTTP_PORT": str(kit.free_port())}, name="after")
        await after.wait_ready()

        async def owns_all() -> bool:  # ready says 200 before the join too; restores come before the partitions
            return (await after.metrics())("guard_assigned_partitions") == 4

        await kit.wait_until(owns_all, 30, 0.05, "the restarted guard owns every partition")
        restart = await after.metrics()
        for part in parts[1:]:
            await producer.send_all(topics.input, [(r.key, r.value) for r in part])
            await asyncio.sleep(0.5)
        total = len(filler) + len(records)
        await wait_settled(kit, topics, tail, after, expected_ids, total, timeout=90)
        await asyncio.sleep(1.0)  # a stray late request would show up now
        assert await after.terminate() == 0
    elapsed = time.monotonic() - started

    results = {r: restart("guard_checkpoints_total", result=r) for r in ("restored", "torn", "corrupt", "stale")}
    # per partition, not per count: a restore that outlasts the tests' 2 s session timeout on a loaded machine
    # costs the membership, and each new assignment restores (and finds torn) again
    logged = after.logs()
    restored = {e["partition"] for e in logged if e.get("event") == "checkpoint restored"}
    found_torn = {
        e["partition"] for e in logged if str(e.get("event", "")).startswith("a later checkpoint write was torn")
    }
    partitions = {f"{topics.input}[{n}]" for n in range(4)}
    torn_partitions = {f"{topics.input}[{key.rpartition('/')[2]}]" for key in torn}
    assert (restored, found_torn) == (partitions, torn_partitions), (
        f"each torn write counted, the previous whole checkpoints restored; {torn}:\n{after.log_tail()}"
    )
    assert results["restored"] >= 4 and results["torn"] >= len(torn) and results["corrupt"] == results["stale"] == 0
    answered, repeats = kit.check_pause_requests(
        ledger, expected_ids, set(traffic.bad), traffic.healthy, tail.superseded()
    )
    assert max(Counter(ledger.keys()).values()) <= 1 + len(lives), "at most one repeat per crash"
    assert all(standin.status(c) == "paused" for c in traffic.bad)
    report_row(
        "1b SIGKILL while a checkpoint is written",
        f"{len(filler):,} filler campaigns on partition 0 (its checkpoint ~1.4 MB compressed, 512 KiB chunks) and {len(records):,} "
        f"records of 24 campaigns (5 turn bad); checkpoints every second; SIGKILL the moment a chunk of a new "
        f"checkpoint reached the state topic ({len(lives)} attempt(s) until one tore)",
        f"torn (chunks newer than their manifest): {torn}; the restart restored "
        f"{restart('guard_checkpoints_total', result='restored'):.0f} checkpoints, counted "
        f"{restart('guard_checkpoints_total', result='torn'):.0f} torn, replayed {restart.records('replayed'):,.0f} "
        f"records; {len(expected_ids)} pause decisions expected = paid; {answered} answered requests, {repeats} "
        f"idempotent repeat(s); healthy untouched; {elapsed:.0f} s",
    )
