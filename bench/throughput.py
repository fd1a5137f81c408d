"""Throughput: events/s end to end over one pre-produced topic, every contender in the same run on the
same broker (bench/contenders.py says what each one does).

Workload: bench/workload.py (~1M events, 50,100 campaigns, 4 partitions), produced once. Per repeat,
in this order, each in a fresh process with a fresh consumer group: the bare aiokafka consumer and
confluent-kafka (ceilings), the guard (dry run, shipped rules; its default engine, then the Python
one), Quix Streams with a 1 h tumbling window (stopped
after TUMBLING_LIMIT seconds if it has not finished: its rate is then over the records it got
through), and the JVM peers (bench/streams.py): Kafka Streams with a 1 h tumbling window and a
Processor-API ring of one-minute buckets, each in a fresh JVM, rated after their warm-up. Ratios are
taken within a repeat (the machine is shared and noisy), then min/median/max over the repeats; no
repeat starts once the repeats have used BUDGET seconds. Quix Streams' sliding window runs once,
stopped after SLIDING_LIMIT seconds: its cost per record grows with the events of the key inside the
window, and it cannot finish this topic in the time budget; so does Kafka Streams' hopping window (1
h by 1 min: 60 windows per record). When Java 17+, javac or Maven is missing, the JVM peers are
reported as skipped with the reason. The guard runs' groups are kept: their commits at the end of
the topic are where bench/recovery.py restarts from. Quix Streams runs under $BENCH_PEER_PYTHON when
it is set (a venv of its own: quixstreams 3.28.1 asks for pydantic<2.14, the guard pins 2.14), else
under this interpreter.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench import streams
from bench.child import ChildFailed, run_child
from bench.workload import new_name

TUMBLING_LIMIT = 75.0  # Quix's tumbling window finishes ~1M records in ~60 s on a quiet machine
SLIDING_LIMIT = 30.0
BUDGET = 360.0  # seconds for all repeats: no further repeat starts past it (the machine may be busy)


def contender(kind: str, bootstrap: str, topic: str, expect: int, timeout: float, **options: str) -> dict[str, Any]:
    group = new_name(f"{kind}-{options.get('window', '')}".rstrip("-"))
    args = [kind, "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--expect", str(expect)]
    for name, value in options.items():
        args += [f"--{name}", value]
    # the peer may live in a venv of its own: quixstreams 3.28.1 asks for pydantic<2.14, the guard pins 2.14
    python = os.environ.get("BENCH_PEER_PYTHON") if kind == "quix" else None
    try:
        result = run_child("bench.contenders", args, timeout, group, python=python)
    except ChildFailed as error:
        return {"error": str(error), "group": group}
    return {**result, "group": group}


def run(bootstrap: str, topic: str, expect: int, repeats: int, idempotence: bool = False) -> dict[str, Any]:
    """`idempotence`: the guard's producer setting (its default, true, where the broker supports it)."""
    runs: list[dict[str, Any]] = []
    jvm = streams.prepare()  # Maven and javac once (cached), or why the JVM peers are skipped

    def peer(mode: str, limit: float) -> dict[str, Any]:
        return streams.contender(jvm, mode, bootstrap, topic, new_name(f"streams-{mode}"), expect, limit)

    started = time.monotonic()
    for number in range(repeats):
        spent = time.monotonic() - started
        if number and spent + spent / number > BUDGET:
            break  # another repeat would overrun the budget: report the ones done
        limit = str(TUMBLING_LIMIT)
        runs.append(
            {
                "bare": contender("bare", bootstrap, topic, expect, 120),
                "confluent": contender("confluent", bootstrap, topic, expect, 120),
                # GUARD_ENGINE's default (the compiled core when installed), then the Python engine beside it
                "guard": contender("guard", bootstrap, topic, expect, 300, idempotence=str(idempotence).lower()),
                "guard_python": contender(
                    "guard", bootstrap, topic, expect, 300, idempotence=str(idempotence).lower(), engine="python"
                ),
                "quix": contender(
                    "quix", bootstrap, topic, expect, TUMBLING_LIMIT + 120, window="tumbling", limit=limit
                ),
                "streams_tumbling": peer("tumbling", TUMBLING_LIMIT),
                "streams_ring": peer("ring", TUMBLING_LIMIT),
            }
        )
        repeat = runs[-1]
        guard, bare, quix = repeat["guard"], repeat["bare"], repeat["quix"]
        if guard.get("rate") and bare.get("rate"):
            repeat["guard_vs_bare"] = guard["rate"] / bare["rate"]
            repeat["guard_vs_bare_cpu"] = guard["cpu_rate"] / bare["cpu_rate"]
        if guard.get("cpu_rate") and repeat["guard_python"].get("cpu_rate"):
            repeat["compiled_vs_python_cpu"] = guard["cpu_rate"] / repeat["guard_python"]["cpu_rate"]
        if guard.get("rate") and quix.get("rate"):
            repeat["guard_vs_quix"] = guard["rate"] / quix["rate"]
            repeat["guard_vs_quix_cpu"] = guard["cpu_rate"] / quix["cpu_rate"]
        for mode in ("tumbling", "ring"):
            if guard.get("cpu_rate") and repeat[f"streams_{mode}"].get("cpu_rate"):
                repeat[f"guard_vs_streams_{mode}_cpu"] = guard["cpu_rate"] / repeat[f"streams_{mode}"]["cpu_rate"]
    sliding = contender(
        "quix", bootstrap, topic, expect, SLIDING_LIMIT + 120, window="sliding", limit=str(SLIDING_LIMIT)
    )
    hopping = peer("hopping", SLIDING_LIMIT)
    return {"runs": runs, "sliding": sliding, "hopping": hopping, "records": expect, "repeats_asked": repeats}
