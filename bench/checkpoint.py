"""Checkpoint encoding: how long a partition's snapshot holds the poll loop, without Kafka.

Workload: bench/memory.py's (N active campaigns, 10-20 sends each with healthy outcome rates, seed 11, all
within one hour), decoded and fed to one engine with the shipped rules/, with the Python engine and with the
compiled one. Then, in one run per engine, a snapshot the way `Checkpointer.write` takes it: begun (the
clock, counters and dedupe store taken), encoded in steps of up to `STEP_SECONDS` with the loop
free in between, and assembled in a worker thread (the loop's longest wait meanwhile measured); and, for the
ratio, the whole snapshot in one piece as checkpoints took it before (every campaign encoded with the loop
held). Prints the longest the loop is held at once (the begin, a step, or during the assembly), and the total;
then the time to restore the snapshot into a fresh engine (what a restart spends per partition on it).

    python -m bench.checkpoint [CAMPAIGNS] [--engine python|compiled]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable

import msgspec

from bench.memory import MIX, _generated  # the same workload
from guard.engine import Engine
from guard.engine.kinds import choose
from guard.engine.snapshot import PendingSnapshot, _campaign, _encoder, _Partition, _store_part, restore
from guard.rules import load_rules
from guard.runtime.checkpoints import STEP_SECONDS, encode_for

RULES = "rules"


def _one_piece(engine: Engine, pending: PendingSnapshot) -> bytes:
    """The snapshot as checkpoints encoded it before: every campaign with the Python mirrors, in one call."""
    campaigns = [msgspec.Raw(_campaign(campaign_id, state)) for campaign_id, state in engine._campaigns.items()]
    return _encoder.encode(_Partition(*pending._head, msgspec.Raw(_store_part(engine._seen)), campaigns))


async def _in_a_thread(finish: Callable[[], bytes]) -> tuple[bytes, float, float]:
    """`finish` in a worker thread, as the guard runs it, and the longest the event loop waited meanwhile: a
    timer every millisecond stands for the loop's work (a loop that never sleeps would fight for the GIL)."""
    longest, done = 0.0, False

    async def ticking() -> None:
        nonlocal longest
        while not done:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - asked - 0.001)

    ticker = asyncio.create_task(ticking())
    started = time.perf_counter()
    data = await asyncio.to_thread(finish)
    took = time.perf_counter() - started
    done = True
    await ticker
    return data, took, longest


def run(campaigns: int, engine_choice: str) -> dict[str, float]:
    kinds, rules = choose(engine_choice), load_rules(RULES)  # type: ignore[arg-type]
    engine = Engine(rules, kinds=kinds)
    for value, at in _generated(campaigns, MIX, 3600.0):
        engine.process(kinds.decode(value, at))
    gc.collect()
    started = time.perf_counter()
    pending = PendingSnapshot(engine, rules)
    begun = time.perf_counter()
    longest_step, steps = 0.0, 0
    while True:
        before = time.perf_counter()
        done = encode_for(pending, STEP_SECONDS)
        longest_step, steps = max(longest_step, time.perf_counter() - before), steps + 1
        if done:
            break
    stepped = time.perf_counter()
    data, assembly, assembly_hold = asyncio.run(_in_a_thread(pending.finish))
    heads = PendingSnapshot(engine, rules)  # for the partition's fields only
    heads.close()
    before = time.perf_counter()
    whole = _one_piece(engine, heads)
    one_piece = time.perf_counter() - before
    assert whole == data, "the snapshot in steps differs from the one in one piece"
    before = time.perf_counter()
    restore(data, rules, Engine(rules, kinds=kinds))
    restored = time.perf_counter() - before
    return {
        "campaigns": engine.campaigns,
        "bytes": len(data),
        "begin_s": begun - started,
        "longest_step_s": longest_step,
        "steps": steps,
        "assemble_s": assembly,
        "assembly_hold_s": assembly_hold,
        "total_s": stepped - started + assembly,
        "one_piece_s": one_piece,
        "restore_s": restored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaigns", type=int, nargs="?", default=100_000)
    parser.add_argument("--engine", choices=("python", "compiled"), default="compiled")
    args = parser.parse_args()
    result = run(args.campaigns, args.engine)
    held = max(result["begin_s"], result["longest_step_s"], result["assembly_hold_s"])
    ms = {name: value * 1000 for name, value in result.items() if name.endswith("_s")}
    print(
        f"{args.engine}: {result['campaigns']:,} campaigns, {result['bytes'] / 2**20:.1f} MiB; "
        f"begin {ms['begin_s']:.1f} ms, {result['steps']} steps (longest {ms['longest_step_s']:.1f} ms), "
        f"assembly {ms['assemble_s']:.1f} ms in a thread (the loop held {ms['assembly_hold_s']:.1f} ms at most); "
        f"total {ms['total_s']:.0f} ms; "
        f"loop held at most {held * 1000:.1f} ms at once; in one piece (before): {ms['one_piece_s']:.0f} ms held "
        f"= {result['one_piece_s'] / held:.0f}x that; restored into a fresh engine in {ms['restore_s']:.0f} ms"
    )


if __name__ == "__main__":
    main()
