"""`guard test`: rule unit tests, like `promtool test rules`.

A test file names the rules it tests and gives, per test, each campaign's events in a compact
script and the decisions expected::

    rules: ../default.yaml
    tests:
      - name: a stale list is paused once enough has been sent
        input:
          camp_a: 200 sent over 20m, then 15 hard_bounce over 5m
        expect:
          - {campaign: camp_a, rule: hard-bounce-rate, at: 20m40s, action: pause, outcome: paused}

A script is steps joined by ", then ": `N KIND` followed by any of `with P% KIND`, `to DOMAIN`,
`status X.Y.Z` and `over DURATION` in any order, or `wait DURATION`, or `started`. KIND is one of
sent, hard_bounce, soft_bounce, complaint, unsubscribe, reply. The N events of a step are spread
evenly so the last one lands at the end of `over` (all at once without it); `with 2% hard_bounce`
follows every 50th of them with a hard bounce a second later. Times are offsets from the test's start.
`workspaces: {camp_a: ws_acme}` beside `input` makes a campaign's events name a workspace, for
rules scoped with `workspaces:` or `scope: workspace`; a campaign not in it is in none. `senders: {camp_a:
team@acme.com}` makes a campaign's events come from that address: its sender account (`scope: sender`)
and its domain (`scope: sender_domain`), so several campaigns can share a sender.

An expectation matches a decision of its campaign and rule; `at`, `action` (pause, alert) and
`outcome` (paused: a pause call; already_paused: covered by another rule's pause moments before,
no call; recorded: an alert) narrow it when given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from guard.contracts.events import WORKSPACE_ID_PATTERN, Event, Signal
from guard.engine import Decision, Engine, decide, scopes_beside
from guard.errors import GuardError
from guard.rules import RuleFileError, RuleSet, load_rules
from guard.rules.durations import format_duration, parse_duration
from guard.rules.loader import read_document, validation_problems
from guard.rules.messages import unknown
from guard.rules.models import Duration
from guard.tools.outcomes import DecisionOutcome, evidence_text, outcome_of

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z; only offsets from it matter
TEST_SCOPE = ("tests", None, "test")  # problems name the test they are in

_KINDS = {
    "sent": (Signal.SENT, None),
    "hard_bounce": (Signal.BOUNCED, "hard"),
    "soft_bounce": (Signal.BOUNCED, "soft"),
    "complaint": (Signal.COMPLAINED, None),
    "unsubscribe": (Signal.UNSUBSCRIBED, None),
    "reply": (Signal.REPLIED, None),
}
_HEAD = re.compile(r"(?P<count>\d+)\s+(?P<kind>[A-Za-z_]+)(?=\s|$)")
# the clauses after `N KIND`, in any order, each at most once
_CLAUSES = {
    "with": re.compile(r"with\s+(?P<percent>\d+(?:\.\d+)?)\s*%\s+(?P<mixed>[A-Za-z_]+)(?=\s|$)"),
    "to": re.compile(r"to\s+(?P<domain>\S+)(?=\s|$)"),
    "status": re.compile(r"status\s+(?P<status>[245]\.\d{1,3}\.\d{1,3})(?=\s|$)"),
    "over": re.compile(r"over\s+(?P<over>\S+)(?=\s|$)"),
}
_NOTATION = (
    "a step is `N KIND` then any of `with P% KIND`, `to DOMAIN`, `status X.Y.Z`, `over DURATION` in any order, "
    "e.g. '500 sent to gmail.com with 2% hard_bounce over 1h'; or 'wait 1h', or 'started'"
)


class RuleTestError(GuardError):
    """A rule test file is invalid; one line per problem."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Expectation(_Frozen):
    campaign: str
    rule: str
    at: Duration | None = Field(None, description="Event time offset of the firing; any time if omitted.")
    action: Literal["pause", "alert"] | None = Field(None, description="The rule's action; any if omitted.")
    outcome: DecisionOutcome | None = Field(
        None, description="paused (a pause call), already_paused (covered by another pause, no call) or recorded."
    )


class RuleTest(_Frozen):
    name: str
    input: dict[str, str] = Field(description="campaign id -> event script")
    workspaces: dict[str, Annotated[str, StringConstraints(pattern=WORKSPACE_ID_PATTERN)]] = Field(
        default_factory=dict, description="campaign id -> the workspace its events name (none if not given)"
    )
    senders: dict[str, Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]] = Field(
        default_factory=dict,
        description="campaign id -> the address its events are sent from: its sender account and domain",
    )
    expect: list[Expectation] = Field(default_factory=list, description="Decisions expected; [] = nothing fires.")


class RuleTestFile(_Frozen):
    rules: str = Field(description="Rule file or directory, relative to this file.")
    tests: list[RuleTest] = Field(min_length=1)


@dataclass(frozen=True)
class Outcome:
    name: str
    missing: list[str]
    unexpected: list[str]
    fired: list[str] = field(default_factory=list)  # every decision, with its counts (for -v)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected


class StepError(ValueError):
    """A script step cannot be read."""


def script_events(
    campaign_id: str, script: str, workspace_id: str | None = None, sender: str | None = None
) -> list[Event]:
    """Events of one campaign's script, in order, naming `workspace_id` and sent from `sender` (an address);
    StepError for a step that cannot be read."""
    account, domain = (sender, sender.rsplit("@", 1)[1].lower()) if sender else (None, None)
    events, clock, number = [], 0.0, 0
    for step in (part.strip() for part in script.split(", then ")):
        if step.startswith("wait "):
            clock += _duration(step.removeprefix("wait ").strip(), step)
            continue
        if step == "started":
            events.append(Event(Signal.STARTED, campaign_id, START + clock, workspace_id=workspace_id))
            continue
        parts = _read_step(step)
        count, over = int(parts["count"]), _duration(parts["over"], step) if parts.get("over") else 0.0
        every = round(100 / float(parts["percent"])) if parts.get("mixed") else 0
        for index in range(count):
            at = START + clock + over * (index + 1) / count
            kinds = [parts["kind"]] + ([parts["mixed"]] if every and (index + 1) % every == 0 else [])
            for offset, kind in enumerate(kinds):
                number += 1
                signal, bounce_type = _KINDS[kind]
                events.append(
                    Event(
                        signal,
                        campaign_id,
                        at + offset,
                        message_id=f"{campaign_id}-{number}",
                        recipient_domain=parts.get("domain"),
                        bounce_type=bounce_type,
                        smtp_status=parts.get("status"),
                        sender_account_id=account,
                        workspace_id=workspace_id,
                        sender_domain=domain,
                    )
                )
        clock += over
    return events


def _read_step(step: str) -> dict[str, str]:
    head = _HEAD.match(step)
    if head is None:
        raise StepError(f"cannot read step {step!r}: it starts with a count and a kind; {_NOTATION}")
    parts, given, position = {"count": head["count"], "kind": head["kind"]}, set(), head.end()
    while (position := _skip_spaces(step, position)) < len(step):
        found = [(name, match) for name, clause in _CLAUSES.items() if (match := clause.match(step, position))]
        if not found:
            raise StepError(f"cannot read {step[position:]!r} in step {step!r}; {_NOTATION}")
        [(name, match)] = found
        if name in given:
            raise StepError(f"`{name}` is given twice in step {step!r}; {_NOTATION}")
        given.add(name)
        parts.update({key: value for key, value in match.groupdict().items() if value is not None})
        position = match.end()
    for key in ("kind", "mixed"):
        if key in parts and parts[key] not in _KINDS:
            raise StepError(f"in step {step!r}: {unknown(parts[key], list(_KINDS), 'kind')}")
    return parts


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _duration(text: str, step: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise StepError(f"in step {step!r}: {error}") from None


@dataclass(frozen=True)
class _Case:
    test: RuleTest
    streams: list[list[Event]]


def run_test(case: _Case, rules: RuleSet) -> Outcome:
    test = case.test
    events = sorted((event for stream in case.streams for event in stream), key=lambda event: event.time)
    engine = Engine(rules)
    decisions = [d for _, caused in decide(engine, events, scopes_beside(rules, engine)) for d in caused]
    unmatched = list(decisions)
    missing = []
    for expected in test.expect:
        found = next((d for d in unmatched if _matches(expected, d)), None)
        if found is None:
            missing.append(_describe_expected(expected))
        else:
            unmatched.remove(found)
    return Outcome(test.name, missing, [_describe(d) for d in unmatched], [_describe_fired(d) for d in decisions])


def _offset(decision: Decision) -> float:
    return round(decision.fired_at - START, 3)


def _matches(expected: Expectation, decision: Decision) -> bool:
    return (
        (expected.campaign, expected.rule) == (decision.campaign_id, decision.rule.name)
        and (expected.at is None or round(expected.at, 3) == _offset(decision))
        and expected.action in (None, decision.rule.action)
        and expected.outcome in (None, outcome_of(decision))
    )


def _describe_expected(expected: Expectation) -> str:
    text = f"{expected.campaign} {expected.rule}" + (
        "" if expected.at is None else f" at {format_duration(expected.at)}"
    )
    extras = [value for value in (expected.action, expected.outcome) if value is not None]
    return text + (f" ({', '.join(extras)})" if extras else "")


def _describe(decision: Decision) -> str:
    return (
        f"{decision.campaign_id} {decision.rule.name} at {format_duration(_offset(decision))} "
        f"({decision.rule.action}, {outcome_of(decision)})"
    )


def _describe_fired(decision: Decision) -> str:
    return f"{_describe(decision)} on {evidence_text(decision)}, threshold {_threshold(decision)}"


def _threshold(decision: Decision) -> str:
    level = decision.rule.level
    if decision.rule.cusum is not None:
        return f"{level:.2f} (cusum)"
    return f"{level:.2%}" if decision.denominator is not None else f"{level:g}"


def run_file(path: Path) -> list[Outcome]:
    """Run every test of a test file; RuleTestError (one line per problem) when the file is invalid."""
    spec, lines, rules = _load(path)
    problems: list[str] = []
    cases = [_case(path, lines, position, test, rules, problems) for position, test in enumerate(spec.tests)]
    if problems:
        raise RuleTestError("\n".join(problems))
    return [run_test(case, rules) for case in cases]


def _load(path: Path) -> tuple[RuleTestFile, dict[tuple, int], RuleSet]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RuleTestError(f"{path}: cannot read: {error}") from None
    problems: list[str] = []
    document = read_document(str(path), text, problems, needs="rules: and tests:")
    if document is None:
        raise RuleTestError("\n".join(problems))
    data, lines = document
    try:
        spec = RuleTestFile.model_validate(data)
    except ValidationError as error:
        raise RuleTestError(
            "\n".join(validation_problems(str(path), data, lines, error, RuleTestFile, TEST_SCOPE))
        ) from None
    try:
        rules = load_rules((path.parent / spec.rules).resolve())
    except RuleFileError as error:
        raise RuleTestError(
            f"{path}:{lines.get(('rules',), 1)}: rules: {spec.rules} is not a valid rule set:\n{error}"
        ) from None
    return spec, lines, rules


def _case(
    path: Path, lines: dict[tuple, int], position: int, test: RuleTest, rules: RuleSet, problems: list[str]
) -> _Case:
    """A test's event streams, after checking its scripts and expectations against the rules."""

    def problem(loc: tuple, text: str) -> None:
        line = lines.get(("tests", position, *loc), lines.get(("tests", position)))
        problems.append(f"{path}:{line}: test {test.name}: {'.'.join(map(str, loc))}: {text}")

    streams = []
    for campaign, script in test.input.items():
        try:
            streams.append(script_events(campaign, script, test.workspaces.get(campaign), test.senders.get(campaign)))
        except StepError as error:
            problem(("input", campaign), str(error))
    for field_name, given in (("workspaces", test.workspaces), ("senders", test.senders)):
        for campaign in given:
            if campaign not in test.input:
                problem((field_name, campaign), unknown(campaign, list(test.input), "campaign") + " in `input`")
    names = [rule.name for rule in rules.rules]
    for number, expected in enumerate(test.expect):
        if expected.rule not in names:
            problem(("expect", number, "rule"), unknown(expected.rule, names, "rule") + " in the tested rules")
        if expected.campaign not in test.input:
            problem(
                ("expect", number, "campaign"), unknown(expected.campaign, list(test.input), "campaign") + " in `input`"
            )
    return _Case(test, streams)


def report(path: Path, outcomes: list[Outcome], *, verbose: bool = False) -> str:
    lines = []
    for outcome in outcomes:
        lines.append(f"{'PASS' if outcome.passed else 'FAIL'}  {path}: {outcome.name}")
        lines.extend(f"   - expected, did not fire: {line}" for line in outcome.missing)
        lines.extend(f"   + fired, not expected:    {line}" for line in outcome.unexpected)
        if verbose:
            lines.extend(f"     fired: {line}" for line in outcome.fired)
            if not outcome.fired:
                lines.append("     nothing fired")
    return "\n".join(lines)
