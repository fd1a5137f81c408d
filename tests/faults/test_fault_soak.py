"""Case 7: a soak. One million events through one `guard run` process; RSS sampled every second.

The events span six days of event time at a steady rate (410 campaigns sending all along, the
shipped rules), so the state the guard keeps reaches its steady size once the longest window or
cooldown of the rules has passed: windows hold at most 60 buckets each, dedupe keys live for 3 h
of event time, and no campaign goes idle. The warm-up is the first 200,000 events, or the events of
that first retention span if there are more (48 h windows: ~270,000 events).

Two bounds, on the settled RSS (the mean of the samples after the last event, not a passing peak):
* after the warm-up RSS may grow at most 35 % above its high-water mark during the warm-up (one
  sample alone is noisy: the allocator returns memory now and then). Measured at 7ad47fa: +6 % to
  +22 % over five runs, in steps as the allocator adds arenas, then flat. 25 % would be too tight.
  Before 7ad47fa this soak measured +28 % to +48 %, from two causes since fixed: expired buckets
  never dropped for rules the engine's hot path skipped (a2a4eff; tracemalloc: +39.5 MiB in
  guard/engine/windows.py between 200k and 1M events), and deques of buckets whose 528-byte blocks
  churn through glibc malloc as windows slide (7ace550: Python heap flat under tracemalloc, 19.6 MB
  at 200k events and 19.4 MB at 1M, yet RSS +29 %). A leak of 50 bytes per event (40 MB over the
  800,000 events after the warm-up, on a ~100 MiB base) breaks the bound;
* over the last quarter of the run RSS may grow at most 10 % (measured 0-4 %): memory must level
  off.
Smaller leaks escape an RSS soak of this size; test_fault_bugs.py checks the engine's state directly.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from guard.rules import load_rules
from guard.tools.generate import generate

EVENTS = 1_000_000
WARM_UP = 200_000
GROWTH_BOUND = 0.35
TAIL_BOUND = 0.10  # growth over the last quarter of the events
DAY = 86400.0


@pytest.mark.timeout(300)
async def test_rss_stays_flat_over_a_million_events(kit, report_row) -> None:
    started = time.monotonic()
    traffic = generate(7, campaigns=410, bad=0, start=time.time() - 6 * DAY, duration=6 * DAY - 600, sends=(2000, 2800))
    assert len(traffic.records) >= EVENTS, "the traffic plan must hold at least a million events"
    records = traffic.records[:EVENTS]
    retention = load_rules(kit.SHIPPED_RULES).retention
    warm_up = max(WARM_UP, next(i for i, r in enumerate(records) if r.time >= records[0].time + retention))
    generated = time.monotonic()
    topics = await kit.topics()
    async with kit.producer(max_request_size=4 * 1024 * 1024) as producer:
        per_partition = await producer.send_batched(topics.input, ((r.key, r.value) for r in records))
    produced = time.monotonic()
    assert sum(per_partition.values()) == EVENTS

    guard = kit.guard(kit.env(topics, None, GUARD_RULES=kit.SHIPPED_RULES))  # dry run, the shipped rules
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
    warmed = next(i for i, s in enumerate(samples) if s[1] >= warm_up)
    warm = max(samples[: warmed + 1], key=lambda s: s[2])  # the high-water mark of the warm-up
    peak = max(s[2] for s in samples if s[1] >= warm_up)
    settled = sum(s[2] for s in samples[-3:]) / 3  # at rest, after the last event
    three_quarters = next(s for s in samples if s[1] >= EVENTS * 3 // 4)
    seconds = samples[-4][0] - first_busy[0]
    rate = EVENTS / seconds
    growth = settled / warm[2] - 1
    tail_growth = settled / three_quarters[2] - 1
    curve = ", ".join(f"{s[1] / 1000:.0f}k:{s[2] / 1024:.0f}" for s in samples[:: max(1, len(samples) // 12)])
    report_row(
        "7 soak: 1,000,000 events, one process",
        f"{EVENTS:,} events (410 campaigns, 6 days of event time; warm-up {warm_up:,} events = "
        f"max(200k, the rules' retention of {retention / 3600:.0f} h)) pre-produced in {produced - generated:.1f} s "
        f"(generated in {generated - started:.1f} s); VmRSS sampled every 1 s",
        f"consumed at ~{rate:,.0f} events/s ({seconds:.0f} s); RSS at start {samples[0][2] / 1024:.0f} MiB, "
        f"highest during the warm-up ({samples[warmed][1] / 1000:.0f}k events) {warm[2] / 1024:.0f} MiB, settled at the end "
        f"{settled / 1024:.0f} MiB (+{growth:.1%}, bound +{GROWTH_BOUND:.0%}; peak {peak / 1024:.0f} MiB), "
        f"+{tail_growth:.1%} over the last quarter (bound +{TAIL_BOUND:.0%}); "
        f"campaigns tracked {metrics('guard_campaigns_tracked'):.0f}; curve (events:MiB) {curve}",
    )
    assert metrics.records("counted") == EVENTS
    assert growth < GROWTH_BOUND, f"RSS grew {growth:.1%} after warm-up: {samples}"
    assert tail_growth < TAIL_BOUND, f"RSS still grew {tail_growth:.1%} over the last quarter: {samples}"
