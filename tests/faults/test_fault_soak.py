"""Case 7: a soak. One million events through one `guard run` process; its RSS stays flat.

The events span six days of event time at a steady rate (410 campaigns sending all along), so the
state the guard keeps reaches its steady size within the first day: sliding windows hold at most
60 buckets each (the 24 h windows fill within 24 h of event time), dedupe keys live for 3 h of
event time, and no campaign goes idle. The warm-up (the first 200,000 events, about 29 h of event
time) is past every window. After it, memory may still move with the fetch buffers and the
allocator, but it must not grow with the number of events: RSS may not exceed the warm-up figure by
more than 25 %. A leak of even 100 bytes per event would add ~80 MB over the 800,000 events after
the warm-up, several times that bound.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from guard.generate import generate

EVENTS = 1_000_000
WARM_UP = 200_000
GROWTH_BOUND = 0.25
DAY = 86400.0


@pytest.mark.timeout(300)
async def test_rss_stays_flat_over_a_million_events(kit, report_row) -> None:
    started = time.monotonic()
    traffic = generate(7, campaigns=410, bad=0, start=time.time() - 6 * DAY, duration=6 * DAY - 600, sends=(2000, 2800))
    assert len(traffic.records) >= EVENTS, "the traffic plan must hold at least a million events"
    records = traffic.records[:EVENTS]
    generated = time.monotonic()
    topics = await kit.topics()
    async with kit.producer(max_request_size=4 * 1024 * 1024) as producer:
        per_partition = await producer.send_batched(topics.input, ((r.key, r.value) for r in records))
    produced = time.monotonic()
    assert sum(per_partition.values()) == EVENTS

    guard = kit.guard(kit.env(topics, None))  # dry run: the soak is about the consumer's memory
    await guard.wait_ready()
    samples: list[tuple[float, float, int]] = []  # (seconds since start, records consumed, VmRSS KiB)
    t0 = time.monotonic()
    deadline = t0 + 180
    consumed = 0.0
    while consumed < EVENTS:
        assert guard.running, f"the guard died:\n{guard.log_tail()}"
        assert time.monotonic() < deadline, f"only {consumed:.0f} of {EVENTS} events consumed in 180 s"
        metrics = await guard.metrics()
        consumed = metrics.records("counted", "ignored", "dead_lettered", "too_old")
        samples.append((time.monotonic() - t0, consumed, guard.rss_kib()))
        await asyncio.sleep(1.0)
    for _ in range(3):  # a few more seconds at rest: memory must not keep climbing
        await asyncio.sleep(1.0)
        samples.append((time.monotonic() - t0, consumed, guard.rss_kib()))
    metrics = await guard.metrics()
    assert await guard.terminate() == 0

    first_busy = next(s for s in samples if s[1] > 0)
    warm = next(s for s in samples if s[1] >= WARM_UP)
    after = [s for s in samples if s[1] >= WARM_UP]
    peak = max(s[2] for s in after)
    final = samples[-1][2]
    busy = [s for s in samples if 0 < s[1] < EVENTS]
    seconds = (samples[-4][0] - first_busy[0]) if busy else 0.0
    rate = EVENTS / seconds if seconds else float("inf")
    growth = peak / warm[2] - 1
    curve = ", ".join(f"{s[1] / 1000:.0f}k:{s[2] / 1024:.0f}" for s in samples[:: max(1, len(samples) // 12)])
    report_row(
        "7 soak: 1,000,000 events, one process",
        f"{EVENTS:,} events (410 campaigns, 6 days of event time) pre-produced in {produced - generated:.1f} s "
        f"(generated in {generated - started:.1f} s); VmRSS sampled every 1 s",
        f"consumed at ~{rate:,.0f} events/s ({seconds:.0f} s); RSS at start {samples[0][2] / 1024:.0f} MiB, "
        f"after warm-up ({warm[1] / 1000:.0f}k events) {warm[2] / 1024:.0f} MiB, peak after warm-up "
        f"{peak / 1024:.0f} MiB (+{growth:.1%}, bound +{GROWTH_BOUND:.0%}), final {final / 1024:.0f} MiB; "
        f"campaigns tracked {metrics('guard_campaigns_tracked'):.0f}; curve (events:MiB) {curve}",
    )
    assert metrics.records("counted") == EVENTS
    assert growth < GROWTH_BOUND, f"RSS grew {growth:.1%} after warm-up: {samples}"
