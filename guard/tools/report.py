"""The replay's HTML report: per campaign that fired, each fired rule's value over event time
against its threshold, with the firing marked. Static SVG (matplotlib), one self-contained file."""

from __future__ import annotations

import html
import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from guard.contracts.events import Event
from guard.engine import Decision, Engine
from guard.errors import GuardError
from guard.rules.durations import format_duration
from guard.rules.models import Rule
from guard.tools.outcomes import outcome_of

MAX_POINTS = 800  # per line; more adds bytes, not insight


class Timelines:
    """Collects, during a replay, the values of the rules that fired for the campaigns that fired."""

    def __init__(self, decisions: Iterable[Decision]) -> None:
        self.rules: dict[str, set[str]] = defaultdict(set)
        for decision in decisions:
            self.rules[decision.campaign_id].add(decision.rule.name)
        self.points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        # the Wilson lower bound, which rules with `confidence` compare with their threshold
        self.bounds: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        # spans of event time [start, end] in which a rate rule had less than its min_volume (end None: still)
        self.short: dict[tuple[str, str], list[list[float | None]]] = defaultdict(list)

    def __call__(self, engine: Engine, event: Event) -> None:
        names = self.rules.get(event.campaign_id)
        if not names:
            return
        min_volumes = {c.rule.name: c.rule.min_volume for c in engine.rules_for(event.campaign_id)}
        for name, measure in engine.measure(event.campaign_id).items():
            if name in names:
                key = (event.campaign_id, name)
                self.points[key].append((event.time, measure.value))
                if measure.lower_bound is not None:
                    self.bounds[key].append((event.time, measure.lower_bound))
                if measure.denominator is not None:
                    self._volume(key, event.time, measure.denominator >= (min_volumes.get(name) or 0))

    def _volume(self, key: tuple[str, str], time: float, enough: bool) -> None:
        spans = self.short[key]
        open_span = bool(spans) and spans[-1][1] is None
        if not enough and not open_span:
            spans.append([time, None])
        elif enough and open_span:
            spans[-1][1] = time


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


def _window_text(rule: Rule) -> str:
    if rule.cusum is not None:
        return f"cusum of {rule.cusum.healthy:.4g} against {rule.cusum.bad:.4g}"
    over = f"the last {rule.last} events" if rule.window is None else f"{format_duration(rule.window)} windows"
    return f"{'rate' if rule.rate else 'count'} over {over}"


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _campaign_svg(campaign_id: str, decisions: list[Decision], timelines: Timelines) -> str:
    try:
        import matplotlib
    except ImportError:
        raise GuardError("the HTML report needs matplotlib, the report extra: pip install '.[report]'") from None

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import PercentFormatter

    rules = {d.rule.name: d.rule for d in decisions}
    figure, axes = pyplot.subplots(len(rules), 1, figsize=(9, 2.4 * len(rules)), squeeze=False, sharex=True)
    for axis, (name, rule) in zip(axes[:, 0], sorted(rules.items()), strict=True):
        points = _thin(timelines.points.get((campaign_id, name), []))
        if points:
            axis.step([_utc(t) for t, _ in points], [v for _, v in points], where="post", color="#1f5fa8", lw=1.4)
        bounds = _thin(timelines.bounds.get((campaign_id, name), []))
        if bounds:  # what the rule compares: the rate we are `confidence` sure of
            axis.step(
                [_utc(t) for t, _ in bounds],
                [v for _, v in bounds],
                where="post",
                color="#27ae60",
                lw=1.2,
                label=f"{rule.confidence:.1%} lower bound (compared)",
                gid=f"compared-bound-{name}",
            )
        end = points[-1][0] if points else None
        for n, (start, stop) in enumerate(timelines.short.get((campaign_id, name), [])):
            axis.axvspan(
                _utc(start),  # type: ignore[arg-type]
                _utc(stop if stop is not None else end or start),  # type: ignore[arg-type]
                color="#999999",
                alpha=0.18,
                lw=0,
                label=None if n else f"below min_volume ({rule.min_volume:,}): not judged",
                gid=f"below-min-volume-{name}-{n}",
            )
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper left", fontsize=7)
        axis.axhline(rule.level, color="#c0392b", ls="--", lw=1, label=f"threshold {rule.level:g}")
        for decision in decisions:
            if decision.rule.name == name:
                axis.axvline(_utc(decision.fired_at), color="#c0392b" if rule.action == "pause" else "#e67e22", lw=2)
                axis.annotate(
                    rule.action, (_utc(decision.fired_at), rule.level), xytext=(4, 6), textcoords="offset points"
                )
        if rule.rate is not None:
            axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        axis.set_title(
            f"{name}  ({_window_text(rule)})",
            fontsize=9,
            loc="left",
        )
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("event time (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    pyplot.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def _key(decisions: list[Decision]) -> str:
    """How to read the plots: which line each rule compares with its threshold."""
    parts = ["Blue: the raw value; dashed red: the threshold; a vertical line: the rule fired."]
    if any(d.rule.confidence is not None for d in decisions):
        parts.append(
            "Green: the lower bound of the rate at the rule's confidence, which is what those rules compare "
            "with the threshold, so the blue line may cross it well before the rule fires."
        )
    if any(d.rule.min_volume for d in decisions):
        parts.append("Grey: fewer events than the rule's min_volume, when it judges nothing.")
    return " ".join(parts)


def _row(d: Decision) -> str:
    """One decision as the CLI's table shows it: rates in percent, a cusum as statistic against level."""
    from guard.tools.replay import bound_label, value_compared_threshold_evidence

    value, compared_value, threshold, evidence = value_compared_threshold_evidence(d, bound_label(d))
    cells = (
        html.escape(d.rule.name), d.rule.action, outcome_of(d), f"{_utc(d.fired_at):%Y-%m-%d %H:%M:%S}", value,
        compared_value, threshold, evidence, html.escape(", ".join(d.message_ids)),
    )  # fmt: skip
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_report(decisions: list[Decision], timelines: Timelines, *, title: str = "Guard replay") -> str:
    by_campaign: dict[str, list[Decision]] = defaultdict(list)
    for decision in decisions:
        by_campaign[decision.campaign_id].append(decision)
    sections = []
    for campaign_id in sorted(by_campaign, key=lambda c: by_campaign[c][0].fired_at):
        campaign_decisions = by_campaign[campaign_id]
        rows = "".join(_row(d) for d in campaign_decisions)
        sections.append(
            f"<section><h2>{html.escape(campaign_id)}</h2>"
            "<table><tr><th>rule</th><th>action</th><th>outcome</th><th>fired at (UTC)</th><th>value</th>"
            "<th>compared</th><th>threshold</th>"
            f"<th>evidence</th><th>latest message ids</th></tr>{rows}</table>"
            f"{_campaign_svg(campaign_id, campaign_decisions, timelines)}</section>"
        )
    paused = len({d.campaign_id for d in decisions if d.rule.action == "pause"})
    superseded = sum(outcome_of(d) == "already_paused" for d in decisions)
    body = "".join(sections) or "<p>No rule fired.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: left; white-space: nowrap; }}
td:last-child {{ white-space: normal; }}
section {{ margin-bottom: 2.5rem; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{_plural(len(decisions), "decision")}; {_plural(paused, "campaign")} would have been paused;
{_plural(superseded, "pause decision")} already paused (covered by another rule's pause moments before: no call);
{_plural(len(by_campaign), "campaign")} with any decision.</p>
<p class=key>{_key(decisions)}</p>
{body}
</body></html>
"""
