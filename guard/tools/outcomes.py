"""What becomes of a decision, in the audit's words, without calling anything: `guard test`
and `guard replay` say it the way the live guard would record it."""

from __future__ import annotations

from typing import Literal

from guard.engine import Decision

# paused: a pause call to Leadterra; already_paused: another rule's pause decision for the campaign
# moments earlier covers it (it calls nobody); recorded: an alert, only audited
DecisionOutcome = Literal["paused", "already_paused", "recorded"]


def outcome_of(decision: Decision) -> DecisionOutcome:
    if decision.rule.action != "pause":
        return "recorded"
    return "already_paused" if decision.superseded_by is not None else "paused"


def compared(decision: Decision) -> float:
    """The value the rule compared with its threshold: the Wilson lower bound where the rule sets
    `confidence`, else the value itself."""
    return decision.lower_bound if decision.lower_bound is not None else decision.value


def evidence_text(decision: Decision) -> str:
    """`14 of 150 (9.33%; 99.9% sure over 4.02%)` or `10 events`: what the rule counted."""
    rule = decision.rule
    if decision.denominator is None:
        return f"{decision.numerator} events"
    if rule.cusum is not None:
        return f"a cusum of {decision.value:.2f} ({decision.numerator} of {decision.denominator} since it rose)"
    text = f"{decision.numerator} of {decision.denominator} ({decision.value:.2%}"
    if decision.lower_bound is not None and rule.confidence is not None:
        text += f"; {rule.confidence:.1%} sure over {decision.lower_bound:.2%}".replace(".0% sure", "% sure")
    return text + ")"
