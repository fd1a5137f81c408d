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
from typing import Annotated, Literal

import msgspec

from guard.contracts.events import LATEST_EVENT_TIME, MAX_ADDRESS_LENGTH, MAX_ID_LENGTH, Event, Signal
from guard.engine.decisions import Decision, decision_id
from guard.engine.engine import Engine
from guard.engine.episodes import Episode
from guard.engine.kinds import PYTHON, Kinds
from guard.rules.models import RuleSet

ScopeKind = Literal["workspace", "sender", "sender_domain"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("workspace", "sender", "sender_domain")
# A sweep of the campaigns seen per scope at most once per this much event time: bounded memory, rare work.
SWEEP_EVERY = 600.0

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
    """The scope of `kind` the event belongs to, e.g. "sender:acc_7"; None when the event does not say."""
    value = {"workspace": event.workspace_id, "sender": event.sender_account_id, "sender_domain": event.sender_domain}
    return f"{kind}:{value[kind]}" if value[kind] else None


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


def read_forwarded(value: bytes | None) -> Forwarded:
    """A scope topic record's value, validated and bounded; InvalidForward for what is none."""
    try:
        forwarded = _decoder.decode(value or b"")
    except (msgspec.DecodeError, RecursionError) as error:
        raise InvalidForward(f"not a forwarded event: {error}") from None
    kind = forwarded.scope.partition(":")[0]
    if kind not in SCOPE_KINDS or not math.isfinite(forwarded.time) or forwarded.signal is Signal.STARTED:
        raise InvalidForward(f"not a forwarded event: scope {forwarded.scope[:40]!r}, signal {forwarded.signal}")
    return forwarded


@dataclasses.dataclass(slots=True)
class _Firing:
    decision: Decision  # the scope's decision
    decided: set[str]  # the campaigns it was turned into a decision for


class ScopeEngine:
    """An engine over scopes for one partition of the scope topic, and the campaigns each scope's events came from.

    It answers the pipeline's questions about a campaign (`latest_event`, `episode`, `leans_bad`) for the campaigns
    it turned decisions for: a campaign's pause is its latest decision here, current while its scope leans bad."""

    def __init__(
        self,
        rules: RuleSet,
        dedupe_horizon: float,
        max_dedupe_keys: int | None = None,
        kinds: Kinds = PYTHON,
    ) -> None:
        # no resumes: a scope's campaigns are resumed one by one, and a resumed one must not end the scope's firing
        self.engine = Engine(rules, dedupe_horizon, math.inf, None, max_dedupe_keys, kinds=kinds, scopes=True)
        self.scope_kinds = rules.scope_kinds
        self._seen: dict[str, dict[str, tuple[float, str | None]]] = {}  # scope -> campaign -> (latest, workspace)
        self._firings: dict[str, dict[str, _Firing]] = {}  # scope -> rule name -> its firing
        self._latest: dict[str, tuple[float, Decision]] = {}  # campaign -> (latest event, latest decision for it)
        self._next_sweep = -math.inf

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

    def set_rules(self, rules: RuleSet) -> None:
        self.engine.set_rules(rules)
        self.scope_kinds = rules.scope_kinds
        names = {rule.name for rule in rules.rules}
        for firings in self._firings.values():
            for name in [name for name in firings if name not in names]:
                del firings[name]

    def process(self, forwarded: Forwarded) -> list[Decision]:
        """Count one forwarded event; the decisions it causes, one per campaign of a scope."""
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
        members = self._seen.setdefault(scope, {})
        latest = members.get(campaign)
        members[campaign] = (max(time, latest[0]) if latest else time, forwarded.workspace_id)
        decisions = []
        for fired in self.engine.process(event):
            firing = self._firings.setdefault(scope, {})[fired.rule.name] = _Firing(fired, set())
            since = fired.fired_at - fired.rule.span
            for member in sorted(m for m, (at, _) in members.items() if at >= since):
                decisions.append(self._for_campaign(firing, member))
        for name, firing in list(self._firings.get(scope, {}).items()):
            if not self.engine.firing(scope, name):
                del self._firings[scope][name]
            elif campaign not in firing.decided:  # joined the scope while its rule fires
                decisions.append(self._for_campaign(firing, campaign))
        if time >= self._next_sweep:
            self._sweep(time)
        return decisions

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

    def _for_campaign(self, firing: _Firing, campaign: str) -> Decision:
        scope_decision = firing.decision
        firing.decided.add(campaign)
        at, workspace = self._seen[scope_decision.campaign_id][campaign]
        decision = dataclasses.replace(
            scope_decision,
            id=decision_id(campaign, scope_decision.rule, scope_decision.fired_at),
            campaign_id=campaign,
            superseded_by=None,
            workspace_id=workspace,
            scope=scope_decision.campaign_id,
            scope_decision_id=scope_decision.id,
        )
        self._latest[campaign] = (at, decision)
        return decision

    def _sweep(self, now: float) -> None:
        """Forget campaigns idle in a scope for longer than any rule looks back."""
        cutoff = now - 2 * self.engine.retention
        # a campaign decided for is judged at a backlog's catch-up by its scope's firing: kept while it has events
        self._latest = {c: entry for c, entry in self._latest.items() if (self.latest_event(c) or entry[0]) >= cutoff}
        for scope, members in list(self._seen.items()):
            for campaign in [c for c, (at, _) in members.items() if at < cutoff]:
                del members[campaign]
            if not members:
                del self._seen[scope]
                self._firings.pop(scope, None)
        self._next_sweep = now + SWEEP_EVERY

    # what the pipeline asks of a campaign (catchup.py): its latest decision here is its pause in force
    def latest_event(self, campaign_id: str) -> float | None:
        """The newest event time read for a campaign decided for here, in the scope of that decision."""
        entry = self._latest.get(campaign_id)
        if entry is None:
            return None
        seen = self._seen.get(entry[1].scope or "", {}).get(campaign_id)
        return seen[0] if seen is not None else entry[0]

    def episode(self, campaign_id: str) -> Episode | None:
        entry = self._latest.get(campaign_id)
        return Episode(None, None, None) if entry is not None else None

    def leans_bad(self, campaign_id: str) -> bool:
        """Whether the scope of the campaign's latest decision still leans bad (Engine.leans_bad, of the scope)."""
        entry = self._latest.get(campaign_id)
        return entry is not None and entry[1].scope is not None and self.engine.leans_bad(entry[1].scope)

    def note_pause(self, campaign_id: str, decision_id: str, at: float) -> None:
        """Nothing to note: a scope has no episodes (a campaign's resume is its own)."""
