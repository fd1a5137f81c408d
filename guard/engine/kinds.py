"""Which implementation of its hot parts an engine runs with: the Python reference (windows.py, cusum.py,
dedupe.py, guard/contracts/events.py's decoder) or the compiled core (the optional `guard_core` package,
built from core/).

Both behave the same, event for event and byte for byte in a snapshot (tests/test_core_differential.py);
the compiled one is the faster and smaller. Without a Rust compiler the core is not built, and the
Python engine runs: `auto` picks the core when it is installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Literal, NamedTuple

from guard.contracts import events
from guard.contracts.events import Event, Signal
from guard.engine.cusum import Cusum
from guard.engine.dedupe import DedupeStore
from guard.engine.windows import LastN, SlidingCount

EngineChoice = Literal["auto", "python", "compiled"]


class Kinds(NamedTuple):
    """The hot parts an engine runs with: a series type per kind of window a rule can ask for, the dedupe
    store, and the decoder of the records it is fed."""

    name: str  # "python" or "compiled", as the start-up line says it
    sliding: type
    last: type
    cusum: type
    dedupe: type  # the partition's store of seen (campaign, signal, messageId) keys
    decode: Callable[[bytes | None, float], Event]  # a record's value and time -> its event (events.decode's contract)
    # encodes a campaign's part of a snapshot (snapshot.py); None: snapshot.py's own encoding, the reference
    campaign_encoder: type | None = None
    # (a campaign's series as its snapshot holds them, the fresh series of each slot, clock, max_last) -> its series,
    # each checked as snapshot.py checks one; None: snapshot.py decodes, builds and checks them, the reference
    restore_series: Callable[..., list] | None = None


PYTHON = Kinds("python", SlidingCount, LastN, Cusum, DedupeStore, events.decode)
# The guard-core build this guard runs: core/Cargo.toml's version, moved with every change to core/'s sources
# (tests/test_core_version.py holds the two together). Any other build is refused, as pydantic refuses any
# pydantic-core but its own: an older one called with a newer signature stops the engine at its first pause.
CORE_VERSION = "0.3.1"
_PYTHON_SERIES = {"sliding": SlidingCount, "last": LastN, "cusum": Cusum}


def _decoder(core: ModuleType) -> Callable[[bytes | None, float], Event]:
    """events.decode with the core's fast path first: a webhook as nearly all are decodes in the core, to the
    same Event; anything else (and every error, with its message) is the Python decoder's."""
    fast = core.FastDecoder(Event, events.SIGNALS, Signal.UNSUBSCRIBED).decode
    reference = events.decode

    def decode(value: bytes | None, record_time: float) -> Event:
        event = fast(value, record_time)
        return event if event is not None else reference(value, record_time)

    return decode


class CoreMissing(RuntimeError):
    """GUARD_ENGINE=compiled, and the compiled core is not installed."""


def installed_core() -> str | None:
    """The installed guard-core's version; None when there is none."""
    try:
        return str(importlib.import_module("guard_core").__version__)
    except (ImportError, AttributeError):
        return None


def why_not_compiled() -> str:
    """Why `compiled()` gives None, for the operator: the core is not installed, or is another build."""
    version = installed_core()
    if version is None:
        return "the compiled core (guard-core) is not installed"
    built = f"guard-core {version}, a build of other sources than this guard's ({CORE_VERSION})"
    return f"the installed compiled core is {built}"


def compiled() -> Kinds | None:
    """The compiled core's parts; None when the core is not installed, or is a build of other sources (an upgrade
    of the guard without `pip install ./core`: it may decode or count otherwise than this guard's Python engine, or
    lack a part or a signature the engine calls; the Python engine is safe)."""
    try:
        core = importlib.import_module("guard_core")
        if core.__version__ != CORE_VERSION:
            return None
        series = (core.SlidingCount, core.LastN, core.Cusum)
        fields = {kind: list(python.__struct_fields__) for kind, python in _PYTHON_SERIES.items()}
        if core.series_fields() != fields:
            return None
        return Kinds(
            "compiled", *series, core.DedupeStore, _decoder(core), core.CampaignEncoder, core.restored_campaign_series
        )
    except (ImportError, AttributeError):
        return None


def choose(choice: EngineChoice) -> Kinds:
    """The series types for GUARD_ENGINE: `auto` is the core when installed, else Python."""
    if choice == "python":
        return PYTHON
    core = compiled()
    if core is not None:
        return core
    if choice == "compiled":
        raise CoreMissing(
            f"GUARD_ENGINE=compiled, but {why_not_compiled()}: build it from this guard's core/ with a Rust "
            "compiler (pip install ./core), or set GUARD_ENGINE=auto or python to run the Python engine"
        )
    return PYTHON
