"""`guard ingest` under load: signed webhooks over loopback from a second process.

Set-up: the embedded broker (Tansu), `guard ingest` as its own process, and this process as the
load generator (aiohttp client, bodies signed beforehand so the client spends its CPU on HTTP).
1. Saturation: CONCURRENCY requests in flight for SATURATION_SECONDS; requests answered 200 per
   second, and per CPU-second of the ingest process (its utime+stime from /proc), i.e. per core.
2. Half rate: an open-loop schedule at half the saturated rate (at most HALF_RATE_CAP/s) for
   STEADY_SECONDS; latency from each request's scheduled time to its answer (no coordinated
   omission), p50 and p99.
3. No loss: every messageId answered 200 is read back from the topic.

    python -m bench.ingest [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.child import ROOT, emit

CONCURRENCY = 64
HALF_RATE_CAP = 2500.0
HOST = "127.0.0.1"
SECRET = b"whsec_bench"
PATH = "/v1/webhooks/leadterra"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bodies(count: int, run: str) -> list[tuple[str, bytes, str]]:
    from guard.ingest.signature import sign

    out = []
    for n in range(count):
        message_id = f"{run}-{n}"
        body = json.dumps(
            {
                "event": "message.sent",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {"campaignId": f"camp_{n % 500}", "messageId": message_id, "sequenceStep": 1},
            }
        ).encode()
        out.append((message_id, body, sign(SECRET, body)))
    return out


async def saturate(session: aiohttp.ClientSession, url: str, work: list, seconds: float) -> tuple[list[str], float]:
    acked: list[str] = []
    deadline = time.perf_counter() + seconds
    items = iter(work)

    async def worker() -> None:
        while time.perf_counter() < deadline:
            if (item := next(items, None)) is None:
                return
            message_id, body, signature = item
            async with session.post(url, data=body, headers={"X-Leadterra-Signature": signature}) as answer:
                await answer.read()
                if answer.status == 200:
                    acked.append(message_id)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return acked, time.perf_counter() - started


async def steady(session: aiohttp.ClientSession, url: str, work: list, rate: float, seconds: float):
    latencies: list[float] = []
    acked: list[str] = []
    start = time.perf_counter() + 0.1
    total = int(rate * seconds)

    async def one(when: float, item: tuple[str, bytes, str]) -> None:
        message_id, body, signature = item
        async with session.post(url, data=body, headers={"X-Leadterra-Signature": signature}) as answer:
            await answer.read()
            latencies.append(time.perf_counter() - when)
            if answer.status == 200:
                acked.append(message_id)

    tasks = []
    for n in range(total):
        when = start + n / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(when, work[n])))
    await asyncio.gather(*tasks)
    latencies.sort()
    return acked, latencies


async def read_ids(bootstrap: str, topic: str, wanted: set[str], timeout: float = 60.0) -> set[str]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                seen.update(json.loads(r.value)["data"]["messageId"] for r in records)
    finally:
        await consumer.stop()
    return seen


@contextlib.asynccontextmanager
async def running_ingest(name: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes], int, str]]:
    """An embedded broker and `guard ingest` on it, ready: (bootstrap, process, port, topic)."""
    from guard.testing.broker import EmbeddedBroker, free_port

    topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker() as broker:
        port = free_port()
        env = {
            **os.environ,
            "LEADTERRA_WEBHOOK_SECRET": SECRET.decode(),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu has no idempotent producer for aiokafka
            "GUARD_INPUT_TOPICS": topic,
            "GUARD_HTTP_HOST": HOST,
            "GUARD_HTTP_PORT": str(port),
            "GUARD_LOG_LEVEL": "WARNING",
        }
        ingest = subprocess.Popen([sys.executable, "-m", "guard.cli", "ingest"], env=env, cwd=ROOT)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    try:
                        async with session.get(f"http://{HOST}:{port}/readyz") as answer:
                            if answer.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
            yield broker.bootstrap_servers, ingest, port, topic
        finally:
            ingest.terminate()
            ingest.wait(20)


async def measure(seconds: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    async with running_ingest("ingest") as (bootstrap, ingest, port, topic):
        url = f"http://{HOST}:{port}{PATH}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            work = bodies(int(40_000 * seconds), run)
            await saturate(session, url, work[:2000], 1.0)  # warm-up (connections, topic metadata)
            cpu_before = cpu_seconds(ingest.pid)
            acked_max, elapsed = await saturate(session, url, work[2000:], seconds)
            cpu = cpu_seconds(ingest.pid) - cpu_before
            rate = len(acked_max) / elapsed
            half = min(rate / 2, HALF_RATE_CAP)
            offset = 2000 + len(acked_max) + CONCURRENCY
            acked_half, latencies = await steady(session, url, work[offset:], half, seconds)
        acked = set(acked_max) | set(acked_half)
        seen = await read_ids(bootstrap, topic, acked)
    return {
        "saturated_rps": rate,
        "per_cpu_second": len(acked_max) / cpu if cpu else None,
        "ingest_cpu_share": cpu / elapsed,
        "half_rate": half,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "acked": len(acked),
        "missing": len(acked - seen),
        "load_avg": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    emit(asyncio.run(measure(parser.parse_args().seconds)))


if __name__ == "__main__":
    main()
