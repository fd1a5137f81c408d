"""One partition's engine state to compact msgpack bytes and back: no I/O, like the rest of the engine.

A snapshot holds everything that decides what the engine does next: each campaign's series, rule
states and episode, in the order they were first tracked (eviction breaks ties by it); the
partition's clock and the timestamp it has not yet agreed with; the dedupe store's generations and
buckets; the counters. Each series is stored whole: a time window's buckets, a count window's
sends (times and message-id hashes), a cusum's run. Restored into an engine with the same rules and
settings, the events after it give exactly the decisions an engine that never stopped would give, in
any process: the dedupe keys and message-id hashes are stable hashes (fingerprints.py), not `hash()`.

What is derived is not stored: the compiled rules (from the rule set, which the snapshot holds, with its
version) and each campaign's rules (from its id). The snapshot's types mirror the state's own fields,
read from their declarations: a field added to a state type is carried without change here, and
FORMAT goes up so that an older snapshot is refused rather than misread. Every structure is an
array (no field names on the wire); arrays of numbers are their raw little-endian bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import math
import operator
import sys
import typing
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from guard.engine import dedupe
from guard.engine.cusum import Cusum
from guard.engine.engine import MAX_AHEAD_SECONDS, Engine, EngineStats
from guard.engine.kinds import Kinds
from guard.engine.plan import Series
from guard.engine.state import NO_RULE_STATES, CampaignState, RuleState
from guard.engine.windows import BUCKETS_PER_WINDOW, SAMPLE_IDS, SKIPPED_IDS, LastN, SlidingCount
from guard.rules.models import MAX_LAST, RuleSet

FORMAT = 7  # raise with any change to what is stored (4 was another layout once: never reuse a number)
# The rules a snapshot carries, as JSON (a few KiB: 5.7 for the shipped ones); a larger set is not carried
MAX_CARRIED_RULES_BYTES = 4 << 20
_MAX_BITS = 40  # a dedupe table of more buckets (8 TiB of keys at its load) is no table a guard made
_MAX_COUNT = 2**53  # events a series counts: more than any log holds, and exact in a float and an i64


class SnapshotError(ValueError):
    """The bytes are not a snapshot this engine can take: corrupt, another format, or other rules or settings."""


class OtherSettings(SnapshotError):
    """A sound snapshot taken under other rules or engine settings (horizon, grace, capacity shares)."""


def _declared(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """A state type's fields and their types, in declaration order."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    names = cls.__struct_fields__ if issubclass(cls, msgspec.Struct) else [f.name for f in dataclasses.fields(cls)]
    # arrays of numbers travel as their bytes (`_enc_hook`), rebuilt by `_series` (or read by the core from the bytes)
    return [(name, bytes if hints[name] is array else hints[name]) for name in names if name not in skip]


def _mirror(cls: type, *, skip: tuple[str, ...] = (), extra: tuple[tuple[str, Any], ...] = (), **options: Any) -> Any:
    return msgspec.defstruct(f"{cls.__name__}Snapshot", [*_declared(cls, skip), *extra], array_like=True, **options)


_Sliding = _mirror(SlidingCount, tag=0)
_Last = _mirror(LastN, tag=1)
_Cusum = _mirror(Cusum, tag=2)
# every kind of series, its mirror and its Python type (the compiled core's types have the same fields)
_SERIES = {"sliding": _Sliding, "last": _Last, "cusum": _Cusum}
_KINDS = {mirror: kind for kind, mirror in _SERIES.items()}
_PYTHON_TYPES = {"sliding": SlidingCount, "last": LastN, "cusum": Cusum}
_RuleState = _mirror(RuleState)
_Stats = _mirror(EngineStats)
_Generation = _mirror(dedupe._Generation)
# `rules` is derived from the campaign id and workspace; `series` holds the windows, a mirror (or nil) per slot, read
# apart (`_series_restoring`): the compiled core reads the bytes into its own series, without the mirrors between
_SeriesList = list[_Sliding | _Last | _Cusum | None]  # type: ignore[valid-type]
_Campaign = _mirror(
    CampaignState,
    skip=("rules", "series", "rule_states"),
    extra=(("id", str), ("series", msgspec.Raw), ("rule_states", dict[str, _RuleState])),
)
_BUILT_APART = ("id", "series", "rule_states")
# a restored CampaignState is built from its positional fields: its own, taken from the mirror as they are, with
# `rules`, `series` and `rule_states` put in their places (each campaign's keywords cost ~1 us of a restore's ~8)
_STATE_FIELDS = CampaignState.__struct_fields__
_KEPT_AS_THEY_ARE = operator.attrgetter(*(name for name in _STATE_FIELDS if name not in _BUILT_APART + ("rules",)))
if _STATE_FIELDS[:2] != ("rules", "series"):
    raise AssertionError("CampaignState's first fields are not `rules` and `series`")
_RULE_STATES_AT = _STATE_FIELDS.index("rule_states")


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
    rules: bytes  # the rule set the state was counted for, as JSON: restored under it, other rules are a reload
    watermark: float
    ahead: float | None
    next_sweep: float
    stats: _Stats  # type: ignore[valid-type]
    dedupe: _Dedupe
    # in the order they were first tracked; each decoded on its own as a restore reads it (`_campaigns`), so a restore
    # in a worker thread lets the event loop's thread in between, where one decode of the whole held it throughout
    campaigns: list[msgspec.Raw]


class _Head(msgspec.Struct, array_like=True):
    """The first field alone, to refuse another format before reading the rest."""

    format: int


class _Clock(msgspec.Struct, array_like=True):
    """The fields up to the partition's clock, to bound it before the rest is read."""

    format: int
    settings: msgspec.Raw
    rules: msgspec.Raw
    watermark: float


class _Rules(msgspec.Struct, array_like=True):
    """The fields up to the rules, to read which rules an engine for it is built with."""

    format: int
    settings: _Settings
    rules: bytes


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


_ARRAY_TYPES = {kind: _array_types(python_type) for kind, python_type in _PYTHON_TYPES.items()}


def _array(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if not _LITTLE:
        values.byteswap()
    return values


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_head_decoder = msgspec.msgpack.Decoder(_Head)
_decoder = msgspec.msgpack.Decoder(_Partition)
_campaign_decoder = msgspec.msgpack.Decoder(_Campaign)
_series_decoder = msgspec.msgpack.Decoder(_SeriesList)
_clock_decoder = msgspec.msgpack.Decoder(_Clock)
_rules_decoder = msgspec.msgpack.Decoder(_Rules)


def rules_version(rules: RuleSet) -> str:
    """A short hash of every rule's text, in order: what a snapshot's windows were counted for."""
    return hashlib.sha256("\x1f".join(rule.version for rule in rules.rules).encode()).hexdigest()[:16]


def _settings(engine: Engine, rules: RuleSet) -> _Settings:
    seen = engine._seen
    return _Settings(rules_version(rules), seen.horizon, seen.max_keys, engine._max_campaigns, engine._resume_grace)


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


def snapshot(engine: Engine, rules: RuleSet) -> bytes:
    """The engine's whole state (it was built with `rules`, or reloaded to them last)."""
    return PendingSnapshot(engine, rules).finish()


_RUN = 1_000  # campaigns encoded in one call (~2 ms with the core): between calls other threads may run


class PendingSnapshot:
    """An engine's snapshot as of the moment this is made, encoded a few campaigns at a time (`step`) while
    the engine goes on counting: copy on write. The partition's clock, counters and dedupe store are taken at
    once (the store is bytes in buckets: ~15 ms for 1.5M keys); a campaign is encoded when its turn comes, or
    first thing before the engine changes it (`Engine` calls `before_change`), so each is encoded as it was
    when the snapshot was made. The bytes are those `snapshot` gives at that moment, whatever the engine did
    since. A checkpoint of a large partition thus holds the poll loop for one step at a time; `finish`, once
    every step is taken, joins the encoded parts (a copy that lets go of the GIL: another thread may run it).

    A campaign that cannot be encoded before the engine changes it gives the snapshot up (the next step says
    why), never the engine's event."""

    def __init__(self, engine: Engine, rules: RuleSet) -> None:
        if engine._snapshot is not None:
            engine._snapshot.before_changing_all()  # an older one still under way: finished first, as it was
        self._head = (
            FORMAT,
            _settings(engine, rules),
            _carried_rules(rules),
            engine._watermark,
            engine._ahead,
            engine._next_sweep,
            _mirror_of(engine.stats, _Stats),
        )
        self._store = _store_part(engine._seen)  # at once: ~10 ms for 1.5M keys
        self._encode, self._encode_run = _campaign_encoding(engine.kinds)
        self._left = dict(engine._campaigns)  # not yet encoded, in the order they were first tracked
        self._order = list(self._left)
        self._early: dict[str, bytes] = {}  # encoded before their step, as the engine was about to change them
        self._runs: list[bytes] = []  # `_order[:_next]` encoded, a step's campaigns one after the other in each
        self._next = 0  # the position in `_order` the next step starts at
        self._failed: Exception | None = None
        self._engine: Engine | None = engine
        engine._snapshot = self

    @property
    def rules_version(self) -> str:
        """The version of the rules the engine counted with when the snapshot was begun."""
        return self._head[1].rules_version

    def before_change(self, campaign_id: str) -> None:
        """The engine is about to change the campaign's state (or drop it): encoded now, unless it was."""
        try:
            self._keep(campaign_id)
        except Exception as error:  # the engine's event goes on; the snapshot is given up
            self._failed = error
            self.close()

    def before_changing_all(self) -> None:
        """The engine is about to change every campaign (a sweep, a reload): everything encoded now."""
        try:
            self.step(len(self._order))
        except SnapshotError:
            pass  # given up (close() let the engine go); the next step says why

    def _keep(self, campaign_id: str) -> None:
        state = self._left.get(campaign_id)
        if state is not None:
            self._early[campaign_id] = self._encode(campaign_id, state)
            del self._left[campaign_id]

    @_collector_paused()
    def step(self, campaigns: int) -> bool:
        """Encode up to `campaigns` more campaigns; True once every one is (the engine is let go). SnapshotError
        when a campaign cannot be encoded (the snapshot is given up)."""
        if self._failed is not None:
            raise SnapshotError(f"snapshot given up: {self._failed!r}") from self._failed
        order = self._order
        end = min(self._next + campaigns, len(order))
        try:
            for start in range(self._next, end, _RUN):  # a sweep steps every campaign: threads run between runs
                self._runs.append(self._encode_run(order, start, min(start + _RUN, end), self._left, self._early))
        except Exception as error:
            self._failed = error
            self.close()
            raise SnapshotError(f"snapshot given up: {error!r}") from error
        self._next = end
        if end < len(order):
            return False
        self.close()
        return True

    def close(self) -> None:
        """Let the engine go: it no longer tells this snapshot of changes (finished, or given up)."""
        if self._engine is not None and self._engine._snapshot is self:
            self._engine._snapshot = None
        self._engine = None

    def finish(self) -> bytes:
        """The snapshot's bytes, the steps left taken first. Once every step is taken, this reads nothing of the
        engine's and touches no interpreter-wide switch: another thread may run it."""
        if self._next < len(self._order) or self._failed is not None:
            self.step(len(self._order))
        order = self._order
        # the partition with no store and no campaigns, its last two fields then written as they are
        prefix = _encoder.encode(_Partition(*self._head, None, []))
        if not prefix.endswith(b"\xc0\x90"):  # nil, then an empty array
            raise AssertionError("the partition's last fields are not the dedupe store and the campaigns")
        campaigns = _encoder.encode([None] * len(order))  # an array's header, then one byte (nil) an item
        return b"".join([prefix[:-2], self._store, campaigns[: len(campaigns) - len(order)], *self._runs])


def _store_part(seen: Any) -> bytes:
    """The dedupe store's part of a snapshot: the compiled core's store writes its own (the same bytes)."""
    if not isinstance(seen, dedupe.DedupeStore):
        return seen.snapshot_bytes(list(_Dedupe.__struct_fields__), list(_Generation.__struct_fields__))
    store = _Dedupe(
        seen.bits,
        seen.buckets(),
        [_Generation(*generation) for generation in seen.generations()],
        seen.rotate_at,
        seen.sequence,
        seen.keys,
        seen.evicted,
    )
    return _encoder.encode(store)


_EncodeRun = Callable[[list[str], int, int, dict[str, CampaignState], dict[str, bytes]], bytes]


def _campaign_encoding(kinds: Kinds) -> tuple[Callable[[str, CampaignState], bytes], _EncodeRun]:
    """How a campaign of an engine with `kinds` is encoded, and a step's run of them: by the compiled core when
    it has the encoder (the same bytes, without the mirror objects or a call per campaign:
    tests/test_core_differential.py), else here."""
    if kinds.campaign_encoder is None:
        return _campaign, _encoded_run
    series_fields = {kind: list(mirror.__struct_fields__) for kind, mirror in _SERIES.items()}
    encoder = kinds.campaign_encoder(
        list(_Campaign.__struct_fields__), list(_RuleState.__struct_fields__), series_fields
    )
    return encoder.encode, encoder.encode_run


def _encoded_run(
    order: list[str], start: int, end: int, left: dict[str, CampaignState], early: dict[str, bytes]
) -> bytes:
    """The campaigns `order[start:end]` encoded one after the other: each taken out of `left` and encoded, or,
    encoded before its step, taken out of `early`."""
    parts = []
    for campaign_id in order[start:end]:
        state = left.pop(campaign_id, None)
        parts.append(early.pop(campaign_id) if state is None else _campaign(campaign_id, state))
    return b"".join(parts)


def _campaign(campaign_id: str, state: CampaignState) -> bytes:
    """One campaign's part of a snapshot, encoded at once: its series' arrays change as the engine counts."""
    mirror = _Campaign(
        **{name: getattr(state, name) for name in _Campaign.__struct_fields__ if name not in _BUILT_APART},
        id=campaign_id,
        series=msgspec.Raw(_encoder.encode([_series_mirror(series) for series in state.series])),
        rule_states={name: _mirror_of(rule_state, _RuleState) for name, rule_state in state.rule_states.items()},
    )
    return _encoder.encode(mirror)


def _series_mirror(series: Series | None) -> Any:
    if series is None:
        return None
    return _mirror_of(series, _SERIES[series.kind])


def _series_restoring(kinds: Kinds) -> Callable[[msgspec.Raw, list[Series | None], float], list[Series | None]]:
    """(a campaign's series as its snapshot holds them, the fresh series of each slot, clock) -> its series, of the
    engine's kinds (Python or compiled, whichever wrote the snapshot), each checked against `fresh[slot]`, one the
    slot's rule makes (`_check_series`). The compiled core reads the bytes, builds and checks its own (the same
    checks: tests/test_core_differential.py), without the mirror objects between."""
    if kinds.restore_series is None:

        def restored(data: msgspec.Raw, fresh: list[Series | None], clock: float) -> list[Series | None]:
            mirrors = _series_decoder.decode(data)
            if len(mirrors) != len(fresh):
                raise ValueError(f"{len(mirrors)} series for {len(fresh)} slots")
            restored: list[Series | None] = []
            for mirror, slot_fresh in zip(mirrors, fresh, strict=True):
                if mirror is None:
                    restored.append(None)
                    continue
                series = _series(mirror, kinds)
                _check_series(series, slot_fresh, clock)  # type: ignore[arg-type]
                if series.kind == "last":  # shorter than its rules ask: from a guard whose reloads kept it so
                    series.grow(slot_fresh.size)  # type: ignore[union-attr]
                restored.append(series)
            return restored

        return restored
    restore_series = kinds.restore_series
    return lambda data, fresh, clock: restore_series(data, fresh, clock, MAX_LAST)


def _series(mirror: Any, kinds: Kinds) -> Series:
    """A series of the engine's kinds from its mirror, unchecked."""
    kind = _KINDS[type(mirror)]
    arrays = _ARRAY_TYPES[kind]
    values = {
        name: _array(arrays[name], value) if name in arrays else value
        for name, value in msgspec.structs.asdict(mirror).items()
    }
    return getattr(kinds, kind)(**values)


def check_clock(data: bytes, latest: float) -> None:
    """SnapshotError unless the snapshot's partition clock is at most `latest` (event time). The caller
    bounds it by when the snapshot was written, as the engine bounds an event by its clock: a clock far
    ahead would count every later event as late."""
    try:
        clock = _clock_decoder.decode(data).watermark
    except (msgspec.DecodeError, ValueError, RecursionError) as error:  # Recursion: nested past what msgspec decodes
        raise SnapshotError(f"not a snapshot: {error}") from None
    if not clock <= latest:  # NaN too
        raise SnapshotError(f"the partition's clock ({clock}) is past {latest}")


def _carried_rules(rules: RuleSet) -> bytes:
    """The rules a snapshot carries: their JSON, or nothing past MAX_CARRIED_RULES_BYTES (its restore under edited
    rules then replays the look-back, as one of other settings does)."""
    text = rules.model_dump_json(by_alias=True).encode()
    return text if len(text) <= MAX_CARRIED_RULES_BYTES else b""


def rules_taken_under(data: bytes, rules: RuleSet) -> RuleSet | None:
    """The rules a snapshot's state was counted for, when they are not `rules` (a rule file edited before a restart):
    restored into an engine of those, then set to `rules`, it keeps what a hot reload keeps. None when they are
    `rules`. SnapshotError when it is no snapshot of this format, or its rules are not valid ones of its version."""
    try:
        stored = _head_decoder.decode(data).format
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"not a snapshot: {error}") from None
    if stored != FORMAT:
        raise SnapshotError(f"snapshot format {stored}, this guard reads {FORMAT}")
    try:
        head = _rules_decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"not a snapshot: {error}") from None
    if head.settings.rules_version == rules_version(rules):
        return None
    if not head.rules:
        raise OtherSettings("snapshot of other rules, which it does not carry (over the size carried)")
    if len(head.rules) > MAX_CARRIED_RULES_BYTES:  # parsing costs ~17 times the text's size: bounded before
        raise SnapshotError(f"the rules it was counted for are over {MAX_CARRIED_RULES_BYTES:,} bytes")
    try:
        taken = RuleSet.model_validate_json(head.rules)
    except Exception as error:  # a ValidationError, or whatever forged bytes raise
        raise SnapshotError(f"the rules it was counted for are not valid: {str(error)[:200]}") from None
    if rules_version(taken) != head.settings.rules_version:
        raise SnapshotError("the rules it was counted for are not those its rules version names")
    return taken


@_collector_paused()
def restore(data: bytes, rules: RuleSet, engine: Engine) -> None:
    """Load a snapshot into `engine`, freshly built with `rules` and the settings the snapshot
    was taken with. SnapshotError (and `engine` untouched) if it is not such a snapshot, or holds
    what that engine could not have made: times past the partition's clock, series or a dedupe
    store of other sizes than its rules and settings give (each size checked before it is used)."""
    try:
        head = _head_decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as error:  # ValueError: e.g. a string that is not UTF-8
        raise SnapshotError(f"not a snapshot: {error}") from None
    if head.format != FORMAT:
        raise SnapshotError(f"snapshot format {head.format}, this guard reads {FORMAT}")
    try:
        partition = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"corrupt snapshot: {error}") from None
    if partition.settings != _settings(engine, rules):
        raise OtherSettings("snapshot taken with other rules or settings")
    try:
        _check_clock(partition)
        campaigns, store = _campaigns(partition, engine), _store(partition.dedupe, engine._seen, partition.watermark)
    except (
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        OverflowError,
        RecursionError,
    ) as error:  # Overflow: a number past i64 (the core); Recursion: a series nested past what msgspec decodes
        raise SnapshotError(f"corrupt snapshot: {error}") from None
    engine._campaigns, engine._seen = campaigns, store
    engine._watermark, engine._ahead, engine._next_sweep = partition.watermark, partition.ahead, partition.next_sweep
    engine.stats = EngineStats(**msgspec.structs.asdict(partition.stats))


def _time(value: float | None, clock: float, what: str, campaign_id: str | None = None) -> None:
    """A time the engine keeps: unset, or not after the partition's clock (NaN never). `what` it is (of the campaign
    `campaign_id`: the message is made only for a time that fails, as a restore checks millions)."""
    if value is not None and value != -math.inf and not value <= clock:
        what = what if campaign_id is None else f"{what} of campaign {campaign_id!r}"
        raise ValueError(f"{what} ({value}) is past the partition's clock ({clock})")


def _check_clock(partition: _Partition) -> None:
    clock = partition.watermark
    if not (clock == -math.inf or math.isfinite(clock)):
        raise ValueError(f"the partition's clock is {clock}")
    for name, value in (("ahead", partition.ahead), ("next_sweep", partition.next_sweep)):
        if value is not None and math.isnan(value):
            raise ValueError(f"{name} is NaN")


def _campaigns(partition: _Partition, engine: Engine) -> dict[str, CampaignState]:
    if engine._max_campaigns is not None and len(partition.campaigns) > engine._max_campaigns:
        raise ValueError(f"{len(partition.campaigns)} campaigns, more than the {engine._max_campaigns} tracked")
    plan, clock, generations = engine._plan, partition.watermark, partition.dedupe.sequence
    # what each slot's rule makes, to check a restored series against (read, never changed: one for all campaigns)
    made = {slot: make() for feeds in plan.feeds.values() for slot, _, _, make in feeds}
    fresh, restored = [made.get(slot) for slot in range(len(plan.series_keys))], _series_restoring(engine.kinds)
    campaigns = {}
    for raw in partition.campaigns:
        try:
            mirror = _campaign_decoder.decode(raw)
        except msgspec.DecodeError as error:
            raise ValueError(f"campaign {len(campaigns)}: {error}") from None
        campaign_id = mirror.id
        try:
            series = restored(mirror.series, fresh, clock)
        except msgspec.DecodeError as error:
            raise ValueError(f"campaign {campaign_id!r}: {error}") from None
        rules = plan.rules_for(campaign_id, mirror.workspace_id)
        rule_states = NO_RULE_STATES
        if mirror.rule_states:
            rule_states = {name: RuleState(**msgspec.structs.asdict(kept)) for name, kept in mirror.rule_states.items()}
            if unknown := set(rule_states) - {compiled.rule.name for compiled in rules}:
                raise ValueError(f"states of rules that do not apply: {sorted(unknown)}")
        fields = [rules, series, *_KEPT_AS_THEY_ARE(mirror)]
        fields.insert(_RULE_STATES_AT, rule_states)
        state = CampaignState(*fields)
        if not -1 <= state.began_generation <= generations:
            began = state.began_generation
            raise ValueError(f"campaign {campaign_id!r}: its episode began in dedupe generation {began}")
        if not (state.watermark <= clock and state.started_at <= clock and state.first_seen <= clock) or rule_states:
            times = [state.watermark, state.started_at, state.first_seen]  # -inf passes; NaN not
            times += [t for rs in rule_states.values() for t in (rs.pending_since, rs.last_fired, rs.clear_since)]
            for value in times:
                _time(value, clock, "a time", campaign_id)
        if state.last_pause is not None:  # a pause acted on at catch-up lands at the call, ahead of the reading
            _time(state.last_pause[1], clock + MAX_AHEAD_SECONDS, "the pause", campaign_id)
        campaigns[campaign_id] = state
    return campaigns


def _check_series(series: Series, fresh: Series, clock: float) -> None:
    """A series as its slot's rule makes them (its window, size or weights), holding no more than it keeps, its
    numbers adding up as counting makes them: what either engine (Python or compiled) restores, both read alike."""
    if type(series) is not type(fresh):
        raise ValueError(f"a {type(series).__name__} where the rules keep a {type(fresh).__name__}")
    if series.kind == "sliding":
        if (series.width, series.keep_samples) != (fresh.width, fresh.keep_samples):
            raise ValueError("a window of another length")
        older = series.older
        if len(older) % 2 or len(older) > 2 * BUCKETS_PER_WINDOW:
            raise ValueError(f"{len(older)} bucket fields in a window of {BUCKETS_PER_WINDOW}")
        indexes, counts = older[::2], older[1::2]
        for index in (series.newest, *indexes):
            _time(index, clock // series.width, "a window's bucket")
        if any(not later > earlier for earlier, later in itertools.pairwise([*indexes, series.newest])):
            raise ValueError("a window's buckets out of order")
        if not all(1 <= count <= _MAX_COUNT and count == int(count) for count in counts):
            raise ValueError("a window's bucket holds no whole number of events")
        if not 0 <= series.newest_count <= _MAX_COUNT or series.total != series.newest_count + sum(map(int, counts)):
            raise ValueError("a window's counts do not add up")
    elif series.kind == "last":
        # a reload keeps a ring longer than the new rules ask, so the size is bounded by what a rule may ask
        if not 0 <= series.per_seen <= _MAX_COUNT:
            raise ValueError(f"a count window of {series.per_seen} sends")
        kept = min(series.per_seen, series.size)
        if not 1 <= series.size <= MAX_LAST or not len(series.per_times) == len(series.per_ids) == kept:
            raise ValueError("a count window of a size no rule can ask for, or holding another number of sends")
        positions = series.of_positions
        in_order = all(0 <= earlier <= later for earlier, later in itertools.pairwise(positions))
        if series.total != len(positions) or not in_order or (positions and not 0 <= positions[-1] <= series.per_seen):
            raise ValueError("a count window's outcomes do not add up")
        if any(not 0 <= position <= series.per_seen for position, _ in series.samples or ()):
            raise ValueError("a count window quotes a send it never saw")
        if series.per_seen and not math.isfinite(series.time_base):
            raise ValueError(f"a count window's first send at {series.time_base}")
        _time(series.time_base if series.per_seen else None, clock, "a count window's first send")
    elif series.kind == "cusum":
        if (series.rise, series.fall) != (fresh.rise, fresh.fall):
            raise ValueError("a cusum of other weights")
        if not (0 <= series.run_of <= _MAX_COUNT and 0 <= series.run_per <= _MAX_COUNT):
            raise ValueError("a cusum's run of more events than a log holds")
        if not (math.isfinite(series.statistic) and series.statistic >= 0):
            raise ValueError(f"a cusum statistic of {series.statistic}")
        _time(series.run_from, clock, "a cusum's run")
        _time(series.previous_per, clock, "a cusum's latest send")
    if series.kind != "sliding":
        if math.isnan(series.newest_per) != math.isnan(fresh.newest_per):  # NaN: it counts every send (plan.py)
            raise ValueError("a series that skips late sends where the rules keep one that does not, or back")
        _time(None if math.isnan(series.newest_per) else series.newest_per, clock, "a series' newest send")
        skipped = series.skipped or ()
        if len(skipped) > SKIPPED_IDS or not all(-(2**31) <= hashed < 2**31 for hashed in skipped):
            raise ValueError(f"more than {SKIPPED_IDS} skipped sends, or not as hashed")
    if len(series.samples or ()) > SAMPLE_IDS:
        raise ValueError(f"more than {SAMPLE_IDS} sample ids")


def _store(mirror: _Dedupe, fresh: Any, clock: float) -> Any:
    """The fresh store (of the same horizon and budget; Python's or the compiled core's) filled with the
    snapshot's keys, once they add up: its table size checked before it is computed (`1 << bits` of a forged
    `bits` is no table)."""
    fixed = fresh.max_keys is not None  # with a budget the table never grows
    if not (mirror.bits == fresh.bits if fixed else fresh.bits <= mirror.bits <= _MAX_BITS):
        raise ValueError(f"a dedupe table of 2**{mirror.bits} buckets")
    if len(mirror.buckets) != 1 << mirror.bits:
        raise ValueError("dedupe buckets do not match their count")
    if any(len(bucket) % dedupe._ENTRY for bucket in mirror.buckets):
        raise ValueError("a dedupe bucket of partial entries")
    stored = sum(map(len, mirror.buckets)) // dedupe._ENTRY
    if len(mirror.generations) > 256 or not stored == mirror.keys == sum(g.keys for g in mirror.generations):
        raise ValueError("dedupe keys do not add up")
    if fixed and mirror.keys > fresh.max_keys:
        raise ValueError(f"{mirror.keys} dedupe keys, more than the budget")
    for generation in mirror.generations:
        _time(generation.newest, clock, "a dedupe generation")
        if not 0 <= generation.tag <= 255:
            raise ValueError(f"a dedupe generation tagged {generation.tag}")
    _time(mirror.rotate_at, clock + fresh.span, "the next dedupe generation")
    generations = [(g.tag, g.start, g.newest, g.keys) for g in mirror.generations]
    fresh.load(mirror.bits, mirror.buckets, generations, mirror.rotate_at, mirror.sequence, mirror.keys, mirror.evicted)
    return fresh
