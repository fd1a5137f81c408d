"""Catch-up: a backlog ends as if the guard had kept up and been obeyed (DESIGN promise 10).

The engine judges a log in event time as if each pause had landed the moment it was decided: a send
later than a pause decision plus the resume grace reads as a resume (guard.engine.episodes). A guard
that keeps up acts at once, and its pause lands before such sends exist. A guard that is behind (a
first deploy over a history, an outage, a lag spike) finds them in the log already: acting on every
decision of a backlog would pause a still-bad campaign once per episode it seemed to have, and a
campaign healthy for hours since. So the difference is made in acting, at the runtime edge; the
engine reads the log as before (told only of a pause acted on at catch-up, point 4), and `guard replay`
shows what a guard that kept up would decide:

1. A live pause decision whose record is older than the resume grace by its Kafka timestamp, or whose
   event is older than that by event time (a history produced all at once has fresh record times), is
   held in its partition's progress: later records that read as its resume may be in the log already;
   and so is one covered by a held decision (`superseded_by`): its offset stays pending, so no commit
   passes it, and nothing records it yet. Alerts, and the pauses of a guard that keeps up (records
   younger than the grace), go to the dispatcher at once: decision latency does not change.
2. After each batch, a held decision no longer current is superseded: recorded `fired`, then
   `superseded` with a note saying why, never acted on. Current: the engine's pause in force for the
   campaign is this decision, or the one it is covered by. Or the campaign ran on after its latest
   decision (a new episode in the engine's reading) and what it shows since still leans bad: halfway to
   a pause rule firing (a cusum at half its level, a rate over its threshold short of `min_volume`),
   which a still-bad campaign's young episode shows and a recovered one's almost never, however few
   its sends; then its latest decision stands. That last test is made once the partition has caught
   up, never at a batch's end before: what a campaign shows now is what counts, and a batch boundary
   that falls where its new episode is a few sends old must not decide it (caught up, what the campaign
   sends next proves it bad again, a live decision). At the catch-up limit, still behind (point 5), an
   episode read as a resume (not a `campaign.started`, the user's word) that began less than the grace
   before the campaign's newest event read is too short to show anything: the decision stands. A guard that
   stays behind (records stamped minutes behind its clock: a steady lag, a producer's clock behind or its
   own ahead) judges there just as the engine reads the sends since the decision as a resume; judged on
   the episode they began, a campaign that never stopped sending was superseded, its next decision held and
   superseded alike, and never paused. A campaign the engine no longer tracks counts as current (fail
   toward the pause).
3. Once its campaign has caught up, a held decision still current goes to the dispatcher: one pause per
   campaign bad now. Never before the end the log had when the partition was positioned; from there, a
   campaign has caught up once its newest event read is younger than the grace (its mail is read up to
   the present, whatever else the partition carries: other campaigns' live traffic, retried webhooks of
   hours ago), or the whole partition has: its reading at the log end, and the log end unmoved, for
   QUIET_SECONDS (the history is all in). A scope rule's decision is judged on its scope's evidence, which
   is every campaign of the scope's: it waits until each of them is read up to the present (their forwards
   come from every input partition, each at its own pace: the first campaign read up says nothing of the
   others, whose old evidence may still be arriving), or the partition has caught up; all the held
   decisions of a scope are judged together. Reaching the log end alone is not enough: a bridge that
   forwards an hour of buffered mail in chunks, or a history still being written, ends at the log end
   after every chunk, and judging there would judge a campaign on part of its hour.

4. A decision acted on at catch-up lands then, not at its event time: the engine is told so
   (Engine.note_pause), as it would have been had the guard kept up, whether its reading holds the pause
   in force or reads the campaign as running on (acted on as leaning bad): the sends of the log up to then
   were made before it landed, the mail still in flight that carries the episode over a rule's line again
   is covered by it (`already_paused`), a send later than the pause plus the grace is a resume (a new
   episode: the evidence from before the pause stops counting), and the checkpoint holds it like any
   pause in force.

5. A partition holds decisions for `GUARD_CATCH_UP_LIMIT` at most (wall clock, from the oldest it holds):
   one that stays behind longer (its traffic outruns the guard, or a backlog longer than it can read in that
   time) counts as caught up then, its held decisions judged on what it has read, and holds afresh after.
   Holding on would pause nothing while the lag lasts; that a later record might have superseded a decision
   acted on so fails toward the pause.

No checkpoint is taken while a partition holds a decision. A parked partition keeps its held
decisions; a revoked one drops them, and a stopping guard records none: their offsets were never
committed, so whoever reads the partition next derives them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from guard.engine import Decision
from guard.engine.episodes import Episode, EpisodeStart

# A 1M-event backlog reads in about a minute here (bench/RESULTS.md): five leave room for a slower cluster
DEFAULT_CATCH_UP_LIMIT = 300.0
# At the log end, and the log end still, this long: a history is all in (a bridge forwarding a buffer in chunks
# leaves gaps of a produce round trip or a fetch wait, well under this)
QUIET_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Held:
    """A pause decision waiting for its partition to catch up, and the offset of the record that caused it."""

    decision: Decision
    offset: int
    since: float  # wall clock when it was held


def overdue(held: dict[str, Held], now: float, limit: float) -> bool:
    """The partition has held a decision for longer than `limit` seconds: it counts as caught up."""
    return any(now - entry.since > limit for entry in held.values())


def behind(record_timestamp_ms: int, event_time: float, now: float, grace: float) -> bool:
    """A record, or its event, older than the resume grace: records that read as a resume after it may be in
    the log already."""
    return now - min(record_timestamp_ms / 1000, event_time) > grace


def release(
    held: dict[str, Held],
    episode_of: Callable[[str], Episode | None],
    leans_bad: Callable[[str], bool],
    caught_up: Callable[[Decision], bool],
    too_young: Callable[[str, Episode], bool] = lambda _campaign, _episode: False,
) -> Iterator[tuple[Held, str | None]]:
    """The held decisions to let go (they leave `held`), each with why it is superseded, or None to act on it:
    those no longer current at once, the others once `caught_up` (their campaign, or a scope rule's scope).
    `too_young`: the campaign's episode since it ran on is too short to show it recovered (point 2)."""
    # per campaign (and scope, for a rule over one), its latest held pause decision that calls for itself
    latest: dict[tuple[str, str | None], Decision] = {}
    for entry in held.values():
        decision = entry.decision
        key = (decision.campaign_id, decision.scope)
        if decision.superseded_by is None and decision.fired_at >= latest.get(key, decision).fired_at:
            latest[key] = decision
    for decision_id, entry in list(held.items()):
        decision = entry.decision
        judged = caught_up(decision)
        episode = episode_of(decision.campaign_id)
        young = episode is not None and too_young(decision.campaign_id, episode)
        bad_now = leans_bad if judged and not young else lambda _campaign: True  # judged once caught up
        if episode is not None and not current(
            decision, episode, latest.get((decision.campaign_id, decision.scope)), bad_now
        ):
            yield entry, why_superseded(episode)
        elif judged:
            yield entry, None
        else:
            continue
        del held[decision_id]


def current(decision: Decision, episode: Episode, latest: Decision | None, leans_bad: Callable[[str], bool]) -> bool:
    """The decision (or the one it is covered by) is the campaign's pause in force. Or no pause is in force, the
    campaign having run on after its latest pause decision, and what it shows since still leans bad (halfway to
    a pause rule firing, Engine.leans_bad): that decision stands. A campaign the engine no longer tracks has no
    episode and counts as current."""
    calling = decision.superseded_by or decision.id
    if episode.pause is not None:
        return episode.pause == calling
    # a scope rule's decision stands on its scope's evidence (guard.engine.scopes)
    return latest is not None and latest.id == calling and leans_bad(decision.scope or decision.campaign_id)


def why_superseded(episode: Episode) -> str:
    """The audit note of a decision that is no longer current."""
    behind_then = "before the guard caught up: the guard was not acting then"
    if episode.pause is not None:
        return f"a later decision {episode.pause} took its place {behind_then}"
    if episode.since is None:
        return f"the campaign ran again after this decision {behind_then}"
    since = datetime.fromtimestamp(episode.since, tz=UTC).isoformat().replace("+00:00", "Z")
    if episode.began is EpisodeStart.STARTED:
        return f"the campaign was started again after this decision (a new episode from {since}) {behind_then}"
    return (
        f"the campaign kept sending after this decision and its resume grace (a new episode from {since}) {behind_then}"
    )
