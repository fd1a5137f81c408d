"""Rules over a scope beyond one campaign: a workspace, a sender account or a sending domain. Pure, like the engine.

Events are keyed by campaign, so one scope's events are spread over every input partition. As Kafka Streams
repartitions before an aggregate, each input partition forwards the events it counts to the scope topic, keyed
by scope (`forward`); the process that owns a scope's partition counts them in an engine whose "campaigns" are
scopes (`ScopeEngine`), and turns each decision of a scope into one decision per campaign of the scope: every
campaign with events within the rule's look-back, and each campaign that joins while the rule is firing.

A forwarded event carries its message id, or where it has none its position in the input (topic, partition,
offset): the same record forwarded again after a restart is a duplicate to the scope's engine, not new evidence.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Literal

import msgspec

from guard.contracts.events import (
    LATEST_EVENT_TIME,
    MAX_ADDRESS_LENGTH,
    MAX_FUTURE_SKEW_SECONDS,
    MAX_ID_LENGTH,
    UNSAFE_CHARACTERS,
    WORKSPACE_ID_PATTERN,
    Event,
    Signal,
)
from guard.engine.decisions import Decision, decision_id
from guard.engine.engine import Engine
from guard.engine.episodes import Episode
from guard.engine.kinds import PYTHON, Kinds
from guard.rules.models import LAST_N_IDLE_HORIZON, RuleSet

ScopeKind = Literal["workspace", "sender", "sender_domain"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("workspace", "sender", "sender_domain")
# A sweep of the campaigns seen per scope at most once per this much event time: bounded memory, rare work.
SWEEP_EVERY = 600.0
# The campaigns remembered per scope (and so paused by one of its decisions): beyond it, the least recently seen
# is forgotten. Far more than any sender or domain runs at once; a bound whatever names an input writer makes up.
MAX_MEMBERS = 10_000
# A scope that sent nothing for this long starts its `cusum` and `last:` rules afresh at its next send: no episode
# restarts a scope, and a domain whose campaigns were all paused would otherwise stay suspect for good, its
# statistic frozen over the level. Measured in the sends' own times, each bounded by its scope record's (replies,
# complaints and late bounces go on arriving for days; the engine counts a send a day past the partition's clock
# at that clock; and a forged time must not end a busy scope's firing).
SILENT_FOR = LAST_N_IDLE_HORIZON
_WORKSPACE_ID = re.compile(WORKSPACE_ID_PATTERN)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Key = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_ADDRESS_LENGTH + 16)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_LENGTH)]


class InvalidForward(ValueError):
    """A scope topic record that is not a forwarded event: counted and skipped, never trusted."""


class Forwarded(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """One event as the scope topic carries it (msgpack, fields by position)."""

    scope: _Key  # "<kind>:<value>", e.g. "sender_domain:acme.com"
    campaign_id: _Id
    signal: Signal
    time: Annotated[float, msgspec.Meta(ge=0, le=LATEST_EVENT_TIME)]
    message_id: _Id
    recipient_domain: _Text | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    smtp_status: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    sequence_step: int | None = None
    sender_account_id: _Id | None = None
    workspace_id: _Id | None = None
    sender_domain: _Text | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Forwarded)


def scope_key(kind: ScopeKind, event: Event) -> str | None:
    """The scope of `kind` the event belongs to, e.g. "sender:acc_7"; None when the event does not say. A sender or
    domain is one per workspace ("sender_domain:ws_1/acme.com") when the event names its workspace: one tenant's
    mail never pauses another's campaigns, whatever addresses they share (a free-mail domain, say)."""
    if kind == "workspace":
        return f"workspace:{event.workspace_id}" if event.workspace_id else None
    value = event.sender_account_id if kind == "sender" else event.sender_domain
    if not value:
        return None
    return f"{kind}:{event.workspace_id}/{value}" if event.workspace_id else f"{kind}:{value}"


def forward(scope: str, event: Event, position: str) -> bytes:
    """The scope topic's value for `event` of `scope`; `position` ("topic/partition/offset") stands in for a
    missing message id."""
    return _encoder.encode(forwarded(scope, event, position))


def forwarded(scope: str, event: Event, position: str) -> Forwarded:
    """`event` as forwarded for `scope` (see `forward`)."""
    return Forwarded(
        scope,
        event.campaign_id,
        event.signal,
        event.time,
        event.message_id or position,
        event.recipient_domain,
        event.bounce_type,
        event.smtp_status,
        event.sequence_step,
        event.sender_account_id,
        event.workspace_id,
        event.sender_domain,
    )


def read_forwarded(value: bytes | None, key: bytes | None = None) -> Forwarded:
    """A scope topic record's value (and key, when given: its scope), validated and bounded as the input's
    events are; InvalidForward for what is none."""
    try:
        forwarded = _decoder.decode(value or b"")
    except (msgspec.DecodeError, RecursionError) as error:
        raise InvalidForward(f"not a forwarded event: {error}") from None
    kind = forwarded.scope.partition(":")[0]
    if kind not in SCOPE_KINDS or not math.isfinite(forwarded.time) or forwarded.signal is Signal.STARTED:
        raise InvalidForward(f"not a forwarded event: scope {forwarded.scope[:40]!r}, signal {forwarded.signal}")
    if key is not None and key != forwarded.scope.encode():
        raise InvalidForward(f"keyed {key[:40]!r}, not by its scope {forwarded.scope[:40]!r}")
    texts = (forwarded.scope, forwarded.campaign_id, forwarded.message_id, forwarded.sender_account_id)
    joined = " ".join(text for text in texts if text is not None)
    if not joined.isprintable() and UNSAFE_CHARACTERS.search(joined):  # every unsafe character is unprintable
        raise InvalidForward("an id holds control or bidirectional formatting characters")
    if forwarded.workspace_id is not None and not _WORKSPACE_ID.match(forwarded.workspace_id):
        raise InvalidForward(f"workspace id {forwarded.workspace_id[:40]!r} is not one")
    return forwarded


@dataclasses.dataclass(slots=True)
class Firing:
    decision: Decision  # the scope's decision
    decided: set[str]  # the campaigns it was turned into a decision for
    # campaigns whose decision did not pause them (`left_running`) -> the event time after which it is made again
    again_after: dict[str, float] = dataclasses.field(default_factory=dict)


class ScopeEngine:
    """An engine over scopes for one partition of the scope topic, and the campaigns each scope's events came from.

    It answers the pipeline's questions about a campaign (`latest_event`, `episode`) for the campaigns it turned
    decisions for, and `leans_bad` of a scope: a decision of a scope rule is current while its scope leans bad."""

    def __init__(
        self,
        rules: RuleSet,
        dedupe_horizon: float,
        max_dedupe_keys: int | None = None,
        kinds: Kinds = PYTHON,
        max_scopes: int | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        # no resumes: a scope's campaigns are resumed one by one, and a resumed one must not end the scope's firing;
        # at most `max_scopes` scopes, evicted as the engine evicts campaigns (and their members with them)
        self.engine = Engine(rules, dedupe_horizon, math.inf, max_scopes, max_dedupe_keys, kinds=kinds, scopes=True)
        self.scope_kinds = rules.scope_kinds
        self._seen: dict[str, dict[str, tuple[float, str | None]]] = {}  # scope -> campaign -> (latest, workspace)
        self._firings: dict[str, dict[str, Firing]] = {}  # scope -> rule name -> its firing
        self._decided: dict[str, float] = {}  # campaign decided for -> its latest event (the partition's clock)
        self._sent_at: dict[str, float] = {}  # scope -> its newest send, in the send's own time (bounded: _sent)
        self._next_sweep = -math.inf
        self._resume_grace = resume_grace  # how long after a decision that did not pause it a campaign waits

    @property
    def stats(self):  # noqa: ANN201 - the engine's EngineStats
        return self.engine.stats

    @property
    def campaigns(self) -> int:
        return self.engine.campaigns

    @property
    def dedupe_keys(self) -> int:
        return self.engine.dedupe_keys

    @property
    def dedupe_evicted(self) -> int:
        return self.engine.dedupe_evicted

    @property
    def unsealed(self) -> int:
        return self.engine.unsealed

    def set_rules(self, rules: RuleSet) -> None:
        self.engine.set_rules(rules)
        self.scope_kinds = rules.scope_kinds
        in_force = {rule.name: rule for rule in rules.rules}
        for firings in self._firings.values():
            for name, firing in list(firings.items()):
                rule, fired = in_force.get(name), firing.decision.rule
                if rule is None or (rule.action, fired.action) == ("pause", "alert") or not rule.judges_as(fired):
                    # gone, an alert now pausing, or edited in what it judges: judged afresh, as `_carried` does; a
                    # joiner is not decided on evidence the rule in force does not speak of
                    del firings[name]
                elif rule is not firing.decision.rule:
                    # a campaign joining from now on is decided under the rule as it is now (turned into an alert,
                    # reworded), and a snapshot names that version, which a restore under these rules finds
                    firing.decision = dataclasses.replace(firing.decision, rule=rule)

    def process(self, forwarded: Forwarded, stamped: float | None = None) -> list[Decision]:
        """Count one forwarded event; the decisions it causes, one per campaign of a scope. `stamped`: its scope
        topic record's time (the forwarder's clock at most), which bounds how far ahead a send can end a silence."""
        scope, campaign, time = forwarded.scope, forwarded.campaign_id, forwarded.time
        event = Event(
            forwarded.signal,
            scope,
            time,
            forwarded.message_id,
            forwarded.recipient_domain,
            forwarded.bounce_type,
            forwarded.smtp_status,
            forwarded.sequence_step,
            forwarded.sender_account_id,
            forwarded.workspace_id,
            forwarded.sender_domain,
        )
        if forwarded.signal is Signal.SENT:
            self._sent(scope, time if stamped is None else min(time, stamped + MAX_FUTURE_SKEW_SECONDS))
        evicted = self.engine.stats.evicted_campaigns
        fired_now = self.engine.process(event)
        if self.engine.stats.evicted_campaigns != evicted:  # scopes evicted at capacity: their members go too
            self._forget_untracked()
        time = min(time, self.engine.clock)  # as the engine counted it: one stamped far ahead counts at the clock
        members = self._seen.setdefault(scope, {})
        latest = members.get(campaign)
        if latest is None and len(members) >= MAX_MEMBERS:  # the least recently seen go, a twentieth at a time
            for member in sorted(members, key=lambda member: members[member][0])[: MAX_MEMBERS // 20]:
                del members[member]
        members[campaign] = (max(time, latest[0]) if latest else time, forwarded.workspace_id)
        if campaign in self._decided:
            self._decided[campaign] = max(time, self._decided[campaign])
        decisions = []
        for fired in fired_now:
            firing = self._firings.setdefault(scope, {})[fired.rule.name] = Firing(fired, set())
            since = fired.fired_at - fired.rule.span
            for member in sorted(m for m, (at, _) in members.items() if at >= since):
                decisions.append(self._for_campaign(firing, member))
        for name, firing in list(self._firings.get(scope, {}).items()):
            if not self.engine.firing(scope, name):
                del self._firings[scope][name]
            elif campaign not in firing.decided and time > firing.again_after.get(campaign, -math.inf):
                # joined the scope while its rule fires, or sends on after a decision that did not pause it
                decisions.append(self._for_campaign(firing, campaign, again_at=time))
        if self.engine.clock >= self._next_sweep:
            self._sweep(self.engine.clock)
        return decisions

    def _sent(self, scope: str, time: float) -> None:
        """A send of `scope` at `time` (bounded by its record's): the scope's cusum and `last:` rules start afresh
        when it sent nothing for SILENT_FOR before. A scope with no send noted yet counts from its newest event."""
        last_sent = self._sent_at.get(scope)
        if last_sent is None:
            last_sent = self.engine.latest_event(scope)
        if last_sent is not None and time - last_sent > SILENT_FOR:
            self.engine.restart_unwindowed(scope)
        self._sent_at[scope] = time if last_sent is None else max(time, last_sent)

    def count(self, event: Event, position: str) -> list[Decision]:
        """An event of a campaign counted in every scope it is in, as the scope topic would bring it here: what
        replay, rule tests and the demo do in one process. `position` names it where it has no message id."""
        if event.signal is Signal.STARTED:
            return []
        decisions = []
        for kind in self.scope_kinds:
            if (scope := scope_key(kind, event)) is not None:  # type: ignore[arg-type]
                decisions += self.process(forwarded(scope, event, position))
        return decisions

    def _for_campaign(self, firing: Firing, campaign: str, again_at: float | None = None) -> Decision:
        """The scope decision turned into one for `campaign`; made again (`left_running`) it is named by `again_at`, the
        time of the campaign's event that made it."""
        scope_decision = firing.decision
        firing.decided.add(campaign)
        again = firing.again_after.pop(campaign, None) is not None and again_at is not None
        at, workspace = self._seen[scope_decision.campaign_id][campaign]
        self._decided[campaign] = max(at, self._decided.get(campaign, at))
        decision = dataclasses.replace(
            scope_decision,
            id=decision_id(campaign, scope_decision.rule, again_at if again else scope_decision.fired_at),
            campaign_id=campaign,
            superseded_by=None,
            workspace_id=workspace,
            scope=scope_decision.campaign_id,
            scope_decision_id=scope_decision.id,
        )
        return decision

    def _forget_untracked(self) -> None:
        for scope in [scope for scope in self._seen if self.engine.latest_event(scope) is None]:
            del self._seen[scope]
            self._firings.pop(scope, None)
        for scope in [scope for scope in self._sent_at if self.engine.latest_event(scope) is None]:
            del self._sent_at[scope]

    def _sweep(self, now: float) -> None:
        """Forget campaigns idle in a scope for longer than any rule looks back."""
        cutoff = now - 2 * self.engine.retention
        # a campaign decided for is judged at a backlog's catch-up by its scopes: kept while it has events
        self._decided = {campaign: at for campaign, at in self._decided.items() if at >= cutoff}
        for scope, members in list(self._seen.items()):
            for campaign in [c for c, (at, _) in members.items() if at < cutoff]:
                del members[campaign]
            if not members:
                del self._seen[scope]
                self._firings.pop(scope, None)
        self._forget_untracked()  # dropped by the engine's own sweep
        self._next_sweep = now + SWEEP_EVERY

    # what the pipeline asks of a campaign (catchup.py): of those decided for here, each scope decision stands
    # while its scope leans bad
    def latest_event(self, campaign_id: str) -> float | None:
        """The newest event time read for a campaign decided for here (None: none was)."""
        return self._decided.get(campaign_id)

    def read_up_to(self, scope: str, since: float) -> bool:
        """Every campaign seen in `scope` has an event at or after `since`: the scope's evidence is read up to then
        (catchup.py: a scope's held decisions are judged on all its campaigns', not on the first read up)."""
        return all(latest >= since for latest, _ in self._seen.get(scope, {}).values())

    def episode(self, campaign_id: str) -> Episode | None:
        return Episode(None, None, None) if campaign_id in self._decided else None

    def leans_bad(self, scope: str) -> bool:
        """Whether a scope's evidence leans bad now (Engine.leans_bad, of the scope); catchup.py asks it of the
        scope of each decision of a scope rule."""
        return self.engine.leans_bad(scope)

    def left_running(self, decision: Decision) -> None:
        """`decision`, a campaign's of a scope decision, did not pause it (failed, exempted, dry run). The campaign is
        decided for again at its first event more than the resume grace after its newest one now, while the firing
        lasts, under a new id: as a campaign rule's failed pause is followed by a new episode, in which a still bad
        list is paused again, so a pause is not lost while the API is down, an exemption ends or a trial goes live. A
        campaign paused and then resumed by its owner is not decided for again by the same firing."""
        firings = self._firings.get(decision.scope or "")
        firing = firings.get(decision.rule.name) if firings is not None else None
        campaign = decision.campaign_id
        if firing is None or firing.decision.id != decision.scope_decision_id or campaign not in firing.decided:
            return  # the firing is over (or another one now): the campaign is judged afresh anyway
        member = self._seen.get(firing.decision.campaign_id, {}).get(campaign)
        latest = member[0] if member is not None else self.engine.clock
        firing.decided.discard(campaign)
        firing.again_after[campaign] = latest + self._resume_grace

    def note_pause(self, campaign_id: str, decision_id: str, at: float) -> None:
        """Nothing to note: a scope has no episodes (a campaign's resume is its own)."""
