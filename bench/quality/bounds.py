"""The bound no detector can beat: the optimal CUSUM (Moustakides 1986) at a false-alarm rate,
from Siegmund's approximations (Lorden's ln(ARL0) / I to first order)."""

from __future__ import annotations

import math
import statistics

from bench.quality.campaigns import Spec


def information(p1: float, p0: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(p1) from Bernoulli(p0), in nats per send."""
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def average_run_to_false_alarm(sizes: list[int], share: float) -> float:
    """The ARL0 (in sends) at which campaigns of these sizes are paused by chance this often on
    average, a false alarm being a Poisson event: share = mean(1 - exp(-N / ARL0))."""
    low, high = 1.0, 1e15
    for _ in range(200):
        middle = math.sqrt(low * high)
        paused = statistics.fmean(1 - math.exp(-size / middle) for size in sizes)
        low, high = (middle, high) if paused > share else (low, middle)
    return math.sqrt(low * high)


def optimal_delay(p0: float, p1: float, arl: float) -> float:
    """The sends a CUSUM needs after the turn when it knows both rates and false-alarms once per
    `arl` healthy sends: the optimum at that false-alarm rate (Moustakides 1986), by Siegmund's
    approximations: ARL0 = (e^h - h - 1) / I0 sets the level h, the delay is (h + e^-h - 1) / I1.
    Lorden's first-order form, ln(ARL0) / I1, is this as ARL0 grows."""
    healthy_drift = information(p0, p1)
    level = math.log(arl * healthy_drift + 1)
    for _ in range(50):  # e^h = ARL0 * I0 + h + 1, a contraction
        level = math.log(arl * healthy_drift + level + 1)
    return (level + math.exp(-level) - 1) / information(p1, p0)


def lorden_bound(campaigns: list[Spec], share: float, healthy_rate: float | None) -> float | None:
    """The median over stale lists of the optimal delay at the ARL0 that pauses `share` of the
    healthy campaigns (for those sending that much after their turn): from the campaign's own rates
    (`healthy_rate` None), or from a healthy rate only known to be at most `healthy_rate`."""
    arl = average_run_to_false_alarm([spec.sends for spec in campaigns if spec.turn is None], share)
    delays = []
    for spec in campaigns:
        if spec.kind != "bounces" or spec.turn is None or spec.bad is None:
            continue
        p0 = spec.healthy.hard if healthy_rate is None else healthy_rate
        delay = optimal_delay(p0, spec.bad.hard, arl)
        if spec.sends - spec.turn >= delay:
            delays.append(delay)
    return statistics.median(delays) if delays else None


def complaint_lists_catchable(campaigns: list[Spec], share: float, healthy_rate: float | None) -> int:
    """How many complaint lists send long enough after their turn for the optimal test to catch
    them at the false-alarm rate that pauses `share` of the healthy campaigns (complaints arriving
    at once; their real delay only makes it fewer)."""
    arl = average_run_to_false_alarm([spec.sends for spec in campaigns if spec.turn is None], share)
    return sum(
        1
        for spec in campaigns
        if spec.kind == "complaints"
        and spec.turn is not None
        and spec.bad is not None
        and spec.sends - spec.turn
        >= optimal_delay(spec.healthy.complaint if healthy_rate is None else healthy_rate, spec.bad.complaint, arl)
    )
