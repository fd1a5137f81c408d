"""Properties of the engine, checked against a brute-force reading of the event list."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    CAMPAIGNS,
    Case,
    cases,
    count_rules,
    cusum_rules,
    event_streams,
    joined_streams,
    last_rules,
    rate_rules,
    resume_graces,
    rule_sets,
    stop_and_go_streams,
)

from guard.actions.audit import audit_event
from guard.contracts.events import Event, Signal
from guard.engine import Decision, Engine
from guard.engine.decisions import decision_id
from guard.engine.engine import MAX_AHEAD_SECONDS
from guard.engine.windows import BUCKETS_PER_WINDOW, LATE_PER_SECONDS, SKIPPED_IDS
from guard.rules import Rule, RuleSet
from guard.rules.models import Selector

EPSILON = 1e-9  # the engine's allowance for float rates ("0.3%" of 1000 is 3)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# -- an independent, brute-force reading of the rules ------------------------------------------


def status_matches(status: str, pattern: str) -> bool:
    return len(status.split(".")) == 3 and all(
        want == "x" or want == have for have, want in zip(status.split("."), pattern.split("."), strict=True)
    )


def selected(selector: Selector, event: Event) -> bool:
    """Whether the event is one the selector counts, read straight from the rule."""
    where = selector.where
    if event.signal.value != selector.signal:
        return False
    if where.bounce_type is not None and event.bounce_type != where.bounce_type:
        return False
    if where.recipient_domain is not None and not (
        event.recipient_domain is not None
        and any(fnmatch.fnmatchcase(event.recipient_domain, pattern.lower()) for pattern in where.recipient_domain)
    ):
        return False
    if where.smtp_status is not None and not (
        event.smtp_status is not None and any(status_matches(event.smtp_status, p) for p in where.smtp_status)
    ):
        return False
    return True


def applies(rule: Rule, campaign_id: str) -> bool:
    def any_glob(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(campaign_id, pattern) for pattern in patterns)

    return any_glob(rule.campaigns.include) and not any_glob(rule.campaigns.exclude)


def selectors_of(rule: Rule) -> tuple[Selector, Selector | None]:
    if rule.cusum is not None:
        return rule.cusum.of, rule.cusum.per
    if rule.rate is not None:
        return rule.rate.of, rule.rate.per
    assert rule.count is not None
    return rule.count, None


def since_last_start(events: Sequence[Event], campaign_id: str) -> list[Event]:
    """The campaign's events after its last `campaign.started` (a start resets the evidence)."""
    mine = [event for event in events if event.campaign_id == campaign_id]
    starts = [n for n, event in enumerate(mine) if event.signal is Signal.STARTED]
    return mine[starts[-1] + 1 :] if starts else mine


def count_between(events: Sequence[Event], selector: Selector, low: float, high: float) -> int:
    return sum(1 for event in events if low <= event.time <= high and selected(selector, event))


def bucket(time: float, window: float) -> int:
    return int(time // (window / BUCKETS_PER_WINDOW))


def bucketed_count(events: Sequence[Event], selector: Selector, window: float, now: float) -> int:
    """The engine's window rule: the 60 buckets of width window/60 that end with now's bucket."""
    newest = bucket(now, window)
    return sum(
        1
        for event in events
        if newest - BUCKETS_PER_WINDOW < bucket(event.time, window) <= newest and selected(selector, event)
    )


def holds(rule: Rule, numerator: int, denominator: int | None) -> bool:
    if denominator is None:
        return numerator >= rule.threshold
    return denominator >= (rule.min_volume or 0) and numerator >= rule.threshold * denominator - EPSILON


def _outcome_of_an_earlier_episode(events: Sequence[Event], decisions: Sequence[Decision]) -> bool:
    """Some outcome among one campaign's `events` names a send made before a (re)start or a pause decision of the
    campaign that came before the outcome."""
    marks = [e.time for e in events if e.signal is Signal.STARTED]
    marks += [d.fired_at for d in decisions if d.rule.action == "pause"]
    sent_at: dict[str, float] = {}
    for event in events:
        if event.message_id is None:
            continue
        if event.signal is Signal.SENT:
            sent_at.setdefault(event.message_id, event.time)
        elif (send := sent_at.get(event.message_id)) is not None and any(send <= m <= event.time for m in marks):
            return True
    return False


def run_all(rules: RuleSet, events: Sequence[Event]) -> list[tuple[int, Decision]]:
    """Every decision with the index of the event that caused it."""
    engine = Engine(rules)
    return [(n, decision) for n, event in enumerate(events) for decision in engine.process(event)]


# -- properties ---------------------------------------------------------------------------------


class TestDeterminism:
    """The same log and the same rules give the same decisions."""

    @PROPERTY_SETTINGS
    @given(case=cases(cusum=True))
    def test_the_same_events_give_the_same_decisions(self, case: Case) -> None:
        """Two fresh engines fed the same events decide the same, ids and stats included."""
        first, second = Engine(case.rules), Engine(case.rules)
        one = [first.process(event) for event in case.events]
        two = [second.process(event) for event in case.events]
        assert one == two
        assert [d.id for ds in one for d in ds] == [d.id for ds in two for d in ds]
        assert first.stats == second.stats

    @PROPERTY_SETTINGS
    @given(case=cases(cusum=True, late=False))
    def test_a_campaign_decides_alone_when_events_are_in_order(self, case: Case) -> None:
        """With times in order, a campaign's decisions do not depend on other campaigns' events; but for an outcome
        of a send from before its campaign's (re)start or pause: whether the partition tells it apart as an earlier
        episode's depends on when the dedupe keys' generations closed, which other campaigns' pauses move (README,
        "Paused and resumed campaigns"). Such a campaign is left out."""
        together = run_all(case.rules, case.events)
        for campaign_id in {event.campaign_id for event in case.events}:
            events = [event for event in case.events if event.campaign_id == campaign_id]
            alone = run_all(case.rules, events)
            if not _outcome_of_an_earlier_episode(events, [d for _, d in alone]):
                assert [d for _, d in together if d.campaign_id == campaign_id] == [d for _, d in alone]


class TestNeverBelowThreshold:
    """A decision is backed by evidence that really reaches the rule's threshold."""

    @PROPERTY_SETTINGS
    @given(case=cases())
    def test_a_decision_reaches_its_threshold_on_evidence_from_the_log(self, case: Case) -> None:
        """Reported counts satisfy threshold and min_volume, and never exceed a brute-force count of the log."""
        for index, decision in run_all(case.rules, case.events):
            rule, campaign_id = decision.rule, decision.campaign_id
            numerator_selector, denominator_selector = selectors_of(rule)
            evidence = since_last_start(case.events[: index + 1], campaign_id)
            low = decision.fired_at - rule.window - rule.window / BUCKETS_PER_WINDOW

            assert applies(rule, campaign_id)
            assert holds(rule, decision.numerator, decision.denominator)
            assert decision.numerator <= count_between(evidence, numerator_selector, low, decision.fired_at)
            if denominator_selector is None:
                assert decision.denominator is None
                assert decision.value == decision.numerator
            else:
                assert decision.denominator is not None
                assert decision.denominator <= count_between(evidence, denominator_selector, low, decision.fired_at)
                assert decision.value == decision.numerator / decision.denominator
            assert decision.fired_at >= case.events[index].time
            assert decision.fired_at in {event.time for event in evidence}
            assert low < decision.evidence_from <= decision.fired_at
            assert decision.id == decision_id(campaign_id, rule, decision.fired_at)


def first_crossings(rule: Rule, events: Sequence[Event]) -> dict[str, int]:
    """Brute force, per campaign: the index of the first event at which the rule's condition holds."""
    numerator_selector, denominator_selector = selectors_of(rule)
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        campaign_id = event.campaign_id
        if campaign_id in first or not applies(rule, campaign_id):
            continue
        seen = [e for e in events[: index + 1] if e.campaign_id == campaign_id]
        numerator = bucketed_count(seen, numerator_selector, rule.window, event.time)
        denominator = (
            None
            if denominator_selector is None
            else bucketed_count(seen, denominator_selector, rule.window, event.time)
        )
        if holds(rule, numerator, denominator):
            first[campaign_id] = index
    return first


in_order_streams = event_streams(late=False, started=False, unique_ids=True, max_size=120)


class TestFiresExactlyAtTheCrossing:
    """On an in-order stream a rule without `for` fires exactly where the brute-force condition first holds."""

    @PROPERTY_SETTINGS
    @given(rule=count_rules(for_=False), events=in_order_streams)
    def test_a_count_rule_fires_first_where_the_count_first_reaches_the_threshold(
        self, rule: Rule, events: list[Event]
    ) -> None:
        """The first decision of each campaign is at the first event whose bucketed count reaches the threshold."""
        self._check(rule, events)

    @PROPERTY_SETTINGS
    @given(rule=rate_rules(for_=False), events=in_order_streams)
    def test_a_rate_rule_fires_first_where_the_rate_first_reaches_the_threshold(
        self, rule: Rule, events: list[Event]
    ) -> None:
        """The same for rates, min_volume included."""
        self._check(rule, events)

    @staticmethod
    def _check(rule: Rule, events: list[Event]) -> None:
        first_decisions: dict[str, tuple[int, Decision]] = {}
        for index, decision in run_all(RuleSet(rules=(rule,)), events):
            first_decisions.setdefault(decision.campaign_id, (index, decision))
        expected = first_crossings(rule, events)
        assert {campaign: index for campaign, (index, _) in first_decisions.items()} == expected
        numerator_selector, _ = selectors_of(rule)
        for campaign_id, (index, decision) in first_decisions.items():
            seen = [e for e in events[: index + 1] if e.campaign_id == campaign_id]
            assert decision.fired_at == events[index].time
            assert decision.numerator == bucketed_count(seen, numerator_selector, rule.window, decision.fired_at)


# -- cusum rules: the statistic read straight from its definition ---------------------------------


def cusum_steps(rule: Rule, events: Sequence[Event], campaign_id: str) -> list[list[float]]:
    """For each event of the list, the increments of the campaign's current episode after it, in
    arrival order: a `per` event adds the clean-send step, an `of` event the rise (an event that is
    both: the trial first, and neither when the trial is skipped). A `campaign.started` or a day without events starts afresh, and
    events from before the episode's start never count (streams without pauses: no resumes). A `per`
    event more than LATE_PER_SECONDS behind the newest adds nothing, nor does an `of` event with the
    message id of one of the latest SKIPPED_IDS such; the newest is the latest time of a counted `per`
    event, each at most LATE_PER_SECONDS past the one counted before it."""
    assert rule.cusum is not None
    condition, retention = rule.cusum, RuleSet(rules=(rule,)).retention
    steps: list[float] = []
    started, watermark = float("-inf"), None
    newest_per, previous_per, skipped = float("-inf"), float("-inf"), list[str]()
    after = []
    for event in on_the_partition_clock(events):
        if event.campaign_id == campaign_id:
            if watermark is not None and event.time - watermark > retention:
                steps, started, watermark = [], float("-inf"), None
                newest_per, previous_per, skipped = float("-inf"), float("-inf"), []
            if event.signal is Signal.STARTED:
                steps, started, watermark = [], event.time, event.time
                newest_per, previous_per, skipped = float("-inf"), float("-inf"), []
            elif event.time >= started:
                watermark = event.time if watermark is None else max(watermark, event.time)
                trial_skipped = False
                if selected(condition.per, event):
                    if trial_skipped := event.time < newest_per - LATE_PER_SECONDS:
                        skipped = (
                            [*skipped, event.message_id][-SKIPPED_IDS:] if event.message_id is not None else skipped
                        )
                    else:
                        steps = [*steps, condition.fall]
                        newest_per = max(newest_per, min(event.time, previous_per + LATE_PER_SECONDS))
                        previous_per = event.time
                outcome_skipped = trial_skipped or event.message_id in skipped
                if selected(condition.of, event) and not outcome_skipped:
                    steps = [*steps, condition.rise]
        after.append(steps)
    return after


def largest_tail_sum(steps: Sequence[float]) -> float:
    """The CUSUM by its other definition: the largest sum of a run of the latest increments (or 0)."""
    return max([0.0, *(sum(steps[start:]) for start in range(len(steps)))])


cusum_streams = event_streams(unique_ids=True, max_size=120)  # late events and starts, no duplicates


class TestCusum:
    """A cusum rule's statistic is the largest tail sum of its increments, and it fires where that first reaches h."""

    @PROPERTY_SETTINGS
    @given(rule=cusum_rules(), events=cusum_streams)
    def test_the_statistic_is_the_largest_sum_of_the_latest_increments(self, rule: Rule, events: list[Event]) -> None:
        """After every event, each campaign's statistic equals the brute-force tail sum of its episode's increments."""
        rule = Rule.model_validate({**rule.model_dump(by_alias=True), "action": "alert"})  # no pause, no resume
        engine = Engine(RuleSet(rules=(rule,)))
        expected = {campaign_id: cusum_steps(rule, events, campaign_id) for campaign_id in CAMPAIGNS}
        for index, event in enumerate(events):
            engine.process(event)
            for campaign_id in CAMPAIGNS:
                measure = engine.measure(campaign_id).get(rule.name)
                statistic = measure.value if measure is not None else 0.0
                assert statistic == pytest.approx(largest_tail_sum(expected[campaign_id][index]), abs=1e-9)

    @PROPERTY_SETTINGS
    @given(rule=cusum_rules(for_=False), events=in_order_streams)
    def test_a_cusum_rule_fires_first_where_the_statistic_first_reaches_its_level(
        self, rule: Rule, events: list[Event]
    ) -> None:
        """The first decision of each campaign is at the first event whose statistic reaches ln(size / budget),
        quoting that statistic, the level, and the `of`/`per` events since the statistic last rose from zero."""
        assert rule.cusum is not None
        first_decisions: dict[str, tuple[int, Decision]] = {}
        for index, decision in run_all(RuleSet(rules=(rule,)), events):
            first_decisions.setdefault(decision.campaign_id, (index, decision))
        expected: dict[str, int] = {}
        for campaign_id in CAMPAIGNS:
            for index, steps in enumerate(cusum_steps(rule, events, campaign_id)):
                if events[index].campaign_id == campaign_id and largest_tail_sum(steps) >= rule.level - EPSILON:
                    expected[campaign_id] = index
                    break
        assert {campaign: index for campaign, (index, _) in first_decisions.items()} == expected
        for campaign_id, (index, decision) in first_decisions.items():
            steps = cusum_steps(rule, events, campaign_id)[index]
            assert decision.value == pytest.approx(largest_tail_sum(steps), abs=1e-9)
            # the run: the increments after the last point where the prefix sum was at its lowest
            prefix = [0.0]
            for step in steps:
                prefix.append(prefix[-1] + step)
            lowest = min(prefix)
            run = steps[max(n for n, total in enumerate(prefix) if total <= lowest + 1e-9) :]
            assert (decision.numerator, decision.denominator) == (
                run.count(rule.cusum.rise),
                run.count(rule.cusum.fall),
            )
            assert audit_event(decision, "fired", decided_at=0.0, dry_run=True).evidence.threshold == rule.level


# -- count windows: outcomes joined to their sends ------------------------------------------------


class TestCountWindowsJoinTheirSends:
    """`last: N` counts the outcomes of its own N sends: an outcome quoting a send's message id
    belongs to that send while it is among the last N; any other counts as the latest send's. A send
    more than LATE_PER_SECONDS behind the newest is skipped, and the outcomes quoting it (the newest: as
    for a cusum, each counted send's time at most LATE_PER_SECONDS past the one before)."""

    @PROPERTY_SETTINGS
    @given(rule=last_rules(), events=joined_streams())
    def test_the_counts_are_the_outcomes_of_the_last_n_sends(self, rule: Rule, events: list[Event]) -> None:
        """After every event, numerator and denominator equal a brute-force join of the log."""
        assert rule.rate is not None and rule.last is not None
        rule = Rule.model_validate({**rule.model_dump(by_alias=True), "action": "alert"})
        engine = Engine(RuleSet(rules=(rule,)))
        sends: list[str | None] = []  # message ids of the `per` events counted, in order
        owners: list[int] = []  # for each `of` event counted, the index of the send it belongs to
        newest, previous, skipped = float("-inf"), float("-inf"), list[str]()
        base: float | None = None
        for event in events:
            engine.process(event)
            trial_skipped = False
            if selected(rule.rate.per, event):
                if trial_skipped := event.time < newest - LATE_PER_SECONDS:
                    skipped = [*skipped, event.message_id][-SKIPPED_IDS:] if event.message_id is not None else skipped
                else:
                    sends.append(event.message_id)
                    newest = max(newest, min(event.time, previous + LATE_PER_SECONDS))
                    base = event.time // 1 if base is None else base
                    previous = base + (event.time - base) // 1  # the ring keeps whole seconds from the first send
            if selected(rule.rate.of, event) and not (trial_skipped or event.message_id in skipped):
                recent = sends[-rule.last :]
                if event.message_id is not None and event.message_id in recent:
                    owners.append(len(sends) - len(recent) + recent.index(event.message_id))
                else:
                    owners.append(len(sends) - 1)
            measure = engine.measure("c1").get(rule.name)
            counted = sum(1 for owner in owners if owner >= len(sends) - rule.last)
            assert (measure.numerator, measure.denominator) == (counted, min(len(sends), rule.last))


class TestSwappingRules:
    """Reloading the same rules mid-stream changes nothing."""

    @PROPERTY_SETTINGS
    @given(case=cases(cusum=True), data=st.data())
    def test_reloading_equal_rules_mid_stream_keeps_every_decision(self, case: Case, data: st.DataObject) -> None:
        """set_rules with an equal (freshly parsed) rule set at any point gives the same decisions as no reload."""
        split = data.draw(st.integers(0, len(case.events)), label="reload before event")
        reloaded = RuleSet(
            rules=tuple(Rule.model_validate(rule.model_dump(by_alias=True)) for rule in case.rules.rules)
        )
        plain, swapped = Engine(case.rules), Engine(case.rules)
        expected = [plain.process(event) for event in case.events]
        actual = [swapped.process(event) for event in case.events[:split]]
        swapped.set_rules(reloaded)
        actual += [swapped.process(event) for event in case.events[split:]]
        assert actual == expected


# -- resumes: a brute-force reading of guard/engine/episodes.py --------------------------------


@dataclass
class Episode:
    """Where the model has a campaign: its episode and the pause decision in force."""

    since: float | None = None  # the episode's start (a start or a resume); None: its first event
    began: str | None = None
    first_index: int = 0  # arrival index where the episode began: earlier arrivals never count
    pause: float | None = None
    watermark: float | None = None
    resumes: int = 0


def episodes(
    rules: RuleSet, events: Sequence[Event], decided: dict[int, list[Decision]], grace: float
) -> dict[int, Episode]:
    """For each event index, a copy of its campaign's episode after that event (in-order streams).

    Straight from the table: a pause decision that calls pauses; a send later than the pause plus
    the grace resumes; campaign.started starts; a campaign idle past the retention is forgotten."""
    state: dict[str, Episode] = {}
    after: dict[int, Episode] = {}
    resumes = 0
    for index, event in enumerate(on_the_partition_clock(events)):
        episode = state.setdefault(event.campaign_id, Episode())
        if episode.watermark is not None and event.time - episode.watermark > rules.retention:
            episode = state[event.campaign_id] = Episode()
        if event.signal is Signal.STARTED:
            episode = state[event.campaign_id] = Episode(event.time, "started", index, None, event.time)
        elif event.signal is Signal.SENT and episode.pause is not None and event.time > episode.pause + grace:
            episode = state[event.campaign_id] = Episode(event.time, "resumed", index, None, event.time)
            resumes += 1
        episode.watermark = max(event.time, episode.watermark or event.time)
        for decision in decided.get(index, ()):
            if decision.action == "pause" and decision.superseded_by is None:
                episode.pause = decision.fired_at
        episode.resumes = resumes
        after[index] = Episode(**vars(episode))
    return after


def on_the_partition_clock(events: Sequence[Event]) -> list[Event]:
    """The events at the times the engine counts them: one stamped more than MAX_AHEAD_SECONDS past
    the partition's clock counts at the clock, unless the one before it was such an event too and
    this one is not before it by more than the limit (the forged-timestamp defence)."""
    clock, ahead, counted = float("-inf"), None, []
    for event in events:
        if event.time > clock + MAX_AHEAD_SECONDS and clock != float("-inf"):
            if ahead is not None and event.time >= ahead - MAX_AHEAD_SECONDS:
                ahead = None
            else:
                ahead, event = event.time, msgspec.structs.replace(event, time=clock)
        else:
            ahead = None
        clock = max(clock, event.time)
        counted.append(event)
    return counted


def decided_by_index(engine: Engine, events: Sequence[Event]) -> dict[int, list[Decision]]:
    return {index: decisions for index, event in enumerate(events) if (decisions := engine.process(event))}


# campaigns paused and resumed, and in-order streams of any kind
stopping_and_going = st.one_of(stop_and_go_streams(), event_streams(late=False, unique_ids=True, max_size=120))


class TestResumes:
    """A campaign that sends after a pause decision and the grace is judged on its new evidence only."""

    @PROPERTY_SETTINGS
    @given(rules=rule_sets(last=True, cusum=True), events=stopping_and_going, grace=resume_graces)
    def test_a_decisions_evidence_never_reaches_back_across_a_resume(
        self, rules: RuleSet, events: list[Event], grace: float
    ) -> None:
        """Every decision names the episode the model expects, and counts only events that arrived in it."""
        engine = Engine(rules, resume_grace=grace)
        decided = decided_by_index(engine, events)
        model = episodes(rules, events, decided, grace)
        for index, decisions in decided.items():
            episode = model[index]
            mine = [(n, e) for n, e in enumerate(events[: index + 1]) if e.campaign_id == events[index].campaign_id]
            since_episode = [e for n, e in mine if n >= episode.first_index]
            for decision in decisions:
                assert (decision.episode_from, decision.episode_began) == (episode.since, episode.began)
                if episode.since is not None:
                    assert decision.evidence_from >= episode.since
                numerator_selector, denominator_selector = selectors_of(decision.rule)
                assert decision.numerator <= sum(1 for e in since_episode if selected(numerator_selector, e))
                if denominator_selector is not None:
                    assert decision.denominator is not None
                    assert decision.denominator <= sum(1 for e in since_episode if selected(denominator_selector, e))
        assert engine.stats.resumes == (model[len(events) - 1].resumes if events else 0)

    @PROPERTY_SETTINGS
    @given(rules=rule_sets(last=True, cusum=True), events=stopping_and_going, grace=resume_graces)
    def test_after_its_latest_resume_a_campaign_decides_as_a_new_one_would(
        self, rules: RuleSet, events: list[Event], grace: float
    ) -> None:
        """From the send that resumed it, a campaign's decisions equal a fresh engine's fed only what came after."""
        events = [event for event in events if event.campaign_id == "c1"]
        engine = Engine(rules, resume_grace=grace)
        decided = decided_by_index(engine, events)
        model = episodes(rules, events, decided, grace)
        resumed = [
            index for index, episode in model.items() if episode.began == "resumed" and episode.first_index == index
        ]
        if not resumed:
            return
        start = resumed[-1]
        fresh = decided_by_index(Engine(rules, resume_grace=grace), events[start:])

        def essence(decision: Decision) -> tuple:
            return (decision.id, decision.numerator, decision.denominator, decision.value, decision.superseded_by)

        assert {index: [essence(d) for d in ds] for index, ds in decided.items() if index >= start} == {
            index + start: [essence(d) for d in ds] for index, ds in fresh.items()
        }
