"""Memory: what the guard's state costs per active campaign, without Kafka.

Workload: for N active campaigns (10,000 and 100,000), `guard.tools.generate` traffic with the same mix
as the throughput workload's small campaigns (10-20 sends each, healthy bounce, complaint and
unsubscribe rates, seed 11), all within one hour of event time so every campaign is active in
every window. In a child process per N: the records (bytes) are generated first; then, with the
garbage collected, RSS is read, every record is decoded and fed to one `guard.engine.Engine` with
the shipped rules/ (decoded events are dropped as they go, so only what the engine keeps stays),
and RSS is read again. (RSS after - RSS before) / N is the state per campaign. A second child at
10,000 campaigns runs the same under tracemalloc to say where that memory is (by source line),
and a third, 2,000 campaigns with 100-120 sends each, gives the cost per extra event.

Flood: 200,000 distinct campaign ids, one `message.sent` each (a hostile or broken producer),
through one engine with the default cap (GUARD_MAX_CAMPAIGNS, 50,000) and without one; RSS is
read every 10,000 events, so the peak shows whether memory stays bounded while the flood lasts.

Id flood: 2,000,000 distinct message ids into three campaigns (one `message.sent` each, 1,000 a
second of event time) through one engine with a budget of dedupe keys (GUARD_MAX_DEDUPE_KEYS's
default) and without one; RSS as for the flood above, and the keys remembered at the end.

    python -m bench.memory CAMPAIGNS SENDS_LO SENDS_HI [--trace] [--engine python|compiled]
    python -m bench.memory FLOOD 0 0 --cap CAP   (CAP 0: no cap)
    python -m bench.memory IDS 0 0 --keys BUDGET   (BUDGET 0: no budget)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.child import ROOT, emit, run_child

SIZES = (10_000, 100_000)
MIX = (10, 20)
BUSY_MIX = (100, 120)
BUSY_CAMPAIGNS = 2_000
SEED = 11
FLOOD = 200_000
FLOOD_CAPS = (50_000, 0)  # the default cap, and none
ID_FLOOD = 2_000_000
ID_FLOOD_BUDGETS = (1_000_000, 0)  # a budget the flood exceeds, and none


def _generated(campaigns: int, sends: tuple[int, int], duration: float) -> list[tuple[bytes, float]]:
    """The workload's records, made in another process and read here in one piece: generating them here
    would leave the heap full of freed blocks that the engine's state then fills unseen by RSS."""
    import msgspec

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "records.msgpack"
        argv = [sys.executable, "-m", "bench.memory", str(campaigns), *map(str, sends), "--duration", str(duration)]
        subprocess.run([*argv, "--write", str(path)], check=True, cwd=ROOT)
        return msgspec.msgpack.decode(path.read_bytes(), type=list[tuple[bytes, float]])


def _write(path: str, campaigns: int, sends: tuple[int, int], duration: float) -> None:
    import msgspec

    from guard.tools.generate import generate

    records = generate(SEED, campaigns, 0, start=1_767_225_600.0, duration=duration, sends=sends).records
    Path(path).write_bytes(msgspec.msgpack.encode([(record.value, record.time) for record in records]))


def settled() -> None:
    """Garbage collected and the freed heap handed back to the system (glibc's malloc_trim), so that what
    is allocated next shows in RSS: the compiled core allocates with malloc, which would otherwise reuse
    the memory the generator freed and hide the state's cost."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(
    campaigns: int,
    sends: tuple[int, int],
    trace: bool,
    duration: float = 3600.0,
    horizon: float | None = None,
    engine_choice: str = "python",
) -> dict[str, Any]:
    from guard.engine import Engine, record_decisions
    from guard.engine.kinds import choose
    from guard.rules import load_rules

    rules = load_rules(ROOT / "rules")
    records = _generated(campaigns, sends, duration)
    options = {} if horizon is None else {"dedupe_horizon": horizon}
    engine = Engine(rules, **options, kinds=choose(engine_choice))  # type: ignore[arg-type]
    if trace:
        tracemalloc.start(1)
    settled()
    before = rss_bytes()
    started = time.perf_counter()
    collections.deque(record_decisions(engine, records), maxlen=0)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    result: dict[str, Any] = {
        "campaigns": campaigns,
        "engine": engine.kinds.name,
        "tracked": engine.campaigns,
        "events": len(records),
        "sends": list(sends),
        "rss_delta": after - before,
        "per_campaign": (after - before) / campaigns,
        "events_per_s": len(records) / elapsed,
    }
    if trace:
        snapshot = tracemalloc.take_snapshot()
        traced = snapshot.statistics("lineno")
        total = sum(stat.size for stat in traced)
        result["traced_per_campaign"] = total / campaigns
        result["top"] = [
            {
                "where": f"{Path(stat.traceback[0].filename).name}:{stat.traceback[0].lineno}",
                "line": _source(stat.traceback[0].filename, stat.traceback[0].lineno),
                "per_campaign": stat.size / campaigns,
                "share": stat.size / total,
            }
            for stat in traced[:8]
        ]
    return result


def flood(campaigns: int, cap: int) -> dict[str, Any]:
    """RSS while `campaigns` distinct one-event campaigns go through one engine capped at `cap`."""
    from guard.engine import Engine
    from guard.rules import load_rules

    engine = Engine(load_rules(ROOT / "rules"), max_campaigns=cap or None)
    grown, peak, elapsed = _sends_through(
        engine, campaigns, lambda n: {"campaignId": f"flood_{n:07d}", "messageId": f"m{n}"}, 0.01, 10_000
    )
    return {
        "campaigns": campaigns,
        "cap": cap,
        "tracked": engine.campaigns,
        "evicted": engine.stats.evicted_campaigns,
        "rss_delta": grown,
        "rss_peak_delta": peak,
        "per_tracked": grown / max(1, engine.campaigns),
        "events_per_s": campaigns / elapsed,
    }


def id_flood(ids: int, budget: int) -> dict[str, Any]:
    """RSS while `ids` distinct message ids go into three campaigns of one engine with `budget` dedupe keys."""
    from guard.engine import Engine
    from guard.rules import load_rules

    engine = Engine(load_rules(ROOT / "rules"), max_dedupe_keys=budget or None)
    grown, peak, elapsed = _sends_through(
        engine, ids, lambda n: {"campaignId": f"camp_{n % 3}", "messageId": f"msg_{n:09d}"}, 1 / 1000, 50_000
    )
    return {
        "ids": ids,
        "budget": budget,
        "keys": engine.dedupe_keys,
        "evicted": engine.dedupe_evicted,
        "rss_delta": grown,
        "rss_peak_delta": peak,
        "per_key": grown / max(1, engine.dedupe_keys),
        "events_per_s": ids / elapsed,
    }


def _sends_through(
    engine: Any, count: int, data: Callable[[int], dict[str, str]], spacing: float, every: int
) -> tuple[int, int, float]:
    """`count` `message.sent` events, the n-th with `data(n)`, `spacing` s of event time apart, through the engine:
    RSS growth at the end and at its peak (read every `every` events), and the seconds it took."""
    import json

    from guard.contracts.events import decode

    start = 1_767_225_600.0
    gc.collect()
    before = peak = rss_bytes()
    started = time.perf_counter()
    for n in range(count):
        value = json.dumps({"event": "message.sent", "timestamp": None, "data": data(n)}).encode()
        engine.process(decode(value, start + n * spacing))
        if n % every == 0:
            peak = max(peak, rss_bytes())
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    return after - before, max(peak, after) - before, elapsed


def _source(filename: str, lineno: int) -> str:
    try:
        return Path(filename).read_text().splitlines()[lineno - 1].strip()[:90]
    except (OSError, IndexError):
        return ""


def run(timeout: float = 240.0) -> dict[str, Any]:
    """The memory figures, each from a child process of its own."""
    results: dict[str, Any] = {"sizes": []}
    for campaigns in SIZES:
        args = [str(campaigns), str(MIX[0]), str(MIX[1])]
        results["sizes"].append(run_child("bench.memory", args, timeout, f"memory-{campaigns}"))
    args = [str(SIZES[0]), str(MIX[0]), str(MIX[1]), "--trace"]
    results["trace"] = run_child("bench.memory", args, timeout, "memory-trace")
    args = [str(BUSY_CAMPAIGNS), str(BUSY_MIX[0]), str(BUSY_MIX[1])]
    results["busy"] = run_child("bench.memory", args, timeout, "memory-busy")
    light, busy = results["sizes"][0], results["busy"]
    extra_events = busy["events"] / busy["campaigns"] - light["events"] / light["campaigns"]
    results["per_extra_event"] = (busy["per_campaign"] - light["per_campaign"]) / extra_events
    results["flood"] = [
        run_child("bench.memory", [str(FLOOD), "0", "0", "--cap", str(cap)], timeout, f"memory-flood-{cap}")
        for cap in FLOOD_CAPS
    ]
    results["id_flood"] = [
        run_child("bench.memory", [str(ID_FLOOD), "0", "0", "--keys", str(keys)], timeout, f"memory-ids-{keys}")
        for keys in ID_FLOOD_BUDGETS
    ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("campaigns", type=int)
    parser.add_argument("lo", type=int)
    parser.add_argument("hi", type=int)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--cap", type=int, help="flood: distinct one-event campaigns through an engine with this cap")
    parser.add_argument("--keys", type=int, help="id flood: distinct message ids through an engine with this budget")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of event time the sends spread over")
    parser.add_argument("--horizon", type=float, help="dedupe horizon in seconds (default: the engine's)")
    parser.add_argument("--write", help=argparse.SUPPRESS)  # the records of a measurement, from a child
    parser.add_argument("--engine", choices=("python", "compiled"), default="python", help="the engine's series")
    args = parser.parse_args()
    if args.write:
        _write(args.write, args.campaigns, (args.lo, args.hi), args.duration)
    elif args.cap is not None:
        emit(flood(args.campaigns, args.cap))
    elif args.keys is not None:
        emit(id_flood(args.campaigns, args.keys))
    else:
        emit(measure(args.campaigns, (args.lo, args.hi), args.trace, args.duration, args.horizon, args.engine))


if __name__ == "__main__":
    main()
