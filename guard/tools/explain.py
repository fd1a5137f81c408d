"""What a rule means in counts a person can check: `guard validate --explain`.

"hard-bounce-burst: pauses when >= 12 of the last 50 sends hard-bounced (99.9% sure the rate is
over 8%); not before 20 sends (then >= 7 of 20)". The counts are the smallest that make the rule
hold, found with the engine's own test (the Wilson lower bound where `confidence` is set), so
they are what the guard does, not a rounding of the threshold.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from guard.engine.measure import wilson_lower_bound
from guard.rules.durations import format_duration
from guard.rules.models import Rule, RuleSet, Selector

# the engine's tolerance for float rates (engine._EPSILON): 3 of 1000 reaches "0.3%"
_EPSILON = 1e-9
# volumes a time-window rate rule is explained at, as multiples of its min_volume
_VOLUMES = (1, 10, 100)

_NOUNS = {"sent": "sends", "bounced": "bounces", "complained": "complaints", "unsubscribed": "unsubscribes"}
_NOUNS["replied"] = "replies"
_VERBS = {"sent": "were sent", "bounced": "bounced", "complained": "complained", "unsubscribed": "unsubscribed"}
_VERBS["replied"] = "replied"


def explain_rules(rules: RuleSet) -> list[str]:
    return [explain(rule) for rule in rules.rules]


def explain(rule: Rule) -> str:
    """One line: when the rule fires, in counts of events."""
    verb = "pauses" if rule.action == "pause" else "alerts"
    if rule.cusum is not None:
        text = f"{verb} when {_cusum(rule)}"
    elif rule.rate is None:
        assert rule.count is not None and rule.window is not None
        text = f"{verb} when >= {rule.threshold:g} {noun(rule.count)} arrive within {format_duration(rule.window)}"
    elif rule.last is not None:
        text = f"{verb} when {_last_n(rule)}"
    else:
        text = f"{verb} when, within {format_duration(rule.window or 0)}, {_windowed(rule)}"
    if rule.for_:
        text += f"; only once that holds for {format_duration(rule.for_)}"
    return f"{rule.name}: {text}{_scope(rule)}{_campaigns(rule)}"


_SCOPES = {
    "workspace": "a workspace (`workspaceId` or the topic's)",
    "sender": "a sender account (`senderAccountId`)",
    "sender_domain": "a sending domain (of `from`)",
}


_WHOLES = {"campaign": "campaigns", "workspace": "workspaces", "sender": "sender accounts", "sender_domain": "domains"}


def _scope(rule: Rule) -> str:
    """Whose events a rule over a scope counts together, and what it pauses."""
    if rule.scope == "campaign":
        return ""
    acts = "pauses" if rule.action == "pause" else "records"
    return (
        f"; counted over every campaign of {_SCOPES[rule.scope]} together, and {acts} each campaign of it with "
        f"events within {format_duration(rule.span)} (and each that joins while it fires)"
    )


def _cusum(rule: Rule) -> str:
    """A cusum in counts: how many `of` events in a row fire it from zero, and the rates it weighs."""
    cusum = rule.cusum
    assert cusum is not None
    in_a_row = math.ceil(cusum.threshold / (cusum.rise + cusum.fall) - _EPSILON)
    per, did = noun(cusum.per), _verb(cusum.of, cusum.per)
    return (
        f"the evidence that {per} {did} at {_percent(cusum.bad)} rather than {_percent(cusum.healthy)} reaches "
        f"{cusum.threshold:.2f} (a cusum; e.g. {in_a_row} {per} in a row that {did}, from a clean start); "
        f"false alarms: {_percent(cusum.false_alarms)} of {_WHOLES[rule.scope]} of {cusum.campaign_size:,} {per} at "
        f"{_percent(cusum.healthy)}"
    )


def fewest_to_fire(rule: Rule, volume: int) -> int | None:
    """The fewest `of` events among `volume` `per` events that make a rate rule hold; None if
    none can (below min_volume, or too few events for the confidence asked)."""
    if volume < (rule.min_volume or 0) or not _holds(rule, volume, volume):
        return None
    low, high = 0, volume  # holds(high); the test is monotonic in the count
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _holds(rule, middle, volume) else (middle, high)
    return high


def smallest_volume(rule: Rule, most: int) -> int | None:
    """The fewest `per` events, up to `most`, at which the rule can hold at all."""
    return next((n for n in range(max(rule.min_volume or 1, 1), most + 1) if fewest_to_fire(rule, n)), None)


def _holds(rule: Rule, count: int, volume: int) -> bool:
    if rule.confidence is not None:
        z = NormalDist().inv_cdf(rule.confidence)
        return wilson_lower_bound(count, volume, z) >= rule.threshold - _EPSILON
    return count >= rule.threshold * volume - _EPSILON


def _last_n(rule: Rule) -> str:
    assert rule.rate is not None and rule.last is not None
    per, did = noun(rule.rate.per), _verb(rule.rate.of, rule.rate.per)
    full = fewest_to_fire(rule, rule.last)
    if full is None:
        return f"never: no count of {did} among the last {rule.last} {per} reaches it{_sure(rule)}"
    text = f">= {full} of the last {rule.last} {per} {did}{_sure(rule)}"
    first = smallest_volume(rule, rule.last)
    if first is not None and first < rule.last:
        text += f"; not before {first} {per} (then >= {fewest_to_fire(rule, first)} of {first})"
    return text


def _windowed(rule: Rule) -> str:
    assert rule.rate is not None
    per, did = noun(rule.rate.per), _verb(rule.rate.of, rule.rate.per)
    first = smallest_volume(rule, 100 * (rule.min_volume or 1))
    if first is None:
        return f"never: no count of {did} reaches it{_sure(rule)}"
    volumes = sorted({first, *(multiple * (rule.min_volume or 1) for multiple in _VOLUMES[1:])})
    counts = ", ".join(f">= {fewest_to_fire(rule, n):,} of {n:,}" for n in volumes)
    text = f"{per} that {did}{_sure(rule)}: {counts} {per}; not before {first:,} {per}"
    if rule.rate.delay is not None:  # the engine weighs each send by the share of its outcomes already due
        delay = rule.rate.delay
        outcomes = _NOUNS.get(rule.rate.of.signal, "events")
        text += (
            f" (each counted by the share of its {outcomes} already due: half arrive within "
            f"{format_duration(delay.median)}, all within {format_duration(delay.max)}; a fresh one counts for less)"
        )
    return text


def _sure(rule: Rule) -> str:
    if rule.confidence is not None:
        return f" ({_percent(rule.confidence)} sure the rate is over {_percent(rule.threshold)})"
    return f" ({_percent(rule.threshold)})"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def noun(selector: Selector) -> str:
    kind = f"{selector.where.bounce_type} " if selector.where.bounce_type else ""
    return f"{kind}{_NOUNS[selector.signal]}{_qualifiers(selector)}"


def _verb(of: Selector, per: Selector) -> str:
    kind = f"{of.where.bounce_type}-" if of.where.bounce_type else ""
    qualifiers = _qualifiers(of) if _qualifiers(of) != _qualifiers(per) else ""
    return f"{kind}{_VERBS[of.signal]}{qualifiers}"


def _qualifiers(selector: Selector) -> str:
    where, text = selector.where, ""
    if where.recipient_domain:
        text += f" to {'/'.join(where.recipient_domain)}"
    if where.smtp_status:
        text += f" with status {'/'.join(where.smtp_status)}"
    return text


def _campaigns(rule: Rule) -> str:
    include, exclude = rule.campaigns.include, rule.campaigns.exclude
    text = "" if include == ("*",) else f"; campaigns {', '.join(include)} only"
    text += f"; not campaigns {', '.join(exclude)}" if exclude else ""
    if rule.workspaces is not None:
        include, exclude = rule.workspaces.include, rule.workspaces.exclude
        text += "; campaigns of a named workspace" if include == ("*",) else f"; workspaces {', '.join(include)} only"
        text += f"; not workspaces {', '.join(exclude)}" if exclude else ""
    return text
