"""A rule's value for one campaign now, and the evidence a decision quotes: pure, like the engine."""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt

from guard.engine.plan import CompiledRule, Series
from guard.engine.state import CampaignState
from guard.rules.models import Rule

# Float rates: 3 of 1000 must reach "0.3%" although 0.3/100 is a hair above 0.003.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Measure:
    """A rule's value for one campaign at one moment, and whether its condition holds. For a cusum
    rule the value is the statistic, and the counts are the `of` and `per` events of its current run."""

    numerator: int
    denominator: int | None
    value: float
    holds: bool
    lower_bound: float | None = None  # Wilson lower bound of the rate, for rules with `confidence`


def wilson_lower_bound(successes: int, trials: float, z: float) -> float:
    """The Wilson score interval's lower end: a rate we are confident the true one exceeds."""
    if trials == 0:
        return 0.0
    # more of-events than per-events (bounces of sends from before the window): no surer than 100%
    p, z2 = min(successes / trials, 1.0), z * z
    centre = p + z2 / (2 * trials)
    margin = z * sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, (centre - margin) / (1 + z2 / trials))


def _count(state: CampaignState, slot: int) -> int:
    series = state.series[slot]
    return series.count_at(state.watermark) if series is not None else 0


def measure(compiled: CompiledRule, state: CampaignState) -> Measure:
    rule = compiled.rule
    if rule.cusum is not None:
        cusum = state.series[compiled.numerator.slot]
        if cusum is None:
            return Measure(0, 0, 0.0, False)
        statistic = cusum.statistic
        return Measure(cusum.run_of, cusum.run_per, statistic, statistic >= rule.cusum.threshold - _EPSILON)
    if compiled.denominator is None:
        numerator = _count(state, compiled.numerator.slot)
        return Measure(numerator, None, float(numerator), numerator >= rule.threshold)
    if rule.last is not None:
        series = state.series[compiled.numerator.slot]
        numerator, denominator = series.counts(rule.last) if series is not None else (0, 0)
    elif compiled.weights is not None:
        numerator = _count(state, compiled.numerator.slot)
        series = state.series[compiled.denominator.slot]
        denominator = series.weighted_count(state.watermark, compiled.weights) if series is not None else 0.0
    else:
        numerator, denominator = _count(state, compiled.numerator.slot), _count(state, compiled.denominator.slot)
    return _rate_measure(compiled, numerator, denominator)


def _rate_measure(compiled: CompiledRule, numerator: int, denominator: float) -> Measure:
    """A rate's measure. With `rate.delay` the denominator, weighted, is the evidence `min_volume`
    and `confidence` judge (the sends whose complaints are due), reported rounded."""
    rule = compiled.rule
    value = numerator / denominator if denominator else 0.0
    enough = denominator >= (rule.min_volume or 0)
    threshold, reported = rule.level, round(denominator)
    if compiled.z is not None:
        bound = wilson_lower_bound(numerator, denominator, compiled.z)
        return Measure(numerator, reported, value, enough and bound >= threshold - _EPSILON, bound)
    return Measure(numerator, reported, value, enough and numerator >= threshold * denominator - _EPSILON)


def leans_bad(compiled: CompiledRule, measure: Measure) -> bool:
    """The measure is at least halfway to the rule firing (see Engine.leans_bad)."""
    rule = compiled.rule
    if rule.cusum is not None:
        return measure.value >= rule.cusum.threshold / 2
    if compiled.denominator is None:
        return measure.value >= rule.threshold / 2
    return measure.numerator > 0 and measure.value >= rule.level - _EPSILON


def evidence_from(rule: Rule, state: CampaignState, evidence: list[Series | None]) -> float:
    """Where a decision's counted evidence starts: the oldest send a count window counted, the
    oldest bucket still inside a time window, the first event of a cusum's run; never before the
    episode began."""
    now = state.watermark
    starts = []
    for series in evidence:
        if series is None:
            continue
        if series.kind == "cusum":
            start = series.run_from
        elif series.kind == "last":
            assert rule.last is not None
            start = series.start_time(rule.last)
        else:
            start = series.start_time()
            start = max(start, now - rule.span) if start is not None else None
        if start is not None:
            starts.append(start)
    return max(min(starts, default=now), state.started_at)


def sample_ids(series: Series | None, rule: Rule, now: float) -> tuple[str, ...]:
    if series is None:
        return ()
    if series.kind == "cusum":
        return tuple(series.samples or ())
    if series.kind == "last":
        assert rule.last is not None
        return series.sample_ids_within(rule.last)
    return series.sample_ids(now)
