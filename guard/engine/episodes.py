"""Episodes: the stretch of a campaign's life its rules judge. Event time only, like the rest of the engine.

A campaign's evidence belongs to its current episode. A new episode begins when the campaign is
started (`campaign.started`) or resumed: its first `message.sent` later than a pause decision plus
the resume grace. The grace is for mail that was already on its way when the pause landed
(Leadterra delivers mail in transit; webhooks and the pause call take a while): those sends are
the paused episode's, not a resume. A new episode forgets the evidence and rule states from before
it (breaches end, cooldowns are over), so the rules judge the campaign on what it does from then
on, with their usual min_volume and confidence: a fixed list is left alone, a still-bad one is
paused again once its new evidence proves it.

The engine cannot tell whether a pause call succeeded, is still being retried, failed, or was only
a dry run: a campaign that sends after the grace is running, so it is judged as resumed whatever
became of the call. That keeps `guard replay` and the live guard equal. A pause is never lost by
it: the dispatcher never drops the earlier call (it keeps retrying until it lands or is audited as
failed), and a campaign that kept sending a bad list while the API was down is paused again on
its new evidence.

    state      event                                          next state
    RUNNING    pause decision at t                            PAUSED(t)
    PAUSED(p)  pause decision at t, within its cooldown of p  PAUSED(p)  superseded: it calls nobody
    PAUSED(p)  pause decision at t, after its cooldown of p   PAUSED(t)
    PAUSED(p)  message.sent at s <= p + grace                 PAUSED(p)  mail in flight: same episode
    PAUSED(p)  message.sent at s > p + grace                  RUNNING    a new episode from s (resumed)
    any        campaign.started at s                          RUNNING    a new episode from s (started)

Alert decisions change no state. Events from before the current episode's start are ignored, and a
campaign idle for longer than every rule looks back starts afresh (RUNNING, nothing remembered).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from guard.contracts.events import Signal

# Mail in flight when a pause lands is delivered (and reported) for a while: Leadterra delivers mail
# in transit, webhooks lag, and the pause call may be retried (LEADTERRA_RETRY_DEADLINE, also 5 min).
DEFAULT_RESUME_GRACE = 300.0

Pause = tuple[str, float]  # (decision id, event time) of the pause decision in force


class EpisodeStart(StrEnum):
    """How the current episode began."""

    STARTED = "started"  # campaign.started
    RESUMED = "resumed"  # the first send after a pause decision and the grace


class Episode(NamedTuple):
    """Where a campaign's current episode stands (Engine.episode), for the runtime to read."""

    began: EpisodeStart | None  # how it began; None: with the first event seen
    since: float | None  # event time it began; None: with the first event seen
    pause: str | None  # the id of the pause decision in force (PAUSED); None while running


def resumes(signal: Signal, time: float, pause: Pause | None, grace: float) -> bool:
    """PAUSED(p) -> RUNNING: a counted send (not a duplicate) later than the pause plus the grace."""
    return signal is Signal.SENT and pause is not None and time > pause[1] + grace


def after_pause_decision(
    pause: Pause | None, decision_id: str, time: float, cooldown: float
) -> tuple[Pause, str | None]:
    """RUNNING or PAUSED -> PAUSED: the pause in force after a pause decision at `time`, and the
    decision this one is superseded by (None: this one calls Leadterra)."""
    if pause is not None and time - pause[1] < cooldown:
        return pause, pause[0]  # another rule paused this campaign moments ago
    return (decision_id, time), None
