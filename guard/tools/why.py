"""`guard replay --campaign X --why`: how close each rule came to firing for one campaign.

During a replay, after each of the campaign's events, every rule's measure is read from the engine;
per rule the closest approach is kept: the highest compared value (the Wilson lower bound where the
rule sets `confidence`) relative to the threshold, among the moments it had its min_volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from guard.contracts.events import Event
from guard.engine import Decision, Engine, Measure
from guard.rules import RuleSet
from guard.rules.durations import format_duration
from guard.rules.models import Rule
from guard.tools.explain import fewest_to_fire, noun


@dataclass
class _Approach:
    closeness: float = -1.0  # compared value / threshold at the closest moment; -1: never judged
    measure: Measure | None = None
    at: float = 0.0
    most_volume: int = 0  # the largest `per` count seen, for rules never judged


class ClosestApproach:
    """An `on_event` callback of `replay`: per rule, the campaign's closest approach to firing."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        self.approaches: dict[str, _Approach] = {}
        self.events = 0

    def __call__(self, engine: Engine, event: Event) -> None:
        if event.campaign_id != self.campaign_id:
            return
        self.events += 1
        for compiled in engine.rules_for(self.campaign_id):
            self.approaches.setdefault(compiled.rule.name, _Approach())
        for name, measure in engine.measure(self.campaign_id).items():
            rule_approach = self.approaches[name]
            rule = next(c.rule for c in engine.rules_for(self.campaign_id) if c.rule.name == name)
            rule_approach.most_volume = max(rule_approach.most_volume, measure.denominator or 0)
            if measure.denominator is not None and measure.denominator < (rule.min_volume or 0):
                continue
            compared = measure.lower_bound if measure.lower_bound is not None else measure.value
            closeness = compared / rule.level
            if closeness > rule_approach.closeness:
                rule_approach.closeness, rule_approach.measure, rule_approach.at = closeness, measure, event.time

    def report(self, rules: RuleSet, decisions: list[Decision]) -> str:
        """One line per rule of the set, for the campaign."""
        if not self.events:
            return f"{self.campaign_id}: no events in this history\n"
        fired = {d.rule.name: d for d in reversed(decisions) if d.campaign_id == self.campaign_id}
        lines = [f"{self.campaign_id}: closest approach of each rule over {self.events:,} events"]
        for rule in rules.rules:
            lines.append(f"  {rule.name}: {self._line(rule, fired.get(rule.name))}")
        return "".join(line + "\n" for line in lines)

    def _line(self, rule: Rule, decision: Decision | None) -> str:
        if decision is not None:
            return f"fired at {_utc(decision.fired_at)} (see the decisions above)"
        approach = self.approaches.get(rule.name)
        if approach is None:
            return "does not apply to this campaign (its `campaigns` filter)"
        measure = approach.measure
        if measure is None:
            if rule.rate is None:
                return f"no {noun(rule.count)} counted" if rule.count is not None else "nothing above zero yet"
            most, per = approach.most_volume, noun(rule.rate.per)
            return f"never judged: at most {most:,} {per} in its window, below its min_volume of {rule.min_volume:,}"
        threshold = _value(rule.level, rule)
        if rule.cusum is not None:
            return (
                f"closest at {_utc(approach.at)}: a cusum of {measure.value:.2f} against its alarm level "
                f"{rule.level:.2f} ({measure.numerator:,} {noun(rule.cusum.of)} and {measure.denominator:,} "
                f"{noun(rule.cusum.per)} since it last rose from zero)"
            )
        if measure.denominator is None:
            assert rule.count is not None and rule.window is not None
            return (
                f"closest at {_utc(approach.at)}: {measure.numerator:,} {noun(rule.count)} within "
                f"{format_duration(rule.window)}, it fires at {threshold}"
            )
        compared = f"{measure.value:.2%}"
        if measure.lower_bound is not None:
            compared += f", {rule.confidence:.1%} sure over {measure.lower_bound:.2%}".replace(".0% sure", "% sure")
        needed = fewest_to_fire(rule, measure.denominator)
        need = f"; it fires at >= {needed:,} of {measure.denominator:,}" if needed is not None else ""
        return (
            f"closest at {_utc(approach.at)}: {measure.numerator:,} of {measure.denominator:,} ({compared}) "
            f"vs threshold {threshold}{need}"
        )


def _value(value: float, rule: Rule) -> str:
    return f"{value:.2%}" if rule.rate is not None else f"{value:g}"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
