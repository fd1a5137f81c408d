"""Records or events through an Engine, as replay, the demo, the benchmarks and the tests all run it.

`guard run` has its own loop (guard/runtime/pipeline.py): it dead-letters what does not decode and tracks
offsets, which is I/O. Everything else that wants "these records, these rules: which decisions?" runs
them through here, so a record that does not decode is skipped the same way everywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from guard.contracts import events
from guard.contracts.events import Event, IgnoredEvent, MalformedEvent
from guard.engine.decisions import Decision
from guard.engine.engine import Engine
from guard.engine.scopes import ScopeEngine
from guard.rules.models import RuleSet


def decode_records(
    records: Iterable[tuple[bytes, float]],
    skipped: Counter[str] | None = None,
    assign: Callable[[Event], Event] | None = None,
    decode: Callable[[bytes | None, float], Event] = events.decode,
) -> Iterator[Event]:
    """The events of (value, record time) pairs, in order. A record that is no event is skipped and
    counted in `skipped`: "ignored" (an event the guard does not count) or "malformed" (bad bytes, or
    no usable time: no timestamp and no record time to fall back on); nothing is raised. `assign`
    completes each decoded event (e.g. `in_workspace`); a MalformedEvent it raises counts as malformed."""
    for value, record_time in records:
        event = _event(value, record_time, assign, decode)
        if not isinstance(event, str):
            yield event
        elif skipped is not None:
            skipped[event] += 1


def decide(
    engine: Engine, events: Iterable[Event], scopes: ScopeEngine | None = None, first: int = 0
) -> Iterator[tuple[Event, list[Decision]]]:
    """Each event, once the engine has counted it, with the decisions it caused (usually none); with `scopes`,
    counted in its scopes too, in this process (guard.engine.scopes), with theirs. Lazy: a caller may stop at
    the first pause, or read the engine between events. An event without a message id is named in its scopes
    by its position, counted from `first`: a caller feeding one stream in parts passes where each part starts."""
    process = engine.process
    if scopes is None:
        for event in events:
            yield event, process(event)
        return
    for number, event in enumerate(events, first):
        decisions = process(event)
        yield event, decisions + scopes.count(event, f"#{number}")


def scopes_beside(rules: RuleSet, engine: Engine) -> ScopeEngine | None:
    """An engine of the rules' scopes with `engine`'s settings, for `decide`; None when no rule has a scope."""
    if not rules.scope_kinds:
        return None
    return ScopeEngine(rules, engine.dedupe_horizon, kinds=engine.kinds)


def record_decisions(
    engine: Engine, records: Iterable[tuple[bytes, float]], skipped: Counter[str] | None = None
) -> Iterator[tuple[int, Decision]]:
    """The decisions of (value, record time) pairs, each with the position (from 0) of the record that
    caused it; records that are no event are skipped and counted as `decode_records` says."""
    process, decode = engine.process, engine.kinds.decode
    for position, (value, record_time) in enumerate(records):
        event = _event(value, record_time, None, decode)
        if isinstance(event, str):
            if skipped is not None:
                skipped[event] += 1
            continue
        for decision in process(event):
            yield position, decision


def _event(
    value: bytes,
    record_time: float,
    assign: Callable[[Event], Event] | None = None,
    decode: Callable[[bytes | None, float], Event] = events.decode,
) -> Event | str:
    """The event of one record, or why it is none ("ignored", "malformed")."""
    try:
        event = decode(value, record_time)
        if assign is not None:
            event = assign(event)
    except IgnoredEvent:
        return "ignored"
    except MalformedEvent:
        return "malformed"
    return "malformed" if math.isnan(event.time) else event
