"""An engine of scopes (scopes.py) to checkpoint bytes and back: its engine's snapshot (snapshot.py) and who is in
each scope. No I/O, like the rest of the engine.

The bytes are a frame: MAGIC, the engine's snapshot's length (8 bytes, little-endian), the engine's snapshot, then
the scopes' campaigns (msgpack): per scope its campaigns with their latest event time and workspace, each firing
with its scope decision and the campaigns it was turned into decisions for, and the campaigns decided for. A scope
decision is stored by its fields and its rule's name and version: restored with a rule of another version, that
firing is left out (a later event of the scope fires again under the rule in force). Everything read is bounded
and checked as a snapshot is: the state topic is input like any other (DESIGN promise 9).
"""

from __future__ import annotations

import struct
from typing import Annotated

import msgspec

from guard.contracts.events import LATEST_EVENT_TIME, MAX_ADDRESS_LENGTH, MAX_ID_LENGTH
from guard.engine.decisions import Decision
from guard.engine.episodes import EpisodeStart
from guard.engine.scopes import MAX_MEMBERS, Firing, ScopeEngine
from guard.engine.snapshot import PendingSnapshot, SnapshotError, restore
from guard.rules.models import RuleSet

MAGIC = b"guard-scopes-1\x00"
_LENGTH = struct.Struct("<Q")
_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
_Scope = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_LENGTH + MAX_ID_LENGTH + 16)]
# an event time: NaN or a negative one is no time a guard wrote (NaN would compare with nothing and never be swept)
_Time = Annotated[float, msgspec.Meta(ge=0, le=LATEST_EVENT_TIME)]


class _Member(msgspec.Struct, array_like=True):
    campaign: _Id
    at: _Time
    workspace: _Id | None


class _Decision(msgspec.Struct, array_like=True):
    id: _Id
    rule: _Id
    version: Annotated[str, msgspec.Meta(max_length=64)]
    fired_at: float
    numerator: int
    denominator: int | None
    value: float
    evidence_from: float
    message_ids: list[_Id]
    lower_bound: float | None
    episode_from: float | None
    episode_began: str | None
    workspace_id: _Id | None


class _FiringRecord(msgspec.Struct, array_like=True):
    decision: _Decision
    decided: list[_Id]
    again_after: dict[_Id, _Time] = {}  # Firing.again_after (absent from a snapshot of an older guard)


class _Scopes(msgspec.Struct, array_like=True):
    seen: dict[_Scope, list[_Member]]
    firings: dict[_Scope, list[_FiringRecord]]
    decided: dict[_Id, _Time]
    sent_at: dict[_Scope, _Time] = {}  # each scope's newest send (absent from a snapshot of an older guard)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Scopes)


class ScopeSnapshot:
    """A PendingSnapshot of the engine of scopes (encoded in steps while it goes on counting), and its campaigns
    per scope, copied at once when it is made (a few hundred bytes a scope)."""

    def __init__(self, scopes: ScopeEngine, rules: RuleSet) -> None:
        self._engine = PendingSnapshot(scopes.engine, rules)
        self._scopes = _encoder.encode(_copy(scopes))

    @property
    def rules_version(self) -> str:
        return self._engine.rules_version

    def step(self, campaigns: int) -> bool:
        return self._engine.step(campaigns)

    def close(self) -> None:
        self._engine.close()

    def finish(self) -> bytes:
        engine = self._engine.finish()
        return b"".join([MAGIC, _LENGTH.pack(len(engine)), engine, self._scopes])


def engine_part(data: bytes) -> bytes:
    """The engine's snapshot in a checkpoint's bytes: the whole of them, unless they are an engine of scopes'."""
    if not data.startswith(MAGIC):
        return data
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise SnapshotError("not a snapshot of scopes: cut short")
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if length > len(data) - start:
        raise SnapshotError("not a snapshot of scopes: its engine's part is cut short")
    return data[start : start + length]


def restore_scopes(data: bytes, rules: RuleSet, scopes: ScopeEngine) -> None:
    """Load a snapshot of scopes into `scopes`, freshly built with `rules` and the settings the snapshot was taken
    with; SnapshotError if it is none (or an engine of campaigns' snapshot)."""
    if not data.startswith(MAGIC):
        raise SnapshotError("a snapshot of campaigns, not of scopes")
    engine = engine_part(data)
    try:
        stored = _decoder.decode(data[len(MAGIC) + _LENGTH.size + len(engine) :])
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"corrupt snapshot of scopes: {error}") from None
    restore(engine, rules, scopes.engine)
    counted = scopes.engine
    by_name = {(rule.name, rule.version): rule for rule in rules.rules if rule.scope != "campaign"}
    clock = counted.clock
    for scope, members in stored.seen.items():
        if counted.latest_event(scope) is None or len(members) > MAX_MEMBERS:
            continue  # a scope the engine does not track (or never could hold so many): nothing to pause by it
        scopes._seen[scope] = {m.campaign: (min(m.at, clock), m.workspace) for m in members}
    for scope, firings in stored.firings.items():
        if scope not in scopes._seen:
            continue
        for record in firings:
            rule = by_name.get((record.decision.rule, record.decision.version))
            if rule is None and counted.firing(scope, record.decision.rule):
                # stored under another version than its engine counted with (an older guard kept the version it
                # fired under over a reload): left firing, it would decide for no campaign joining it; judged afresh
                counted.judge_afresh(scope, record.decision.rule)
            elif rule is not None and counted.firing(scope, rule.name):
                decision = _decision(scope, record.decision, rule)
                # a campaign waits at most the grace from the clock to be decided again, whatever the record says
                latest = clock + scopes._resume_grace
                again = {c: min(at, latest) for c, at in record.again_after.items() if c not in record.decided}
                if len(again) > MAX_MEMBERS:
                    again = {}  # more than a scope remembers: forged; decided again at their next events
                scopes._firings.setdefault(scope, {})[rule.name] = Firing(decision, set(record.decided), again)
    scopes._decided = {campaign: min(at, clock) for campaign, at in stored.decided.items()}
    scopes._sent_at = {scope: at for scope, at in stored.sent_at.items() if counted.latest_event(scope) is not None}


def _copy(scopes: ScopeEngine) -> _Scopes:
    seen = {scope: [_Member(c, at, ws) for c, (at, ws) in members.items()] for scope, members in scopes._seen.items()}
    firings = {
        scope: [
            _FiringRecord(
                _stored(firing.decision),
                sorted(firing.decided),
                {campaign: min(at, LATEST_EVENT_TIME) for campaign, at in firing.again_after.items()},
            )
            for firing in by_rule.values()
        ]
        for scope, by_rule in scopes._firings.items()
    }
    # a send's own time, bounded by its record's: a forged one may still be anywhere, stored as a restore accepts
    sent_at = {scope: min(max(at, 0.0), LATEST_EVENT_TIME) for scope, at in scopes._sent_at.items()}
    return _Scopes(seen, firings, dict(scopes._decided), sent_at)


def _stored(decision: Decision) -> _Decision:
    return _Decision(
        decision.id,
        decision.rule.name,
        decision.rule.version,
        decision.fired_at,
        decision.numerator,
        decision.denominator,
        decision.value,
        decision.evidence_from,
        list(decision.message_ids),
        decision.lower_bound,
        decision.episode_from,
        decision.episode_began.value if decision.episode_began is not None else None,
        decision.workspace_id,
    )


def _decision(scope: str, stored: _Decision, rule) -> Decision:  # noqa: ANN001 - a Rule
    began = stored.episode_began
    return Decision(
        id=stored.id,
        campaign_id=scope,
        rule=rule,
        fired_at=stored.fired_at,
        numerator=stored.numerator,
        denominator=stored.denominator,
        value=stored.value,
        evidence_from=stored.evidence_from,
        message_ids=tuple(stored.message_ids),
        lower_bound=stored.lower_bound,
        episode_from=stored.episode_from,
        episode_began=EpisodeStart(began) if began in {e.value for e in EpisodeStart} else None,
        workspace_id=stored.workspace_id,
    )
