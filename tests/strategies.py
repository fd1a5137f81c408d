"""Every Hypothesis strategy of the test suite, in one place.

Events come as streams for a few campaigns: times mostly move forward (seconds to minutes, now
and then hours), and some events arrive late (their event time is behind what was already seen).
Rules are built through the real pydantic models, so a strategy can only produce valid rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

from guard.contracts.events import Event, Signal
from guard.rules.models import Rule, RuleSet

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z: far from the epoch, as real event times are
CAMPAIGNS = ("c1", "c2", "c3")
DOMAINS = ("gmail.com", "googlemail.com", "outlook.com", "example.org")
SMTP_STATUSES = ("5.1.1", "5.1.10", "5.7.1", "4.2.2", "4.7.0")
COUNTED_SIGNALS = ("sent", "bounced", "complained", "unsubscribed", "replied")

# -- events -------------------------------------------------------------------------------------

campaign_ids = st.sampled_from((CAMPAIGNS[0],) * 3 + CAMPAIGNS[1:])  # c1 busy, the others quieter

# A small pool of ids, so duplicates (the same signal and id again) happen now and then.
message_ids = st.one_of(st.none(), st.integers(0, 40).map(lambda n: f"m{n}"))

# Mostly sends, as in real traffic; bounces and complaints often enough to make rules fire.
_COUNTED_MIX = (Signal.SENT,) * 4 + (Signal.BOUNCED,) * 3 + (Signal.COMPLAINED, Signal.UNSUBSCRIBED, Signal.REPLIED)
counted_signals = st.sampled_from(_COUNTED_MIX)
signals_with_starts = st.sampled_from(_COUNTED_MIX * 3 + (Signal.STARTED,))  # about one start in 31


@st.composite
def _event_fields(draw: st.DrawFn, signal: st.SearchStrategy[Signal]) -> dict:
    chosen = draw(signal)
    fields = {
        "signal": chosen,
        "campaign_id": draw(campaign_ids),
        "message_id": draw(message_ids),
        "recipient_domain": draw(st.sampled_from((None, *DOMAINS, "gmail.com"))),
    }
    if chosen is Signal.BOUNCED:
        fields["bounce_type"] = draw(st.sampled_from((None, "hard", "hard", "soft")))
        fields["smtp_status"] = draw(st.sampled_from((None, *SMTP_STATUSES, "5.1.1")))
    return fields


@st.composite
def time_steps(draw: st.DrawFn) -> float:
    """How the clock moves from one event to the next: seconds mostly, now and then hours."""
    if draw(st.integers(0, 24)) == 24:
        return float(draw(st.integers(600, 3 * 3600)))
    return float(draw(st.integers(0, 30)))


@st.composite
def event_streams(
    draw: st.DrawFn,
    *,
    max_size: int = 80,
    late: bool = True,
    started: bool = True,
    unique_ids: bool = False,
) -> list[Event]:
    """Events for a few campaigns in arrival order.

    With `late`, some events carry a time behind the latest one seen (by up to three hours, so
    some fall within a window and some beyond it). With `started`, a few `campaign.started`
    events (each stamped after every event before it) reset campaigns. With `unique_ids`, no two events share a
    (signal, message id).
    """
    signals = signals_with_starts if started else counted_signals
    # bursts of events, so that streams are long enough for rules to fire and still shrink well
    one = st.tuples(_event_fields(signals), time_steps())
    bursts = draw(st.lists(st.lists(one, min_size=1, max_size=20), min_size=1, max_size=8))
    steps = [item for burst in bursts for item in burst][:max_size]
    events, now = [], T0
    for number, (fields, seconds) in enumerate(steps):
        now += seconds
        time = now
        if fields["signal"] is Signal.STARTED:
            # stamped after every event before it, as Leadterra starts a campaign before it sends: one stamped behind
            # them is a start delivered again, history (test_engine.py::TestCampaignStarted)
            now = time = now + 1
            fields = {"signal": Signal.STARTED, "campaign_id": fields["campaign_id"]}
        elif late and draw(st.integers(0, 9)) == 0:
            time = now - draw(st.integers(1, 3 * 3600))
        if unique_ids and fields.get("message_id") is not None:
            fields["message_id"] = f"u{number}"
        events.append(Event(time=time, **fields))
    return events


_BAD_MIX = (Signal.SENT, Signal.BOUNCED, Signal.BOUNCED, Signal.COMPLAINED)
_CLEAN_MIX = (Signal.SENT,) * 8 + (Signal.BOUNCED, Signal.REPLIED)


@st.composite
def stop_and_go_streams(draw: st.DrawFn) -> list[Event]:
    """In-order events of campaigns that send in stretches, a stale list in some and a clean one in
    others, with stops between them from seconds (mail in flight) to days; some stretches begin with
    `campaign.started`. No two events share a (signal, message id)."""
    events: list[Event] = []
    now = T0
    for _ in range(draw(st.integers(2, 5))):
        mix = draw(st.sampled_from((_BAD_MIX, _CLEAN_MIX)))
        if draw(st.integers(0, 3)) == 0:
            events.append(Event(Signal.STARTED, draw(campaign_ids), now))
        for _ in range(draw(st.integers(5, 40))):
            now += draw(st.integers(0, 10))
            fields = draw(_event_fields(st.sampled_from(mix)))
            if fields["message_id"] is not None:
                fields["message_id"] = f"u{len(events)}"
            events.append(Event(time=now, **fields))
        now += draw(st.sampled_from((30, 120, 300, 301, 600, 1800, 7200, 3 * 86400)))
    return events


@st.composite
def joined_streams(draw: st.DrawFn, max_size: int = 150) -> list[Event]:
    """One campaign's sends (each with its own message id; now and then one up to 40 minutes behind the
    others, delivered again) and outcomes that quote the id of an earlier send, recent or long gone, or an
    id no send had, or none; no (signal, id) twice."""
    events: list[Event] = []
    sent: list[str] = []
    used: set[tuple[Signal, str]] = set()
    now = T0
    for number in range(draw(st.integers(1, max_size))):
        now += draw(st.integers(0, 20))
        domain = draw(st.sampled_from(DOMAINS))
        if not sent or draw(st.integers(0, 2)) > 0:
            sent.append(f"s{number}")
            # up to 40 minutes: past the 15 after which a `last:` window skips a send (windows.LATE_PER_SECONDS)
            late = draw(st.one_of(st.just(0), st.integers(0, 2400))) if draw(st.integers(0, 5)) == 0 else 0
            events.append(Event(Signal.SENT, "c1", now - late, sent[-1], domain))
            continue
        signal = draw(st.sampled_from((Signal.BOUNCED, Signal.BOUNCED, Signal.COMPLAINED)))
        back = draw(st.one_of(st.integers(0, 5), st.integers(0, 80), st.none()))
        message_id = sent[max(0, len(sent) - 1 - back)] if back is not None else draw(st.sampled_from(("gone", None)))
        if message_id is not None and (signal, message_id) in used:
            message_id = f"x{number}"
        if message_id is not None:
            used.add((signal, message_id))
        bounce_type = draw(st.sampled_from(("hard", "soft"))) if signal is Signal.BOUNCED else None
        events.append(Event(signal, "c1", now, message_id, domain, bounce_type))
    return events


# -- rules --------------------------------------------------------------------------------------

windows = st.one_of(st.sampled_from((60.0, 300.0, 3600.0, 86400.0)), st.integers(60, 86400).map(float))


@st.composite
def wheres(draw: st.DrawFn, signal: str) -> dict:
    where: dict = {}
    if draw(st.integers(0, 3)) == 0:
        where["recipient_domain"] = draw(
            st.lists(st.sampled_from(("gmail.com", "*mail.com", "outlook.*", "EXAMPLE.org")), min_size=1, max_size=2)
        )
    if signal == "bounced":
        if draw(st.integers(0, 2)) == 0:
            where["bounce_type"] = draw(st.sampled_from(("hard", "soft")))
        if draw(st.integers(0, 3)) == 0:
            where["smtp_status"] = draw(st.sampled_from(("5.1.x", "5.x.x", "4.7.0", "5.7.1")))
    return where


@st.composite
def selectors(draw: st.DrawFn, signals: st.SearchStrategy[str] = st.sampled_from(COUNTED_SIGNALS)) -> dict | str:
    signal = draw(signals)
    where = draw(wheres(signal))
    if not where and draw(st.booleans()):
        return signal  # the bare spelling, `count: bounced`
    return {"signal": signal, "where": where}


@st.composite
def count_rules(draw: st.DrawFn, name: str = "count-rule", *, for_: bool = True) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "description": "generated",
            "count": draw(selectors(st.sampled_from(("bounced", "bounced", "complained", "sent")))),
            "window": draw(windows),
            "threshold": draw(st.integers(1, 6)),
            "for": draw(st.sampled_from((0, 0, 300))) if for_ else 0,
            "cooldown": draw(st.sampled_from((0, 60, 3600, 86400))),
            "action": draw(st.sampled_from(("pause", "alert"))),
        }
    )


@st.composite
def rate_rules(draw: st.DrawFn, name: str = "rate-rule", *, for_: bool = True) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "description": "generated",
            "rate": {
                "of": draw(selectors(st.sampled_from(("bounced", "bounced", "bounced", "complained", "unsubscribed")))),
                "per": draw(selectors(st.sampled_from(("sent", "sent", "bounced")))),
            },
            "window": draw(windows),
            "threshold": draw(st.one_of(st.sampled_from((0.003, "5%", "10%", 0.25, 1)), st.floats(0.01, 0.4))),
            "min_volume": draw(st.sampled_from((1, 2, 3, 5, 8))),
            "for": draw(st.sampled_from((0, 0, 300))) if for_ else 0,
            "cooldown": draw(st.sampled_from((0, 60, 3600, 86400))),
            "action": draw(st.sampled_from(("pause", "alert"))),
        }
    )


@st.composite
def delayed_rate_rules(draw: st.DrawFn, name: str = "delayed-rate-rule") -> Rule:
    """A rate whose `of` events arrive after their sends (`rate.delay`): the sends count weighted."""
    median, most = draw(st.sampled_from(((60, 600), (300, 3600), (1800, 86400), (7200, 2 * 86400))))
    return Rule.model_validate(
        {
            **draw(rate_rules(name)).model_dump(by_alias=True, exclude={"rate"}),
            "rate": {
                "of": draw(selectors(st.sampled_from(("complained", "bounced", "unsubscribed")))),
                "per": "sent",
                "delay": {"median": median, "max": most},
            },
        }
    )


@st.composite
def last_rules(draw: st.DrawFn, name: str = "last-rule") -> Rule:
    """A count window: `of` among the campaign's last N sends, sometimes with a confidence."""
    size = draw(st.integers(10, 40))
    return Rule.model_validate(
        {
            "name": name,
            "description": "generated",
            "rate": {"of": draw(selectors(st.sampled_from(("bounced", "bounced", "complained")))), "per": "sent"},
            "last": size,
            "threshold": draw(st.one_of(st.sampled_from(("5%", "10%", 0.25)), st.floats(0.01, 0.4))),
            "confidence": draw(st.sampled_from((None, None, 0.6, 0.9))),
            "min_volume": draw(st.integers(1, size)),
            "cooldown": draw(st.sampled_from((0, 60, 3600, 86400))),
            "action": draw(st.sampled_from(("pause", "pause", "alert"))),
        }
    )


@st.composite
def cusum_rules(draw: st.DrawFn, name: str = "cusum-rule", *, for_: bool = True) -> Rule:
    """A sequential test, from one that fires on a bounce or two to one that needs a long run."""
    healthy, bad = draw(
        st.sampled_from(((0.01, 0.08), (0.02, 0.08), (0.05, 0.5), (0.1, 0.3), (0.001, 0.01), (0.02, 0.9)))
    )
    return Rule.model_validate(
        {
            "name": name,
            "description": "generated",
            "cusum": {
                "of": draw(selectors(st.sampled_from(("bounced", "bounced", "complained")))),
                "per": draw(selectors(st.sampled_from(("sent", "sent", "bounced")))),
                "healthy": healthy,
                "bad": bad,
                "false_alarms": draw(st.sampled_from(("0.1%", "1%", "10%", 0.5))),
                "campaign_size": draw(st.sampled_from((1, 10, 100, 1000, 50_000))),
            },
            "for": draw(st.sampled_from((0, 0, 300))) if for_ else 0,
            "keep_firing_for": draw(st.sampled_from((0, 0, 120))) if for_ else 0,
            "cooldown": draw(st.sampled_from((0, 60, 3600, 86400))),
            "action": draw(st.sampled_from(("pause", "alert"))),
        }
    )


# How long after a pause decision sends are still mail in flight: none, a minute, the default five.
resume_graces = st.sampled_from((0.0, 60.0, 300.0))

campaign_filters = st.sampled_from(
    ({}, {"include": "c*"}, {"include": ["c1", "c2"]}, {"exclude": "c3"}, {"include": "c?", "exclude": ["c2"]})
)


@st.composite
def rule_sets(
    draw: st.DrawFn, max_rules: int = 4, *, last: bool = False, cusum: bool = False, delayed: bool = False
) -> RuleSet:
    """One to `max_rules` rules, count and rate mixed (and count windows, with `last`; sequential
    tests, with `cusum`; rates of outcomes that arrive late, with `delayed`), with unique names and
    campaign filters."""
    kinds = (count_rules, rate_rules) + ((last_rules,) if last else ()) + ((cusum_rules,) if cusum else ())
    kinds += (delayed_rate_rules,) if delayed else ()
    rules = []
    for number in range(draw(st.integers(1, max_rules))):
        kind = draw(st.sampled_from(kinds))
        rule = draw(kind(f"rule-{number}"))
        filters = draw(campaign_filters)
        if filters:
            rule = Rule.model_validate({**rule.model_dump(by_alias=True), "campaigns": filters})
        rules.append(rule)
    return RuleSet(rules=tuple(rules))


@dataclass(frozen=True)
class Case:
    """A rule set and the events to run through it."""

    rules: RuleSet
    events: list[Event]


@st.composite
def cases(draw: st.DrawFn, *, cusum: bool = False, **stream_options: object) -> Case:
    return Case(draw(rule_sets(cusum=cusum)), draw(event_streams(**stream_options)))


# -- hostile input ------------------------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
hostile_timestamps = st.one_of(
    json_values,
    st.sampled_from(
        (
            "0001-01-01T00:00:00+23:59",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "2024-02-30T00:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00:00.123456789Z",
            "+002026-01-01T10:00:00Z",
            "1e308",
        )
    ),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
)


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> bytes:
    """JSON shaped like the event envelope, with any field replaced by anything."""
    data = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "campaignId": st.one_of(st.text(max_size=300), json_values),
                "messageId": st.one_of(st.text(max_size=300), json_values),
                "bounceType": st.one_of(st.sampled_from(("hard", "soft", "HARD")), json_values),
                "bounceReason": st.one_of(st.text(max_size=80), json_values),
                "sequenceStep": json_values,
                "recipient": st.one_of(st.emails(), json_values),
                "reply": st.one_of(
                    st.fixed_dictionaries({}, optional={"classification": json_values, "id": json_values}), json_values
                ),
                "extra": json_values,
            },
        )
    )
    envelope = draw(
        st.fixed_dictionaries(
            {"event": st.one_of(st.sampled_from(tuple(f"{n}" for n in _EVENT_NAMES)), json_values)},
            optional={"timestamp": hostile_timestamps, "data": st.one_of(st.just(data), json_values)},
        )
    )
    return json.dumps(envelope, ensure_ascii=draw(st.booleans())).encode()


# "x" and the signals' own names ("unsubscribed", "sent", ...) are no event names: ignored
_EVENT_NAMES = ("message.sent", "message.bounced", "message.complained", "reply.received", "campaign.started", "x")
_EVENT_NAMES += tuple(signal.value for signal in Signal)
record_times = st.one_of(st.just(T0), st.floats(min_value=-1e11, max_value=1e11))

# YAML: text built from the pieces rule files are made of, so that the parser gets past line one
_yaml_tokens = st.sampled_from(
    (
        "groups:",
        "- name: g",
        "rules:",
        "- ",
        "  ",
        "    ",
        "\n",
        ": ",
        "&a ",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "!!binary ",
        "!!timestamp ",
        "!!set ",
        "!!python/object ",
        "? ",
        "|",
        ">",
        "'",
        '"',
        "#",
        "---",
        "...",
        "count: bounced",
        "window: 1h",
        "threshold: ",
        "2024-02-30",
        "1e999",
        "-.inf",
        ".nan",
        "0x1f",
        "~",
        "description: d",
        "rate:",
        "of:",
        "per: sent",
        "min_volume: 5",
        "for: 5m",
        "cooldown: -1h",
        "%YAML 1.1",
    )
)
yaml_texts = st.one_of(
    st.text(max_size=200), st.lists(st.one_of(_yaml_tokens, st.text(max_size=5)), max_size=60).map("".join)
)

# Environment values: any text a variable can hold (no NUL, no lone surrogates)
env_values = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=60)
