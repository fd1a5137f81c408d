"""Dedupe memory: one store of (campaign, signal, messageId) keys per partition's engine, kept in
generations of the partition's clock, within a budget of keys, oldest forgotten first."""

from __future__ import annotations

import random

import pytest
from strategies import T0
from test_engine import HOUR, MINUTE, bounce, fired, rule, rules, sent

from guard.engine import Engine
from guard.engine.dedupe import GENERATIONS, DedupeStore

HORIZON = 12 * HOUR
SPAN = HORIZON / GENERATIONS


def counted(engine: Engine, events: list) -> list[bool]:
    """For each event: whether it counted (was not a duplicate)."""
    result = []
    for event in events:
        before = engine.stats.duplicates
        engine.process(event)
        result.append(engine.stats.duplicates == before)
    return result


class TestHorizon:
    def test_a_key_is_remembered_for_the_horizon_across_generations(self) -> None:
        """A bounce, then a send every 10 minutes for almost 12 h (the generations rotate eight
        times): the bounce delivered again is still a duplicate."""
        engine = Engine(rules(rule(threshold=1000)), dedupe_horizon=HORIZON)
        engine.process(bounce(T0, "b1"))
        for minute in range(0, int(HORIZON / MINUTE) - 10, 10):
            engine.process(sent(T0 + minute * MINUTE, f"s{minute}"))
        assert counted(engine, [bounce(T0, "b1")]) == [False]

    def test_a_key_is_forgotten_at_most_one_generation_after_the_horizon(self) -> None:
        engine = Engine(rules(rule(threshold=1000)), dedupe_horizon=HORIZON)
        engine.process(bounce(T0, "b1"))
        engine.process(sent(T0 + HORIZON + SPAN + 1, "s"))
        assert counted(engine, [bounce(T0, "b1")]) == [True]

    def test_the_horizon_runs_on_the_partitions_clock_not_the_campaigns(self) -> None:
        """Another campaign moving the clock on forgets a quiet campaign's keys in time."""
        engine = Engine(rules(rule(threshold=1000)), dedupe_horizon=HORIZON)
        engine.process(bounce(T0, "b1", campaign="quiet"))
        engine.process(sent(T0 + HORIZON + SPAN + 1, "s", campaign="busy"))
        assert counted(engine, [bounce(T0 + 60, "b1", campaign="quiet")]) == [True]

    def test_keys_outlive_the_campaigns_eviction(self) -> None:
        """A campaign evicted at the campaign cap comes back with a retried bounce: still a duplicate."""
        engine = Engine(rules(rule(threshold=1000)), max_campaigns=1)
        engine.process(bounce(T0, "b1", campaign="a"))
        engine.process(sent(T0 + 1, "s1", campaign="b"))  # evicts "a"
        assert engine.stats.evicted_campaigns == 1
        assert counted(engine, [bounce(T0, "b1", campaign="a")]) == [False]


class TestBudget:
    def test_a_flood_of_unique_ids_stays_within_the_budget(self) -> None:
        """100,000 distinct message ids into three campaigns within a minute: never more keys than the budget."""
        engine, most = Engine(rules(rule(threshold=10**9)), max_dedupe_keys=5_000), 0
        for n in range(100_000):
            engine.process(bounce(T0 + n * 0.0005, f"m{n}", campaign=f"c{n % 3}"))
            most = max(most, engine.dedupe_keys)
        assert 5_000 * (GENERATIONS - 1) // GENERATIONS <= most <= 5_000  # whole generations go
        assert engine.dedupe_evicted == 100_000 - engine.dedupe_keys

    def test_the_oldest_keys_are_forgotten_first(self) -> None:
        """At the budget, a retry of the first ids counts again; of the latest, it is a duplicate."""
        budget = 80
        engine = Engine(rules(rule(threshold=10**9)), max_dedupe_keys=budget)
        ids = [f"m{n}" for n in range(200)]
        counted(engine, [bounce(T0 + n, message_id) for n, message_id in enumerate(ids)])
        late = T0 + 300
        assert counted(engine, [bounce(late, message_id) for message_id in ids[-60:]]) == [False] * 60
        assert counted(engine, [bounce(late, message_id) for message_id in ids[:20]]) == [True] * 20

    def test_a_budget_below_one_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            Engine(rules(rule()), max_dedupe_keys=0)


class TestDeterminism:
    def test_the_same_log_gives_the_same_decisions_and_keys(self) -> None:
        """A random log with retries, through two engines with a budget that bites: the same everywhere."""
        generator = random.Random(7)
        events, clock = [], T0
        for n in range(20_000):
            clock += generator.expovariate(1 / 3.0)
            message_id = f"m{generator.randrange(n + 1)}" if generator.random() < 0.2 else f"m{n}"
            make = bounce if generator.random() < 0.1 else sent
            events.append(make(clock, message_id, campaign=f"c{generator.randrange(20)}"))
        engines = [Engine(rules(rule(threshold=5)), max_dedupe_keys=2_000) for _ in range(2)]
        runs = [[d.id for d in fired(engine, events)] for engine in engines]
        assert runs[0] == runs[1] and runs[0]
        first, second = engines
        assert (first.stats, first.dedupe_keys, first.dedupe_evicted) == (
            second.stats,
            second.dedupe_keys,
            second.dedupe_evicted,
        )
        assert first.dedupe_evicted > 0


class TestSeenBeforeAGeneration:
    def test_keys_of_generations_opened_before_it_only(self) -> None:
        """By the order generations opened in, whatever their times: a clock moved ahead by one record stamped so
        gives every later generation that time, and the order still tells them apart."""
        store = DedupeStore(HORIZON)
        ahead = T0 + 2 * HOUR  # the partition's clock, after one record stamped two hours ahead
        store.seen_event("c1", "sent", "old", ahead)  # sent at T0
        store.seal(ahead + MINUTE)  # its pause
        began = store.sequence  # its resume, at T0 + 30 minutes
        store.seen_event("c1", "sent", "new", ahead + MINUTE)
        assert store.seen_before_generation("c1", "sent", "old", began)
        assert not store.seen_before_generation("c1", "sent", "new", began)
        assert not store.seen_before_generation("c1", "sent", "never", began)
        assert not store.seen_before("c1", "sent", "old", T0 + 30 * MINUTE)  # by time: the clock blurs it


class TestStore:
    def test_a_match_across_two_entries_is_no_match(self) -> None:
        """The 7 stored bytes of one key may appear straddling two others in its bucket."""
        store = DedupeStore(HOUR)
        first = int.from_bytes(bytes(range(1, 8)), "little") << 8  # bucket 0, stored bytes 01..07
        assert not store.seen(first, T0)
        tag = store._tag  # the entry is 01..07 then the tag: bytes 02..07+tag straddle nothing yet
        straddling = int.from_bytes(bytes(range(2, 8)) + tag, "little") << 8
        assert not store.seen(straddling, T0)
        assert store.seen(first, T0) and store.seen(straddling, T0)
        assert store.keys == 2

    def test_every_key_is_found_after_the_table_grows(self) -> None:
        store = DedupeStore(HOUR)
        generator = random.Random(3)
        keys = [generator.getrandbits(64) - 2**63 for _ in range(40_000)]
        assert not any(store.seen(key, T0) for key in keys)
        assert store._bits > 8
        assert all(store.seen(key, T0) for key in keys)
        assert store.keys == 40_000

    @pytest.mark.parametrize("budget", [1, 7, 8, 9, 100])
    def test_never_more_keys_than_the_budget(self, budget: int) -> None:
        store, generator = DedupeStore(HOUR, budget), random.Random(budget)
        for n in range(2_000):
            store.seen(generator.getrandbits(64), T0 + n)
            assert store.keys <= budget
        assert store.evicted + store.keys == 2_000  # within the horizon: only the budget forgets
