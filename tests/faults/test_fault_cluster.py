"""Cases 8-10: a 3-broker Apache Kafka cluster (KRaft) loses a broker while a stream with bad
campaigns flows through a real `guard run`.

The input, audit and dead-letter topics have 3 replicas and `min.insync.replicas=2`, so the cluster
must serve every partition with one broker down; the guard uses its default idempotent producer.
Each case places the partitions' leaders on purpose (a replica list per partition, the first is
the preferred leader) and checks where they are with the admin client before it strikes:

* 8: the leader of every input and audit partition is SIGKILLed mid-stream and stays down;
* 9: the group coordinator of the guard's group (a follower of every partition) is SIGKILLed, held
  down until the controller fences it, and restarted on its own log dirs;
* 10: the broker that leads every partition and coordinates the group is SIGKILLed, and while the
  controller has not yet moved the leaders the guard is SIGKILLed too; a new guard takes over. The
  user resumed a paused campaign before the faults: its old evidence must not pause it again.

What DESIGN.md promises and is asserted: every expected pause decision (offline run of the same
engine over the same records) gets an answered pause request; no request carries any other
decision id; a decision's second request (at most one) carries the same id and finds the campaign
already paused; every record is committed; /livez answers 200 throughout and /readyz is 200 once
the guard works again. The report rows give failover times and what readiness said meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from guard.testing.apache_kafka import ApacheKafka, KafkaCluster
from guard.testing.broker import BrokerInfo, port_accepts
from guard.tools.generate import generate

MIN_ISR = {"min.insync.replicas": "2"}


# --------------------------------------------------------------------------- cluster helpers


def live_bootstrap(cluster: KafkaCluster) -> str:
    return ",".join(node.bootstrap_servers for node in cluster.nodes if node.running)


async def placement(cluster: KafkaCluster, topics: list[str], timeout: float = 20.0) -> dict[tuple[str, int], Any]:
    """(topic, partition) -> (leader, isr) as the live brokers see it. A fresh admin client per
    try: aiokafka's admin keeps asking a dead broker it knew of."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=live_bootstrap(cluster), request_timeout_ms=3000)
        try:
            await admin.start()
            found = {}
            for topic in await admin.describe_topics(topics):
                for p in topic["partitions"]:
                    found[(topic["topic"], p["partition"])] = (p["leader"], sorted(p["isr"]))
            if len(found) == 4 * len(topics):
                return found
        except KafkaError:
            pass
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata for {topics} from {live_bootstrap(cluster)}")
        await asyncio.sleep(0.2)


async def coordinator(cluster: KafkaCluster, group: str, timeout: float = 20.0) -> int:
    """The broker id coordinating `group` (asking creates its offsets partition if need be)."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=live_bootstrap(cluster), request_timeout_ms=3000)
        try:
            await admin.start()
            return await admin.find_coordinator(group)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(0.2)


async def start_node(node: ApacheKafka, timeout: float = 60.0) -> float:
    """Start a killed node on its own log dirs without blocking the loop; seconds until it serves.
    Spawned from this thread: the JVM dies with the thread that forked it (PR_SET_PDEATHSIG)."""
    started = time.monotonic()
    node.spawn()
    while not port_accepts(node.port):
        if not node.running:
            raise RuntimeError(f"node {node.node_id} exited:\n{node.log_tail()}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"node {node.node_id} not serving within {timeout} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def wait_all_in_sync(cluster: KafkaCluster, topics: list[str], timeout: float = 60.0) -> float:
    everyone = sorted(node.node_id for node in cluster.nodes)

    async def in_sync() -> bool:
        return all(isr == everyone for _, isr in (await placement(cluster, topics)).values())

    started = time.monotonic()
    while not await in_sync():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{topics}: not every replica back in sync within {timeout} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


def log_bytes(node: ApacheKafka, topic: str) -> int:
    """Bytes of `topic`'s segments in the node's log dirs."""
    return sum(f.stat().st_size for f in (node.data_dir / "data").glob(f"{topic}-*/*.log"))


# --------------------------------------------------------------------------- guard-side helpers


@dataclass
class Probes:
    """Samples /livez and /readyz of the current guard every 0.25 s: (seconds since start, live, ready)."""

    guard: Any
    samples: list[tuple[float, int | None, int | None]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probes:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        started, answered = time.monotonic(), set()
        while True:
            guard = self.guard
            live, ready = await guard.status("/livez"), await guard.status("/readyz")  # None once it is gone
            if live is not None:
                answered.add(guard.name)
            # from a process's first answer on (before it, its HTTP server is not up yet)
            if guard is self.guard and guard.running and guard.name in answered:
                self.samples.append((time.monotonic() - started, live, ready))
            await asyncio.sleep(0.25)

    def between(self, start: float, end: float = float("inf")) -> tuple[list[int | None], list[int | None]]:
        picked = [(live, ready) for at, live, ready in self.samples if start <= at <= end]
        return sorted({live for live, _ in picked}, key=str), sorted({ready for _, ready in picked}, key=str)


async def settled(kit, topics, tail, guard, expected_ids: set[str], total: int) -> bool:
    """Every expected decision has an outcome in the audit topic, every record is committed, and
    `guard` has nothing in flight. False (not an error) while the cluster is failing over."""
    if not all(tail.settled(d) for d in expected_ids):
        return False
    try:
        offsets = await asyncio.wait_for(kit.committed(kit.bootstrap, topics.group, topics.input), 10)
    except (KafkaError, TimeoutError):
        return False
    if sum(offsets.values()) < total:
        return False
    response = await guard.get("/metrics")
    return response is not None and kit.Metrics(response.text)("guard_inflight_actions") == 0


def chunks(records: tuple, n: int) -> list[tuple]:
    size = -(-len(records) // n)
    return [records[i : i + size] for i in range(0, len(records), size)]


def traffic_for(seed: int) -> Any:
    return generate(
        seed, campaigns=16, bad=4, start=time.time() - 7200, duration=7000, sends=(600, 1000), bad_kinds=("bounces",)
    )


def loud_lines(*guards: Any) -> Counter[str]:
    return Counter(e["event"][:60] for g in guards for e in g.logs() if e.get("level") in ("warning", "error"))


@pytest.fixture
async def cluster_kit(kit_on, kafka_cluster: KafkaCluster) -> AsyncIterator[Any]:
    """The kit on the 3-broker cluster, every node up before and after the test."""
    for node in kafka_cluster.nodes:
        if not node.running:
            await start_node(node)
    yield kit_on(BrokerInfo(kafka_cluster.bootstrap_servers, "kafka-cluster"))
    for node in kafka_cluster.nodes:
        if not node.running:
            await start_node(node)


# --------------------------------------------------------------------------- case 8


@pytest.mark.timeout(150)
async def test_the_leader_of_input_and_audit_dies_mid_stream(cluster_kit, kafka_cluster, standin, report_row) -> None:
    kit = cluster_kit
    victim = kafka_cluster.node(1)
    traffic = traffic_for(8)
    records = traffic.records
    expected = kit.expected(records, kit.NO_RESUMES)
    expected_ids = {d.id for d in expected.pauses}
    assert set(expected.pauses_by_campaign()) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    standin.latency = 0.05
    ledger = kit.Ledger(standin)
    topics = await kit.topics(replicas=(1, 2, 3), configs=MIN_ISR)
    watched = [topics.input, topics.audit]
    leaders = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
    assert leaders == {victim.node_id}, f"premise: node {victim.node_id} leads every partition, not {leaders}"
    coordinated_by = await coordinator(kafka_cluster, topics.group)
    guard = kit.guard(kit.env(topics, standin, GUARD_RESUME_GRACE=kit.NO_RESUMES))
    await guard.wait_ready(60)
    pid = guard.pid

    parts = chunks(records, 16)
    kill_after = 5
    flushes: list[float] = []
    started = time.monotonic()
    async with kit.audit_tail(topics) as tail, Probes(guard) as probes, kit.producer() as producer:
        for number, part in enumerate(parts):
            clock = time.monotonic()
            await producer.send_all(topics.input, [(r.key, r.value) for r in part])
            flushes.append(time.monotonic() - clock)
            if number == kill_after:
                victim.kill()
                killed = time.monotonic()
                kill_at = killed - started

                async def moved() -> bool:
                    now = await placement(kafka_cluster, watched)
                    return all(leader not in (victim.node_id, -1) for leader, _ in now.values())

                failing_over = asyncio.create_task(kit.wait_until(moved, 60, 0.2, "leaders moved off the dead broker"))
            await asyncio.sleep(0.5)
        produced = time.monotonic()
        failover = await failing_over
        after = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
        await kit.wait_until(
            lambda: settled(kit, topics, tail, guard, expected_ids, len(records)), 90, 0.25, "everything settled"
        )
        caught_up = time.monotonic() - produced
        await asyncio.sleep(1.0)  # a stray late request would show up now
        metrics = await guard.metrics()
        final = (await guard.status("/livez"), await guard.status("/readyz"))
    assert guard.running and guard.pid == pid, f"the guard died:\n{guard.log_tail()}"
    assert await guard.terminate() == 0

    answered, repeats = kit.check_pause_requests(
        ledger, expected_ids, set(traffic.bad), traffic.healthy, tail.superseded()
    )
    assert max(Counter(ledger.keys()).values()) <= 2
    liveness, readiness = probes.between(kill_at)
    assert liveness == [200], f"/livez during and after the failover: {liveness}"
    assert final == (200, 200)
    starts = sum(1 for e in guard.logs() if e["event"] == "guard started")
    assert starts == 1
    loud = loud_lines(guard)
    report_row(
        "8 3-broker Kafka: the leader of input and audit SIGKILLed",
        f"{len(records):,} records (16 campaigns, 4 turn bad) in 16 chunks, 0.5 s apart, to topics with 3 replicas, "
        f"min.insync.replicas=2, idempotent producers; node {victim.node_id} led all 4 input and 4 audit partitions "
        f"and was SIGKILLed after chunk {kill_after + 1}, down to the end; node {coordinated_by} coordinated the "
        f"guard's group",
        f"leaders moved to nodes {sorted(after)} {failover:.1f} s after the kill (the controller fences a silent "
        f"broker after broker.session.timeout.ms, 9 s); the longest produce flush {max(flushes):.1f} s; one guard "
        f"process throughout ({starts} start, exit 0 on SIGTERM); /livez {liveness}, /readyz {readiness} from the "
        f"kill on; all records committed {caught_up:.1f} s after the last chunk; {len(expected_ids)} pause decisions "
        f"expected = paid, {answered} answered requests, {repeats} idempotent repeat(s); "
        f"counted={metrics.records('counted'):,.0f} replayed={metrics.records('replayed'):,.0f} (replayed: "
        f"partitions taken back after a rebalance, rebuilt from the log); {sum(loud.values())} warning/error log lines, mostly {loud.most_common(2)}",
    )


# --------------------------------------------------------------------------- case 9


DOWN = 12.0  # seconds: past broker.session.timeout.ms (9 s), so the controller fences the broker


@pytest.mark.timeout(150)
async def test_the_group_coordinator_dies_and_restarts_on_its_log(
    cluster_kit, kafka_cluster, standin, report_row
) -> None:
    kit = cluster_kit
    traffic = traffic_for(9)
    records = traffic.records
    expected = kit.expected(records, kit.NO_RESUMES)
    expected_ids = {d.id for d in expected.pauses}
    assert set(expected.pauses_by_campaign()) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    standin.latency = 0.05
    ledger = kit.Ledger(standin)
    topics = kit.Topics.fresh()
    victim = kafka_cluster.node(await coordinator(kafka_cluster, topics.group))
    others = [node.node_id for node in kafka_cluster.nodes if node is not victim]
    await kit.create_topics(kit.bootstrap, topics, replicas=(*others, victim.node_id), configs=MIN_ISR)
    watched = [topics.input, topics.audit, topics.dlq]
    leaders = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
    assert victim.node_id not in leaders, "premise: the coordinator is a follower of every partition"
    guard = kit.guard(kit.env(topics, standin, GUARD_RESUME_GRACE=kit.NO_RESUMES))
    await guard.wait_ready(60)
    pid = guard.pid

    parts = chunks(records, 24)
    kill_after = 4
    started = time.monotonic()
    restarted: dict[str, float] = {}

    async def restart_later() -> float:
        await asyncio.sleep(DOWN)
        restarted["serving"] = await start_node(victim)
        restarted["at"] = time.monotonic() - started
        return await wait_all_in_sync(kafka_cluster, watched)

    async with kit.audit_tail(topics) as tail, Probes(guard) as probes, kit.producer() as producer:
        for number, part in enumerate(parts):
            await producer.send_all(topics.input, [(r.key, r.value) for r in part])
            if number == kill_after:
                on_disk = log_bytes(victim, topics.input)
                victim.kill()
                kill_at = time.monotonic() - started
                resync = asyncio.create_task(restart_later())
            await asyncio.sleep(0.75)
        produced = time.monotonic()
        await kit.wait_until(
            lambda: settled(kit, topics, tail, guard, expected_ids, len(records)), 90, 0.25, "everything settled"
        )
        caught_up = time.monotonic() - produced
        in_sync = await resync
        await asyncio.sleep(1.0)
        metrics = await guard.metrics()
        final = (await guard.status("/livez"), await guard.status("/readyz"))
    assert guard.running and guard.pid == pid, f"the guard died:\n{guard.log_tail()}"
    assert await guard.terminate() == 0
    kept = log_bytes(victim, topics.input)
    serving, restart_at = restarted["serving"], restarted["at"]

    answered, repeats = kit.check_pause_requests(
        ledger, expected_ids, set(traffic.bad), traffic.healthy, tail.superseded()
    )
    assert max(Counter(ledger.keys()).values()) <= 2
    assert kept >= on_disk > 0, "the restarted broker kept its log and caught up"
    down_live, down_ready = probes.between(kill_at, restart_at)
    after_live, after_ready = probes.between(restart_at)
    assert down_live == after_live == [200]
    assert final == (200, 200)
    commits = metrics("guard_commits_total", result="failed")
    report_row(
        "9 3-broker Kafka: the group coordinator SIGKILLed, restarted on its log dirs",
        f"{len(records):,} records in 24 chunks, 0.75 s apart (3 replicas, min.insync.replicas=2); node "
        f"{victim.node_id} coordinated the guard's group and followed every partition; SIGKILLed after chunk "
        f"{kill_after + 1} ({on_disk:,} bytes of input log on its disk), restarted {restart_at - kill_at:.1f} s later "
        f"on the same log dirs",
        f"restarted node served in {serving:.1f} s and was back in every ISR {in_sync:.1f} s after that "
        f"({kept:,} bytes of input log: kept, then caught up); one guard process (pid unchanged, exit 0); /livez "
        f"{down_live} and /readyz {down_ready} while it was down, {after_live}/{after_ready} after; {commits:.0f} "
        f"failed commits (retried); all records committed {caught_up:.1f} s after the last chunk; "
        f"{len(expected_ids)} pause decisions expected = paid, {answered} answered requests, {repeats} idempotent "
        f"repeat(s); counted={metrics.records('counted'):,.0f} replayed={metrics.records('replayed'):,.0f}",
    )


# --------------------------------------------------------------------------- case 10


@pytest.mark.timeout(150)
async def test_the_guard_dies_during_a_leader_election(cluster_kit, kafka_cluster, standin, report_row) -> None:
    kit = cluster_kit
    traffic = traffic_for(10)
    records = traffic.records
    expected = kit.expected(records, kit.NO_RESUMES)
    by_campaign = expected.pauses_by_campaign()
    expected_ids = {d.id for d in expected.pauses}
    assert set(by_campaign) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    # the first part ends once one campaign has met all its breaches: the user will resume that one
    last_cause = {c: max(expected.cause[d.id] for d in ds) for c, ds in by_campaign.items()}
    resumed, split = min(last_cause.items(), key=lambda item: item[1])
    split += 1
    first_ids = {d for d in expected_ids if expected.cause[d] < split}
    assert first_ids < expected_ids, "premise: some breaches come after the faults"
    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    standin.latency = 0.05
    ledger = kit.Ledger(standin)
    topics = kit.Topics.fresh()
    victim = kafka_cluster.node(await coordinator(kafka_cluster, topics.group))
    others = [node.node_id for node in kafka_cluster.nodes if node is not victim]
    await kit.create_topics(kit.bootstrap, topics, replicas=(victim.node_id, *others), configs=MIN_ISR)
    watched = [topics.input, topics.audit]
    leaders = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
    assert leaders == {victim.node_id}, "premise: the coordinator leads every partition"
    env = kit.env(topics, standin, GUARD_RESUME_GRACE=kit.NO_RESUMES)
    first = kit.guard(env, name="guard-a")
    await first.wait_ready(60)

    started = time.monotonic()
    async with kit.audit_tail(topics) as tail, Probes(first) as probes, kit.producer() as producer:
        await producer.send_all(topics.input, [(r.key, r.value) for r in records[:split]])
        await kit.wait_until(lambda: settled(kit, topics, tail, first, first_ids, split), 60, 0.25, "part 1 settled")
        ledger.resume(resumed)  # in Leadterra's UI: no event reaches the topic
        resumed_at = time.time()

        victim.kill()
        killed = time.monotonic()
        await asyncio.sleep(1.0)
        during = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
        assert during == {victim.node_id}, f"premise: the election is still under way (leaders {during})"
        await first.kill()
        second = kit.guard(env | {"GUARD_HTTP_PORT": str(kit.free_port())}, name="guard-b")
        probes.guard = second
        second_at = time.monotonic() - started

        async def produce_rest() -> float:
            for part in chunks(records[split:], 8):
                await producer.send_all(topics.input, [(r.key, r.value) for r in part])
                await asyncio.sleep(0.5)
            return time.monotonic()

        producing = asyncio.create_task(produce_rest())
        await second.wait_ready(90)
        ready_after_kill = time.monotonic() - killed
        produced = await producing
        await kit.wait_until(
            lambda: settled(kit, topics, tail, second, expected_ids, len(records)), 90, 0.25, "everything settled"
        )
        caught_up = time.monotonic() - produced
        moved = {leader for leader, _ in (await placement(kafka_cluster, watched)).values()}
        await asyncio.sleep(1.0)
        metrics = await second.metrics()
        final = (await second.status("/livez"), await second.status("/readyz"))
    assert second.running, f"the new guard died:\n{second.log_tail()}"
    assert await second.terminate() == 0

    answered, repeats = kit.check_pause_requests(
        ledger, expected_ids, set(traffic.bad), traffic.healthy, tail.superseded()
    )
    assert max(Counter(ledger.keys()).values()) <= 2, "at most one extra call per decision, after the crash"
    again = [r for r in standin.pause_requests(resumed) if r.received_at > resumed_at]
    assert not again, f"old evidence paused the resumed campaign {resumed} again"
    assert standin.status(resumed) == "running"
    liveness, readiness = probes.between(second_at)
    assert 200 in readiness and final == (200, 200)
    resumed_logs = sum(1 for e in second.logs() if e["event"].startswith("resuming a decision"))
    report_row(
        "10 3-broker Kafka: the guard SIGKILLed during a leader election",
        f"{len(records):,} records (16 campaigns, 4 turn bad); part 1 ({split:,} records, {len(first_ids)} pauses) "
        f"settled and committed, then the user resumed {resumed}; node {victim.node_id}, leader of every input and "
        f"audit partition and the group's coordinator, SIGKILLed; 1 s later, leaders still on it, the guard "
        f"SIGKILLed and a new one started; part 2 ({len(records) - split:,} records) produced meanwhile",
        f"the new guard ready {ready_after_kill:.1f} s after the broker kill (leaders then on {sorted(moved)}); "
        f"its /livez {liveness}, /readyz {readiness} from its start; all records committed {caught_up:.1f} s after "
        f"the last chunk; {len(expected_ids)} pause decisions expected = paid, {answered} answered requests, "
        f"{repeats} idempotent repeat(s), {resumed_logs} decision(s) resumed from the audit topic; the resumed "
        f"campaign got {len(again)} requests and stays {standin.status(resumed)}; "
        f"replayed={metrics.records('replayed'):,.0f} counted={metrics.records('counted'):,.0f}",
    )
