"""`guard ingest` at a hostile door: signed webhooks at a steady rate while slow clients hold
connections and others send oversized bodies (issue 26, item 5).

Set-up: the embedded broker (Tansu), `guard ingest` as its own process with its documented defaults
(128 connections, 5 s idle timeout, 1,000,000-byte bodies), the signed sender in this process and
the attackers in a second one (so their CPU does not delay the sender's clock):
- SLOW clients each open a connection, begin a request's headers and send one more header line a
  second, never finishing; closed by the door (made room for, or timed out), they come back after
  RECONNECT_SECONDS;
- OVERSIZED clients each post 2 MB bodies at PACE_BYTES_PER_SECOND, chunked (no Content-Length, so
  the door reads up to its limit before it can say 413), with a well-formed but wrong signature, one
  after the other.
The sender posts signed webhooks open loop at RATE/s, each on a fresh connection (as a sender across
the internet does), latency from its scheduled time to its answer (no coordinated omission); first
for SECONDS with the door quiet, then for SECONDS under attack. Then: every messageId answered 200 is
read back from the topic, and the ingest process's peak RSS (VmHWM) is compared with the chart's
memory limit for these settings.

    python -m bench.door [--rate 500] [--slow 1000] [--oversized 100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.child import ROOT, emit
from bench.ingest import HOST, PATH, bodies, cpu_seconds, read_ids, running_ingest

RECONNECT_SECONDS = 1.0
OVERSIZED_BYTES = 2_000_000
CHUNK = b"x" * 65536
PACE_BYTES_PER_SECOND = 1_300_000  # per oversized client: the door's limit reached in under a second
SETTINGS = {"max_connections": 128, "max_body_bytes": 1_000_000, "max_headers": 32, "max_header_bytes": 8190}


def chart_memory_limit_mib() -> float:
    """The chart's ingest memory limit for SETTINGS: 128Mi + connections x (2 x body + 2 x headers x header bytes)."""
    per_connection = 2 * SETTINGS["max_body_bytes"] + 2 * SETTINGS["max_headers"] * SETTINGS["max_header_bytes"]
    return 128 + SETTINGS["max_connections"] * per_connection / 2**20


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the attackers (a child process: python -m bench.door --attack PORT ...) --------------------------------


async def slow_client(port: int, deadline: float, counts: Counter) -> None:
    await asyncio.sleep(random.random())  # spread the first connections over a second
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts["slow_connect_failed"] += 1
            await asyncio.sleep(RECONNECT_SECONDS)
            continue
        counts["slow_connections"] += 1
        try:
            writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: door\r\n")
            while time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(1.0):
                        answer = await reader.read(1024)
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")  # one header line a second, never the blank line
                    continue
                counts["slow_refused" if answer.startswith(b"HTTP/1.1 503") else "slow_closed"] += 1
                break
        except OSError:
            counts["slow_closed"] += 1
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_SECONDS)


async def oversized_client(port: int, deadline: float, counts: Counter) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: door\r\nX-Leadterra-Signature: sha256={'0' * 64}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    await asyncio.sleep(random.random())
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts["oversized_connect_failed"] += 1
            await asyncio.sleep(RECONNECT_SECONDS)
            continue
        status = "no answer"
        try:
            writer.write(head)
            for _ in range(OVERSIZED_BYTES // len(CHUNK)):
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                await asyncio.sleep(len(CHUNK) / PACE_BYTES_PER_SECOND)
            writer.write(b"0\r\n\r\n")
            async with asyncio.timeout(10):
                line = await reader.readline()
            status = line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"
        except (OSError, TimeoutError):
            status = "closed"  # the door stopped reading: after its 413, or made room
        finally:
            writer.close()
        counts[f"oversized_{status}"] += 1


async def attack(port: int, slow: int, oversized: int, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    counts: Counter = Counter()
    await asyncio.gather(
        *(slow_client(port, deadline, counts) for _ in range(slow)),
        *(oversized_client(port, deadline, counts) for _ in range(oversized)),
    )
    return dict(counts)


# --- the signed sender and the run --------------------------------------------------------------------------


async def send_signed(url: str, work: list, rate: float, seconds: float) -> tuple[list[str], list[float], Counter]:
    latencies: list[float] = []
    acked: list[str] = []
    statuses: Counter = Counter()
    start = time.perf_counter() + 0.1
    # a fresh connection per webhook: no idle keep-alive connection for the door to close under it
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:

        async def one(when: float, item: tuple[str, bytes, str]) -> None:
            message_id, body, signature = item
            try:
                async with session.post(url, data=body, headers={"X-Leadterra-Signature": signature}) as answer:
                    await answer.read()
                    statuses[answer.status] += 1
                    if answer.status == 200:
                        acked.append(message_id)
            except (aiohttp.ClientError, TimeoutError) as error:
                statuses[type(error).__name__] += 1
                return
            latencies.append(time.perf_counter() - when)

        tasks = []
        for n in range(int(rate * seconds)):
            when = start + n / rate
            if (delay := when - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(when, work[n])))
        await asyncio.gather(*tasks)
    latencies.sort()
    return acked, latencies, statuses


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


async def metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/metrics") as answer:
        for line in (await answer.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def measure(rate: float, slow: int, oversized: int, seconds: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    async with running_ingest("door") as (bootstrap, ingest, port, topic):
        url = f"http://{HOST}:{port}{PATH}"
        attackers = None
        try:
            work = bodies(int(rate * seconds) * 2 + 200, run)
            await send_signed(url, work[:200], 200, 1.0)  # warm-up: topic metadata, the producer's connection
            quiet_acked, quiet, quiet_statuses = await send_signed(url, work[200:], rate, seconds)
            rss_quiet = peak_rss_mib(ingest.pid)
            attack_args = ["--attack", str(port), "--slow", str(slow), "--oversized", str(oversized)]
            attackers = subprocess.Popen(
                [sys.executable, "-m", "bench.door", *attack_args, "--seconds", str(seconds + 3)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            await asyncio.sleep(2.0)  # the slow clients connected, the oversized ones sending
            cpu_before = cpu_seconds(ingest.pid)
            offset = 200 + int(rate * seconds)
            hostile_acked, hostile, hostile_statuses = await send_signed(url, work[offset:], rate, seconds)
            cpu = cpu_seconds(ingest.pid) - cpu_before
            out, _ = attackers.communicate(timeout=60)
            attacks = json.loads(out.strip().splitlines()[-1])
            evicted = await metric(port, "guard_ingest_connections_evicted_total")
            refused = await metric(port, "guard_ingest_connections_refused_total")
            too_large = await metric(port, 'guard_ingest_requests_total{outcome="too_large",route="leadterra"}')
            rss_peak = peak_rss_mib(ingest.pid)
            acked = set(quiet_acked) | set(hostile_acked)
            seen = await read_ids(bootstrap, topic, acked)
        finally:
            if attackers is not None and attackers.poll() is None:
                attackers.kill()
    return {
        "workload": {"rate": rate, "slow": slow, "oversized": oversized, "seconds": seconds},
        "quiet": {**percentiles(quiet), "statuses": {str(k): v for k, v in quiet_statuses.items()}},
        "hostile": {**percentiles(hostile), "statuses": {str(k): v for k, v in hostile_statuses.items()}},
        "attackers": attacks,
        "door": {"evicted": evicted, "refused": refused, "too_large": too_large},
        "ingest_cpu_share_hostile": cpu / seconds,
        "rss_quiet_mib": rss_quiet,
        "rss_peak_mib": rss_peak,
        "chart_limit_mib": chart_memory_limit_mib(),
        "acked": len(acked),
        "missing": len(acked - seen),
        "load_avg": os.getloadavg()[0],
    }


def report(result: dict[str, Any]) -> str:
    w, quiet, hostile = result["workload"], result["quiet"], result["hostile"]
    attacks, door = result["attackers"], result["door"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    ratio = hostile["p99_ms"] / quiet["p99_ms"] if hostile["p99_ms"] and quiet["p99_ms"] else None
    lines = [
        f"workload: {w['rate']:g} signed webhooks/s for {w['seconds']:g} s quiet, then {w['seconds']:g} s while "
        f"{w['slow']} slow clients hold connections and {w['oversized']} post 2 MB bodies at "
        f"{PACE_BYTES_PER_SECOND / 1e6:.1f} MB/s each (load {result['load_avg']:.2f})",
        f"signed, quiet:   p50 {ms(quiet['p50_ms'])}, p99 {ms(quiet['p99_ms'])}, max {ms(quiet['max_ms'])}, "
        f"answers {quiet['statuses']}",
        f"signed, hostile: p50 {ms(hostile['p50_ms'])}, p99 {ms(hostile['p99_ms'])}, max {ms(hostile['max_ms'])}, "
        f"answers {hostile['statuses']}" + (f"; p99 x{ratio:.1f} the quiet one" if ratio else ""),
        f"attackers: {attacks}",
        f"door: {door['evicted']:.0f} connections evicted, {door['refused']:.0f} refused, {door['too_large']:.0f} "
        f"bodies 413; ingest used {result['ingest_cpu_share_hostile']:.2f} of a core under attack",
        f"ingest peak RSS {result['rss_peak_mib']:.0f} MiB (quiet {result['rss_quiet_mib']:.0f} MiB), chart limit "
        f"{result['chart_limit_mib']:.0f} MiB; answered 200 and not in the topic: "
        f"{result['missing']} of {result['acked']}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.door", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="signed webhooks per second")
    parser.add_argument("--slow", type=int, default=1000, help="slow clients holding connections")
    parser.add_argument("--oversized", type=int, default=100, help="clients posting oversized bodies")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--attack", type=int, help=argparse.SUPPRESS)  # the attackers' child process: the port
    args = parser.parse_args()
    if args.attack is not None:
        print(json.dumps(asyncio.run(attack(args.attack, args.slow, args.oversized, args.seconds))), flush=True)
        return
    result = asyncio.run(measure(args.rate, args.slow, args.oversized, args.seconds))
    print(report(result), file=sys.stderr)
    emit(result)


if __name__ == "__main__":
    main()
