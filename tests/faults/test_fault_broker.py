"""Case 4: the broker SIGKILLed mid-stream and restarted; the same guard process reconnects.

A dedicated Tansu broker stores its log in S3 (`s3://tansu/`) on a local moto_server, so topics,
records and committed offsets survive the broker's SIGKILL (memory:// would lose everything). It
runs once, not per broker of the matrix: the broker under test is this dedicated one (Tansu, the
only broker here whose persistence needs an S3 store; Apache Kafka keeps its log dirs itself). The
guard must ride out the outage without a crash loop (one process, one start), and nothing may be
lost: every bad campaign paused, the records produced before and after the outage processed.

While the broker is down the test samples /livez and /readyz and reports what they said; it asserts
only that the process stays up (see the report for whether readiness reflects the outage).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from guard.testing.broker import BrokerInfo, EmbeddedBroker
from guard.testing.events import bounced, sent
from guard.tools.generate import Record, generate

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
OUTAGE = 6.0


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A local moto_server with the bucket `tansu`; killed at the end."""
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]==5.2.5')")
    port = _free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.put(f"{endpoint}/tansu", timeout=2).status_code == 200:  # creates the bucket
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_broker(s3_endpoint: str) -> Iterator[EmbeddedBroker]:
    env = {
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    broker = EmbeddedBroker(storage="s3://tansu/", env=env).start()
    try:
        yield broker
    finally:
        broker.stop()


def still_sending(campaigns: Iterable[str], end: float, sends: int = 240) -> list[Record]:
    """The bad lists still sending at the end of the history, as bad lists do until they are paused: each campaign's
    last two minutes up to `end`, every fourth send hard-bounced (what the fault rules need: 200 sends in the hour).
    A history that ends a few sends into a new episode of the engine's reading (its latest decision plus the grace
    behind it) shows nothing yet: that decision is superseded at catch-up (guard.runtime.catchup), and the campaign
    is paused by what it sends next, as a live one is. Without these, whether a bad campaign was paused hung on
    where a batch ended."""
    tail = []
    for campaign in campaigns:
        for n in range(sends):
            at = end - (sends - n) / 2
            tail.append(Record(campaign, sent(campaign, at), at))
            if n % 4 == 0:
                tail.append(Record(campaign, bounced(campaign, at + 0.25), at + 0.25))
    return sorted(tail, key=lambda record: record.time)


@pytest.mark.integration  # a broker of its own, crashed on purpose
@pytest.mark.timeout(150)
async def test_the_guard_rides_out_a_broker_crash_and_loses_nothing(kit_on, standin, s3_broker, report_row) -> None:
    kit = kit_on(BrokerInfo(s3_broker.bootstrap_servers, "tansu"))
    traffic = generate(
        4, campaigns=10, bad=4, start=time.time() - 7200, duration=7000, sends=(600, 1000), bad_kinds=("bounces",)
    )
    history = traffic.records
    records = (*history, *still_sending(traffic.bad, time.time() - 10))
    expected = kit.expected(records)
    expected_ids = {d.id for d in expected.pauses}
    assert set(expected.pauses_by_campaign()) == set(traffic.bad), "premise: exactly the bad campaigns fire"
    causes = sorted(expected.cause[d] for d in expected_ids if expected.cause[d] < len(history))
    middle = len(causes) // 2
    split = (causes[middle - 1] + causes[middle]) // 2 + 1  # some breaches before the crash, some after
    before, after = records[:split], records[split:]
    first_ids = {d for d in expected_ids if expected.cause[d] < split}
    for spec in traffic.campaigns:
        standin.add_campaign(spec.campaign_id)
    topics = await kit.topics()
    guard = kit.guard(kit.env(topics, standin))
    await guard.wait_ready()
    pid = guard.pid

    async def settled(tail, ids: set[str], total: int) -> bool:
        if not all(tail.settled(d) for d in ids):
            return False
        return sum((await kit.committed(kit.bootstrap, topics.group, topics.input)).values()) >= total

    async def all_settled(tail, total: int) -> bool:
        """Every record committed, so every decision the guard took recorded, and each of those settled. The
        offline reading knows nothing of catch-up: after a backlog's campaign is paused at catch-up, the pause
        lands at the call, and the sends logged before it are no resume, so the decisions the offline reading
        takes for later episodes are not taken at all. An alert (the bad lists' last sends can carry one over its
        line) is recorded `fired` alone."""
        if sum((await kit.committed(kit.bootstrap, topics.group, topics.input)).values()) < total:
            return False
        return all(tail.settled(d) for d, fired in tail.fired().items() if fired["rule"]["action"] == "pause")

    async with kit.audit_tail(topics) as tail, kit.producer() as producer:
        await producer.send_all(topics.input, [(r.key, r.value) for r in before])
        await kit.wait_until(lambda: settled(tail, first_ids, len(before)), 60, 0.25, "the first part settled")

    s3_broker.kill()
    killed = time.monotonic()
    probes = []
    while time.monotonic() - killed < OUTAGE:
        assert guard.running, f"the guard exited during the outage:\n{guard.log_tail()}"
        probes.append((await guard.status("/livez"), await guard.status("/readyz")))
        await asyncio.sleep(0.5)
    s3_broker.restart()
    restarted = time.monotonic()

    async with kit.audit_tail(topics) as tail, kit.producer() as producer:
        await producer.send_all(topics.input, [(r.key, r.value) for r in after])
        produced = time.monotonic()
        await kit.wait_until(lambda: all_settled(tail, len(records)), 60, 0.25, "everything settled")
        caught_up = time.monotonic() - produced
    metrics = await guard.metrics()
    after_probes = (await guard.status("/livez"), await guard.status("/readyz"))
    assert guard.running and guard.pid == pid
    assert await guard.terminate() == 0

    logs = guard.logs()
    starts = sum(1 for e in logs if e["event"] == "guard started")
    loud = Counter(e["event"][:50] for e in logs if e.get("level") in ("warning", "error"))
    paid = {r.header("Idempotency-Key") for r in standin.pause_requests() if r.status == 200}
    superseded = tail.superseded()
    readiness = sorted({ready for _, ready in probes})
    liveness = sorted({live for live, _ in probes})
    report_row(
        "4 broker SIGKILL + restart (Tansu on S3/moto)",
        f"{len(before):,} records, then the broker SIGKILLed for {OUTAGE:.0f} s and restarted on the same port "
        f"with its S3 log; then {len(after):,} more records",
        f"one guard process throughout (pid unchanged, {starts} start, exit 0 on SIGTERM); during the outage "
        f"/livez answered {liveness} and /readyz {readiness} (readiness does "
        f"{'NOT ' if readiness == [200] else ''}reflect the broker outage); after the restart /livez,/readyz "
        f"{after_probes}; {sum(loud.values())} warning/error log lines, mostly {loud.most_common(2)}; all {len(records):,} records committed "
        f"{caught_up:.1f} s after the second part was produced (broker back {produced - restarted:.1f} s "
        f"before that); {len(paid)}/{len(expected_ids)} pause decisions paid ({len(first_ids)} before the crash, "
        f"{len(expected_ids) - len(first_ids)} after; {len(superseded)} superseded, {len(tail.covered())} covered); "
        f"counted={metrics.records('counted'):,.0f}",
    )
    assert starts == 1, "no crash loop: the process started once"
    # a backlog's decisions no longer current are audited, not called; once a backlog's campaign is paused at
    # catch-up, the offline reading's later decisions for it are covered by that pause or not taken (all_settled)
    assert paid <= expected_ids - set(superseded)  # every call one the log calls for
    assert {r.campaign_id for r in standin.pause_requests() if r.status == 200} == set(traffic.bad)
    assert metrics.records("counted") == len(records), "every record processed once, none lost"
    assert 0 < len(first_ids) < len(expected_ids)
