"""RuleSet -> Plan: the rules compiled into the series to count and the checks to run."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from guard.events import Event, Signal
from guard.rules.models import Rule, RuleSet, Selector, Where

Matcher = Callable[[Event], bool]


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One signal (with its filters) counted over one window length; rules share equal specs."""

    key: str
    signal: Signal
    window: float
    matches: Matcher


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    numerator: SeriesSpec
    denominator: SeriesSpec | None
    applies_to: Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Plan:
    rules: tuple[CompiledRule, ...]
    series_by_signal: dict[Signal, tuple[SeriesSpec, ...]]
    series_keys: frozenset[str]
    retention: float  # how long an idle campaign's state can still matter

    def rules_for(self, campaign_id: str) -> tuple[CompiledRule, ...]:
        return tuple(compiled for compiled in self.rules if compiled.applies_to(campaign_id))


def compile_plan(rules: RuleSet) -> Plan:
    specs: dict[str, SeriesSpec] = {}

    def spec(selector: Selector, window: float) -> SeriesSpec:
        key = f"{selector.model_dump_json()}@{window:g}"
        if key not in specs:
            specs[key] = SeriesSpec(key, Signal(selector.signal), window, _matcher(selector.where))
        return specs[key]

    compiled = []
    for rule in rules.rules:
        if rule.rate is not None:
            numerator, denominator = spec(rule.rate.of, rule.window), spec(rule.rate.per, rule.window)
        else:
            assert rule.count is not None
            numerator, denominator = spec(rule.count, rule.window), None
        compiled.append(CompiledRule(rule, numerator, denominator, _campaign_filter(rule)))
    by_signal: dict[Signal, list[SeriesSpec]] = {}
    for series in specs.values():
        by_signal.setdefault(series.signal, []).append(series)
    return Plan(
        rules=tuple(compiled),
        series_by_signal={signal: tuple(series) for signal, series in by_signal.items()},
        series_keys=frozenset(specs),
        retention=rules.retention,
    )


def _glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))


def _matcher(where: Where) -> Matcher:
    checks: list[Matcher] = []
    if where.bounce_type is not None:
        bounce_type = where.bounce_type
        checks.append(lambda event: event.bounce_type == bounce_type)
    if where.recipient_domain is not None:
        domains = _glob_regex(tuple(pattern.lower() for pattern in where.recipient_domain))
        checks.append(
            lambda event: event.recipient_domain is not None and domains.match(event.recipient_domain) is not None
        )
    if where.smtp_status is not None:
        statuses = re.compile(
            "|".join(re.escape(pattern).replace("x", r"\d{1,3}") + "$" for pattern in where.smtp_status)
        )
        checks.append(lambda event: event.smtp_status is not None and statuses.match(event.smtp_status) is not None)
    if not checks:
        return lambda event: True
    if len(checks) == 1:
        return checks[0]
    return lambda event: all(check(event) for check in checks)


def _campaign_filter(rule: Rule) -> Callable[[str], bool]:
    include, exclude = _glob_regex(rule.campaigns.include), rule.campaigns.exclude
    excluded = _glob_regex(exclude) if exclude else None
    return lambda campaign_id: (
        include.match(campaign_id) is not None
        and not (excluded is not None and excluded.match(campaign_id) is not None)
    )
