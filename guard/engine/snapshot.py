"""One partition's engine state to compact msgpack bytes and back: no I/O, like the rest of the engine.

A snapshot holds everything that decides what the engine does next: each campaign's series, rule
states and episode, in the order they were first tracked (eviction breaks ties by it); the
partition's clock and the timestamp it has not yet agreed with; the dedupe store's generations and
buckets; the counters. Each series is stored whole: a time window's buckets, a count window's
sends (times and message-id hashes), a cusum's run. Restored into an engine with the same rules and
settings, the events after it give exactly the decisions an engine that never stopped would give, in
any process: the dedupe keys and message-id hashes are stable hashes (fingerprints.py), not `hash()`.

What is derived is not stored: the compiled rules (from the rule set, whose version the snapshot
names) and each campaign's rules (from its id). The snapshot's types mirror the state's own fields,
read from their declarations: a field added to a state type is carried without change here, and
FORMAT goes up so that an older snapshot is refused rather than misread. Every structure is an
array (no field names on the wire); arrays of numbers are their raw little-endian bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import sys
import typing
from array import array
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec

from guard.engine import dedupe
from guard.engine.cusum import Cusum
from guard.engine.engine import Engine, EngineStats
from guard.engine.plan import Series
from guard.engine.state import CampaignState, RuleState
from guard.engine.windows import LastN, SlidingCount
from guard.rules.models import RuleSet

FORMAT = 3  # raise with any change to what is stored


class SnapshotError(ValueError):
    """The bytes are not a snapshot this engine can take: corrupt, another format, or other rules or settings."""


def _declared(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """A state type's fields and their types, in declaration order."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    names = cls.__struct_fields__ if issubclass(cls, msgspec.Struct) else [f.name for f in dataclasses.fields(cls)]
    # arrays of numbers travel as their bytes (`_enc_hook`) and are rebuilt by `_series`
    return [(name, bytes if hints[name] is array else hints[name]) for name in names if name not in skip]


def _mirror(cls: type, *, skip: tuple[str, ...] = (), extra: tuple[tuple[str, Any], ...] = (), **options: Any) -> Any:
    return msgspec.defstruct(f"{cls.__name__}Snapshot", [*_declared(cls, skip), *extra], array_like=True, **options)


_Sliding = _mirror(SlidingCount, tag=0)
_Last = _mirror(LastN, tag=1)
_Cusum = _mirror(Cusum, tag=2)
_SERIES = {SlidingCount: _Sliding, LastN: _Last, Cusum: _Cusum}  # every kind of series, and its mirror
_KINDS = {mirror: kind for kind, mirror in _SERIES.items()}
_RuleState = _mirror(RuleState)
_Stats = _mirror(EngineStats)
_Generation = _mirror(dedupe._Generation)
# `rules` is derived from the campaign id and workspace; `series` holds the windows as mirrors
_Campaign = _mirror(
    CampaignState,
    skip=("rules", "series", "rule_states"),
    extra=(("id", str), ("series", list[_Sliding | _Last | _Cusum | None]), ("rule_states", dict[str, _RuleState])),
)
_BUILT_APART = ("id", "series", "rule_states")


class _Dedupe(msgspec.Struct, array_like=True):
    bits: int
    buckets: list[bytes]
    generations: list[_Generation]  # type: ignore[valid-type]
    rotate_at: float
    sequence: int
    keys: int
    evicted: int


class _Settings(msgspec.Struct, array_like=True):
    """What the engine was built with: a snapshot is taken only by an engine built the same way."""

    rules_version: str
    dedupe_horizon: float
    max_dedupe_keys: int | None
    max_campaigns: int | None
    resume_grace: float


class _Partition(msgspec.Struct, array_like=True):
    format: int
    settings: _Settings
    watermark: float
    ahead: float | None
    next_sweep: float
    stats: _Stats  # type: ignore[valid-type]
    dedupe: _Dedupe
    campaigns: list[_Campaign]  # type: ignore[valid-type]  # in the order they were first tracked


class _Head(msgspec.Struct, array_like=True):
    """The first field alone, to refuse another format before reading the rest."""

    format: int


_LITTLE = sys.byteorder == "little"


def _enc_hook(value: object) -> object:
    if isinstance(value, array):
        if not _LITTLE:
            value = array(value.typecode, value)
            value.byteswap()
        return value.tobytes()
    raise NotImplementedError(f"no snapshot encoding for {type(value).__name__}")


def _array_types(kind: type) -> dict[str, str]:
    """A series' array fields and their typecodes, from the arrays its fields start as."""
    return {
        field.name: field.default_factory().typecode
        for field in msgspec.structs.fields(kind)
        if field.type is array and callable(field.default_factory)
    }


_ARRAY_TYPES = {kind: _array_types(kind) for kind in _SERIES}


def _array(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if not _LITTLE:
        values.byteswap()
    return values


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_head_decoder = msgspec.msgpack.Decoder(_Head)
_decoder = msgspec.msgpack.Decoder(_Partition)


def rules_version(rules: RuleSet) -> str:
    """A short hash of every rule's text, in order: what a snapshot's windows were counted for."""
    return hashlib.sha256("\x1f".join(rule.version for rule in rules.rules).encode()).hexdigest()[:16]


def _settings(engine: Engine, rules: RuleSet) -> _Settings:
    seen = engine._seen
    return _Settings(rules_version(rules), seen._horizon, seen._max_keys, engine._max_campaigns, engine._resume_grace)


def _mirror_of(value: Any, mirror: Any) -> Any:
    return mirror(*(getattr(value, name) for name in mirror.__struct_fields__))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a snapshot's objects are built or read. They are
    hundreds of thousands of small containers, none in a cycle, whose allocation would trigger
    full collections over the whole state again and again: this more than halves the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_collector_paused()
def snapshot(engine: Engine, rules: RuleSet) -> bytes:
    """The engine's whole state (it was built with `rules`, or reloaded to them last)."""
    seen = engine._seen
    store = _Dedupe(
        seen._bits,
        list(seen._buckets),
        [_mirror_of(generation, _Generation) for generation in seen._generations],
        seen._rotate_at,
        seen._sequence,
        seen.keys,
        seen.evicted,
    )
    campaigns = [
        _Campaign(
            **{name: getattr(state, name) for name in _Campaign.__struct_fields__ if name not in _BUILT_APART},
            id=campaign_id,
            series=[_series_mirror(series) for series in state.series],
            rule_states={name: _mirror_of(rule_state, _RuleState) for name, rule_state in state.rule_states.items()},
        )
        for campaign_id, state in engine._campaigns.items()
    ]
    partition = _Partition(
        FORMAT,
        _settings(engine, rules),
        engine._watermark,
        engine._ahead,
        engine._next_sweep,
        _mirror_of(engine.stats, _Stats),
        store,
        campaigns,
    )
    return _encoder.encode(partition)


def _series_mirror(series: Series | None) -> Any:
    if series is None:
        return None
    return _mirror_of(series, _SERIES[type(series)])


def _series(mirror: Any) -> Series | None:
    if mirror is None:
        return None
    kind = _KINDS[type(mirror)]
    arrays = _ARRAY_TYPES[kind]
    values = {
        name: _array(arrays[name], value) if name in arrays else value
        for name, value in msgspec.structs.asdict(mirror).items()
    }
    return kind(**values)


@_collector_paused()
def restore(data: bytes, rules: RuleSet, engine: Engine) -> None:
    """Load a snapshot into `engine`, freshly built with `rules` and the settings the snapshot
    was taken with. SnapshotError (and `engine` untouched) if it is not such a snapshot."""
    try:
        head = _head_decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as error:  # ValueError: e.g. a string that is not UTF-8
        raise SnapshotError(f"not a snapshot: {error}") from None
    if head.format != FORMAT:
        raise SnapshotError(f"snapshot format {head.format}, this guard reads {FORMAT}")
    try:
        partition = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as error:
        raise SnapshotError(f"corrupt snapshot: {error}") from None
    if partition.settings != _settings(engine, rules):
        raise SnapshotError("snapshot taken with other rules or settings")
    try:
        campaigns, store = _campaigns(partition, engine), _store(partition.dedupe, engine._seen)
    except (TypeError, ValueError, KeyError, IndexError) as error:
        raise SnapshotError(f"corrupt snapshot: {error}") from None
    engine._campaigns, engine._seen = campaigns, store
    engine._watermark, engine._ahead, engine._next_sweep = partition.watermark, partition.ahead, partition.next_sweep
    engine.stats = EngineStats(**msgspec.structs.asdict(partition.stats))


def _campaigns(partition: _Partition, engine: Engine) -> dict[str, CampaignState]:
    slots = len(engine._plan.series_keys)
    campaigns = {}
    for mirror in partition.campaigns:
        fields = msgspec.structs.asdict(mirror)
        campaign_id = fields.pop("id")
        series = [_series(value) for value in fields.pop("series")]
        if len(series) != slots:
            raise ValueError(f"{len(series)} series for {slots} slots")
        rule_states = {
            name: RuleState(**msgspec.structs.asdict(state)) for name, state in fields.pop("rule_states").items()
        }
        rules = engine._plan.rules_for(campaign_id, fields["workspace_id"])
        campaigns[campaign_id] = CampaignState(rules, series, rule_states=rule_states, **fields)
    return campaigns


def _store(mirror: _Dedupe, fresh: dedupe.DedupeStore) -> dedupe.DedupeStore:
    """The fresh store (of the same horizon and budget) filled with the snapshot's keys."""
    if len(mirror.buckets) != 1 << mirror.bits:
        raise ValueError("dedupe buckets do not match their count")
    generations = deque(dedupe._Generation(**msgspec.structs.asdict(g)) for g in mirror.generations)
    fresh._bits, fresh._mask, fresh._buckets = mirror.bits, (1 << mirror.bits) - 1, mirror.buckets
    fresh._generations, fresh._rotate_at, fresh._sequence = generations, mirror.rotate_at, mirror.sequence
    if generations:  # the newest generation is the open one: the same object, as keys are added to it
        fresh._open = generations[-1]
        fresh._tag = bytes((fresh._open.tag,))
    fresh.keys, fresh.evicted = mirror.keys, mirror.evicted
    return fresh
