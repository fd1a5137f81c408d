"""Recovery: how long a restarted guard takes to be ready when ~1M events inside its longest
window sit before its committed offsets.

Workload: the throughput topic (bench/workload.py, ~1M events in the last two hours, inside the
24 h lookback of the shipped rules) and the consumer group of one of the throughput benchmark's
guard runs, which consumed the whole topic and committed its end. A new process (started here;
its interpreter start and imports count) builds the `Service` as `guard run` would (dry run) in
that group. From then on the health is polled every 5 ms. Recovery ends when `/readyz` says ready
again after every record before the committed offsets was replayed (the service's
`guard_records_total{outcome="replayed"}` reaches the topic size); the HTTP endpoint is checked
once then. Also reported: when readiness first said ready (before the group join, the service
owns no partition and reports ready) and when the partitions were assigned.

    python -m bench.recovery --bootstrap HOST:PORT --topic T --group G --expect N --t0 EPOCH
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from typing import Any

from bench.child import emit
from bench.contenders import HandleClock, guard_service, handled

POLL_SECONDS = 0.005


async def recover(bootstrap: str, topic: str, group: str, expect: int, t0: float) -> dict[str, Any]:
    from guard.telemetry.logs import configure_logging

    configure_logging("INFO")
    imported = time.time() - t0
    clock = HandleClock(expect)  # notes when the pipeline has handled `expect` records
    service = guard_service(bootstrap, topic, group)
    running = asyncio.create_task(service.run())
    first_ready = assigned = replayed = ready = None
    try:
        async with asyncio.timeout(300):
            while ready is None:
                if running.done():
                    running.result()
                    raise RuntimeError("the service stopped while recovering")
                now = time.time() - t0
                is_ready = service.health.ready()[0]
                if is_ready and first_ready is None:
                    first_ready = now
                if service.assigned and assigned is None:
                    assigned = now
                if replayed is None and clock.done:
                    replayed = clock.done - time.perf_counter() + now
                if replayed is not None and is_ready:
                    ready = now
                await asyncio.sleep(POLL_SECONDS)
        url = f"http://127.0.0.1:{service.server.port}/readyz"
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).status)
        if handled(service) < expect:
            raise RuntimeError(f"guard_records_total says {handled(service)} records, the pipeline {clock.count}")
        registry = service.metrics.registry
        outcomes = {
            o: int(registry.get_sample_value("guard_records_total", {"outcome": o}) or 0)
            for o in ("replayed", "counted", "too_old")
        }
    finally:
        service.stop()
        await asyncio.wait_for(running, 30)
    return {
        "imported_s": imported,
        "first_ready_s": first_ready,
        "assigned_s": assigned,
        "replayed_s": replayed,
        "ready_s": ready,
        "readyz_status": status,
        "outcomes": outcomes,
        "replay_rate": expect / (replayed - assigned) if replayed and assigned else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--t0", type=float, required=True, help="time.time() when the parent started this process")
    args = parser.parse_args()
    emit(asyncio.run(recover(args.bootstrap, args.topic, args.group, args.expect, args.t0)))


if __name__ == "__main__":
    main()
