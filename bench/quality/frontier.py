"""The frontier: a CUSUM of hard bounces at alarm levels from trigger-happy to very sure, each
level's share of healthy campaigns paused against its delay on stale lists."""

from __future__ import annotations

import bisect
import math
import multiprocessing
import statistics
from dataclasses import dataclass

from bench.quality.bounds import information
from bench.quality.campaigns import Spec, events
from guard.engine import Engine, decide
from guard.rules import Rule, RuleSet

FRONTIER_LEVELS = (5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0)
FRONTIER_HEALTHY, FRONTIER_BAD = 0.02, 0.08


def frontier_rules(levels: tuple[float, ...] = FRONTIER_LEVELS) -> RuleSet:
    """The CUSUM at each level as an alert rule: one pass shows where each level would first fire
    (a campaign behaves the same until its first pause). All levels share one statistic."""
    rules = []
    for level in levels:
        # the campaign size whose 50% budget sets this level (models.CusumCondition.threshold, inverted)
        arl = (math.exp(level) - level - 1) / information(FRONTIER_HEALTHY, FRONTIER_BAD)
        size = max(1, round(arl * math.log(2)))
        rules.append(
            Rule.model_validate(
                {
                    "name": f"cusum-{level:g}",
                    "description": "frontier",
                    "cusum": {
                        "of": {"signal": "bounced", "where": {"bounce_type": "hard"}},
                        "per": "sent",
                        "healthy": FRONTIER_HEALTHY,
                        "bad": FRONTIER_BAD,
                        "false_alarms": 0.5,
                        "campaign_size": size,
                    },
                    "action": "alert",
                }
            )
        )
    return RuleSet(rules=tuple(rules))


def first_fires(spec: Spec) -> tuple[Spec, dict[str, int]]:
    """Sends made by the first firing of each frontier rule (absent: never fired)."""
    engine, fired = Engine(frontier_rules()), {}
    times, stream = events(spec)
    for _, decisions in decide(engine, stream):
        for decision in decisions:
            fired.setdefault(decision.rule.name, bisect.bisect_right(times, decision.fired_at))
    return spec, fired


@dataclass(frozen=True)
class Point:
    label: str
    healthy_share: float
    stale_median: float | None
    stale_caught: int


def frontier(campaigns: list[Spec], workers: int) -> list[Point]:
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(first_fires, campaigns, chunksize=16)
    healthy = [fired for spec, fired in results if spec.turn is None]
    stale = [(spec, fired) for spec, fired in results if spec.kind == "bounces"]
    points = []
    for rule in frontier_rules().rules:
        delays = [
            fired[rule.name] - spec.turn
            for spec, fired in stale
            if spec.turn is not None and fired.get(rule.name, -1) > spec.turn
        ]
        share = sum(rule.name in fired for fired in healthy) / len(healthy)
        points.append(Point(f"h={rule.level:.1f}", share, statistics.median(delays) if delays else None, len(delays)))
    return points
