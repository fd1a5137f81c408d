"""The rule language: frozen pydantic models, strict about unknown keys.

A rule file looks like a Prometheus rule file: `groups:` of named `rules:`, each with a condition,
a `window`, a `threshold`, an optional `for`, `labels` and a `description`. The condition is
either a `rate` (one signal per another, e.g. hard bounces per send) or a `count` of one signal.
A rule fires when its value reaches the threshold (value >= threshold). A `cusum` condition is a
sequential test instead: a statistic that climbs on `of` events and drifts down on `per` events,
firing when it reaches the level its false-alarm budget sets.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cached_property
from statistics import NormalDist
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from guard.rules.durations import PATTERN as DURATION_PATTERN
from guard.rules.durations import format_duration, parse_duration
from guard.rules.filters import CampaignFilter, Frozen, Selector, WorkspaceFilter
from guard.rules.notify import Notify

MAX_DURATION = 30 * 86400.0
LAST_N_IDLE_HORIZON = 86400.0

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}],
            "description": "A duration such as '90s', '15m', '1h30m', '7d', or seconds as a number.",
        }
    ),
]


def _percent(value: object) -> object:
    """'4%' and '4 %' -> 0.04; other text names the forms a threshold takes."""
    if isinstance(value, bool):
        raise ValueError("a threshold is a number or a percentage such as '0.3%', not a boolean")
    if not isinstance(value, str):
        return value
    text = value.strip()
    if match := re.fullmatch(r"([-+]?[\d.]+)\s*(%|percent|per ?cent|pct)", text, re.IGNORECASE):
        number = _number(match[1], value)
        if match[2] != "%":
            raise ValueError(f"{value!r}: write a percentage as '{number:g}%' (or the fraction {number / 100:g})")
        return number / 100
    if text.endswith("%"):
        raise ValueError(f"{value!r} is not a percentage; write e.g. '0.3%'")
    return _number(text, value)


def _number(text: str, value: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a number; write a percentage such as '4%', a fraction such as 0.04, "
            "or a whole number of events for a count"
        ) from None


MAX_LAST = 100_000  # the longest count window (`last: N`) a rule may ask for


class OutcomeDelay(Frozen):
    """How long after its `per` event an `of` event arrives (a complaint after its send): log-normal,
    half within `median`, 99% within `max`, all within `max`."""

    median: Duration = Field(description="Half of the `of` events arrive within this of their `per` event, e.g. '2h'.")
    max: Duration = Field(description="Every `of` event arrives within this, e.g. '2d' (99% by the curve).")

    @model_validator(mode="after")
    def _median_below_max(self) -> OutcomeDelay:
        if not 1 <= self.median < self.max <= MAX_DURATION:
            raise ValueError(
                f"the median delay ({format_duration(self.median)}) must be at least 1s and below max "
                f"({format_duration(self.max)}), which is at most 30d"
            )
        return self

    def arrived(self, age: float) -> float:
        """The share of `of` events that have arrived `age` seconds after their `per` event."""
        if age <= 0:
            return 0.0
        if age >= self.max:
            return 1.0
        spread = math.log(self.max / self.median) / _Z99
        return NormalDist().cdf(math.log(age / self.median) / spread)


_Z99 = NormalDist().inv_cdf(0.99)


class RateCondition(Frozen):
    """`of` events per `per` events within the window, e.g. hard bounces per send."""

    of: Selector
    per: Selector
    delay: OutcomeDelay | None = Field(
        None,
        description="Time windows: `of` events arrive this long after their `per` event (complaints after their "
        "send), so the denominator counts each `per` event by the share of its `of` events due within the window: "
        "a send too recent to have complained counts in part, a send from before the window whose complaints "
        "still land in it counts too.",
    )


def _fraction(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a rate is a number or a percentage such as '2%', not a boolean")
    return _percent(value)


Fraction = Annotated[
    float,
    BeforeValidator(_fraction),
    Field(gt=0, lt=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                {"type": "string", "pattern": r"^\s*[0-9]*\.?[0-9]+\s*%\s*$"},
            ],
            "description": "A fraction between 0 and 1, or a percentage such as '2%'.",
        }
    ),
]


class CusumCondition(Frozen):
    """A sequential test of each `per` event (e.g. a send) as a Bernoulli trial of an `of` event
    (e.g. a hard bounce): the CUSUM of the log-likelihood ratio between the `healthy` and the `bad` rate.

    Each `per` event adds ln((1-bad)/(1-healthy)) (a clean send: down), each `of` event adds
    ln(bad/healthy) - ln((1-bad)/(1-healthy)) (it turns one of those sends into an outcome: up); the
    statistic never goes below 0 and fires at the level h that keeps the false-alarm budget (see
    `threshold`). Outcomes arrive after their sends, so each event counts as it arrives."""

    of: Selector
    per: Selector
    healthy: Fraction = Field(
        description="The `of` rate of a good campaign, e.g. '2%': at or below it the statistic falls."
    )
    bad: Fraction = Field(
        description="The `of` rate worth firing on, above `healthy`, e.g. '8%': at or above it the statistic climbs."
    )
    false_alarms: Fraction = Field(
        description="The false-alarm budget: at most this share of campaigns at the healthy rate fires by chance, "
        "e.g. '0.1%'..."
    )
    campaign_size: int = Field(
        ge=1,
        le=10**9,
        description="...each sending this many `per` events at the healthy rate; the alarm level follows from both.",
    )

    @model_validator(mode="after")
    def _bad_above_healthy(self) -> CusumCondition:
        if self.bad <= self.healthy:
            raise ValueError(
                f"bad ({self.bad:.4g}) must be above healthy ({self.healthy:.4g}): the statistic climbs only at rates "
                "nearer `bad` than `healthy`"
            )
        return self

    @cached_property
    def fall(self) -> float:
        """Added per `per` event (negative): the log-likelihood ratio of a send without an outcome."""
        return math.log((1 - self.bad) / (1 - self.healthy))

    @cached_property
    def rise(self) -> float:
        """Added per `of` event: ln(bad/healthy), less the clean-send step its send already added."""
        return math.log(self.bad / self.healthy) - self.fall

    @cached_property
    def threshold(self) -> float:
        """The alarm level h in nats: a campaign of `campaign_size` trials at the healthy rate fires by
        chance with probability `false_alarms`, by Siegmund's approximation of the average run to a
        false alarm, ARL0 = (e^h - h - 1) / I0 (I0 the information per healthy trial), with
        false alarms as rare events: 1 - exp(-campaign_size / ARL0) = false_alarms. The overshoot
        at the alarm makes the true chance a little smaller; a rate below `healthy`, far smaller."""
        healthy_information = self.healthy * math.log(self.healthy / self.bad) + (1 - self.healthy) * math.log(
            (1 - self.healthy) / (1 - self.bad)
        )
        arl = self.campaign_size / -math.log1p(-self.false_alarms)
        level = math.log(arl * healthy_information + 1)
        for _ in range(100):  # e^h = ARL0 * I0 + h + 1: a contraction, converged in a few steps
            level = math.log(arl * healthy_information + level + 1)
        return max(level, 1e-9)


def _condition(info: ValidationInfo) -> str | None:
    """ "rate", "count" or "cusum" when exactly one is given (else the model check reports it)."""
    given = [name for name in ("rate", "count", "cusum") if info.data.get(name) is not None]
    return given[0] if len(given) == 1 else None


# what a rule's decision says of its evidence: the condition, its window, threshold and bounds, whom it counts
_JUDGING = {"rate", "count", "cusum", "window", "last", "threshold", "min_volume", "confidence", "scope"}
_JUDGING |= {"campaigns", "workspaces"}


class Rule(Frozen):
    """One threshold rule over a sliding event-time window of a campaign's events."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = Field(min_length=1, description="Why the rule exists; shown in audits and logs.")
    rate: RateCondition | None = Field(None, description="Fire on a rate; give one of `rate`, `count`, `cusum`.")
    count: Selector | None = Field(None, description="Fire on a count; give one of `rate`, `count`, `cusum`.")
    cusum: CusumCondition | None = Field(
        None,
        description="Fire on a sequential test between a healthy and a bad rate, instead of `rate` or `count`: "
        "no `window`, `last`, `threshold`, `min_volume` or `confidence` (the alarm level follows from its budget).",
    )
    window: Duration | None = Field(
        None, description="Sliding event-time window, from 1m to 30d. A rate rule may give `last` instead."
    )
    last: int | None = Field(
        None,
        ge=10,
        le=MAX_LAST,
        description="Rate rules: judge the campaign's last N `per` events (e.g. sends) instead of a time window.",
    )
    threshold: Annotated[float | None, BeforeValidator(_percent)] = Field(
        None,
        description="Fires when the value reaches this: a fraction or percentage ('0.3%') for a rate, "
        "a whole number for a count. Required for both; a `cusum` rule has none.",
    )
    min_volume: int | None = Field(
        None,
        ge=1,
        validate_default=True,
        description="A rate rule is silent until `per` has at least this many events in the window.",
    )
    confidence: float | None = Field(
        None,
        gt=0.5,
        lt=1.0,
        description="Rate rules: fire only when the Wilson lower bound of the rate at this one-sided confidence "
        "reaches the threshold, so a tiny sample cannot fire and a large disaster fires fast.",
    )
    keep_firing_for: Duration = Field(
        0.0,
        le=MAX_DURATION,
        description="A breach counts as over only after the condition has been false this long (anti-flap).",
    )
    for_: Duration = Field(
        0.0, alias="for", le=MAX_DURATION, description="The condition must hold this long (event time)."
    )
    cooldown: Duration = Field(
        3600.0, le=MAX_DURATION, description="After firing, the rule stays quiet this long per campaign."
    )
    action: Literal["pause", "alert"] = Field("pause", description="pause the campaign, or alert (record only).")
    severity: Literal["critical", "warning", "info"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict, description="Free labels copied into every audit event.")
    scope: Literal["campaign", "workspace", "sender", "sender_domain"] = Field(
        "campaign",
        description="Whose events the rule counts together: one campaign's (the default), or those of every campaign "
        "of a workspace (`workspaceId` or the topic's mapped workspace), a sender account (`senderAccountId`) or a "
        "sending domain (the domain of `from`). When it fires for a scope, every campaign of the scope with events "
        "within the rule's look-back is paused, and each campaign that joins while it fires.",
    )
    campaigns: CampaignFilter = CampaignFilter()
    workspaces: WorkspaceFilter | None = Field(
        None,
        description="Leadterra workspace id globs: the rule applies only to campaigns in these workspaces (of "
        "`workspaceId` or the topic's mapped workspace); without it, to every campaign.",
    )
    notify: Notify | None = Field(None, description="Who is told about this rule's outcomes (else the file's).")

    @field_validator("window")
    @classmethod
    def _window_range(cls, window: float | None) -> float | None:
        if window is not None and not 60 <= window <= MAX_DURATION:
            raise ValueError(f"window must be between 1m and 30d, got {format_duration(window)}")
        return window

    @field_validator("threshold")
    @classmethod
    def _threshold_fits_condition(cls, threshold: float | None, info: ValidationInfo) -> float | None:
        if threshold is None:
            return None
        if not math.isfinite(threshold):
            raise ValueError("a threshold is a finite number")
        condition = _condition(info)
        if condition == "rate" and not 0 < threshold <= 1:
            hint = (
                f"; this one reads as {threshold:.0%} (for {threshold:g} percent write '{threshold:g}%')"
                if 1 < threshold <= 100
                else ""
            )
            raise ValueError(f"a rate threshold is a fraction in (0, 1], e.g. 0.03 or '3%'{hint}")
        if condition == "count" and (threshold < 1 or threshold != int(threshold)):
            raise ValueError("a count threshold is a whole number >= 1")
        return threshold

    @field_validator("min_volume")
    @classmethod
    def _volume_fits_condition(cls, min_volume: int | None, info: ValidationInfo) -> int | None:
        condition = _condition(info)
        if condition == "rate" and min_volume is None:
            raise ValueError(
                "a rate rule needs `min_volume`, e.g. `min_volume: 50`: it stays silent until `per` has that many "
                "events (1 bounce in 2 sends is no evidence)"
            )
        if condition in ("count", "cusum") and min_volume is not None:
            raise ValueError("`min_volume` applies to rate rules only")
        return min_volume

    @model_validator(mode="after")
    def _one_condition(self) -> Rule:
        if self.cusum is not None:
            return self._cusum_alone()
        if (self.rate is None) == (self.count is None):
            raise ValueError("give exactly one condition: `rate`, `count` or `cusum`")
        if self.threshold is None:
            raise ValueError(f"a {'rate' if self.rate is not None else 'count'} rule needs `threshold`")
        if self.count is not None and (self.last is not None or self.confidence is not None):
            raise ValueError("`last` and `confidence` apply to rate rules only")
        if (self.window is None) == (self.last is None):
            raise ValueError("give exactly one of `window` (a duration) or `last` (a number of `per` events)")
        if self.last is not None and self.min_volume is not None and self.min_volume > self.last:
            raise ValueError(f"min_volume {self.min_volume} can never be reached within the last {self.last} events")
        return self

    def _cusum_alone(self) -> Rule:
        others = [name for name in ("rate", "count") if getattr(self, name) is not None]
        if others:
            raise ValueError(f"give exactly one condition: `cusum` or `{others[0]}`, not both")
        given = [name for name in ("window", "last", "threshold", "confidence") if getattr(self, name) is not None]
        if given:
            raise ValueError(
                f"a cusum rule takes no `{given[0]}`: it weighs every `per` event since the campaign's episode "
                "began, and its alarm level follows from `false_alarms` and `campaign_size`"
            )
        return self

    @model_validator(mode="after")
    def _scope_filters(self) -> Rule:
        if self.scope == "campaign":
            return self
        if self.campaigns != CampaignFilter():
            raise ValueError(
                f"a rule over a {self.scope} judges all of its campaigns together: `campaigns` applies to "
                "campaign rules only"
            )
        if self.workspaces is not None and self.scope != "workspace":
            raise ValueError(
                f"a rule over a {self.scope} counts events of any workspace: `workspaces` applies to campaign "
                "and workspace rules only"
            )
        return self

    @model_validator(mode="after")
    def _delay_needs_a_time_window(self) -> Rule:
        if self.rate is not None and self.rate.delay is not None and self.window is None:
            raise ValueError(
                "`rate.delay` applies to time windows: a count window (`last`) joins outcomes to their sends instead"
            )
        return self

    @property
    def level(self) -> float:
        """The value at which the rule fires: its threshold, or a cusum's alarm level."""
        if self.cusum is not None:
            return self.cusum.threshold
        assert self.threshold is not None
        return self.threshold

    @property
    def span(self) -> float:
        """How far back in event time the rule looks: its window (and the outcome delay before it); a
        `last` or `cusum` rule keeps a campaign's evidence through up to a day without events."""
        if self.window is None:
            return LAST_N_IDLE_HORIZON
        return self.window + (self.rate.delay.max if self.rate is not None and self.rate.delay is not None else 0.0)

    def judges_as(self, other: Rule) -> bool:
        """Whether `other` judges what this rule does, as it does (whatever its wording, labels, action, channels or
        how long it keeps firing): a firing of a rule over a scope edited otherwise is judged afresh (scopes.py)."""
        return self.model_dump(include=_JUDGING) == other.model_dump(include=_JUDGING)

    @cached_property
    def version(self) -> str:
        """A short hash of the rule's content: audits say exactly which rule text fired."""
        # `notify` says who hears of a decision, not what is decided: a new channel keeps the version;
        # a rule without `workspaces` keeps the version it had before rules could name workspaces
        # nor does a campaign rule's version name its (default) scope
        unchanged = (*(() if self.workspaces else ("workspaces",)), *(("scope",) if self.scope == "campaign" else ()))
        content = self.model_dump(mode="json", by_alias=True, exclude={"notify", *unchanged})
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class RuleGroup(Frozen):
    name: str = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)


class RuleFile(Frozen):
    """The top level of a rule file."""

    groups: tuple[RuleGroup, ...] = Field(min_length=1)
    notify: Notify | None = Field(None, description="Who is told about the outcomes of every rule of this file.")


class RuleSet(Frozen):
    """Every rule from every file, names unique."""

    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()

    @cached_property
    def scope_kinds(self) -> tuple[str, ...]:
        """The scopes beyond a campaign that some rule counts, e.g. ("sender_domain",)."""
        return tuple(sorted({rule.scope for rule in self.rules if rule.scope != "campaign"}))

    def for_engine(self, scopes: bool) -> RuleSet:
        """The rules an engine of campaigns (`scopes` False) or of scopes (True) counts."""
        if not self.scope_kinds:
            return self if not scopes else RuleSet(rules=(), sources=self.sources)
        return RuleSet(rules=tuple(r for r in self.rules if (r.scope != "campaign") == scopes), sources=self.sources)

    @cached_property
    def retention(self) -> float:
        """How far back in event time any rule looks: its window, cooldown or `for`."""
        return max((max(rule.span, rule.cooldown, rule.for_, rule.keep_firing_for) for rule in self.rules), default=0.0)
