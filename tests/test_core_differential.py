"""The compiled core against its reference, the Python engine: the same events and rules give the same
decisions (ids, evidence, everything), the same measures and the same snapshot bytes; a snapshot written
by either restores in the other; each series answers every question as its Python namesake does.

The core is optional (core/, built when a Rust compiler is there); without it these tests skip, except
in CI, where tests/conftest.py requires it.
"""

from __future__ import annotations

import array
import datetime as dt
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    _EVENT_NAMES,
    T0,
    event_streams,
    hostile_envelopes,
    joined_streams,
    record_times,
    resume_graces,
    rule_sets,
    stop_and_go_streams,
)
from test_engine_snapshot import _campaigns, _field, _forged

from guard.contracts import events
from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.engine import snapshot as snapshots
from guard.engine.cusum import Cusum
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.snapshot import PendingSnapshot, SnapshotError, restore, snapshot
from guard.engine.windows import LastN
from guard.rules import RuleSet, load_rules
from guard.rules.models import Rule
from guard.tools.generate import generate

CORE = compiled()
pytestmark = pytest.mark.compiled_core  # skipped without the core, except in CI (conftest.py)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
engine_options = st.fixed_dictionaries(
    {
        "dedupe_horizon": st.sampled_from((600.0, 3600.0, 12 * 3600.0)),
        "resume_grace": resume_graces,
        "max_campaigns": st.sampled_from((None, 1, 2)),
        "max_dedupe_keys": st.sampled_from((None, 4, 16)),
    }
)
streams = st.one_of(event_streams(max_size=160), stop_and_go_streams(), joined_streams())
rules_of_every_kind = rule_sets(last=True, cusum=True, delayed=True)


def _engines(rules: RuleSet, options: dict) -> tuple[Engine, Engine]:
    assert CORE is not None
    return Engine(rules, **options), Engine(rules, **options, kinds=CORE)


def _state_of(engine: Engine, campaigns: set[str]) -> list:
    """What the rest of the guard asks an engine about its campaigns."""
    return [engine.campaigns] + [(engine.measure(c), engine.episode(c), engine.leans_bad(c)) for c in sorted(campaigns)]


def _resized(rule: Rule, size: int, name: str | None = None) -> Rule:
    """A `last:` rule asking for the last `size` sends (its min_volume cut to fit), renamed if `name` is given."""
    fields = rule.model_dump(by_alias=True) | {"last": size} | ({"name": name} if name is not None else {})
    if rule.min_volume is not None:
        fields["min_volume"] = min(rule.min_volume, size)
    return Rule.model_validate(fields)


def _rings_fit_their_rules(engine: Engine) -> bool:
    """Every count window a campaign keeps is as long as the longest `last:` read from it, whatever the rules
    were when it was made."""
    asked: dict[int, int] = {}
    for compiled_rule in engine._plan.rules:
        if compiled_rule.rule.last is not None:
            slot = compiled_rule.numerator.slot
            asked[slot] = max(asked.get(slot, 0), compiled_rule.rule.last)
    return all(
        state.series[slot] is None or state.series[slot].size >= size
        for state in engine._campaigns.values()
        for slot, size in asked.items()
    )


def _decide_alike(rules: RuleSet, events: list[Event], options: dict) -> None:
    """Each event decides alike in both engines, and they end with the same state, stats and snapshot bytes."""
    python, core = _engines(rules, options)
    for event in events:
        assert core.process(event) == python.process(event)
    campaigns = {event.campaign_id for event in events}
    assert _state_of(core, campaigns) == _state_of(python, campaigns)
    assert core.stats == python.stats
    assert snapshot(core, rules) == snapshot(python, rules)


class TestTheSameDecisions:
    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind, events=streams, options=engine_options)
    def test_every_event_decides_alike_and_the_state_is_the_same_bytes(
        self, rules: RuleSet, events: list[Event], options: dict
    ) -> None:
        _decide_alike(rules, events, options)

    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind, events=streams, options=engine_options, data=st.data())
    def test_a_snapshot_taken_in_steps_while_the_engines_count_is_the_same_bytes(
        self, rules: RuleSet, events: list[Event], options: dict, data: st.DataObject
    ) -> None:
        """Begun mid-stream and encoded a few campaigns at a time between events (copy on write: a campaign the
        engine is about to change is encoded first, ahead of its step): both engines take the same steps and
        give the same bytes, or give the snapshot up alike."""
        split = data.draw(st.integers(0, len(events)), label="snapshot begun before event")
        after = len(events) - split
        steps = data.draw(st.lists(st.integers(0, 3), min_size=after, max_size=after), label="campaigns a step")
        python, core = _engines(rules, options)
        for engine in (python, core):
            for event in events[:split]:
                engine.process(event)
        pending = [PendingSnapshot(python, rules), PendingSnapshot(core, rules)]

        def outcomes(act: Callable[[PendingSnapshot], object]) -> list[object]:
            answers: list[object] = []
            for one in pending:
                try:
                    answers.append(act(one))
                except SnapshotError:
                    answers.append("given up")
            return answers

        for event, campaigns in zip(events[split:], steps, strict=True):
            assert core.process(event) == python.process(event)
            first, second = outcomes(lambda one, n=campaigns: one.step(n))
            assert second == first
        first, second = outcomes(PendingSnapshot.finish)
        assert second == first

    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind, reloaded=rules_of_every_kind, events=streams, data=st.data())
    def test_a_reload_mid_stream_decides_alike(
        self, rules: RuleSet, reloaded: RuleSet, events: list[Event], data: st.DataObject
    ) -> None:
        """Rules swapped mid-stream (windows kept where the new rules still count them, dropped, or new)."""
        split = data.draw(st.integers(0, len(events)), label="reload before event")
        python, core = _engines(rules, {})
        for engine in (python, core):
            for event in events[:split]:
                engine.process(event)
        # `last:` sizes change across the reload: the kept rule's own, and a rule's of the same events beside it
        first = rules.rules[0]
        if first.last is not None:
            first = _resized(first, data.draw(st.integers(10, 80), label="the kept rule's last: N"))
        beside = [
            _resized(r, data.draw(st.integers(10, 80), label=f"last: N beside {r.name}"), f"{r.name}-beside")
            for r in rules.rules
            if r.last is not None
        ]
        others = (r for r in reloaded.rules if r.name != first.name)
        kept_some = RuleSet(rules=(first, *others, *beside))
        python.set_rules(kept_some)
        core.set_rules(kept_some)
        assert _rings_fit_their_rules(python) and _rings_fit_their_rules(core)
        for event in events[split:]:
            assert core.process(event) == python.process(event)
        assert _rings_fit_their_rules(python) and _rings_fit_their_rules(core)
        assert snapshot(core, kept_some) == snapshot(python, kept_some)

    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind, events=streams)
    def test_a_pause_noted_from_outside_is_read_alike(self, rules: RuleSet, events: list[Event]) -> None:
        """Engine.note_pause (a backlog's decision acted on at catch-up) then the rest of the stream."""
        python, core = _engines(rules, {})
        half = len(events) // 2
        for event in events[:half]:
            assert core.process(event) == python.process(event)
        for campaign in {event.campaign_id for event in events[:half]}:
            for engine in (python, core):
                engine.note_pause(campaign, f"outside-{campaign}", events[half - 1].time)
        for event in events[half:]:
            assert core.process(event) == python.process(event)


# Events that name workspaces (one, another, or none), and rules that apply to some workspaces only
_workspace_ids = st.sampled_from((None, None, "w1", "w1", "w2"))
_workspace_filters = st.sampled_from((None, {"include": "w1"}, {"include": "w*", "exclude": "w2"}))


@st.composite
def _in_workspaces(draw: st.DrawFn, events: list[Event]) -> list[Event]:
    """Workspaces named, and now and then an event stamped days ahead (alone, or with the next agreeing)."""
    moved = []
    for event in events:
        event = msgspec.structs.replace(event, workspace_id=draw(_workspace_ids))
        if draw(st.integers(0, 19)) == 0:
            event = msgspec.structs.replace(event, time=event.time + draw(st.sampled_from((2, 2, 30))) * 86_400.0)
        moved.append(event)
    return moved


@st.composite
def _scoped(draw: st.DrawFn, rules: RuleSet) -> RuleSet:
    scoped = []
    for rule in rules.rules:
        workspaces = draw(_workspace_filters)
        if workspaces is not None:
            rule = Rule.model_validate({**rule.model_dump(by_alias=True), "workspaces": workspaces})
        scoped.append(rule)
    return RuleSet(rules=tuple(scoped))


class TestWorkspacesAndClocks:
    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind.flatmap(_scoped), events=streams.flatmap(_in_workspaces), options=engine_options)
    def test_events_in_workspaces_and_ahead_of_the_clock_decide_alike(
        self, rules: RuleSet, events: list[Event], options: dict
    ) -> None:
        """Campaigns moving between workspaces under rules for some workspaces only, and events stamped days
        ahead of the partition's clock (alone, or agreed with by the next): nothing differs."""
        _decide_alike(rules, events, options)


class TestSnapshotsCross:
    @PROPERTY_SETTINGS
    @given(rules=rules_of_every_kind, events=streams, options=engine_options, data=st.data())
    def test_a_snapshot_of_either_restores_in_the_other(
        self, rules: RuleSet, events: list[Event], options: dict, data: st.DataObject
    ) -> None:
        """Cut at random points, each cut restored into the other kind of engine: the same decisions as an
        uninterrupted Python engine, and in the end the same bytes."""
        assert CORE is not None
        cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3), label="cuts"))
        reference = Engine(rules, **options)
        expected = [reference.process(event) for event in events]
        kinds: list[Kinds] = [data.draw(st.sampled_from((PYTHON, CORE)), label="first engine")]
        engine, actual, done = Engine(rules, **options, kinds=kinds[0]), [], 0
        for cut in [*cuts, len(events)]:
            actual += [engine.process(event) for event in events[done:cut]]
            done = cut
            other = CORE if engine.kinds is PYTHON else PYTHON
            fresh = Engine(rules, **options, kinds=other)
            restore(snapshot(engine, rules), rules, fresh)
            engine = fresh
        assert actual == expected
        assert snapshot(engine, rules) == snapshot(reference, rules)


# -- each series alone: every question after every step --------------------------------------------------

_times = st.one_of(
    st.floats(1_714_564_800.0 - 7200, 1_714_564_800.0 + 7200),
    st.integers(1_714_564_800 - 7200, 1_714_564_800 + 7200).map(float),
    st.sampled_from((0.0, -1.5, 1e15, 1_714_564_800.0)),
)
# lone surrogates: a JSON string can spell them, and the hash must take them as the Python engine does
_texts = st.one_of(st.sampled_from(("m1", "m2", "m3", "é", "\ud800", "")), st.text(max_size=6))
_ids = st.none() | _texts


def _fields(series: object, names: tuple[str, ...]) -> dict:
    values = {}
    for name in names:
        value = getattr(series, name)
        values[name] = list(value) if hasattr(value, "typecode") else value
        if hasattr(value, "typecode"):
            values[name + ".typecode"] = value.typecode
    return values


def _same_float(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


_SLIDING_FIELDS = ("width", "keep_samples", "older", "newest", "newest_count", "total", "samples")
# every field of the Python types (the core's must match them), so a field added to one is compared at once
_LAST_FIELDS = LastN.__struct_fields__
_CUSUM_FIELDS = (*Cusum.__struct_fields__, "total")


class TestSeries:
    @settings(max_examples=300, deadline=None)
    @given(
        window=st.sampled_from((60.0, 300.0, 3600.0, 7.5)),
        keep=st.booleans(),
        steps=st.lists(st.tuples(_times, _ids, st.integers(-120, 3600)), max_size=80),
        weights=st.lists(st.floats(0, 2), min_size=1, max_size=60).map(tuple),
    )
    def test_a_sliding_count(self, window: float, keep: bool, steps: list, weights: tuple) -> None:
        assert CORE is not None
        python, core = PYTHON.sliding.over(window, keep), CORE.sliding.over(window, keep)
        now = -math.inf
        for time, message_id, ahead in steps:
            now = max(now, time)  # the campaign's latest event time, as the engine passes it
            assert core.add(time, message_id, now) == python.add(time, message_id, now)
            later = now + ahead
            assert _fields(core, _SLIDING_FIELDS) == _fields(python, _SLIDING_FIELDS)
            assert core.sample_ids(later) == python.sample_ids(later)
            assert _same_float(core.start_time(), python.start_time())
            assert core.weighted_count(later, weights) == python.weighted_count(later, weights)
            assert core.count_at(later) == python.count_at(later)

    @settings(max_examples=300, deadline=None)
    @given(
        size=st.integers(1, 12),
        # a send (True) or an outcome, or a reload asking for the last N sends (N: grown to it if longer)
        steps=st.lists(st.one_of(st.tuples(st.booleans(), _times, _ids), st.integers(1, 24)), max_size=80),
        asked=st.integers(1, 24),
    )
    def test_a_count_window(self, size: int, steps: list, asked: int) -> None:
        assert CORE is not None
        python, core = PYTHON.last(size), CORE.last(size)
        for step in steps:
            if isinstance(step, int):
                answers = [
                    (python.counts(n), python.start_time(n), python.sample_ids_within(n)) for n in range(1, size + 1)
                ]
                core.grow(step)
                python.grow(step)
                # what the ring answered for an N it was long enough for, it answers alike
                assert [
                    (python.counts(n), python.start_time(n), python.sample_ids_within(n)) for n in range(1, size + 1)
                ] == answers
                size = python.size
            else:
                is_per, time, message_id = step
                method = "add_per" if is_per else "add_of"
                assert getattr(core, method)(time, message_id, time) == getattr(python, method)(time, message_id, time)
            assert _fields(core, _LAST_FIELDS) == _fields(python, _LAST_FIELDS)
            for n in {asked, size, 1}:
                assert core.counts(n) == python.counts(n)
                assert core.start_time(n) == python.start_time(n)
                assert core.sample_ids_within(n) == python.sample_ids_within(n)

    @settings(max_examples=200, deadline=None)
    @given(
        rise=st.floats(0.01, 5),
        fall=st.floats(-1, -0.001),
        steps=st.lists(st.tuples(st.booleans(), _times, _ids), max_size=80),
    )
    def test_a_cusum(self, rise: float, fall: float, steps: list) -> None:
        assert CORE is not None
        python, core = PYTHON.cusum(rise, fall), CORE.cusum(rise, fall)
        for is_per, time, message_id in steps:
            method = "add_per" if is_per else "add_of"
            assert getattr(core, method)(time, message_id, time) == getattr(python, method)(time, message_id, time)
            assert _fields(core, _CUSUM_FIELDS) == _fields(python, _CUSUM_FIELDS)

    def test_the_constructors_refuse_what_is_not_numbers(self) -> None:
        assert CORE is not None
        with pytest.raises(TypeError):
            CORE.sliding(60.0, True, ["x", 1.0])
        with pytest.raises(ValueError, match="size 0"):
            CORE.last(0)


class TestDedupe:
    @settings(max_examples=200, deadline=None)
    @given(
        horizon=st.sampled_from((600.0, 3600.0)),
        budget=st.sampled_from((None, 1, 4, 16, 300)),
        steps=st.lists(st.tuples(st.integers(0, 2**64 - 1) | st.integers(0, 40), st.integers(0, 400)), max_size=400),
    )
    def test_the_store_keeps_the_same_keys_in_the_same_bytes(
        self, horizon: float, budget: int | None, steps: list
    ) -> None:
        """Keys (some repeated), a clock moving by up to 400 s: the same answers, buckets (grown or not),
        generations (rotated, forgotten, evicted at the budget) and counters."""
        assert CORE is not None
        python, core = PYTHON.dedupe(horizon, budget), CORE.dedupe(horizon, budget)
        now = 1_714_564_800.0
        for fingerprint, step in steps:
            now += step
            assert core.seen(fingerprint, now) == python.seen(fingerprint, now)
            assert (core.keys, core.evicted, core.bits) == (python.keys, python.evicted, python.bits)
        assert core.buckets() == python.buckets()
        assert core.generations() == python.generations()
        assert (core.rotate_at, core.sequence) == (python.rotate_at, python.sequence)

    @settings(max_examples=200, deadline=None)
    @given(
        budget=st.sampled_from((None, 4, 300)),
        steps=st.lists(
            st.tuples(
                st.sampled_from(("see", "see", "seal", "ask")),
                st.integers(0, 30),
                st.sampled_from((0, 0, 1, 60, 400)),  # clock steps; 0: asked at a generation's newest key
                st.sampled_from((0.0, 0.0, 1.0, 600.0)),  # how long before the clock the episode began
            ),
            max_size=300,
        ),
    )
    def test_sealed_generations_and_what_was_seen_before_alike(self, budget: int | None, steps: list) -> None:
        """Keys seen, generations sealed early (at pause decisions), and asked whether a key was seen before a time
        (the episode's start): the same answers, generations and bytes."""
        assert CORE is not None
        python, core = PYTHON.dedupe(3600.0, budget), CORE.dedupe(3600.0, budget)
        now = 1_714_564_800.0
        for kind, key, step, before in steps:
            now += step
            if kind == "see":
                assert core.seen_event("c1", "sent", f"m{key}", now) == python.seen_event("c1", "sent", f"m{key}", now)
            elif kind == "seal":
                core.seal(now), python.seal(now)
            else:
                asked = now - before
                assert core.seen_before("c1", "sent", f"m{key}", asked) == python.seen_before(
                    "c1", "sent", f"m{key}", asked
                )
                began = python.sequence - int(before) % 3  # the open generation when an episode began, or earlier
                assert core.seen_before_generation("c1", "sent", f"m{key}", began) == python.seen_before_generation(
                    "c1", "sent", f"m{key}", began
                )
        assert core.generations() == python.generations()
        assert core.buckets() == python.buckets()
        assert (core.keys, core.evicted, core.rotate_at, core.sequence) == (
            python.keys,
            python.evicted,
            python.rotate_at,
            python.sequence,
        )

    @settings(max_examples=100, deadline=None)
    @given(parts=st.lists(st.tuples(_texts, st.sampled_from(("sent", "bounced")), _texts)))
    def test_an_events_key_is_the_python_fingerprint(self, parts: list) -> None:
        """Lone surrogates included: an event's key is fingerprints.event_key, so a snapshot's keys match."""
        assert CORE is not None
        python, core = PYTHON.dedupe(3600.0), CORE.dedupe(3600.0)
        for campaign, signal, message in parts:
            assert core.seen_event(campaign, signal, message, 0.0) == python.seen_event(campaign, signal, message, 0.0)
        assert core.buckets() == python.buckets()


# -- forged state records: what one engine refuses the other refuses too ----------------------------------


def _forging(kind: str, field: str, value: object) -> Callable[[list], None]:
    mirror = {"sliding": snapshots._Sliding, "last": snapshots._Last, "cusum": snapshots._Cusum}[kind]
    tag = {"sliding": 0, "last": 1, "cusum": 2}[kind]

    def change(fields: list) -> None:
        for campaign in _campaigns(fields):
            for series in campaign[_field(snapshots._Campaign, "series")]:
                if series is not None and series[0] == tag:
                    series[1 + _field(mirror, field)] = value(series) if callable(value) else value

    return change


def _doubles(values: list[float]) -> bytes:
    return array.array("d", values).tobytes()  # as a snapshot carries an array (little-endian here)


def _longs(values: list[int]) -> bytes:
    return array.array("q", values).tobytes()


_INT64 = 2**63 - 1
_FORGED = [
    ("sliding", "total", _INT64),  # the counts do not add up (Python counted on, the core wrapped)
    ("sliding", "total", 2**63),
    ("sliding", "newest_count", -1),
    ("sliding", "older", lambda s: _doubles([float("nan"), 1.0])),  # a NaN bucket index
    ("sliding", "older", lambda s: _doubles([1.0, float("nan")])),  # a NaN count
    ("sliding", "older", lambda s: _doubles([1.0, 1e300])),
    ("sliding", "older", lambda s: _doubles([1.0])),  # an index without its count
    ("last", "per_seen", _INT64),
    ("last", "per_seen", 2**63),
    ("last", "of_positions", lambda s: _longs([10, 2, 3])),  # out of order
    ("last", "time_base", float("-inf")),
    ("cusum", "run_of", 2**63),
    ("cusum", "statistic", float("nan")),
    ("last", "newest_per", float("nan")),
    ("cusum", "newest_per", float("inf")),  # past the clock: every later send would be skipped
    ("last", "skipped", list(range(257))),  # more than a series keeps
    ("cusum", "skipped", [2**31]),  # no 32-bit hash
    ("cusum", "previous_per", float("inf")),
]


class TestForgedSeries:
    @pytest.mark.parametrize(
        ("kind", "field", "value"), _FORGED, ids=[f"{k}.{f}-{n}" for n, (k, f, _) in enumerate(_FORGED)]
    )
    def test_both_engines_refuse_it_as_corrupt(self, kind: str, field: str, value: object) -> None:
        """A state record's series that counting could not have made: both engines refuse it (SnapshotError, the
        previous checkpoint or the look-back is used), where one used to take it and decide otherwise or crash."""
        assert CORE is not None
        rules = load_rules(Path(__file__).resolve().parent.parent / "rules")  # windows, a count window, a cusum
        engine = Engine(rules)
        for n in range(60):
            for signal in ("sent", "bounced"):
                engine.process(Event(Signal(signal), "c1", 1_714_564_800.0 + n, message_id=f"m{n}", bounce_type="hard"))
        data = _forged(snapshot(engine, rules), _forging(kind, field, value))
        for kinds in (PYTHON, CORE):
            with pytest.raises(SnapshotError):
                restore(data, rules, Engine(rules, kinds=kinds))


_HOSTILE_INTS = st.sampled_from((0, 1, -1, 3, 60, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1)) | st.integers(-5, 200)
_HOSTILE_FLOATS = st.sampled_from((math.nan, math.inf, -math.inf, 0.0, -0.0, 0.5, 1.0, 1e300)) | st.floats()
_SAMPLE_TEXTS = st.text(st.sampled_from("ab1\u00e9"), max_size=3)


def _hostile(annotation: object) -> st.SearchStrategy:
    """A value msgspec could decode into a mirror's field of this type, from the hostile end of it."""
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return _HOSTILE_INTS
    if annotation is float:
        return _HOSTILE_FLOATS
    if annotation is bytes:
        values = st.lists(_HOSTILE_FLOATS, max_size=8).map(_doubles) | st.lists(
            _HOSTILE_INTS.filter(lambda n: -(2**63) <= n < 2**63), max_size=8
        ).map(_longs)
        return values | st.binary(max_size=40)
    arguments = typing.get_args(annotation)
    if type(None) in arguments:
        return st.none() | _hostile(next(a for a in arguments if a is not type(None)))
    if typing.get_origin(annotation) is list:
        (item,) = arguments
        return st.lists(_hostile(item), max_size=5)
    if typing.get_origin(annotation) is tuple:
        return st.tuples(*(_hostile(a) for a in arguments))
    if annotation is str:
        return _SAMPLE_TEXTS
    raise AssertionError(f"no strategy for {annotation}")


def _restoring(kinds: Kinds, data: bytes, fresh: list, clock: float) -> object:
    """A campaign's series restored from `data`, their part of its snapshot, as the mirrors encode them; or refused."""
    try:
        series = snapshots._series_restoring(kinds)(msgspec.Raw(data), fresh, clock)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):  # what restore() calls corrupt
        return "refused"
    return msgspec.msgpack.encode([snapshots._series_mirror(one) for one in series], enc_hook=snapshots._enc_hook)


_MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=9)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)

_MAKE = {
    "sliding": lambda k: k.sliding.over(600.0, True),
    "last": lambda k: k.last(5),
    "cusum": lambda k: k.cusum(1.2, -0.1),
}


def _counted(kind: str, steps: list) -> object:
    """A Python series of `kind` as counting `steps` (first?, time, message id) leaves it."""
    counted = _MAKE[kind](PYTHON)
    for first, time, message_id in steps:
        if kind == "sliding":
            counted.add(time, message_id, time)
        elif first:
            counted.add_per(time, message_id, time)
        else:
            counted.add_of(time, message_id, time)
    return counted


class TestRestoredSeries:
    @settings(max_examples=600, deadline=None)
    @given(
        kind=st.sampled_from(("sliding", "last", "cusum")),
        # ids a snapshot can hold: UTF-8 (a lone surrogate is no msgpack string)
        steps=st.lists(st.tuples(st.booleans(), _times, st.none() | _SAMPLE_TEXTS), max_size=40),
        ahead=st.sampled_from((0.0, 30.0, 4000.0, -30.0, -math.inf)),
        data=st.data(),
    )
    def test_what_one_engine_restores_the_other_restores_alike(
        self, kind: str, steps: list, ahead: float, data: st.DataObject
    ) -> None:
        """A series as counting leaves it, then a field or two forged (hostile numbers of the field's type): the
        compiled core's restore (built and checked in Rust) refuses what snapshot.py refuses and takes the rest
        to the same series."""
        assert CORE is not None
        mirror = snapshots._series_mirror(_counted(kind, steps))
        fields = msgspec.structs.fields(type(mirror))
        forgeries = data.draw(st.integers(0, 2), label="fields forged")
        for _ in range(forgeries):
            forged = data.draw(st.sampled_from(fields), label="field")
            mirror = msgspec.structs.replace(
                mirror, **{forged.name: data.draw(_hostile(forged.type), label=forged.name)}
            )
        clock = max((time for _, time, _ in steps), default=T0) + ahead
        # one slot of the series' kind, one without a rule's series: what a campaign's part of a snapshot holds
        encoded = msgspec.msgpack.encode([mirror, None], enc_hook=snapshots._enc_hook)
        make = _MAKE[kind]
        core = _restoring(CORE, encoded, [make(CORE), None], clock)
        assert core == _restoring(PYTHON, encoded, [make(PYTHON), None], clock)
        times = [time for _, time, _ in steps]
        if not forgeries and ahead >= 0 and times == sorted(times):  # as counting in order left it: taken as it is
            assert core == encoded

    @settings(max_examples=600, deadline=None)
    @given(
        kinds=st.lists(st.sampled_from(("sliding", "last", "cusum", None)), min_size=1, max_size=3),
        steps=st.lists(st.tuples(st.booleans(), _times, st.none() | _SAMPLE_TEXTS), max_size=12),
        data=st.data(),
    )
    def test_bytes_cut_or_changed_are_refused_alike(self, kinds: list, steps: list, data: st.DataObject) -> None:
        """A campaign's series as a snapshot holds them, then bytes changed, cut, added or a trailing field put in
        a series: the compiled core reads the msgpack itself, and refuses what msgspec and snapshot.py refuse, and
        takes the rest to the same series (never a crash, whatever the bytes)."""
        assert CORE is not None
        mirrors = [None if kind is None else snapshots._series_mirror(_counted(kind, steps)) for kind in kinds]
        plain = msgspec.msgpack.decode(msgspec.msgpack.encode(mirrors, enc_hook=snapshots._enc_hook))
        for series in plain:
            if series is not None:  # fields past a series' own, which msgspec skips
                series.extend(data.draw(st.lists(_MSGPACK_VALUES, max_size=2), label="trailing fields"))
        encoded = bytearray(msgspec.msgpack.encode(plain))
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            at = data.draw(st.integers(0, len(encoded)), label="at")
            change = data.draw(st.sampled_from(("set", "cut", "insert")), label="change")
            if change == "set" and at < len(encoded):
                encoded[at] = data.draw(st.integers(0, 255), label="byte")
            elif change == "cut":
                del encoded[at:]
            else:
                encoded[at:at] = data.draw(st.binary(min_size=1, max_size=9), label="bytes")
        clock = max((time for _, time, _ in steps), default=T0)
        core = _restoring(CORE, bytes(encoded), [None if k is None else _MAKE[k](CORE) for k in kinds], clock)
        python = _restoring(PYTHON, bytes(encoded), [None if k is None else _MAKE[k](PYTHON) for k in kinds], clock)
        assert core == python

    def test_fields_past_a_series_own_are_skipped_as_msgspec_skips_them(self) -> None:
        """An array-like struct's trailing fields (of any msgpack kind, nested deep, an unsigned past i64) are
        skipped, not refused."""
        assert CORE is not None
        mirror = msgspec.msgpack.decode(msgspec.msgpack.encode(snapshots._series_mirror(_counted("cusum", []))))
        deep: list = []
        for _ in range(200):
            deep = [deep]
        trailing = [[1, {"a": [None, 2.5]}], b"x", msgspec.msgpack.Ext(5, b"ab"), 2**64 - 1, deep]
        extended = msgspec.msgpack.encode([[*mirror, *trailing]])
        expected = msgspec.msgpack.encode([mirror])
        for kinds, fresh in ((CORE, [_MAKE["cusum"](CORE)]), (PYTHON, [_MAKE["cusum"](PYTHON)])):
            assert _restoring(kinds, extended, fresh, T0) == expected


# -- the envelope's fast path ------------------------------------------------------------------------------

_words = st.text(st.sampled_from("abcXYZ019_.:-@ "), max_size=12)
_ids_ok = st.text(st.sampled_from("abcXYZ019_.:-"), min_size=1, max_size=12)
_near = st.floats(T0 - 3 * 86400, T0 + 4000).map(lambda t: dt.datetime.fromtimestamp(t, dt.UTC))
_zones = st.sampled_from((dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-9, minutes=-30))))
_stamps = st.one_of(
    st.none(),
    st.builds(lambda moment, zone: moment.astimezone(zone).isoformat(), _near, _zones),
    _near.map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
    _near.map(lambda moment: moment.replace(microsecond=0).isoformat(timespec="seconds").replace("+00:00", "Z")),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.datetimes().map(lambda moment: moment.isoformat()),  # naive: the Python decoder's to judge
    st.sampled_from(("2024-05-01T12:00:00.1234567Z", "2024-05-01T12:00:00-00:00", "2024-05-01t12:00:00z", "1e9")),
)
_reasons = st.one_of(
    st.none(), _words, st.sampled_from(("550 5.1.1 no such user", "[40.4.1.10] said: 4.2.2", "5.1.1234", "x2.0.0y"))
)


@st.composite
def webhooks(draw: st.DrawFn) -> bytes:
    """Envelopes as Leadterra sends them, and near misses: ids of every length, odd domains, replies, statuses."""
    data = draw(
        st.fixed_dictionaries(
            {"campaignId": st.one_of(*[_ids_ok] * 6, _words, st.text(max_size=260), st.integers())},
            optional={
                "messageId": st.one_of(st.none(), _words, st.text(max_size=260)),
                "workspaceId": st.one_of(st.none(), _ids_ok, _words, st.just("")),
                "recipient": st.one_of(st.none(), st.emails(), _words),
                "recipientDomain": st.one_of(st.none(), st.sampled_from(("Gmail.COM", "", "outlook.com")), _words),
                "bounceType": st.one_of(st.none(), st.sampled_from(("hard", "soft", "HARD"))),
                "bounceReason": _reasons,
                "sequenceStep": st.one_of(st.none(), st.integers(-(2**70), 2**70), st.floats(), st.booleans()),
                "senderAccountId": st.one_of(st.none(), _words),
                "reply": st.one_of(
                    st.none(),
                    st.lists(_ids_ok, max_size=3),  # an array where an object belongs: no reply at all
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "id": st.one_of(st.none(), _words),
                            "classification": st.sampled_from(("unsubscribe", "positive", None)),
                            "campaignId": st.one_of(st.none(), _words),
                        },
                    ),
                ),
                "note": st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3), _words),
            },
        )
    )
    envelope = {"event": draw(st.sampled_from(_EVENT_NAMES)), "data": data}
    if (stamp := draw(_stamps)) is not None:
        envelope["timestamp"] = stamp
    return json.dumps(envelope, ensure_ascii=draw(st.booleans())).encode()


def _outcome(decode: Callable[[bytes, float], object], value: bytes, record_time: float) -> object:
    try:
        return decode(value, record_time)
    except (events.MalformedEvent, events.IgnoredEvent) as error:
        return type(error), str(error)


class TestFastDecoding:
    @settings(max_examples=1000, deadline=None)
    @given(
        value=st.one_of(webhooks(), hostile_envelopes()),
        record_time=st.one_of(record_times, st.sampled_from((T0 + 10, T0 - 1000))),
    )
    def test_the_fast_path_gives_the_reference_event_or_leaves_it_to_the_reference(
        self, value: bytes, record_time: float
    ) -> None:
        """Every input: the core's event is the reference's, or None (the reference decides: every error and
        every ignored event is the Python decoder's, with its message); the guard's decode is the reference's."""
        assert CORE is not None
        expected = _outcome(events.decode, value, record_time)
        fast = _FAST.decode(value, record_time)
        assert fast is None or fast == expected
        assert _outcome(CORE.decode, value, record_time) == expected

    def test_webhooks_as_leadterra_sends_them_take_the_fast_path(self) -> None:
        """The generator's traffic (sends, bounces with reasons, complaints, replies): every record decodes in the
        core, to the reference's event; but its starts (one a campaign), which the reference names by their stamp."""
        records = generate(3, 40, 4, start=T0, duration=600.0).records
        decoded = [_FAST.decode(record.value, record.time) for record in records]
        starts = [b'"campaign.started"' in record.value for record in records]
        assert [event is None for event in decoded] == starts and any(starts)
        reference = [events.decode(record.value, record.time) for record in records]
        assert [e for e, start in zip(decoded, starts, strict=True) if not start] == [
            e for e, start in zip(reference, starts, strict=True) if not start
        ]

    @pytest.mark.parametrize(
        "value",
        [
            # serde reads a struct from an array of its fields too; msgspec (the reference) wants an object
            b'{"event":"reply.received","data":{"campaignId":"c","reply":["x"]}}',
            b'{"event":"message.sent","data":["c"]}',
            b'["message.sent",{"campaignId":"c"}]',
            # the reference's limit is Python's recursion limit: anything deep is its to judge
            b'{"event":"message.sent","data":{"campaignId":"c","junk":' + b"[" * 5000 + b"]" * 5000 + b"}}",
            b'{"event":"message.sent","data":{"campaignId":"c","junk":' + b"[" * 65 + b"]" * 65 + b"}}",
        ],
        ids=["reply-array", "data-array", "envelope-array", "nested-5000", "nested-65"],
    )
    def test_what_the_reference_refuses_or_may_refuse_is_left_to_it(self, value: bytes) -> None:
        """These were taken by the fast path (a reply read from an array, 5,000 nested arrays counted as a send)
        where the reference dead-letters them: found by the fault suite's fuzz and nesting cases."""
        assert _FAST.decode(value, T0) is None

    def test_what_is_not_bytes_is_left_to_the_reference(self) -> None:
        assert _FAST.decode(None, T0) is None
        assert _FAST.decode("{}", T0) is None


_FAST = CORE and __import__("guard_core").FastDecoder(events.Event, events.SIGNALS, Signal.UNSUBSCRIBED)
