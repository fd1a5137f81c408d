"""A rule set scored on the campaigns: each streamed through a fresh engine until it is paused."""

from __future__ import annotations

import bisect
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.quality.campaigns import Outcome, Spec, events
from guard.engine import Engine, decide
from guard.rules import RuleSet, load_rules


def simulate(spec: Spec, rules: RuleSet) -> Outcome:
    """Stream the campaign through a fresh engine until a pause decision (then it stops sending)."""
    engine = Engine(rules)
    times, stream = events(spec)
    for _, decisions in decide(engine, stream):
        for decision in decisions:
            if decision.action == "pause":
                # what was sent up to the decision; in-flight mail is delivered but nothing new starts
                sent = bisect.bisect_right(times, decision.fired_at)
                return Outcome(spec.campaign_id, spec.kind, sent, spec.turn, decision.rule.name)
    return Outcome(spec.campaign_id, spec.kind, None, spec.turn)


_rules: RuleSet | None = None


def _load(path: str) -> None:
    global _rules
    _rules = load_rules(path)


def _simulate(spec: Spec) -> Outcome:
    assert _rules is not None
    return simulate(spec, _rules)


@dataclass(frozen=True)
class Score:
    name: str
    bad: int
    caught: int
    missed: int
    early: int
    delays: list[int]
    healthy: int
    healthy_paused: int
    by_kind: dict[str, tuple[int, int, float | None]]  # kind -> (caught, of, median delay)
    seconds: float
    healthy_paused_by: dict[str, int]  # rule -> healthy campaigns it paused

    @property
    def median(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    @property
    def p90(self) -> float | None:
        return _quantile(self.delays, 0.9)

    @property
    def healthy_share(self) -> float:
        return self.healthy_paused / self.healthy if self.healthy else 0.0


def _quantile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def score(name: str, path: Path, campaigns: list[Spec], workers: int) -> Score:
    started = time.perf_counter()
    with multiprocessing.Pool(workers, initializer=_load, initargs=(str(path),)) as pool:
        outcomes = pool.map(_simulate, campaigns, chunksize=16)
    delays, kinds, healthy_paused_by = [], {}, {}
    caught = missed = early = healthy_paused = 0
    for outcome in outcomes:
        if outcome.turn is None:
            healthy_paused += outcome.paused_after is not None
            if outcome.rule is not None:
                healthy_paused_by[outcome.rule] = healthy_paused_by.get(outcome.rule, 0) + 1
            continue
        caught_here = outcome.paused_after is not None and outcome.paused_after > outcome.turn
        kind_caught, kind_total, kind_delays = kinds.get(outcome.kind, (0, 0, []))
        if outcome.paused_after is None:
            missed += 1
        elif not caught_here:
            early += 1
        else:
            caught += 1
            delays.append(outcome.paused_after - outcome.turn)
            kind_delays = [*kind_delays, outcome.paused_after - outcome.turn]
        kinds[outcome.kind] = (kind_caught + caught_here, kind_total + 1, kind_delays)
    bad = sum(1 for spec in campaigns if spec.turn is not None)
    return Score(
        name,
        bad,
        caught,
        missed,
        early,
        delays,
        len(campaigns) - bad,
        healthy_paused,
        {k: (c, n, statistics.median(d) if d else None) for k, (c, n, d) in sorted(kinds.items())},
        time.perf_counter() - started,
        healthy_paused_by,
    )
