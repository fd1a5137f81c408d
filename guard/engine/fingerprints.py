"""Stable hashes of event keys: the same in every process, so they can be stored and compared later.

Python's `hash()` of a str is salted per process (PYTHONHASHSEED): a snapshot restored in another
process would hold keys no new event matches. xxh3 is fast, stable and not salted.
"""

from __future__ import annotations

from xxhash import xxh3_64_intdigest

from guard.contracts.events import Signal


def event_key(campaign_id: str, signal: Signal, message_id: str) -> int:
    """An unsigned 64-bit fingerprint of (campaign, signal, messageId). The parts are joined with the
    unit separator, a control character the event decoder refuses in ids, so keys cannot run together."""
    # surrogatepass: a lone surrogate (which a JSON string can spell) still gets a key, never an error
    return xxh3_64_intdigest("\x1f".join((campaign_id, signal, message_id)).encode("utf-8", "surrogatepass"))


def message_key(message_id: str) -> int:
    """An unsigned 64-bit fingerprint of a message id."""
    return xxh3_64_intdigest(message_id.encode("utf-8", "surrogatepass"))
