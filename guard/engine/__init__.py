"""The pure core: state + event -> decisions, with event time as the clock."""

from guard.engine.decisions import Decision
from guard.engine.engine import Engine, EngineStats, Measure
from guard.engine.runner import decide, decode_records, record_decisions, scopes_beside

__all__ = [
    "Decision",
    "Engine",
    "EngineStats",
    "Measure",
    "decide",
    "decode_records",
    "record_decisions",
    "scopes_beside",
]
