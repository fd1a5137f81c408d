"""Snapshots of a partition's engine: restored anywhere in a stream, the rest decides exactly as if it never stopped."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import event_streams, resume_graces, rule_sets, stop_and_go_streams

from guard.contracts.events import Event, Signal
from guard.engine import Engine
from guard.engine import snapshot as snapshots
from guard.engine.kinds import PYTHON, Kinds, compiled
from guard.engine.plan import Series
from guard.engine.snapshot import (
    FORMAT,
    PendingSnapshot,
    SnapshotError,
    check_clock,
    restore,
    rules_taken_under,
    rules_version,
    snapshot,
)
from guard.rules import Rule, RuleSet

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)

engine_options = st.fixed_dictionaries(
    {
        "dedupe_horizon": st.sampled_from((600.0, 3600.0, 12 * 3600.0)),
        "resume_grace": resume_graces,
        "max_campaigns": st.sampled_from((None, 1, 2)),  # 3 campaigns in the streams: evictions happen
        "max_dedupe_keys": st.sampled_from((None, 4, 16)),  # the budget is reached: keys are forgotten
    }
)
streams = st.one_of(event_streams(max_size=160), stop_and_go_streams())
KINDS = [
    pytest.param(PYTHON, id="python"),
    pytest.param(compiled(), id="compiled", marks=pytest.mark.compiled_core),
]


def _restored(engine: Engine, rules: RuleSet, options: dict) -> Engine:
    fresh = Engine(rules, **options)
    restore(snapshot(engine, rules), rules, fresh)
    return fresh


class TestRestoring:
    @PROPERTY_SETTINGS
    @given(
        rules=rule_sets(last=True, cusum=True, delayed=True),
        events=streams,
        options=engine_options,
        data=st.data(),
    )
    def test_decisions_after_a_restore_equal_an_uninterrupted_runs(
        self, rules: RuleSet, events: list[Event], options: dict, data: st.DataObject
    ) -> None:
        """Snapshots at random cuts, each restored into a fresh engine that takes the rest: the
        same decisions (ids, evidence, everything) and in the end the same state, byte for byte."""
        cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3), label="cuts"))
        uninterrupted = Engine(rules, **options)
        expected = [uninterrupted.process(event) for event in events]
        engine, actual, done = Engine(rules, **options), [], 0
        for cut in [*cuts, len(events)]:
            actual += [engine.process(event) for event in events[done:cut]]
            done = cut
            engine = _restored(engine, rules, options)
        assert actual == expected
        assert [d.id for ds in actual for d in ds] == [d.id for ds in expected for d in ds]
        assert snapshot(engine, rules) == snapshot(uninterrupted, rules)
        assert engine.stats == uninterrupted.stats

    @PROPERTY_SETTINGS
    @given(rules=rule_sets(last=True, cusum=True, delayed=True), events=event_streams(max_size=120), data=st.data())
    def test_a_snapshot_after_a_reload_restores_under_the_new_rules(
        self, rules: RuleSet, events: list[Event], data: st.DataObject
    ) -> None:
        """Rules swapped mid-stream (one dropped): the snapshot names the rules in force and restores under them."""
        split = data.draw(st.integers(0, len(events)), label="reload before event")
        cut = data.draw(st.integers(split, len(events)), label="snapshot before event")
        reloaded = RuleSet(rules=rules.rules[:-1] or rules.rules)
        plain = Engine(rules)
        expected = [plain.process(event) for event in events[:split]]
        plain.set_rules(reloaded)
        expected += [plain.process(event) for event in events[split:]]
        engine = Engine(rules)
        actual = [engine.process(event) for event in events[:split]]
        engine.set_rules(reloaded)
        actual += [engine.process(event) for event in events[split:cut]]
        engine = _restored(engine, reloaded, {})
        actual += [engine.process(event) for event in events[cut:]]
        assert actual == expected

    @PROPERTY_SETTINGS
    @given(rules=rule_sets(last=True, cusum=True, delayed=True), events=event_streams(max_size=120), data=st.data())
    def test_a_snapshot_restored_under_edited_rules_is_a_reload_there(
        self, rules: RuleSet, events: list[Event], data: st.DataObject
    ) -> None:
        """A rule file edited before a restart (a rule dropped, or one reworded): the snapshot carries the rules it
        was counted for; restored under them and set to the edited ones, the rest decides as a guard that reloaded
        there, and ends in the same state (nothing replayed, so no evidence older than the look-back is lost)."""
        cut = data.draw(st.integers(0, len(events)), label="restart before event")
        first = rules.rules[0]
        reworded = Rule.model_validate({**first.model_dump(by_alias=True), "description": "reworded"})
        edited = RuleSet(rules=rules.rules[:-1] if data.draw(st.booleans()) and len(rules.rules) > 1 else rules.rules)
        edited = edited if edited != rules else RuleSet(rules=(reworded, *rules.rules[1:]))
        plain = Engine(rules)
        expected = [plain.process(event) for event in events[:cut]]
        plain.set_rules(edited)
        expected += [plain.process(event) for event in events[cut:]]
        engine = Engine(rules)
        actual = [engine.process(event) for event in events[:cut]]
        data_at_cut = snapshot(engine, rules)
        taken = rules_taken_under(data_at_cut, edited)
        assert taken is not None and rules_version(taken) == rules_version(rules)
        restored = Engine(taken)
        restore(data_at_cut, taken, restored)
        restored.set_rules(edited)
        actual += [restored.process(event) for event in events[cut:]]
        assert actual == expected
        assert snapshot(restored, edited) == snapshot(plain, edited)

    def test_a_reload_that_drops_the_rule_counting_a_shared_window_restores(self) -> None:
        """A window of sends is one rule's count and another's denominator; the counting rule dropped, the window
        quotes no message ids any more (only numerators are quoted): a snapshot taken after the reload restores
        under the new rules (it was refused as "a window of another length", and the partition replayed)."""
        rate = {
            "name": "rate",
            "description": "d",
            "rate": {"of": "bounced", "per": "sent"},
            "window": 300,
            "min_volume": 1,
        }
        count = {"name": "count", "description": "d", "count": "sent", "window": 300}
        both = RuleSet(
            rules=(Rule.model_validate({**rate, "threshold": 0.003}), Rule.model_validate(count | {"threshold": 1}))
        )
        reloaded = RuleSet(rules=both.rules[:1])
        engine = Engine(both)
        engine.process(Event(Signal.SENT, "c1", 1_714_564_800.0, message_id="m1"))
        engine.set_rules(reloaded)
        restored = _restored(engine, reloaded, {})
        assert snapshot(restored, reloaded) == snapshot(engine, reloaded)

    def test_a_timestamp_far_ahead_awaiting_agreement_is_kept(self) -> None:
        """Cut between a record stamped a month ahead and the one that agrees with it: the clock still moves."""
        month = 30 * 86400.0
        events = [
            Event(Signal.SENT, "c1", 1_714_564_800.0),
            Event(Signal.SENT, "c1", 1_714_564_800.0 + month),
            Event(Signal.SENT, "c2", 1_714_564_800.0 + month + 10),
        ]
        uninterrupted, engine = Engine(RULES), Engine(RULES)
        for event in events:
            uninterrupted.process(event)
        engine.process(events[0]), engine.process(events[1])
        engine = _restored(engine, RULES, {})
        engine.process(events[2])
        assert engine.stats.ahead == 1
        assert snapshot(engine, RULES) == snapshot(uninterrupted, RULES)

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_count_window_shorter_than_its_rules_ask_is_grown(self, kinds: Kinds) -> None:
        """A checkpoint holding a `last: 50` ring that a `last: 200` rule reads (a guard whose reload kept the ring
        short wrote it): restored, the ring keeps its 50 sends and grows to 200, as a reload grows it, and bad mail
        after it pauses by the longer rule."""

        def last(name: str, size: int, threshold: str = "10%") -> Rule:
            return Rule.model_validate(
                {
                    "name": name,
                    "description": "d",
                    "rate": {"of": {"signal": "bounced", "where": {"bounce_type": "hard"}}, "per": "sent"},
                    "last": size,
                    "threshold": threshold,
                    "min_volume": size,
                }
            )

        def mail(start: float, count: int, bounce_every: int, prefix: str) -> list[Event]:
            events = []
            for n in range(count):
                events.append(Event(Signal.SENT, "c1", start + n, message_id=f"{prefix}{n}"))
                if (n + 1) % bounce_every == 0:
                    events.append(Event(Signal.BOUNCED, "c1", start + n + 0.5, f"{prefix}{n}", bounce_type="hard"))
            return events

        burst = last("burst", 50, threshold="20%")
        short, both = RuleSet(rules=(burst,)), RuleSet(rules=(burst, last("longer", 200)))
        engine = Engine(short, kinds=kinds)
        for event in mail(1_714_564_800.0, 300, 120, "old"):  # no bounce among the last 50 sends
            engine.process(event)

        def under_the_reloaded_rules(fields: list) -> None:
            fields[_field(snapshots._Partition, "settings")][_field(snapshots._Settings, "rules_version")] = (
                rules_version(both)
            )

        restored = Engine(both, kinds=kinds)
        restore(_forged(snapshot(engine, short), under_the_reloaded_rules), both, restored)
        measure = restored.measure("c1")["longer"]
        assert (measure.numerator, measure.denominator) == (0, 50)
        engine.set_rules(both)
        bad = mail(1_714_564_800.0 + 400, 200, 10, "new")
        decisions = [decision for event in bad for decision in restored.process(event)]
        assert decisions == [decision for event in bad for decision in engine.process(event)]
        assert [(d.rule.name, d.numerator, d.denominator) for d in decisions] == [("longer", 20, 200)]
        assert snapshot(restored, both) == snapshot(engine, both)


class TestTakenWhileCounting:
    """A snapshot taken a few campaigns at a time while the engine goes on counting (copy on write): the bytes of
    the moment it was begun, and the engine deciding as if no snapshot were under way."""

    @pytest.mark.parametrize("kinds", KINDS)
    @PROPERTY_SETTINGS
    @given(
        rules=rule_sets(last=True, cusum=True, delayed=True),
        reloaded=rule_sets(last=True, cusum=True, delayed=True),
        events=streams,
        options=engine_options,
        data=st.data(),
    )
    def test_the_bytes_are_those_of_the_moment_it_began(
        self,
        kinds: typing.Any,
        rules: RuleSet,
        reloaded: RuleSet,
        events: list[Event],
        options: dict,
        data: st.DataObject,
    ) -> None:
        cut = data.draw(st.integers(0, len(events)), label="begun before event")
        at_cut, uninterrupted = Engine(rules, **options, kinds=kinds), Engine(rules, **options, kinds=kinds)
        engine = Engine(rules, **options, kinds=kinds)
        for event in events[:cut]:
            at_cut.process(event)
            uninterrupted.process(event)
            engine.process(event)
        expected = snapshot(at_cut, rules)
        pending = PendingSnapshot(engine, rules)
        later: list[
            tuple[PendingSnapshot, bytes]
        ] = []  # begun while the first is under way: each the bytes of its own moment
        current = rules
        for event in events[cut:]:
            step = data.draw(st.sampled_from(("event",) * 6 + ("step", "pause", "reload", "another")), label="next")
            if step == "step":
                pending.step(data.draw(st.integers(0, 3), label="campaigns"))
            elif step == "pause":
                for one in (engine, uninterrupted):
                    one.note_pause(event.campaign_id, "outside", event.time)
            elif step == "reload":
                current = RuleSet(
                    rules=(*current.rules[:1], *(r for r in reloaded.rules if r.name != current.rules[0].name))
                )
                engine.set_rules(current)
                uninterrupted.set_rules(current)
            elif step == "another":
                later.append((PendingSnapshot(engine, current), snapshot(uninterrupted, current)))
            assert engine.process(event) == uninterrupted.process(event)
        assert pending.finish() == expected
        for another, its_moment in later:
            assert another.finish() == its_moment
        assert snapshot(engine, current) == snapshot(uninterrupted, current)
        assert engine.stats == uninterrupted.stats

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_finished_snapshot_lets_the_engine_go(self, kinds: typing.Any) -> None:
        engine = _busy_engine(RULES, kinds=kinds)
        pending = PendingSnapshot(engine, RULES)
        assert not pending.step(3)
        assert engine._snapshot is pending
        assert pending.step(4)  # the 7 campaigns
        assert engine._snapshot is None
        assert pending.finish() == snapshot(engine, RULES)

    @pytest.mark.parametrize("kinds", KINDS)
    @pytest.mark.parametrize("campaigns", [0, 1, 15, 16, 17])
    def test_the_parts_joined_are_the_partition_encoded_whole(
        self, kinds: typing.Any, campaigns: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Around msgpack's array headers (fixarray up to 15 items, then array 16), in runs of 4 campaigns a call."""
        monkeypatch.setattr(snapshots, "_RUN", 4)
        engine = Engine(RULES, kinds=kinds)
        for n in range(campaigns):
            engine.process(Event(Signal.SENT, f"c{n}", 1_714_564_800.0 + n, message_id=f"m{n}"))
        pending = PendingSnapshot(engine, RULES)
        whole = msgspec.msgpack.encode(
            snapshots._Partition(
                *pending._head,
                msgspec.Raw(snapshots._store_part(engine._seen)),
                [msgspec.Raw(snapshots._campaign(c, state)) for c, state in engine._campaigns.items()],
            )
        )
        assert pending.finish() == whole
        assert restore(whole, RULES, Engine(RULES, kinds=kinds)) is None

    @pytest.mark.parametrize("kinds", KINDS)
    def test_the_join_touches_no_interpreter_wide_switch(
        self, kinds: typing.Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`finish` runs in a worker thread once every step is taken: the collector's switch is the loop thread's."""
        engine = _busy_engine(RULES, kinds=kinds)
        pending = PendingSnapshot(engine, RULES)
        assert pending.step(7)
        switched: list[str] = []
        monkeypatch.setattr(gc, "disable", lambda: switched.append("disable"))
        monkeypatch.setattr(gc, "enable", lambda: switched.append("enable"))
        pending.finish()
        assert switched == []

    @pytest.mark.parametrize("kinds", KINDS)
    def test_a_campaign_that_cannot_be_encoded_gives_the_snapshot_up_not_the_event(self, kinds: typing.Any) -> None:
        """A message id no UTF-8 holds (the engine's API takes any str): the event is counted, the snapshot says why."""
        engine, reference = _busy_engine(RULES, kinds=kinds), _busy_engine(RULES, kinds=kinds)
        for one in (engine, reference):
            one.process(Event(Signal.SENT, "odd", 1_714_564_800.0 + 200, message_id="m\ud800"))
            one.process(Event(Signal.BOUNCED, "odd", 1_714_564_800.0 + 200, message_id="m\ud800", bounce_type="hard"))
        pending = PendingSnapshot(engine, RULES)
        later = Event(Signal.BOUNCED, "odd", 1_714_564_800.0 + 201, message_id="m2", bounce_type="hard")
        assert engine.process(later) == reference.process(later)
        assert engine.stats == reference.stats
        assert engine._snapshot is None  # given up, the engine let go
        with pytest.raises(SnapshotError, match="given up"):
            pending.step(100)

    @pytest.mark.parametrize("kinds", KINDS)
    def test_reading_a_campaigns_measures_leaves_the_snapshot_as_it_was(self, kinds: typing.Any) -> None:
        """Reading a window forgets the buckets that slid out: the snapshot keeps the campaign as it was."""
        engine, start = Engine(RULES, kinds=kinds), 1_714_564_800.0
        engine.process(Event(Signal.BOUNCED, "c", start, message_id="m0", bounce_type="hard"))
        for hour in range(1, 4):  # sends only: the bounce's bucket, out of the window now, is not yet forgotten
            engine.process(Event(Signal.SENT, "c", start + hour * 3600, message_id=f"m{hour}"))
        expected = snapshot(engine, RULES)
        pending = PendingSnapshot(engine, RULES)
        engine.measure("c")
        engine.leans_bad("c")
        assert pending.finish() == expected


def _busy_engine(rules: RuleSet, **options: object) -> Engine:
    engine = Engine(rules, **options)  # type: ignore[arg-type]
    for n in range(200):
        engine.process(Event(Signal.SENT, f"c{n % 7}", 1_714_564_800.0 + n, message_id=f"m{n}"))
        engine.process(Event(Signal.BOUNCED, f"c{n % 7}", 1_714_564_800.0 + n, message_id=f"m{n}", bounce_type="hard"))
    return engine


RULES = RuleSet(
    rules=(
        Rule.model_validate(
            {
                "name": "bounces",
                "description": "d",
                "rate": {"of": "bounced", "per": "sent"},
                "window": 3600,
                "threshold": "50%",
                "min_volume": 500,
            }
        ),
    )
)


class TestRefusing:
    def test_other_rules_are_refused(self) -> None:
        other = RuleSet(rules=(Rule.model_validate({**RULES.rules[0].model_dump(by_alias=True), "threshold": 0.6}),))
        assert rules_version(other) != rules_version(RULES)
        data = snapshot(_busy_engine(RULES), RULES)
        with pytest.raises(SnapshotError, match="other rules or settings"):
            restore(data, other, Engine(other))

    def test_the_rules_it_carries_are_taken_only_when_valid_and_of_its_version(self) -> None:
        """The state topic is input: rules that do not parse, or are not those the snapshot's version names, are
        refused (the checkpoint is then counted invalid), never built into an engine."""
        other = RuleSet(rules=(Rule.model_validate({**RULES.rules[0].model_dump(by_alias=True), "threshold": 0.6}),))
        data = snapshot(_busy_engine(RULES), RULES)
        assert rules_taken_under(data, RULES) is None
        assert rules_taken_under(data, other) == RULES
        at = _field(snapshots._Partition, "rules")
        unparsable = _forged(data, lambda fields: fields.__setitem__(at, b"{"))
        with pytest.raises(SnapshotError, match="not valid"):
            rules_taken_under(unparsable, other)
        swapped = _forged(data, lambda fields: fields.__setitem__(at, other.model_dump_json(by_alias=True).encode()))
        with pytest.raises(SnapshotError, match="not those its rules version names"):
            rules_taken_under(swapped, RuleSet(rules=()))
        huge = _forged(data, lambda fields: fields.__setitem__(at, b" " * (snapshots.MAX_CARRIED_RULES_BYTES + 1)))
        with pytest.raises(SnapshotError, match="over 4,194,304 bytes"):
            rules_taken_under(huge, other)

    @pytest.mark.parametrize(
        "options",
        [{"dedupe_horizon": 60.0}, {"max_campaigns": 3}, {"max_dedupe_keys": 100}, {"resume_grace": 1.0}],
    )
    def test_other_settings_are_refused(self, options: dict) -> None:
        data = snapshot(_busy_engine(RULES), RULES)
        with pytest.raises(SnapshotError, match="other rules or settings"):
            restore(data, RULES, Engine(RULES, **options))

    def test_another_format_is_refused_before_it_is_read(self) -> None:
        data = bytearray(snapshot(_busy_engine(RULES), RULES))
        assert data[1] == FORMAT  # an array header, then the format as a positive fixint
        data[1] = FORMAT + 1
        with pytest.raises(SnapshotError, match=f"format {FORMAT + 1}"):
            restore(bytes(data), RULES, Engine(RULES))

    def test_values_nested_deeper_than_msgspec_decodes_are_refused_as_not_a_snapshot(self) -> None:
        """msgspec answers nesting past its depth with RecursionError: refused as any bad snapshot is, with
        SnapshotError and the engine untouched (restore's contract), not with the interpreter's error."""
        good = snapshot(_busy_engine(RULES), RULES)
        assert 0x90 < good[0] < 0x9F  # a short array: one more field, nested 5,000 deep, after the last
        deep = bytes((good[0] + 1,)) + good[1:] + b"\x91" * 5_000 + b"\xc0"
        engine = Engine(RULES)
        before = snapshot(engine, RULES)
        with pytest.raises(SnapshotError, match="not a snapshot: maximum recursion depth"):
            restore(deep, RULES, engine)
        with pytest.raises(SnapshotError, match="not a snapshot: maximum recursion depth"):
            check_clock(deep, float("inf"))
        assert snapshot(engine, RULES) == before
        restore(good, RULES, engine)  # the same bytes without the nesting are taken

    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def test_damaged_bytes_are_refused_and_leave_the_engine_as_it_was(self, data: st.DataObject) -> None:
        good = snapshot(_busy_engine(RULES), RULES)
        damaged = data.draw(
            st.one_of(
                st.integers(0, len(good) - 1).map(lambda n: good[:n]),
                st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)).map(
                    lambda at: good[: at[0]] + bytes((good[at[0]] ^ at[1],)) + good[at[0] + 1 :]
                ),
                st.binary(max_size=64),
            ),
            label="damaged",
        )
        engine = Engine(RULES)
        before = snapshot(engine, RULES)
        try:
            restore(damaged, RULES, engine)
        except SnapshotError:
            assert snapshot(engine, RULES) == before
        # a flipped bit inside a number can still read as a snapshot (the checkpoint's checksum
        # catches that): then it must at least be usable
        engine.process(Event(Signal.SENT, "c1", 1_714_570_000.0, message_id="x"))


YEAR_9999 = 253_402_300_799.0


def _forged(data: bytes, change: typing.Callable[[list], None]) -> bytes:
    """The snapshot with some of its values changed, re-encoded as a writer of the state topic could."""
    fields = msgspec.msgpack.decode(data)
    change(fields)
    return msgspec.msgpack.encode(fields)


def _field(mirror: typing.Any, name: str) -> int:
    return mirror.__struct_fields__.index(name)


def _campaigns(fields: list) -> list:
    return fields[_field(snapshots._Partition, "campaigns")]


def _dedupe(fields: list) -> list:
    return fields[_field(snapshots._Partition, "dedupe")]


class TestBounding:
    """A snapshot is input (whoever can write the state topic): what no engine with its rules and settings
    could have made is refused before it is used, and before any size it names is allocated."""

    @pytest.mark.parametrize("name", ["started_at", "watermark"])
    def test_a_campaign_time_past_the_partitions_clock_is_refused(self, name: str) -> None:
        """Year 9999 as a campaign's episode start or latest time would count all its later bounces as late."""
        data = _forged(
            snapshot(_busy_engine(RULES), RULES),
            lambda fields: _campaigns(fields)[0].__setitem__(_field(snapshots._Campaign, name), YEAR_9999),
        )
        engine = Engine(RULES)
        with pytest.raises(SnapshotError, match="past the partition's clock"):
            restore(data, RULES, engine)
        assert engine.campaigns == 0

    def test_a_pause_acted_on_at_catch_up_lands_ahead_of_the_reading_and_restores(self) -> None:
        """A backlog's pause lands at the call (Engine.note_pause), hours past the partition's clock: its
        checkpoint restores. A pause landing more than a day past the clock no engine makes: refused."""
        engine = _busy_engine(RULES)
        campaign = next(iter(engine._campaigns))
        engine.note_pause(campaign, "at-catch-up", engine._watermark + 3 * 3600)
        restored = Engine(RULES)
        restore(snapshot(engine, RULES), RULES, restored)
        assert restored.episode(campaign).pause == "at-catch-up"
        engine.note_pause(campaign, "at-catch-up", engine._watermark + 2 * 86_400)
        with pytest.raises(SnapshotError, match="the pause of campaign"):
            restore(snapshot(engine, RULES), RULES, Engine(RULES))

    def test_a_rule_state_past_the_clock_is_refused(self) -> None:
        """A last firing in year 9999 would keep the rule in its cooldown for ever."""

        def fired_far_ahead(fields: list) -> None:
            campaign = _campaigns(fields)[0]
            campaign[_field(snapshots._Campaign, "rule_states")] = {"bounces": [None, True, YEAR_9999, None]}

        data = _forged(snapshot(_busy_engine(RULES), RULES), fired_far_ahead)
        with pytest.raises(SnapshotError, match="past the partition's clock"):
            restore(data, RULES, Engine(RULES))

    @pytest.mark.parametrize("bits", [2**63 - 1, 64, 7])
    def test_a_dedupe_table_size_no_engine_makes_is_refused_before_it_is_computed(self, bits: int) -> None:
        """`bits=2**63-1` made `1 << bits` raise MemoryError, which nothing caught."""
        data = _forged(snapshot(_busy_engine(RULES), RULES), lambda fields: _dedupe(fields).__setitem__(0, bits))
        with pytest.raises(SnapshotError, match="dedupe table"):
            restore(data, RULES, Engine(RULES))

    def test_dedupe_keys_that_do_not_add_up_are_refused(self) -> None:
        keys = _field(snapshots._Dedupe, "keys")
        data = _forged(snapshot(_busy_engine(RULES), RULES), lambda fields: _dedupe(fields).__setitem__(keys, 10**9))
        with pytest.raises(SnapshotError, match="dedupe keys"):
            restore(data, RULES, Engine(RULES))

    def test_a_window_longer_than_its_rule_keeps_is_refused(self) -> None:
        """A million buckets in a window of sixty: no rule made it."""

        def grown(fields: list) -> None:
            series = _campaigns(fields)[0][_field(snapshots._Campaign, "series")]
            window = next(value for value in series if value is not None)
            window[1 + _field(snapshots._Sliding, "older")] = bytes(16 * 10**6)  # after the union's tag

        data = _forged(snapshot(_busy_engine(RULES), RULES), grown)
        with pytest.raises(SnapshotError, match="bucket fields"):
            restore(data, RULES, Engine(RULES))

    def test_more_campaigns_than_the_engine_tracks_are_refused(self) -> None:
        def doubled(fields: list) -> None:
            campaigns, at = _campaigns(fields), _field(snapshots._Campaign, "id")
            campaigns += [[*campaign[:at], f"copy-{n}", *campaign[at + 1 :]] for n, campaign in enumerate(campaigns)]

        data = _forged(snapshot(_busy_engine(RULES, max_campaigns=7), RULES), doubled)
        with pytest.raises(SnapshotError, match="more than the 7 tracked"):
            restore(data, RULES, Engine(RULES, max_campaigns=7))

    def test_a_clock_ahead_of_the_bound_given_is_refused_before_the_rest_is_read(self) -> None:
        data = snapshot(_busy_engine(RULES), RULES)
        clock = 1_714_564_800.0 + 199
        snapshots.check_clock(data, clock)
        with pytest.raises(SnapshotError, match="clock"):
            snapshots.check_clock(data, clock - 1)
        with pytest.raises(SnapshotError, match="clock"):
            snapshots.check_clock(
                _forged(
                    data, lambda fields: fields.__setitem__(_field(snapshots._Partition, "watermark"), float("nan"))
                ),
                clock,
            )


class TestCoverage:
    def test_every_engine_attribute_is_stored_or_derived(self) -> None:
        """A new attribute of the engine must be added to the snapshot (and FORMAT raised), or here as derived."""
        stored = {"_campaigns", "_seen", "_resume_grace", "_max_campaigns", "_watermark", "_ahead", "_next_sweep"}
        # the plan from the rules; stats are stored too, as counters; the kinds of series are the engine's
        # own (a snapshot restores into either: tests/test_core_differential.py); `_snapshot` is one under way;
        # `_scopes`: which rules it counts, from the partition it reads (a scope topic's checkpoint is framed apart);
        # `unsealed`: this process's count for its metric (a restore changes nothing the engine decides by it)
        derived = {"_plan", "stats", "kinds", "_snapshot", "_scopes", "unsealed"}
        assert set(vars(Engine(RULES))) == stored | derived

    def test_every_kind_of_series_is_stored(self) -> None:
        """A new kind of series must get a mirror in the snapshot (and FORMAT raised)."""
        assert set(snapshots._SERIES) == {kind.kind for kind in typing.get_args(Series)}

    def test_a_snapshot_is_compact(self) -> None:
        """Every structure is an array (no field names on the wire)."""
        data = snapshot(_busy_engine(RULES), RULES)
        assert b"watermark" not in data and b"newest_count" not in data


# Run in a subprocess with a given PYTHONHASHSEED: stage "take" processes the first events and
# writes a snapshot to the file; stage "continue" restores it, processes the rest and prints what
# came of it. Sends m0..m49; then retries of m0..m9 (duplicates), hard bounces of m40..m49 (each
# joins its send: among the last 30 sends it counts only while that send does), 25 more sends.
_ACROSS = """
import json, sys
from guard.engine import Engine
from guard.engine.snapshot import restore, snapshot
from guard.contracts.events import Event, Signal
from guard.rules import Rule, RuleSet

RULES = RuleSet(rules=(Rule.model_validate({
    "name": "hard-bounces", "description": "d", "rate": {"of": {"signal": "bounced", "where": {"bounce_type": "hard"}},
    "per": "sent"}, "last": 30, "threshold": "50%", "min_volume": 30}),))
T0 = 1_714_564_800.0
FIRST = [Event(Signal.SENT, "c1", T0 + n, f"m{n}") for n in range(50)]
REST = (
    [Event(Signal.SENT, "c1", T0 + 50, f"m{n}") for n in range(10)]
    + [Event(Signal.BOUNCED, "c1", T0 + 51, f"m{n}", bounce_type="hard") for n in range(40, 50)]
    + [Event(Signal.SENT, "c1", T0 + 52 + n, f"m{n}") for n in range(50, 75)]
)

def outcome(engine):
    measure = engine.measure("c1")["hard-bounces"]
    return {"duplicates": engine.stats.duplicates, "counted": [measure.numerator, measure.denominator]}

if __name__ == "__main__":
    stage, path = sys.argv[1:]
    engine = Engine(RULES)
    if stage == "take":
        for event in FIRST:
            engine.process(event)
        open(path, "wb").write(snapshot(engine, RULES))
    else:
        restore(open(path, "rb").read(), RULES, engine)
        for event in REST:
            engine.process(event)
        print(json.dumps(outcome(engine)))
"""


def _stage(stage: str, path: Path, seed: int) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _ACROSS, stage, str(path)],
        env={**os.environ, "PYTHONHASHSEED": str(seed)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestAcrossProcesses:
    def test_a_snapshot_restored_in_another_process_still_knows_its_keys_and_sends(self, tmp_path: Path) -> None:
        """Taken in a process with one hash seed, continued in one with another: retries are still
        duplicates and bounces still join their sends, as in one process that never stopped."""
        script: dict = {"__name__": "across"}
        exec(_ACROSS, script)
        uninterrupted = Engine(script["RULES"])
        for event in script["FIRST"] + script["REST"]:
            uninterrupted.process(event)
        expected = script["outcome"](uninterrupted)
        assert expected == {"duplicates": 10, "counted": [5, 30]}  # the bounces of m45..m49 still count
        path = tmp_path / "snapshot"
        _stage("take", path, seed=1)
        assert json.loads(_stage("continue", path, seed=2)) == expected
