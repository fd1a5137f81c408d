"""`guard test`: rule unit tests, like `promtool test rules`.

A test file names the rules it tests and gives, per test, each campaign's events in a compact
script and the decisions expected::

    rules: ../default.yaml
    tests:
      - name: a stale list is paused once enough has been sent
        input:
          camp_a: 200 sent over 20m, then 15 hard_bounce over 5m
        expect:
          - {campaign: camp_a, rule: hard-bounce-rate, at: 20m40s}

A script is steps joined by ", then ": `N KIND [with P% KIND] [to DOMAIN] [status X.Y.Z]
[over DURATION]` or `wait DURATION` or `started`. KIND is one of sent, hard_bounce, soft_bounce,
complaint, unsubscribe, reply. The N events of a step are spread evenly so the last one lands at
the end of `over` (all at once without it); `with 2% hard_bounce` follows every 50th of them with
a hard bounce a second later. Times are offsets from the test's start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.engine import Engine
from guard.errors import GuardError
from guard.events import Event, Signal
from guard.rules import load_rules
from guard.rules.durations import format_duration, parse_duration
from guard.rules.models import Duration

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z; only offsets from it matter

_KINDS = {
    "sent": (Signal.SENT, None),
    "hard_bounce": (Signal.BOUNCED, "hard"),
    "soft_bounce": (Signal.BOUNCED, "soft"),
    "complaint": (Signal.COMPLAINED, None),
    "unsubscribe": (Signal.UNSUBSCRIBED, None),
    "reply": (Signal.REPLIED, None),
}
_STEP = re.compile(
    r"^(?P<count>\d+)\s+(?P<kind>[a-z_]+)(?:\s+with\s+(?P<percent>\d+(?:\.\d+)?)%\s+(?P<mixed>[a-z_]+))?"
    r"(?:\s+to\s+(?P<domain>\S+))?(?:\s+status\s+(?P<status>[245]\.\d{1,3}\.\d{1,3}))?"
    r"(?:\s+over\s+(?P<over>\S+))?$"
)


class RuleTestError(GuardError):
    """A rule test file is invalid."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Expectation(_Frozen):
    campaign: str
    rule: str
    at: Duration | None = Field(None, description="Event time offset of the firing; any time if omitted.")


class RuleTest(_Frozen):
    name: str
    input: dict[str, str] = Field(description="campaign id -> event script")
    expect: list[Expectation] = Field(default_factory=list, description="Decisions expected; [] = nothing fires.")


class RuleTestFile(_Frozen):
    rules: str = Field(description="Rule file or directory, relative to this file.")
    tests: list[RuleTest] = Field(min_length=1)


@dataclass(frozen=True)
class Outcome:
    name: str
    missing: list[str]
    unexpected: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected


def script_events(campaign_id: str, script: str) -> list[Event]:
    """Events of one campaign's script, in order."""
    events, clock, number = [], 0.0, 0
    for step in (part.strip() for part in script.split(", then ")):
        if step.startswith("wait "):
            clock += parse_duration(step.removeprefix("wait ").strip())
            continue
        if step == "started":
            events.append(Event(Signal.STARTED, campaign_id, START + clock))
            continue
        match = _STEP.match(step)
        if match is None or match["kind"] not in _KINDS or (match["mixed"] and match["mixed"] not in _KINDS):
            raise RuleTestError(
                f"{campaign_id}: cannot read step {step!r}; write e.g. '200 sent over 20m', "
                f"'500 sent with 2% hard_bounce over 1h', '15 hard_bounce to gmail.com over 5m', 'wait 1h' "
                f"or 'started' (kinds: {', '.join(_KINDS)})"
            )
        count, over = int(match["count"]), parse_duration(match["over"]) if match["over"] else 0.0
        every = round(100 / float(match["percent"])) if match["mixed"] else 0
        for index in range(count):
            at = START + clock + over * (index + 1) / count
            kinds = [match["kind"]] + ([match["mixed"]] if every and (index + 1) % every == 0 else [])
            for offset, kind in enumerate(kinds):
                number += 1
                signal, bounce_type = _KINDS[kind]
                events.append(
                    Event(
                        signal,
                        campaign_id,
                        at + offset,
                        message_id=f"{campaign_id}-{number}",
                        recipient_domain=match["domain"],
                        bounce_type=bounce_type,
                        smtp_status=match["status"],
                    )
                )
        clock += over
    return events


def run_test(test: RuleTest, engine: Engine) -> Outcome:
    streams = [script_events(campaign, script) for campaign, script in test.input.items()]
    events = sorted((event for stream in streams for event in stream), key=lambda event: event.time)
    actual = [(d.campaign_id, d.rule.name, round(d.fired_at - START, 3)) for e in events for d in engine.process(e)]
    unmatched = list(actual)
    missing = []
    for expected in test.expect:
        at = None if expected.at is None else round(expected.at, 3)
        found = next((a for a in unmatched if a[:2] == (expected.campaign, expected.rule) and at in (None, a[2])), None)
        if found is None:
            missing.append(_describe(expected.campaign, expected.rule, at))
        else:
            unmatched.remove(found)
    return Outcome(test.name, missing, [_describe(*a) for a in unmatched])


def _describe(campaign: str, rule: str, at: float | None) -> str:
    return f"{campaign} {rule}" + ("" if at is None else f" at {format_duration(at)}")


def run_file(path: Path) -> list[Outcome]:
    try:
        spec = RuleTestFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise RuleTestError(f"{path}: {error}") from None
    rules = load_rules((path.parent / spec.rules).resolve())
    return [run_test(test, Engine(rules)) for test in spec.tests]


def report(path: Path, outcomes: list[Outcome]) -> str:
    lines = []
    for outcome in outcomes:
        lines.append(f"{'PASS' if outcome.passed else 'FAIL'}  {path}: {outcome.name}")
        lines.extend(f"   - expected, did not fire: {line}" for line in outcome.missing)
        lines.extend(f"   + fired, not expected:    {line}" for line in outcome.unexpected)
    return "\n".join(lines)
