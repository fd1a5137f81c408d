"""RuleSet -> Plan: the rules compiled into the series to count and the checks to run."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from statistics import NormalDist
from typing import Any

from guard.contracts.events import Event, Signal
from guard.engine.cusum import Cusum
from guard.engine.kinds import PYTHON, Kinds
from guard.engine.windows import BUCKETS_PER_WINDOW, LastN, SlidingCount
from guard.rules.filters import Selector, Where
from guard.rules.models import CusumCondition, Rule, RuleSet

Matcher = Callable[[Event], bool]


Series = SlidingCount | LastN | Cusum


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """Where events of one signal (with its filters) are counted; rules share equal specs.

    A time window is one series per selector and window; a `last` window or a cusum is one series
    fed by two specs of the same key: the `of` events and the `per` events."""

    key: str
    slot: int  # where a campaign keeps this series (one list per campaign, no dict)
    signal: Signal
    matches: Matcher | None  # None: every event of the signal
    make: Callable[[], Series]
    add: Callable[[Any, float, str | None, float], bool]  # (series, time, message id, now) -> counted


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    numerator: SeriesSpec
    denominator: SeriesSpec | None
    applies_to: Callable[[str, str | None], bool] | None  # (campaign id, workspace id); None: every campaign
    z: float | None  # one-sided normal quantile of `confidence`
    # `rate.delay`: the weight of a `per` event by its age in buckets of the denominator's longer window
    weights: tuple[float, ...] | None
    # the numerator a rule needs before it can hold: threshold (count) or threshold * min_volume
    # (rate: n/d >= t with d >= v means n >= t*v), or a cusum's level; below it, evaluating is pointless
    needed: float


# What one event of a signal feeds, as plain tuples for the hot path: (slot, matches, add, make)
Feed = tuple[int, Matcher | None, Callable[[Any, float, str | None, float], bool], Callable[[], Series]]


@dataclass(frozen=True, slots=True)
class Plan:
    rules: tuple[CompiledRule, ...]
    feeds: dict[Signal, tuple[Feed, ...]]
    series_keys: tuple[str, ...]  # by slot
    numerator_signals: frozenset[Signal]  # the signals whose events can make a rule hold
    retention: float  # how long an idle campaign's state can still matter
    scoped: bool  # some rule names campaigns or workspaces

    def rules_for(self, campaign_id: str, workspace_id: str | None = None) -> tuple[CompiledRule, ...]:
        """The rules that apply to a campaign in a workspace (None: its events named none)."""
        if not self.scoped:
            return self.rules  # the common case: no rule names campaigns or workspaces, one shared tuple
        return tuple(
            compiled
            for compiled in self.rules
            if compiled.applies_to is None or compiled.applies_to(campaign_id, workspace_id)
        )


def compile_plan(rules: RuleSet, kinds: Kinds = PYTHON, *, skip_late_sends: bool = True) -> Plan:
    """The rules as what each event feeds and what each rule reads, counted with `kinds`' series. Without
    `skip_late_sends`, `last:` and `cusum` series count every send however late (windows.LATE_PER_SECONDS): for an
    engine of scopes, whose events are forwarded from every input partition, each read at its own lag, so a send
    behind the newest is no sign of history delivered again."""
    sliding, last_of, cusum_of = kinds.sliding, kinds.last, kinds.cusum
    arrival = {} if skip_late_sends else {"newest_per": math.nan}  # a NaN newest: no send is ever behind it
    specs: dict[tuple[str, str], SeriesSpec] = {}
    slots: dict[str, int] = {}

    def slot(key: str) -> int:
        return slots.setdefault(key, len(slots))

    numerators = {_numerator_key(rule) for rule in rules.rules if rule.cusum is None}

    def windowed(selector: Selector, window: float) -> SeriesSpec:
        key = f"{selector.model_dump_json()}@{window:g}"
        if (key, "all") not in specs:
            make = partial(sliding.over, window, key in numerators)  # only numerators quote message ids
            specs[key, "all"] = SeriesSpec(
                key, slot(key), Signal(selector.signal), _matcher(selector.where), make, sliding.add
            )
        return specs[key, "all"]

    def last_key(of: Selector, per: Selector) -> str:
        return f"{of.model_dump_json()}/{per.model_dump_json()}@last"

    # one LastN per (of, per) serves every N asked of it: it keeps the largest N
    sizes: dict[str, int] = {}
    for rule in rules.rules:
        if rule.rate is not None and rule.last is not None:
            key = last_key(rule.rate.of, rule.rate.per)
            sizes[key] = max(sizes.get(key, 0), rule.last)

    def last(of: Selector, per: Selector) -> tuple[SeriesSpec, SeriesSpec]:
        key = last_key(of, per)
        if (key, "of") not in specs:
            make = partial(last_of, sizes[key], **arrival)
            # `per` first, as for a cusum: an event that is both is a send, then its outcome (skipped with its send)
            specs[key, "per"] = SeriesSpec(
                key, slot(key), Signal(per.signal), _matcher(per.where), make, last_of.add_per
            )
            specs[key, "of"] = SeriesSpec(key, slot(key), Signal(of.signal), _matcher(of.where), make, last_of.add_of)
        return specs[key, "of"], specs[key, "per"]

    def cusum(condition: CusumCondition) -> tuple[SeriesSpec, SeriesSpec]:
        # rules with the same test share a statistic, whatever their budgets (only the level differs)
        test = f"{condition.of.model_dump_json()}/{condition.per.model_dump_json()}"
        key = f"{test}@cusum:{condition.healthy!r}:{condition.bad!r}"
        if (key, "of") not in specs:
            make = partial(cusum_of, condition.rise, condition.fall, **arrival)
            of, per = condition.of, condition.per
            # `per` first: an event that is both (e.g. hard bounces per bounce) is a trial, then its outcome
            specs[key, "per"] = SeriesSpec(
                key, slot(key), Signal(per.signal), _matcher(per.where), make, cusum_of.add_per
            )
            specs[key, "of"] = SeriesSpec(key, slot(key), Signal(of.signal), _matcher(of.where), make, cusum_of.add_of)
        return specs[key, "of"], specs[key, "per"]

    compiled = []
    for rule in rules.rules:
        if rule.cusum is not None:
            numerator, denominator = cusum(rule.cusum)
        elif rule.rate is not None and rule.last is not None:
            numerator, denominator = last(rule.rate.of, rule.rate.per)
        elif rule.rate is not None:
            assert rule.window is not None
            numerator, denominator = windowed(rule.rate.of, rule.window), windowed(rule.rate.per, rule.span)
        else:
            assert rule.count is not None and rule.window is not None
            numerator, denominator = windowed(rule.count, rule.window), None
        z = NormalDist().inv_cdf(rule.confidence) if rule.confidence is not None else None
        needed = rule.level * (rule.min_volume or 1) if rule.rate is not None else rule.level
        weights = _delay_weights(rule)
        compiled.append(CompiledRule(rule, numerator, denominator, _scope(rule), z, weights, needed - 1e-9))
    feeds: dict[Signal, list[Feed]] = {}
    for spec in specs.values():
        feeds.setdefault(spec.signal, []).append((spec.slot, spec.matches, spec.add, spec.make))
    return Plan(
        rules=tuple(compiled),
        feeds={signal: tuple(feed) for signal, feed in feeds.items()},
        series_keys=tuple(slots),
        numerator_signals=frozenset(rule.numerator.signal for rule in compiled),
        retention=rules.retention,
        scoped=any(c.applies_to is not None for c in compiled),
    )


def _delay_weights(rule: Rule) -> tuple[float, ...] | None:
    """For `rate.delay`: a `per` event aged `a` counts by the share of its `of` events due within
    the window, arrived(a) - arrived(a - window); by bucket of the denominator's window (the rule's
    window plus the delay's max), each bucket at its middle."""
    if rule.rate is None or rule.rate.delay is None or rule.window is None:
        return None
    delay, window, width = rule.rate.delay, rule.window, rule.span / BUCKETS_PER_WINDOW
    ages = [(buckets + 0.5) * width for buckets in range(BUCKETS_PER_WINDOW + 1)]
    return tuple(delay.arrived(age) - delay.arrived(age - window) for age in ages)


def _numerator_key(rule: Rule) -> str:
    selector = rule.rate.of if rule.rate is not None else rule.count
    assert selector is not None
    return f"{selector.model_dump_json()}@{rule.window or 0:g}"


def _glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))


def _matcher(where: Where) -> Matcher | None:
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
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda event: all(check(event) for check in checks)


def _scope(rule: Rule) -> Callable[[str, str | None], bool] | None:
    """Whether the rule applies to (campaign id, workspace id); None when to every campaign. A rule
    with `workspaces` applies to no campaign outside a workspace (workspace None). A rule over a scope applies only
    to the scopes of its kind (an engine of scopes keys them "<kind>:<value>", guard.engine.scopes)."""
    applies = _campaign_scope(rule)
    if rule.scope == "campaign":
        return applies
    prefix = f"{rule.scope}:"
    if applies is None:
        return lambda scope, _: scope.startswith(prefix)
    return lambda scope, workspace_id: scope.startswith(prefix) and applies(scope, workspace_id)


def _campaign_scope(rule: Rule) -> Callable[[str, str | None], bool] | None:
    campaigns = _globs(rule.campaigns.include, rule.campaigns.exclude)
    if rule.workspaces is None:
        return None if campaigns is None else lambda campaign_id, _: campaigns(campaign_id)
    workspaces = _globs(rule.workspaces.include, rule.workspaces.exclude) or (lambda _: True)
    if campaigns is None:
        return lambda _, workspace_id: workspace_id is not None and workspaces(workspace_id)
    return lambda campaign_id, workspace_id: (
        workspace_id is not None and workspaces(workspace_id) and campaigns(campaign_id)
    )


def _globs(include: tuple[str, ...], exclude: tuple[str, ...]) -> Callable[[str], bool] | None:
    """Matches ids of `include` but not of `exclude` (exclude wins); None when that is every id."""
    if include == ("*",) and not exclude:
        return None
    included = _glob_regex(include)
    excluded = _glob_regex(exclude) if exclude else None
    return lambda value: (
        included.match(value) is not None and not (excluded is not None and excluded.match(value) is not None)
    )
