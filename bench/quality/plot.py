"""bench/frontier.png: the median stale-list delay against the share of healthy campaigns paused."""

from __future__ import annotations

import math
from pathlib import Path

from bench.quality.bounds import lorden_bound
from bench.quality.campaigns import Spec
from bench.quality.frontier import FRONTIER_BAD, FRONTIER_HEALTHY, Point
from bench.quality.scoring import Score
from bench.quality.tables import TARGET_STALE_DELAY


def plot(scores: list[Score], points: list[Point], campaigns: list[Spec], out: Path) -> None:
    """Median stale-list delay against the share of healthy campaigns paused: rule sets, the CUSUM
    at each level, and the bound."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    healthy = sum(1 for spec in campaigns if spec.turn is None)
    floor = 0.5 / healthy  # none paused: drawn at half a campaign, so it shows on a log scale
    figure, axis = pyplot.subplots(figsize=(8, 5.5))
    shares = [math.exp(x) for x in _steps(math.log(floor), math.log(0.7), 60)]
    for healthy_rate, style, label in (
        (None, "-", "bound: the optimal CUSUM, each campaign's own rates known"),
        (FRONTIER_HEALTHY, "--", f"the optimal CUSUM, healthy rate only known to be <= {FRONTIER_HEALTHY:.0%}"),
    ):
        bound = [(q, lorden_bound(campaigns, q, healthy_rate)) for q in shares]
        axis.plot([q for q, b in bound if b], [b for _, b in bound if b], style, color="#555555", lw=1.2, label=label)
    drawn = [p for p in points if p.stale_median is not None]
    axis.plot(
        [max(p.healthy_share, floor) for p in drawn],
        [p.stale_median for p in drawn],
        "o-",
        color="#1f5fa8",
        ms=4,
        label=f"CUSUM {FRONTIER_HEALTHY:.0%} vs {FRONTIER_BAD:.0%}, alarm level 5 to 17 (hard bounces alone)",
    )
    for point in drawn[:: max(1, len(drawn) // 5)]:
        axis.annotate(
            point.label,
            (max(point.healthy_share, floor), point.stale_median),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
            color="#1f5fa8",
        )
    markers = "s^vDP*X"
    for score, marker in zip(scores, markers, strict=False):
        median = score.by_kind.get("bounces", (0, 0, None))[2]
        if median is not None:
            axis.plot(max(score.healthy_share, floor), median, marker, ms=9, label=score.name, ls="none")
    axis.axvline(0.002, color="#c0392b", lw=0.8, ls=":")
    axis.axhline(TARGET_STALE_DELAY, color="#c0392b", lw=0.8, ls=":")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    for ticks in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
        ticks(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("healthy campaigns paused (none: drawn at half a campaign)")
    axis.set_ylabel("median sends after the turn until the pause, stale lists")
    axis.set_title(f"Detection frontier: {len(campaigns):,} labelled campaigns (dotted: the targets)", fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    pyplot.close(figure)


def _steps(low: float, high: float, count: int) -> list[float]:
    return [low + (high - low) * n / (count - 1) for n in range(count)]
