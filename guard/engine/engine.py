"""The rule engine: events in, decisions out. Purely computational: no I/O, no clocks, no logging.

Event time is the only clock, so replaying the same log through the same rules yields the same
decisions, which is what makes at-least-once delivery and rebuilding state after a crash safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

from guard.contracts.events import Event, Signal
from guard.engine.decisions import Decision, decision_id
from guard.engine.episodes import DEFAULT_RESUME_GRACE, Episode, EpisodeStart, after_pause_decision, resumes
from guard.engine.kinds import PYTHON, Kinds
from guard.engine.measure import Measure, evidence_from, leans_bad, sample_ids
from guard.engine.measure import measure as measure_of
from guard.engine.plan import CompiledRule, Series, compile_plan
from guard.engine.state import NO_RULE_STATES, CampaignState, RuleState
from guard.rules.models import Rule, RuleSet

# Leadterra retries a webhook after ~1m, 5m, 30m, 2h and 8h: the last comes ~10.6 h after the first.
DEFAULT_DEDUPE_HORIZON = 12 * 3600.0
# An event stamped further than this past the partition's clock counts at the clock's time unless
# a second one agrees (see `Engine._on_clock`): one forged timestamp cannot move time for everyone.
# A day: longer than any quiet spell of a partition in use, far shorter than a forged month.
MAX_AHEAD_SECONDS = 86_400.0
# At capacity, this share of the tracked campaigns is evicted at once, so the sort that picks them
# runs once per that many new campaigns, not once per campaign.
EVICT_SHARE = 20  # 1/20 = 5%


def _carried(
    rule_states: dict[str, RuleState],
    before: tuple[CompiledRule, ...],
    after: tuple[CompiledRule, ...],
    edited_afresh: bool = False,
) -> dict[str, RuleState]:
    """The rule states a campaign keeps when the rules that apply to it change (a reload, another workspace): those
    of rules that still apply, so a breach already acted on stays quiet. Not those of a rule that was an alert and
    now pauses: its breach raised an alert and paused nothing, so it is judged afresh (a pause in force still covers
    it, episodes.py), and its alert's cooldown does not hold the pause back. `edited_afresh` (an engine of scopes,
    whose firing decides for campaigns joining it): nor those of a rule edited in what it judges (Rule.judges_as)."""
    if not rule_states:
        return NO_RULE_STATES
    was = {compiled.rule.name: compiled.rule for compiled in before}
    applying = {compiled.rule.name: compiled.rule for compiled in after}

    def keeps(name: str) -> bool:
        rule, old = applying.get(name), was.get(name)
        if rule is None or old is None:
            return rule is not None
        if old.action == "alert" and rule.action == "pause":
            return False
        return not edited_afresh or old.judges_as(rule)

    kept = {name: state for name, state in rule_states.items() if keeps(name)}
    return kept or NO_RULE_STATES


def _should_fire(campaign: CampaignState, rule: Rule, holds: bool, now: float) -> bool:
    """Once per breach, after holding for `for`, not within `cooldown` of the last firing; a breach
    ends once the condition has been false for `keep_firing_for`."""
    rule_states = campaign.rule_states
    state = rule_states.get(rule.name)
    if not holds:
        if state is not None:
            state.pending_since = None
            if state.firing:
                state.clear_since = now if state.clear_since is None else state.clear_since
                if now - state.clear_since >= rule.keep_firing_for:
                    state.firing, state.clear_since = False, None
            if not state.firing and (state.last_fired is None or now >= state.last_fired + rule.cooldown):
                del rule_states[rule.name]  # nothing left to remember: as good as new, and cheaper
                if not rule_states:
                    campaign.rule_states = NO_RULE_STATES
        return False
    if state is None:
        if not rule_states:  # the shared empty one (or any empty one: a copy's): never written to
            rule_states = campaign.rule_states = {}
        state = rule_states[rule.name] = RuleState()
    state.clear_since = None
    if state.firing:
        return False
    if state.pending_since is None:
        state.pending_since = now
    if now - state.pending_since < rule.for_:
        return False
    if state.last_fired is not None and now < state.last_fired + rule.cooldown:
        return False
    state.firing, state.last_fired = True, now
    return True


class StateReader(Protocol):
    """What reads the engine's state while it goes on counting (snapshot.PendingSnapshot): told before a
    campaign's state changes, so it can read it as it was."""

    def before_change(self, campaign_id: str) -> None: ...

    def before_changing_all(self) -> None: ...


@dataclass(slots=True)
class EngineStats:
    """Counters the service turns into metrics."""

    events: int = 0
    duplicates: int = 0
    late: int = 0  # skipped by some series: before the episode or about its mail, past a window, or delivered again
    resets: int = 0  # campaign.started for a campaign with state
    resumes: int = 0  # sends after a pause decision and the grace
    dropped_campaigns: int = 0
    evicted_campaigns: int = 0  # dropped at capacity (`max_campaigns`), not for being idle
    ahead: int = 0  # stamped too far past the partition's clock: counted at the clock's time


class Engine:
    """Per-campaign sliding windows and rule states for one partition of the event log.

    With `max_campaigns`, at most that many campaigns are tracked: a new one beyond it first
    evicts the least recently active (by event time), those with a rule pending, firing or in
    cooldown (or close to firing) last, ties in the order they were first tracked. An evicted
    campaign that comes back starts with no evidence. The order depends only on the events, so
    the same log, rules and capacity give the same decisions.

    Duplicates are found in one store of (campaign, signal, messageId) keys for the partition,
    kept for `dedupe_horizon` of the partition's clock in at most `max_dedupe_keys` keys, oldest
    forgotten first (dedupe.py). The keys outlive a campaign's eviction or restart: a retry is a
    duplicate whatever became of its campaign.
    """

    def __init__(
        self,
        rules: RuleSet,
        dedupe_horizon: float = DEFAULT_DEDUPE_HORIZON,
        resume_grace: float = DEFAULT_RESUME_GRACE,
        max_campaigns: int | None = None,
        max_dedupe_keys: int | None = None,
        kinds: Kinds = PYTHON,
        *,
        scopes: bool = False,
    ) -> None:
        if max_campaigns is not None and max_campaigns < 1:
            raise ValueError("max_campaigns must be at least 1")
        self.kinds = kinds  # the series it counts with: the Python reference or the compiled core (kinds.py)
        self._scopes = scopes  # counts the scope rules, its "campaigns" being scopes (scopes.py); else the others
        self._plan = compile_plan(rules.for_engine(scopes), kinds, skip_late_sends=not scopes)
        self._campaigns: dict[str, CampaignState] = {}
        self._seen = kinds.dedupe(dedupe_horizon, max_dedupe_keys)
        self._resume_grace = resume_grace  # see episodes.py
        self._max_campaigns = max_campaigns
        self._watermark = float("-inf")  # the partition's clock: latest event time accepted
        self._ahead: float | None = None  # the last event time found too far ahead, and not yet agreed with
        self._next_sweep = float("-inf")
        self.stats = EngineStats()
        self.unsealed = 0  # pauses whose mail before them could not be set apart (dedupe.SEALED_GENERATIONS alive)
        self._snapshot: StateReader | None = None  # a snapshot under way (copy on write)

    @property
    def campaigns(self) -> int:
        return len(self._campaigns)

    @property
    def dedupe_horizon(self) -> float:
        """How long (event time) a (campaign, signal, messageId) key is remembered."""
        return self._seen.horizon

    @property
    def dedupe_keys(self) -> int:
        """The (campaign, signal, messageId) keys remembered now."""
        return self._seen.keys

    @property
    def dedupe_evicted(self) -> int:
        """Keys forgotten before the horizon to stay within `max_dedupe_keys`: a retry of one counts again."""
        return self._seen.evicted

    @property
    def clock(self) -> float:
        """The partition's clock: the latest event time accepted (one stamped far ahead counts at it)."""
        return self._watermark

    @property
    def retention(self) -> float:
        """How long an idle campaign's state can still matter to the rules it counts."""
        return self._plan.retention

    def firing(self, campaign_id: str, rule_name: str) -> bool:
        """Whether the rule fired for the campaign and its condition has not yet been false for `keep_firing_for`."""
        state = self._campaigns.get(campaign_id)
        rule_state = state.rule_states.get(rule_name) if state is not None else None
        return rule_state is not None and rule_state.firing

    def rules_for(self, campaign_id: str) -> tuple[CompiledRule, ...]:
        """The rules that apply to a campaign: for its workspace when tracked, else for no workspace."""
        state = self._campaigns.get(campaign_id)
        return state.rules if state is not None else self._plan.rules_for(campaign_id)

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set, keeping every counted series and rule state the new set still uses."""
        if self._snapshot is not None:
            self._snapshot.before_changing_all()
        old_slots = {key: slot for slot, key in enumerate(self._plan.series_keys)}
        self._plan = plan = compile_plan(rules.for_engine(self._scopes), self.kinds, skip_late_sends=not self._scopes)
        kept = [old_slots.get(key) for key in plan.series_keys]  # new slot -> old slot
        made = {slot: make() for feeds in plan.feeds.values() for slot, _, _, make in feeds}
        # a window quotes message ids only while some rule counts it as its numerator (plan.py): that may change
        quoting = {slot: fresh.keep_samples for slot, fresh in made.items() if fresh.kind == "sliding"}
        # a count window is as long as the longest `last:` of its events (plan.py): a new or raised one lengthens it
        ring_sizes = {slot: fresh.size for slot, fresh in made.items() if fresh.kind == "last"}
        for campaign_id, state in self._campaigns.items():
            rules_before, state.rules = state.rules, plan.rules_for(campaign_id, state.workspace_id)
            state.series = [state.series[old] if old is not None else None for old in kept]
            for slot, keep_samples in quoting.items():
                series = state.series[slot]
                if series is not None and series.keep_samples != keep_samples:
                    series.keep_samples = keep_samples
                    series.samples = series.samples if keep_samples else None
            for slot, size in ring_sizes.items():
                if (series := state.series[slot]) is not None:
                    series.grow(size)
            state.rule_states = _carried(state.rule_states, rules_before, state.rules, self._scopes)
            state.armed = True  # thresholds may have changed: evaluate at the next event

    def _new_state(
        self,
        campaign_id: str,
        workspace_id: str | None,
        started_at: float = float("-inf"),
        began: EpisodeStart | None = None,
    ) -> CampaignState:
        plan = self._plan
        state = CampaignState(
            plan.rules_for(campaign_id, workspace_id), [None] * len(plan.series_keys), workspace_id=workspace_id
        )
        if started_at != float("-inf"):
            state.watermark = state.started_at = started_at
            state.began, state.began_generation = began, self._seen.sequence
        return state

    def _resumed(self, campaign_id: str, time: float) -> CampaignState:
        """A new episode from a resume: nothing carries over (the dedupe keys are the partition's)."""
        workspace_id = self._campaigns[campaign_id].workspace_id
        resumed = self._campaigns[campaign_id] = self._new_state(campaign_id, workspace_id, time, EpisodeStart.RESUMED)
        self.stats.resumes += 1
        return resumed

    def process(self, event: Event) -> list[Decision]:
        """Count one event and return the decisions it causes (usually none)."""
        if self._snapshot is not None:
            self._snapshot.before_change(event.campaign_id)
        self.stats.events += 1
        if event.time > self._watermark + MAX_AHEAD_SECONDS:
            event = self._on_clock(event)
        elif self._ahead is not None:
            self._ahead = None  # an event in step with the clock: the one ahead stood alone
        campaign_id, time = event.campaign_id, event.time
        state = self._campaigns.get(campaign_id)
        if state is not None and time - state.watermark > self._plan.retention:
            # idle past every window and cooldown: starts fresh, exactly as if the sweep had
            # dropped it, so how campaigns share an engine does not change a decision
            state = None
        if event.signal is Signal.STARTED:
            # a (re)started campaign starts a new episode (episodes.py): earlier evidence never counts again
            if event.message_id is not None and self._is_duplicate(event):
                self.stats.duplicates += 1  # a start delivered again, known by its name (its stamp: events.py)
                self._advance(time)
                return []
            if state is not None and self._started_before(state, time):
                self._advance(time)
                return []
            if state is not None:
                self.stats.resets += 1
            workspace_id = event.workspace_id or (state.workspace_id if state is not None else None)
            self._track(campaign_id, self._new_state(campaign_id, workspace_id, time, EpisodeStart.STARTED))
            self._advance(time)
            return []
        if state is None:
            state = self._track(campaign_id, self._new_state(campaign_id, event.workspace_id))
            state.first_seen = time
        elif event.workspace_id is not None and event.workspace_id != state.workspace_id:
            self._move(campaign_id, state, event.workspace_id)
        state.active = True
        if time < state.started_at:
            self.stats.late += 1  # e.g. a retried webhook for a bounce from before the restart
            self._advance(time)  # every event moves the partition's clock, counted or not
            return []
        if event.message_id is not None and self._is_duplicate(event):
            self.stats.duplicates += 1
            self._advance(time)
            return []
        if state.last_pause is not None and resumes(event.signal, time, state.last_pause, self._resume_grace):
            state = self._resumed(campaign_id, time)
        if event.signal is not Signal.SENT and state.began is not None and self._before_episode(event, state):
            self.stats.late += 1  # e.g. a complaint about mail sent before the campaign was resumed
            self._advance(time)
            return []
        if time > state.watermark:
            state.watermark = time
        late, skipped_slot = False, -1
        series_by_slot, message_id, now = state.series, event.message_id, state.watermark
        for slot, matches, add, make in self._plan.feeds.get(event.signal, ()):
            # an event a series counts as both (hard bounces per bounce: its `per` fed first) is skipped whole
            if slot != skipped_slot and (matches is None or matches(event)):
                series = series_by_slot[slot]
                if series is None:
                    series = series_by_slot[slot] = make()
                if not add(series, time, message_id, now):
                    late, skipped_slot = True, slot
        self.stats.late += late
        decisions = []
        if state.armed or state.rule_states or event.signal in self._plan.numerator_signals:
            armed = False
            for compiled in state.rules:
                numerator = series_by_slot[compiled.numerator.slot]
                if numerator is None or numerator.total < compiled.needed:
                    if compiled.rule.name not in state.rule_states:  # as the rules before left it
                        continue  # cannot hold: the total before expiry bounds the count (the hot path)
                else:
                    armed = True
                if (decision := self._evaluate(compiled, state, campaign_id, numerator)) is not None:
                    decisions.append(decision)
            state.armed = armed
        self._advance(time)
        return decisions

    def judge_afresh(self, campaign_id: str, rule_name: str) -> None:
        """The rule's state for the campaign goes (firing, pending, cooldown): judged afresh at its next event."""
        state = self._campaigns.get(campaign_id)
        if state is None or rule_name not in state.rule_states:
            return
        if self._snapshot is not None:
            self._snapshot.before_change(campaign_id)
        state.rule_states = {name: kept for name, kept in state.rule_states.items() if name != rule_name}
        state.rule_states = state.rule_states or NO_RULE_STATES
        state.armed = True

    def restart_unwindowed(self, campaign_id: str) -> None:
        """Its `cusum` and `last:` rules start afresh for the campaign (a scope, for an engine of scopes, whose
        statistic no episode restarts: scopes.py): their evidence goes, a firing of theirs ends, a cooldown stays.
        Time windows keep their counts."""
        state = self._campaigns.get(campaign_id)
        if state is None:
            return
        if self._snapshot is not None:
            self._snapshot.before_change(campaign_id)
        for compiled in state.rules:
            if compiled.rule.window is not None:
                continue
            for spec in (compiled.numerator, compiled.denominator):
                if spec is not None:
                    state.series[spec.slot] = None
            if (rule_state := state.rule_states.get(compiled.rule.name)) is not None:
                rule_state.firing, rule_state.pending_since, rule_state.clear_since = False, None, None

    def _move(self, campaign_id: str, state: CampaignState, workspace_id: str) -> None:
        """The campaign's events name a workspace (another one, or one for the first time): the rules
        of that workspace apply from now on; the states of rules that no longer apply are dropped."""
        state.workspace_id = workspace_id
        rules = self._plan.rules_for(campaign_id, workspace_id)
        if rules != state.rules:
            state.rule_states = _carried(state.rule_states, state.rules, rules)
            state.rules = rules
            state.armed = True  # a rule new to the campaign may hold already: evaluate at this event

    def _started_before(self, state: CampaignState, time: float) -> bool:
        """Whether a `campaign.started` at `time` is history delivered again, not a new episode: it has no messageId
        to be deduplicated by, and Leadterra retries a webhook for hours, so a retry stamped at or before the current
        episode's start would otherwise erase everything counted since, and one stamped before the pause in force
        would end that pause (the old list's late outcomes then pause the resumed campaign again). One behind the
        evidence of a campaign whose start was never seen and nothing it counted came before (its first delivery lost)
        only marks the episode's start: what came after it stays. One behind evidence from before it is a restart
        whose start came late: the run before it stops counting, as a start's does."""
        if time <= state.started_at:
            self.stats.duplicates += 1
            return True
        paused = state.last_pause is not None and time <= state.last_pause[1]
        first_delivery = state.began is None and state.first_seen >= time
        if paused or (first_delivery and time < state.watermark):
            if first_delivery:
                state.started_at, state.began = time, EpisodeStart.STARTED
            self.stats.late += 1
            return True
        return False

    def _on_clock(self, event: Event) -> Event:
        """An event stamped more than MAX_AHEAD_SECONDS past the partition's clock: a forged or
        broken timestamp would, taken as it is, hide its campaign from every later event (all too
        old for its windows) and stop the idle sweep. It counts at the clock's time instead,
        unless the event just before it was such an event too and this one is not before it by
        more than the limit: consecutive records saying time moved on is the log resuming after
        a quiet spell, while a forged record sits among events in step with the clock. The
        first event of a partition sets the clock."""
        time = event.time
        if self._watermark == float("-inf") or (self._ahead is not None and time >= self._ahead - MAX_AHEAD_SECONDS):
            self._ahead = None
            return event
        self._ahead = time
        self.stats.ahead += 1
        return msgspec.structs.replace(event, time=self._watermark)

    def _track(self, campaign_id: str, state: CampaignState) -> CampaignState:
        """Start tracking a campaign's state, evicting others first when at capacity."""
        campaigns, capacity = self._campaigns, self._max_campaigns
        if capacity is not None and len(campaigns) >= capacity and campaign_id not in campaigns:
            # protected: a rule pending, firing or cooling down, or some numerator close to firing
            order = sorted(
                campaigns, key=lambda c: (bool(campaigns[c].rule_states or campaigns[c].armed), campaigns[c].watermark)
            )
            evicted = order[: len(campaigns) - capacity + max(1, capacity // EVICT_SHARE)]
            for gone in evicted:
                del campaigns[gone]
            self.stats.evicted_campaigns += len(evicted)
        campaigns[campaign_id] = state
        return state

    def _advance(self, time: float) -> None:
        if time > self._watermark:
            self._watermark = time
            if time >= self._next_sweep:
                self._sweep()

    def _seal(self, at: float) -> None:
        """A pause in force from `at`: the mail seen so far is set apart from a resumed episode's to come, so that
        episode's late outcomes of it are told apart (`_before_episode`)."""
        if not self._scopes and not self._seen.seal(max(self._watermark, at)):  # scopes have no episodes to tell
            self.unsealed += 1

    def _before_episode(self, event: Event, state: CampaignState) -> bool:
        """An outcome of a send the partition saw before the campaign's episode began (episodes.py): evidence of the
        mail before a resume or a restart, which the rules no longer judge, though its bounces and complaints keep
        arriving for hours. Known while the send's key is remembered (dedupe.py) in a generation closed before the
        episode began: a pause closes the open one (`_seal`), so the mail before a pause is told from a resume's;
        any other outcome counts, as a pause errs."""
        if event.message_id is None or self._scopes:  # an engine of scopes has no episodes of a campaign's
            return False
        if state.began_generation >= 0:  # by the log's order: a record stamped ahead moves the clock, not the order
            return self._seen.seen_before_generation(
                event.campaign_id, Signal.SENT, event.message_id, state.began_generation
            )
        return self._seen.seen_before(event.campaign_id, Signal.SENT, event.message_id, state.started_at)

    def _is_duplicate(self, event: Event) -> bool:
        now = event.time if event.time > self._watermark else self._watermark
        return self._seen.seen_event(event.campaign_id, event.signal, event.message_id, now)

    def measure(self, campaign_id: str) -> dict[str, Measure]:
        """Each applicable rule's current value for a campaign, at its latest event time."""
        if self._snapshot is not None:  # a window forgets the buckets that slid out as it is read
            self._snapshot.before_change(campaign_id)
        state = self._campaigns.get(campaign_id)
        if state is None:
            return {}
        return {compiled.rule.name: measure_of(compiled, state) for compiled in state.rules}

    def episode(self, campaign_id: str) -> Episode | None:
        """A campaign's current episode and the pause decision in force; None when it is not tracked."""
        state = self._campaigns.get(campaign_id)
        if state is None:
            return None
        pause = state.last_pause[0] if state.last_pause is not None else None
        return Episode(state.began, state.started_at if state.began is not None else None, pause)

    def latest_event(self, campaign_id: str) -> float | None:
        """The newest event time read for the campaign; None when it is not tracked."""
        state = self._campaigns.get(campaign_id)
        return state.watermark if state is not None else None

    def note_pause(self, campaign_id: str, decision_id: str, at: float) -> None:
        """A pause made for the campaign outside this reading of the log landed at `at` (a backlog's decision acted
        on at catch-up while the campaign ran on: guard.runtime.catchup): the campaign is PAUSED from then, as if
        the decision had been taken there. Every send of the log up to then was made before the pause landed
        (none reads as a resume), the mail in flight crossing a rule's line again is covered by it, and a send
        past `at` plus the grace starts a new episode (a resume: the evidence from before stops counting),
        exactly as for a pause decision of the engine's own (episodes.py)."""
        state = self._campaigns.get(campaign_id)
        if state is not None:
            if self._snapshot is not None:
                self._snapshot.before_change(campaign_id)
            state.last_pause = (decision_id, max(at, state.watermark))
            self._seal(self._watermark)  # the mail read so far (`at` may lie ahead of the reading)

    def leans_bad(self, campaign_id: str) -> bool:
        """Whether the campaign's current evidence is at least halfway to some pause rule firing: a cusum
        statistic at half its level or more, a count at half its threshold, a rate over its threshold (only
        short of `min_volume` or `confidence`). What a still-bad campaign's episode shows before it is proven,
        and a healthy one's almost never. False when the campaign is not tracked."""
        if self._snapshot is not None:  # a window forgets the buckets that slid out as it is read
            self._snapshot.before_change(campaign_id)
        state = self._campaigns.get(campaign_id)
        return state is not None and any(
            leans_bad(compiled, measure_of(compiled, state))
            for compiled in state.rules
            if compiled.rule.action == "pause"
        )

    def cooldown_until(self, campaign_id: str, rule_name: str) -> float | None:
        """Event time until which a rule that fired for a campaign stays quiet; None when not cooling down."""
        state = self._campaigns.get(campaign_id)
        rule_state = state.rule_states.get(rule_name) if state is not None else None
        if rule_state is None or rule_state.last_fired is None:
            return None
        rule = next(c.rule for c in state.rules if c.rule.name == rule_name)  # type: ignore[union-attr]
        until = rule_state.last_fired + rule.cooldown
        return until if until > state.watermark else None  # type: ignore[union-attr]

    def _evaluate(
        self, compiled: CompiledRule, state: CampaignState, campaign_id: str, numerator_series: Series | None
    ) -> Decision | None:
        rule, now = compiled.rule, state.watermark
        measure = measure_of(compiled, state)
        if not _should_fire(state, rule, measure.holds, now):
            return None
        evidence = [numerator_series, state.series[compiled.denominator.slot] if compiled.denominator else None]
        identity = decision_id(campaign_id, rule, now)
        superseded_by = None
        if rule.action == "pause":
            state.last_pause, superseded_by = after_pause_decision(state.last_pause, identity, now, rule.cooldown)
            if superseded_by is None:  # covered by a pause in force: that one sealed the mail before it
                self._seal(now)
        return Decision(
            id=identity,
            campaign_id=campaign_id,
            rule=rule,
            fired_at=now,
            numerator=measure.numerator,
            denominator=measure.denominator,
            value=measure.value,
            evidence_from=evidence_from(rule, state, evidence),
            message_ids=sample_ids(numerator_series, rule, now),
            lower_bound=measure.lower_bound,
            superseded_by=superseded_by,
            episode_from=state.started_at if state.began is not None else None,
            episode_began=state.began,
            workspace_id=state.workspace_id,
        )

    def _sweep(self) -> None:
        """Drop campaigns idle for longer than any rule can look back (bounded memory)."""
        if self._snapshot is not None:
            self._snapshot.before_changing_all()
        retention = self._plan.retention
        # twice the retention: an event that late for a dropped campaign is too old to matter
        cutoff = self._watermark - 2 * retention
        # a campaign that had events since the last sweep stays, however far its event times lag
        idle = [c for c, state in self._campaigns.items() if not state.active and state.watermark < cutoff]
        for campaign_id in idle:
            del self._campaigns[campaign_id]
        for state in self._campaigns.values():
            state.active = False
        self.stats.dropped_campaigns += len(idle)
        self._next_sweep = self._watermark + max(retention / 10, 60.0)
