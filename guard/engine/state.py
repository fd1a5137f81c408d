"""What the engine keeps per campaign: its series, its rules' states, its episode and workspace."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from guard.engine.episodes import EpisodeStart, Pause
from guard.engine.plan import CompiledRule, Series


@dataclass(slots=True)
class RuleState:
    """Where one rule stands for one campaign."""

    pending_since: float | None = None  # condition true since (for `for`)
    firing: bool = False  # fired during the current breach; quiet until the condition clears
    last_fired: float | None = None
    clear_since: float | None = None  # condition false since, while firing (for `keep_firing_for`)


# The rule states of every campaign no rule has a state for (nearly all): one empty dict shared by them, never written
# to; a campaign gets a dict of its own with its first rule state and goes back to this one with its last (engine.py).
NO_RULE_STATES: dict[str, RuleState] = {}


class CampaignState(msgspec.Struct, gc=False):
    """Everything kept about one campaign (gc=False: no cycles; the collector need not scan it)."""

    rules: tuple[CompiledRule, ...]
    series: list[Series | None]  # by the plan's slot; None until an event feeds it
    watermark: float = float("-inf")  # latest event time seen for the campaign
    rule_states: dict[str, RuleState] = msgspec.field(default_factory=lambda: NO_RULE_STATES)
    # some rule's numerator reached what it needs to hold, at the last evaluation; while not, only
    # an event of a numerator's signal (or a rule state) can change an outcome: others skip the rules
    armed: bool = False
    started_at: float = float("-inf")  # the current episode's start: events from before it are ignored
    began: EpisodeStart | None = None  # how the current episode began (None: with the first event seen)
    active: bool = True  # had events since the last sweep
    last_pause: Pause | None = None  # the pause decision in force (episodes.py: PAUSED), None while running
    workspace_id: str | None = None  # the workspace its latest event named (None: none yet): decides `rules`
    # the dedupe store's open generation when the episode began (-1: not known, the episode's start time tells)
    began_generation: int = -1
    # the time of the first event counted when no start began the state (-inf: a start or a resume did), which tells a
    # start delivered late (nothing counted from before it) from a restart (the run before it counted)
    first_seen: float = float("-inf")
